import Foundation
import IPIPCore
import IPIPLinux
import IPIPResources
import Pcap
import Synchronization

/// One packet loop's part of the flight recorder: a ring per side (what the loop read from the
/// TUN, and from the uplink), written on the loop thread as each batch goes into the engine and
/// patched with the engine's verdicts right after (`PacketLoop.process`).
///
/// Per packet: one record header (56 bytes) and a copy of the packet into preallocated memory,
/// nothing allocated. Per batch with the recorder attached: these two calls; without it, the
/// loop's one nil check.
///
/// A dump (`FlightRecorder.write`) asks the loop, through `dumpRequested`, to copy its rings
/// and its engine's state between two batches (`serviceDump`): the rings are only ever touched
/// by the loop thread, so no record is torn, and the copy is as of one instant of that loop.
///
/// Hazards: `record` and `patch` must bracket one engine call on the same batch, with at most
/// `batchCapacity` packets.
public final class LoopRecorder: @unchecked Sendable {
    /// The rings, written on the loop thread only.
    public let packets: PacketRecorder
    let dumpRequested = Atomic<Bool>(false)
    let dumpResult = Mutex<LoopDump?>(nil)
    /// Wakes the loop (set by the loop when the recorder is attached).
    let waker = Mutex<(@Sendable () -> Void)?>(nil)

    /// - Parameters:
    ///   - bytesPerSide: the size of each of the two rings.
    ///   - batchCapacity: the loop's batch size.
    public init(bytesPerSide: Int, batchCapacity: Int) {
        packets = PacketRecorder(bytesPerSide: bytesPerSide, batchCapacity: batchCapacity)
    }

    var tun: RecordRing { packets.tun }
    var underlay: RecordRing { packets.underlay }

    /// `PacketRecorder.record`, on the loop thread.
    @inline(__always)
    func record(_ batch: borrowing PacketBatch, egress: Bool, scalars: EngineScalarState) {
        packets.record(batch, egress: egress, scalars: scalars)
    }

    /// `PacketRecorder.patch`, on the loop thread.
    @inline(__always)
    func patch(_ verdicts: borrowing VerdictBatch, count: Int, egress: Bool) {
        packets.patch(verdicts, count: count, egress: egress)
    }

    /// Between batches, on the loop thread: if a dump is asked for, copies both rings and the
    /// engine's state and acknowledges. One relaxed load when none is.
    @inline(__always)
    func serviceDump(_ engine: Engine) {
        guard dumpRequested.load(ordering: .relaxed) else { return }
        let started = MonotonicClock.seconds()
        var dump = LoopDump(
            tun: tun.linearized(), underlay: underlay.linearized(), state: engine.exportState(),
            counters: RecorderCounters(tun.state, underlay.state))
        dump.pauseSeconds = MonotonicClock.seconds() - started
        dumpResult.withLock { $0 = dump }
        dumpRequested.store(false, ordering: .releasing)
    }

    /// From another thread: asks the loop for a dump and waits for it (up to `timeout` seconds).
    func requestDump(timeout: Double) -> LoopDump? {
        dumpResult.withLock { $0 = nil }
        dumpRequested.store(true, ordering: .releasing)
        waker.withLock { $0 }?()
        let deadline = MonotonicClock.seconds() + timeout
        while dumpRequested.load(ordering: .acquiring) {
            if MonotonicClock.seconds() > deadline {
                dumpRequested.store(false, ordering: .relaxed)
                return nil
            }
            MonotonicClock.sleep(seconds: 0.001)
        }
        return dumpResult.withLock { d -> LoopDump? in
            defer { d = nil }
            return d
        }
    }
}

/// What one loop hands over for a dump.
struct LoopDump: Sendable {
    var tun: [UInt8]
    var underlay: [UInt8]
    var state: EngineState
    var counters: RecorderCounters
    /// How long the loop spent copying (its pause in packet processing).
    var pauseSeconds: Double = 0
}

/// A loop's recorder counters: records written, overwritten (dropped to make room) and refused
/// as larger than a ring, over both sides.
public struct RecorderCounters: Sendable, Equatable {
    public var written: UInt64 = 0
    public var overwritten: UInt64 = 0
    public var oversized: UInt64 = 0
    public init() {}
    init(_ a: RecordRing.Cursor, _ b: RecordRing.Cursor) {
        written = a.written &+ b.written
        overwritten = a.overwritten &+ b.overwritten
        oversized = a.oversized &+ b.oversized
    }
}

/// `--record-buffer SIZE`: a byte count with an optional unit, K/M/G (and KiB/MiB/GiB, the same:
/// powers of 1024) or B; `64MiB`, `512k`, `1g`, `1048576`.
public enum RecordBufferSize {
    /// The smallest size accepted: each of the rings (two per worker) must hold a 64 KiB
    /// super-packet with its header.
    public static func minimum(workers: Int) -> Int { max(1, workers) * 2 * (128 << 10) }
    /// The largest: 64 GiB (a sanity bound: the memory is allocated at start).
    public static let maximum = 64 << 30

    /// Parses SIZE. - Throws: a message naming the text and what is accepted.
    public static func parse(_ text: String) throws(RecordBufferSizeError) -> Int {
        let t = text.trimmingCharacters(in: .whitespaces)
        let digits = t.prefix { $0.isASCII && $0.isNumber }
        let unit = t.dropFirst(digits.count).lowercased()
        guard !digits.isEmpty, let n = Int(digits) else {
            throw RecordBufferSizeError(
                "--record-buffer: '\(text)' is not a size (a number with an optional unit: K, M, G, KiB, MiB, GiB; e.g. 64MiB)"
            )
        }
        let shift: Int
        switch unit {
        case "", "b": shift = 0
        case "k", "kb", "kib": shift = 10
        case "m", "mb", "mib": shift = 20
        case "g", "gb", "gib": shift = 30
        default:
            throw RecordBufferSizeError(
                "--record-buffer: unknown unit '\(t.dropFirst(digits.count))' in '\(text)' (K, M, G, KiB, MiB, GiB)")
        }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow, bytes <= maximum else {
            throw RecordBufferSizeError("--record-buffer: '\(text)' is more than 64GiB")
        }
        return bytes
    }
}

/// A `--record-buffer` value that does not parse or is out of range.
public struct RecordBufferSizeError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The flight recorder of one daemon (`ipipd run --record-buffer SIZE`): a `LoopRecorder` per
/// packet worker, and the writing of a recording (docs/flight-recorder.md).
///
/// SIZE is split evenly: each worker gets SIZE / workers, half for what it read from the TUN and
/// half for what it read from the uplink (flows are hashed evenly over workers; the two sides
/// carry comparable bytes for request/response traffic, and a side that is quiet keeps a longer
/// window of its own).
///
/// A recording is three files in one directory, written into a hidden staging directory beside
/// it and renamed into place when all three are on disk (`fsync`), so a failure (a full disk)
/// leaves no file under a final name: `tun.pcapng` and `underlay.pcapng` (link type 147: each
/// record a virtio header with the packet's offload, then the packet as the engine got it; each
/// with the live verdict as its comment) and `cluster.yaml` (the resources of the topology in
/// force, then one `RecordedEngineState` document per worker).
///
/// Thread-safety: `write` may be called from any thread (the control thread on SIGUSR2, the
/// control socket); one recording is written at a time.
public final class FlightRecorder: @unchecked Sendable {
    public let loops: [LoopRecorder]
    public let totalBytes: Int
    let writing = Mutex<Int>(0)

    /// - Parameters:
    ///   - totalBytes: SIZE.
    ///   - workers: packet workers.
    ///   - batchSize: the loops' batch size.
    public init(totalBytes: Int, workers: Int, batchSize: Int) {
        let n = max(1, workers)
        self.totalBytes = totalBytes
        loops = (0..<n).map { _ in LoopRecorder(bytesPerSide: totalBytes / n / 2, batchCapacity: batchSize) }
    }

    /// Bytes of each ring.
    public var bytesPerSide: Int { loops.first?.tun.capacity ?? 0 }

    /// What a recording needs from the daemon besides the rings.
    public struct Context: Sendable {
        public var node: String
        /// The resources of the topology in force, as YAML documents (Calico manifests).
        public var manifests: String
        public var natSecret: UInt64
        /// The underlay MTU the live tunnel MTU came from.
        public var underlayMTU: Int
        /// Each worker's engine configuration (timeouts, its ICMP share).
        public var configurations: [EngineConfiguration]
        public init(
            node: String, manifests: String, natSecret: UInt64, underlayMTU: Int, configurations: [EngineConfiguration]
        ) {
            self.node = node
            self.manifests = manifests
            self.natSecret = natSecret
            self.underlayMTU = underlayMTU
            self.configurations = configurations
        }
    }

    /// Writes a recording into `directory` (created; an existing one must be empty) and returns a
    /// one-line summary.
    /// - Throws: `DaemonError` naming the directory or file and the system's reason; nothing is
    ///   left under the final names then.
    public func write(to directory: String, context: Context, timeout: Double = 5) throws -> String {
        try writing.withLock { _ throws(DaemonError) -> String in
            try writeLocked(to: directory, context: context, timeout: timeout)
        }
    }

    func writeLocked(to directory: String, context: Context, timeout: Double) throws(DaemonError) -> String {
        let path = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        // Refuse before pausing any loop: a directory that already holds something.
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw DaemonError("recording: \(path) exists and is not a directory")
            }
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            guard entries.isEmpty else {
                throw DaemonError(
                    "recording: \(path) is not empty (\(entries.sorted().prefix(3).joined(separator: ", "))): give a new or empty directory"
                )
            }
        }
        let slash = path.lastIndex(of: "/")
        let parent = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        do {
            try FileManager.default.createDirectory(
                atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DaemonError("recording: cannot create \(parent): \(error.localizedDescription)")
        }

        // 1. Every loop copies its rings and its engine state between two batches.
        var dumps: [LoopDump] = []
        for (w, l) in loops.enumerated() {
            guard let d = l.requestDump(timeout: timeout) else {
                throw DaemonError(
                    "recording: packet worker \(w) did not hand over its rings within \(timeout) s (is it running?)")
            }
            dumps.append(d)
        }
        // The loops' clock is monotonic; captures and the state get wall-clock times, the same
        // offset for all of them, so the replay's clock runs as the live one did.
        var real = timespec()
        var mono = timespec()
        clock_gettime(CLOCK_REALTIME, &real)
        clock_gettime(CLOCK_MONOTONIC, &mono)
        let offset =
            (Int64(real.tv_sec) - Int64(mono.tv_sec)) * 1_000_000_000 + (Int64(real.tv_nsec) - Int64(mono.tv_nsec))

        // 2. Files into a staging directory beside the final one.
        let staging = (parent == "/" ? "" : parent) + "/.\(name).partial-\(getpid())"
        guard mkdir(staging, 0o700) == 0 else {
            throw DaemonError("recording: cannot create \(staging): \(String(cString: strerror(errno)))")
        }
        var done = false
        defer {
            if !done {
                for f in ["tun.pcapng", "underlay.pcapng", "cluster.yaml"] { unlink(staging + "/" + f) }
                if let leftovers = try? FileManager.default.contentsOfDirectory(atPath: staging) {
                    for f in leftovers { unlink(staging + "/" + f) }
                }
                rmdir(staging)
            }
        }
        let multi = loops.count > 1
        var sides: [(String, Int)] = []
        var earliest = Int64.max
        var latest = Int64.min
        for (file, pick) in [("tun.pcapng", true), ("underlay.pcapng", false)] {
            var all: [(worker: Int, packet: RecordedPacket)] = []
            for (w, d) in dumps.enumerated() {
                for p in RecordedPacket.parse(pick ? d.tun : d.underlay) { all.append((w, p)) }
            }
            all.sort {
                ($0.packet.time, $0.worker, $0.packet.sequence) < ($1.packet.time, $1.worker, $1.packet.sequence)
            }
            if let f = all.first { earliest = min(earliest, f.packet.time) }
            if let l = all.last { latest = max(latest, l.packet.time) }
            let writer: PcapNGWriter
            do {
                writer = try PcapNGWriter(
                    path: staging + "/" + file, linkType: .virtioNet,
                    snapshotLength: 262_144,
                    comment:
                        "ipipd flight recorder, node \(context.node): what the \(pick ? "TUN" : "uplink") delivered, each packet with the live verdict",
                    interfaceName: pick ? "tun" : "uplink")
            } catch {
                throw DaemonError("recording into \(path): cannot create \(file): \(error.message)")
            }
            var scratch = [UInt8](repeating: 0, count: 65536 + VirtioNetHeader.byteCount + 16)
            for (w, p) in all {
                let buffer = pick ? dumps[w].tun : dumps[w].underlay
                let length = p.bytes.count
                scratch.withUnsafeMutableBytes { s in
                    Self.virtioHeader(p.offload).store(to: s.baseAddress!)
                    buffer.withUnsafeBytes { b in
                        if length > 0 {
                            (s.baseAddress! + VirtioNetHeader.byteCount).copyMemory(
                                from: b.baseAddress! + p.bytes.lowerBound, byteCount: length)
                        }
                    }
                }
                var comment = p.verdict?.text ?? "no verdict"
                if multi { comment += "; worker \(w)" }
                let t = p.time &+ offset
                scratch.withUnsafeBytes { s in
                    writer.write(
                        UnsafeRawBufferPointer(rebasing: s[0..<(VirtioNetHeader.byteCount + length)]),
                        timestamp: Timestamp(seconds: t / 1_000_000_000, nanoseconds: UInt32(t % 1_000_000_000)),
                        comment: comment)
                }
            }
            do { try writer.close() } catch {
                throw DaemonError("recording into \(path): \(file): \(error.message); nothing was left behind")
            }
            // The packets (and the NAT secret beside them) are as private as the secret file.
            chmod(staging + "/" + file, 0o600)
            sides.append((file, all.count))
        }

        // cluster.yaml: the manifests, then each worker's engine state, its times moved onto
        // the captures' clock and session activity before the window held at the window start.
        var yaml = "# ipipd flight recorder, node \(context.node): the resources of the topology in force\n"
        yaml += context.manifests
        var sessions = 0
        var mtus = 0
        for (w, d) in dumps.enumerated() {
            let oldest = [RecordedPacket.parse(d.tun).first, RecordedPacket.parse(d.underlay).first].compactMap { $0 }
                .min { $0.time < $1.time }
            let monoNow = Int64(mono.tv_sec) * 1_000_000_000 + Int64(mono.tv_nsec)
            let windowStart = (oldest?.time ?? monoNow) &+ offset
            let c = w < context.configurations.count ? context.configurations[w] : EngineConfiguration()
            var state = Self.shift(d.state, by: offset, windowStart: windowStart)
            if let o = oldest { state.icmp = Self.shift(o.scalars, by: offset) }
            // A path MTU learned inside the window is learned again by the replay from the
            // recorded frag-needed: preloading it would apply it to the packets before that.
            let lifetime = c.pathMTUExpirySeconds &* 1_000_000_000
            state.pathMTUs.removeAll { $0.expires &- lifetime >= windowStart }
            sessions += state.natSessions.count
            mtus += state.pathMTUs.count
            yaml +=
                RecordedEngineState(
                    node: context.node, worker: w, workers: loops.count, windowStart: windowStart,
                    natSecret: context.natSecret, state: state, underlayMTU: context.underlayMTU,
                    natTimeouts: c.natTimeouts, icmpRatePerSecond: c.icmpRatePerSecond, icmpBurst: c.icmpBurst
                ).yaml(first: w == 0)
        }
        try Self.writeFile(staging + "/cluster.yaml", yaml, shownAs: "recording into \(path): cluster.yaml")

        // 3. Into place: one rename of the directory (over an empty one, or a new name).
        let dirFD = open(staging, O_RDONLY | O_DIRECTORY)
        if dirFD >= 0 {
            fsync(dirFD)
            close(dirFD)
        }
        guard rename(staging, path) == 0 else {
            let reason = String(cString: strerror(errno))
            throw DaemonError("recording: cannot move the recording to \(path): \(reason)")
        }
        done = true
        let counters = dumps.reduce(into: RecorderCounters()) {
            $0.written &+= $1.counters.written
            $0.overwritten &+= $1.counters.overwritten
            $0.oversized &+= $1.counters.oversized
        }
        let span = earliest <= latest ? Double(latest - earliest) / 1e9 : 0
        var line =
            "recording of \(context.node) in \(path): \(sides[0].1) TUN and \(sides[1].1) underlay packets over \(String(format: "%.3f", span)) s, \(sessions) NAT sessions (those held at the dump) and \(mtus) path MTUs from before the window"
        let pause = dumps.map(\.pauseSeconds).max() ?? 0
        line += String(format: "; the packet loops paused %.1f ms to copy", pause * 1000)
        if counters.overwritten > 0 { line += "; \(counters.overwritten) older packets no longer held" }
        if counters.oversized > 0 { line += "; \(counters.oversized) packets larger than a ring not recorded" }
        return line
    }

    /// The virtio header a TUN read (or a packet-socket receive) of this packet had, as far as
    /// the engine used it: the segmentation; checksums were completed on input.
    static func virtioHeader(_ o: SegmentationOffload) -> VirtioNetHeader {
        switch o.kind {
        case .none: VirtioNetHeader()
        case .tcp:
            VirtioNetHeader(
                gsoType: VirtioNetHeader.gsoTCPv4 | (o.congestionWindowReduced ? VirtioNetHeader.gsoECN : 0),
                gsoSize: o.segmentSize)
        case .udp: VirtioNetHeader(gsoType: VirtioNetHeader.gsoUDPL4, gsoSize: o.segmentSize)
        // GSO_TCPV6 on an IPv4 packet: what the engine refuses as invalid_offload, read back so.
        case .invalid: VirtioNetHeader(gsoType: VirtioNetHeader.gsoTCPv6, gsoSize: max(1, o.segmentSize))
        }
    }

    static func shift(_ s: EngineScalarState, by offset: Int64) -> EngineScalarState {
        var s = s
        if s.icmpLastRefill != .min { s.icmpLastRefill &+= offset }
        return s
    }

    /// The state's times moved by `offset`; a session's last activity after `windowStart` is
    /// held at `windowStart` (the replay sees its packets again; timeout lists stay ordered).
    static func shift(_ state: EngineState, by offset: Int64, windowStart: Int64) -> EngineState {
        var s = state
        s.icmp = shift(state.icmp, by: offset)
        s.pathMTUs = state.pathMTUs.map { p in
            var p = p
            p.expires &+= offset
            return p
        }
        s.natSessions = state.natSessions.map { n in
            var n = n
            n.lastActivity = min(n.lastActivity &+ offset, windowStart)
            return n
        }
        return s
    }

    /// Writes `text` to `path` and syncs it; any failure throws naming the file.
    static func writeFile(_ path: String, _ text: String, shownAs name: String) throws(DaemonError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0, let f = fdopen(fd, "w") else {
            if fd >= 0 { close(fd) }
            throw DaemonError("\(name): cannot create: \(String(cString: strerror(errno)))")
        }
        var bytes = Array(text.utf8)
        let n = fwrite(&bytes, 1, bytes.count, f)
        var failure: Int32 = n == bytes.count ? 0 : (errno == 0 ? EIO : errno)
        if fflush(f) != 0 && failure == 0 { failure = errno }
        if fsync(fileno(f)) != 0 && failure == 0 { failure = errno }
        if fclose(f) != 0 && failure == 0 { failure = errno }
        if failure != 0 {
            throw DaemonError("\(name): \(String(cString: strerror(failure))); nothing was left behind")
        }
    }
}

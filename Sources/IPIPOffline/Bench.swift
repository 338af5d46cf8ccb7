import Foundation
import IPIPCore
import Pcap
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What `ipipd bench` is asked to do.
public struct BenchOptions: Sendable {
    public var input: String
    public var underlayInput: String?
    /// Packets per engine batch.
    public var batchSize = 64
    /// Passes over the captures; when nil, `duration` decides.
    public var iterations: Int?
    /// Seconds to run (stopping at a batch boundary) when `iterations` is nil.
    public var duration: Double = 10
    /// Run the live daemon's output stage too (`ReplayOptions.offloads`): super-packets cut into
    /// their segments, the uplink's packets toward the TUN coalesced, virtio headers prepared.
    /// Without it, only the engine is timed and a super-packet counts as one output.
    public var offloads = false
    /// Threads, each with its own engine (NAT table, counters, batches) over its own share of
    /// the captures: the flows are dealt out by a hash of their ports, so a flow and its replies
    /// stay on one worker, as they do on one worker of the live daemon.
    public var workers = 1
    /// The flight recorder's memory (`ipipd run --record-buffer`), split over workers and sides
    /// as the daemon splits it; each batch is recorded and patched with its verdicts, as the
    /// live loops do (0: off).
    public var recordBufferBytes = 0

    public init(input: String, underlayInput: String? = nil) {
        self.input = input
        self.underlayInput = underlayInput
    }
}

/// The captures in memory: every IPv4 packet of both, merged by timestamp exactly as `Replay`
/// merges them (earliest pending record first, a tie to the TUN side), in one byte slab.
final class LoadedCaptures {
    var bytes: [UInt8] = []
    var offsets: [Int] = []
    var lengths: [Int] = []
    var directions: [PacketDirection] = []
    var offloads: [SegmentationOffload] = []
    /// Nanoseconds after the first packet.
    var relativeTimes: [Int64] = []
    var first = Timestamp.zero
    /// Last minus first packet time, in ns.
    var span: Int64 = 0
    var skipped = 0
    var count: Int { offsets.count }

    init() {}

    /// The packets of the flows worker `worker` of `workers` owns, in capture order, in a slab
    /// of their own. A flow is its protocol and the unordered pair of its (inner, for IP-in-IP)
    /// ports or echo identifier, so a request and its reply, SNAT replies included (the
    /// generator keeps source ports), fall to the same worker.
    func share(_ worker: Int, of workers: Int) -> LoadedCaptures {
        let s = LoadedCaptures()
        s.first = first
        s.span = span
        s.skipped = skipped
        bytes.withUnsafeBytes { slab in
            for i in 0..<count {
                let p = UnsafeRawBufferPointer(rebasing: slab[offsets[i]..<(offsets[i] + lengths[i])])
                guard Self.flowHash(p) % UInt64(workers) == UInt64(worker) else { continue }
                s.offsets.append(s.bytes.count)
                s.lengths.append(lengths[i])
                s.bytes.append(contentsOf: p)
                s.directions.append(directions[i])
                s.offloads.append(offloads[i])
                s.relativeTimes.append(relativeTimes[i])
            }
        }
        return s
    }

    /// The summed sizes of the capture files that exist (the loader names a missing one).
    static func fileBytes(_ input: String, _ underlayInput: String?) -> Int {
        var total = 0
        for path in [input] + (underlayInput.map { [$0] } ?? []) {
            var st = stat()
            if stat(path, &st) == 0 { total += Int(st.st_size) }
        }
        return total
    }

    static func flowHash(_ packet: UnsafeRawBufferPointer) -> UInt64 {
        var p = packet
        guard p.count >= 20 else { return 0 }
        if p[9] == IPProtocolNumber.ipInIP {
            let outer = Int(p[0] & 0x0F) * 4
            guard p.count >= outer + 20 else { return 0 }
            p = UnsafeRawBufferPointer(rebasing: p[outer...])
        }
        let hl = Int(p[0] & 0x0F) * 4
        guard p.count >= hl + 8 else { return UInt64(p[9]) }
        let a = UInt64(p[hl]) << 8 | UInt64(p[hl + 1])
        let b = UInt64(p[hl + 2]) << 8 | UInt64(p[hl + 3])
        var key = UInt64(p[9]) << 32 | min(a, b) << 16 | max(a, b)
        if p[9] == IPProtocolNumber.icmp { key = UInt64(p[hl + 4]) << 8 | UInt64(p[hl + 5]) }
        key = (key ^ (key >> 31)) &* 0x7FB5_D329_728E_A185
        return key ^ (key >> 27)
    }

    init(input: String, underlayInput: String?) throws {
        let captures = try MergedCaptures(input: input, underlayInput: underlayInput)
        // The files' sizes bound the packet bytes: reserved once, the slab never doubles past them.
        bytes.reserveCapacity(Self.fileBytes(input, underlayInput))
        var times: [Int64] = []
        while let (source, record) = captures.next() {
            guard record.networkProtocol == .ipv4 else {
                skipped += 1
                continue
            }
            offsets.append(bytes.count)
            lengths.append(record.bytes.count)
            bytes.append(contentsOf: record.bytes)
            directions.append(source.direction)
            offloads.append(record.offload)
            times.append(record.timestamp.totalNanoseconds)
        }
        if let failure = captures.failure { throw ReplayError(failure.description) }
        guard let t0 = times.first else {
            throw ReplayError("no IPv4 packets in \(input)" + (underlayInput.map { " or \($0)" } ?? ""))
        }
        first = Timestamp(seconds: t0 / 1_000_000_000, nanoseconds: UInt32(t0 % 1_000_000_000))
        relativeTimes = times.map { $0 - t0 }
        span = (times.max() ?? t0) - t0
    }
}

/// The numbers of one `ipipd bench` run.
public struct BenchResult: Sendable {
    /// IPv4 packets per pass (non-IPv4 records are skipped at load time, not timed).
    public var capturePackets = 0
    public var captureBytes = 0
    public var skippedPerPass = 0
    /// Passes started (the last may be partial in duration mode).
    public var passes = 0
    public var packets = 0
    /// Input bytes (IP total lengths as captured).
    public var bytes = 0
    public var seconds = 0.0
    public var emittedUnderlay = 0
    public var emittedTUN = 0
    public var batchSize = 0
    /// Whether the output stage ran (`BenchOptions.offloads`).
    public var offloads = false
    /// Worker threads, and per worker: packets and seconds (its own loop's wall clock).
    public var workers = 1
    public var perWorker: [(packets: Int, seconds: Double)] = []
    public var counters: EngineCounters?
    /// malloc/calloc/realloc/aligned allocations during the timed loop, when the process counts them.
    public var mallocs: UInt64?

    public var packetsPerSecond: Double { seconds > 0 ? Double(packets) / seconds : 0 }
    public var gigabitsPerSecond: Double { seconds > 0 ? Double(bytes) * 8 / seconds / 1e9 : 0 }
    public var nanosecondsPerPacket: Double { packets > 0 ? seconds * 1e9 / Double(packets) : 0 }
    public var mallocsPerPacket: Double? { mallocs.map { packets > 0 ? Double($0) / Double(packets) : 0 } }

    /// Drop reasons with a count, largest first.
    public var topDrops: [(DropReason, UInt64)] {
        guard let c = counters else { return [] }
        return c.drops.filter { $0.value > 0 }.sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }
    }

    func fmt(_ v: Double, _ digits: Int) -> String {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let r = (v * p).rounded() / p
        var s = String(r)
        if s.hasSuffix(".0") && digits == 0 { s.removeLast(2) }
        return s
    }

    public func report(input: String, node: String) -> String {
        var lines: [String] = []
        lines.append(
            "bench of \(input) as \(node): \(capturePackets) IPv4 packets per pass (\(captureBytes) bytes)"
                + (skippedPerPass > 0 ? ", \(skippedPerPass) non-IPv4 skipped" : "") + ", batch \(batchSize)")
        if workers > 1 {
            let each = perWorker.enumerated().map {
                "\($0.offset): \(fmt(Double($0.element.packets) / max($0.element.seconds, 1e-9) / 1e6, 3)) Mpps"
            }
            lines.append("  workers:            \(workers) (\(each.joined(separator: ", ")))")
        }
        lines.append("  passes:             \(passes)")
        lines.append("  packets:            \(packets) in \(fmt(seconds, 3)) s")
        lines.append(
            "  rate:               \(fmt(packetsPerSecond / 1e6, 3)) Mpps, \(fmt(gigabitsPerSecond, 3)) Gbit/s (input bytes), "
                + "\(fmt(nanosecondsPerPacket, 1)) ns/packet")
        if let m = mallocs, let per = mallocsPerPacket {
            lines.append("  allocations:        \(m) during the timed loop (\(fmt(per, 6)) per packet)")
        } else {
            lines.append(
                "  allocations:        not counted in this process (see Benchmarks/ for per-packet malloc counts)")
        }
        if let c = counters {
            for a in VerdictAction.allCases where c.packets(a) > 0 {
                let share = packets > 0 ? Double(c.packets(a)) * 100 / Double(packets) : 0
                lines.append("  " + pad(a.name + ":", 20) + "\(c.packets(a)) (\(fmt(share, 1)) %)")
            }
            for (r, n) in topDrops.prefix(5) { lines.append("    " + pad(r.name, 28) + "\(n)") }
        }
        lines.append(
            "  emitted:            \(emittedUnderlay) to the underlay, \(emittedTUN) into the TUN (counted, not written"
                + (offloads ? "; as the devices take them: segments and coalesced super-packets)" : ")"))
        if let c = counters, c.superPacketsIn > 0 {
            lines.append("  super-packets:      \(c.superPacketsIn) taken whole")
        }
        return lines.joined(separator: "\n")
    }

    func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
    }

    /// One JSON object with every number.
    public func json(input: String, underlayInput: String?, node: String) -> String {
        var s = "{\"input\":\(jsonString(input))"
        if let u = underlayInput { s += ",\"underlay_input\":\(jsonString(u))" }
        s += ",\"node\":\(jsonString(node)),\"batch\":\(batchSize),\"capture_packets\":\(capturePackets)"
        s += ",\"capture_bytes\":\(captureBytes),\"skipped_per_pass\":\(skippedPerPass),\"passes\":\(passes)"
        s += ",\"packets\":\(packets),\"bytes\":\(bytes),\"seconds\":\(seconds)"
        s += ",\"packets_per_second\":\(packetsPerSecond),\"gbit_per_second\":\(gigabitsPerSecond)"
        s += ",\"ns_per_packet\":\(nanosecondsPerPacket)"
        s += ",\"mallocs\":" + (mallocs.map { "\($0)" } ?? "null")
        s += ",\"mallocs_per_packet\":" + (mallocsPerPacket.map { "\($0)" } ?? "null")
        s += ",\"emitted_underlay\":\(emittedUnderlay),\"emitted_tun\":\(emittedTUN),\"offloads\":\(offloads)"
        s +=
            ",\"workers\":\(workers),\"worker_packets_per_second\":["
            + perWorker.map { "\(Double($0.packets) / max($0.seconds, 1e-9))" }.joined(separator: ",") + "]"
        if let c = counters {
            s +=
                ",\"verdicts\":{"
                + VerdictAction.allCases.map { "\"\($0.name)\":\(c.packets($0))" }.joined(separator: ",") + "}"
            s += ",\"drops\":{" + topDrops.map { "\"\($0.0.name)\":\($0.1)" }.joined(separator: ",") + "}"
        }
        return s + "}"
    }
}

/// `ipipd bench`: the captures are loaded once, then replayed through one engine in a loop.
///
/// Each pass copies every packet into a batch (as a device read would), runs the batch through
/// the same `EngineFeeder` as `ipipd replay` (same batching rule, same engine calls), and counts
/// the outputs instead of writing them. NAT state carries over between passes; pass k's
/// timestamps are the capture's plus k × (span + 1 µs), so flows stay alive and timeouts behave
/// as in a capture that repeats. Timing covers all passes (the first one creates the NAT
/// sessions); loading does not count.
public final class Bench {
    let engine: Engine
    let options: BenchOptions
    let captures: LoadedCaptures
    let progress: ProgressReporter?
    let mallocCount: (() -> UInt64)?

    /// Loads the captures. `mallocCount`, when given, reads a process-wide allocation counter.
    public init(
        engine: Engine, options: BenchOptions, progress: ProgressReporter? = nil,
        mallocCount: (() -> UInt64)? = nil
    ) throws {
        self.engine = engine
        self.options = options
        self.progress = progress
        self.mallocCount = mallocCount
        try Self.checkMemory(options)
        captures = try LoadedCaptures(input: options.input, underlayInput: options.underlayInput)
    }

    /// Refuses, before loading, captures whose packets would not fit in memory: bench holds them
    /// once as loaded and once more in each worker's copy (with several workers, also the shares
    /// they are cut into). The captures' file sizes bound the packet bytes from above.
    static func checkMemory(_ options: BenchOptions) throws {
        let fileBytes = LoadedCaptures.fileBytes(options.input, options.underlayInput)
        let copies = options.workers > 1 ? 3 : 2
        let physical = Int(sysconf(Int32(_SC_PHYS_PAGES))) &* Int(sysconf(Int32(_SC_PAGESIZE)))
        guard physical > 0, fileBytes &* copies > physical / 10 * 9 else { return }
        func gib(_ n: Int) -> String { String(format: "%.1f GiB", Double(n) / Double(1 << 30)) }
        throw ReplayError(
            "the captures hold up to \(gib(fileBytes)) of packets; bench keeps \(copies) copies in memory "
                + "(\(gib(fileBytes * copies))) and this machine has \(gib(physical)): generate fewer packets "
                + "(ipipd gen --packets) or replay a part of the capture")
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// What one worker's loop did.
    struct ShareResult {
        var passes = 0
        var packets = 0
        var bytes = 0
        var underlayOut = 0
        var tunOut = 0
        var start: UInt64 = 0
        var end: UInt64 = 0
    }

    public func run() -> BenchResult {
        var result = BenchResult()
        let n = captures.count
        result.capturePackets = n
        result.captureBytes = captures.lengths.reduce(0, +)
        result.skippedPerPass = captures.skipped
        result.batchSize = max(1, options.batchSize)
        result.offloads = options.offloads
        let workers = max(1, options.workers)
        result.workers = workers
        var shares: [ShareResult] = []
        var engines: [Engine] = []
        // The allocation counter is read when the last worker has set up (the barrier) and when
        // the last has finished: the timed loops only, not the copies of the shares before them.
        let barrier = StartBarrier(parties: workers, mallocCount: mallocCount)
        if workers == 1 {
            engines = [engine]
            shares = [runShare(captures, engine: engine, progress: progress, barrier: barrier)]
        } else {
            // One engine per worker (as the live daemon's workers have), each on its share; all
            // start together behind a barrier, so the shares run in parallel.
            let parts = (0..<workers).map { captures.share($0, of: workers) }
            // Each with a replica of the topology, as the live workers have.
            engines = (0..<workers).map { _ in
                Engine(topology: engine.topology.replica(), configuration: engine.configuration)
            }
            let results = Mutex<[ShareResult]>(Array(repeating: ShareResult(), count: workers))
            let done = Atomic<Int>(0)
            /// What one thread owns (handed over once; nothing is shared while it runs).
            struct WorkerInput: @unchecked Sendable {
                let bench: Bench
                let part: LoadedCaptures
                let engine: Engine
                let progress: ProgressReporter?
                let barrier: StartBarrier
            }
            for w in 0..<workers {
                let input = WorkerInput(
                    bench: self, part: parts[w], engine: engines[w], progress: w == 0 ? progress : nil,
                    barrier: barrier)
                let t = Thread {
                    let r = input.bench.runShare(
                        input.part, engine: input.engine, progress: input.progress,
                        barrier: input.barrier)
                    results.withLock { $0[w] = r }
                    done.add(1, ordering: .releasing)
                }
                t.start()
            }
            while done.load(ordering: .acquiring) < workers { usleep(1_000) }
            shares = results.withLock { $0 }
        }
        let mallocsAfter = mallocCount?() ?? 0
        progress?.finish(packets: shares.reduce(0) { $0 + $1.packets })
        result.passes = shares.map(\.passes).max() ?? 0
        result.packets = shares.reduce(0) { $0 + $1.packets }
        result.bytes = shares.reduce(0) { $0 + $1.bytes }
        let start = shares.map(\.start).min() ?? 0
        let end = shares.map(\.end).max() ?? 0
        result.seconds = Double(end &- start) / 1e9
        result.emittedUnderlay = shares.reduce(0) { $0 + $1.underlayOut }
        result.emittedTUN = shares.reduce(0) { $0 + $1.tunOut }
        result.perWorker = shares.map { ($0.packets, Double($0.end &- $0.start) / 1e9) }
        var counters = engines[0].counterSnapshot
        for e in engines.dropFirst() { counters.add(e.counterSnapshot) }
        result.counters = counters
        if mallocCount != nil { result.mallocs = mallocsAfter &- barrier.mallocsAtStart.load(ordering: .acquiring) }
        return result
    }

    /// One worker's loop over its captures (the single-threaded bench is one share of all).
    ///
    /// A plain loop over pointers taken once: no closure captures its state, so the loop pays
    /// no dynamic exclusivity checks (a nested function capturing the counters did, ~15 ns per
    /// packet under callgrind).
    ///
    /// With `barrier`, the timed loop starts when every worker has copied its share, so the
    /// workers' timed loops overlap and no copy runs beside another worker's loop.
    func runShare(
        _ captures: LoadedCaptures, engine: Engine, progress: ProgressReporter?,
        barrier: StartBarrier? = nil
    ) -> ShareResult {
        var share = ShareResult()
        let n = captures.count
        guard n > 0 else {
            // An empty share still arrives, or the others would wait for it.
            barrier?.arriveAndWait()
            return share
        }
        let batchSize = max(1, options.batchSize)
        var feeder = EngineFeeder(engine: engine, batchSize: batchSize)
        let stage = OutputStage(offloads: options.offloads, batchSize: batchSize)
        let recorder =
            options.recordBufferBytes > 0
            ? PacketRecorder(
                bytesPerSide: options.recordBufferBytes / max(1, options.workers) / 2, batchCapacity: batchSize)
            : nil
        let step = captures.span + 1_000
        let base = captures.first.totalNanoseconds
        let deadline = options.iterations == nil ? UInt64(options.duration * 1e9) : 0
        let passLimit = options.iterations ?? Int.max
        // The capture, copied once into memory the loop reads through plain pointers.
        let slab = UnsafeMutableRawPointer.allocate(byteCount: max(1, captures.bytes.count), alignment: 64)
        let offsets = UnsafeMutablePointer<Int>.allocate(capacity: n)
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: n)
        let directions = UnsafeMutablePointer<PacketDirection>.allocate(capacity: n)
        let offloads = UnsafeMutablePointer<SegmentationOffload>.allocate(capacity: n)
        let times = UnsafeMutablePointer<Int64>.allocate(capacity: n)
        defer {
            slab.deallocate()
            offsets.deallocate()
            lengths.deallocate()
            directions.deallocate()
            offloads.deallocate()
            times.deallocate()
        }
        captures.bytes.withUnsafeBytes { slab.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        offsets.initialize(from: captures.offsets, count: n)
        lengths.initialize(from: captures.lengths, count: n)
        directions.initialize(from: captures.directions, count: n)
        offloads.initialize(from: captures.offloads, count: n)
        times.initialize(from: captures.relativeTimes, count: n)

        var loop = LoopCounters()
        barrier?.arriveAndWait()
        let start = Self.now()
        while share.passes < passLimit && !loop.stop {
            let offset = base &+ Int64(share.passes) &* step
            share.passes &+= 1
            var i = 0
            while i < n {
                let d = directions[i]
                if feeder.mustProcess(before: d) {
                    Self.process(
                        &feeder, stage, &loop, recorder, start: start, deadline: deadline,
                        progressTotal: passLimit &* n, progress: progress)
                    if loop.stop { break }
                }
                let t = offset &+ times[i]
                let length = lengths[i]
                feeder.append(
                    UnsafeRawBufferPointer(start: slab + offsets[i], count: length), direction: d, origin: i,
                    time: Timestamp(seconds: t / 1_000_000_000, nanoseconds: UInt32(t % 1_000_000_000)),
                    offload: offloads[i])
                share.bytes &+= length
                i &+= 1
                if feeder.batch.isFull {
                    Self.process(
                        &feeder, stage, &loop, recorder, start: start, deadline: deadline,
                        progressTotal: passLimit &* n, progress: progress)
                    if loop.stop { break }
                }
            }
            // Packets still pending are processed before the pass ends, as at the end of a replay.
            if feeder.batch.count > 0 {
                Self.process(
                    &feeder, stage, &loop, recorder, start: start, deadline: deadline,
                    progressTotal: passLimit &* n, progress: progress)
            }
        }
        share.end = Self.now()
        share.start = start
        share.packets = loop.packets
        share.underlayOut = loop.underlayOut
        share.tunOut = loop.tunOut
        return share
    }

    /// Holds every worker until all have arrived (a spin: the wait is the length of a copy).
    /// The last to arrive reads the allocation counter before it lets everyone go.
    final class StartBarrier: @unchecked Sendable {
        let arrived = Atomic<Int>(0)
        let released = Atomic<Bool>(false)
        let mallocsAtStart = Atomic<UInt64>(0)
        let parties: Int
        let mallocCount: (() -> UInt64)?
        init(parties: Int, mallocCount: (() -> UInt64)?) {
            self.parties = parties
            self.mallocCount = mallocCount
        }
        func arriveAndWait() {
            if arrived.add(1, ordering: .acquiringAndReleasing).newValue == parties {
                mallocsAtStart.store(mallocCount?() ?? 0, ordering: .releasing)
                released.store(true, ordering: .releasing)
            }
            while !released.load(ordering: .acquiring) { sched_yield() }
        }
    }

    /// The loop's running totals.
    struct LoopCounters {
        var underlayOut = 0
        var tunOut = 0
        var batches = 0
        var packets = 0
        var stop = false
    }

    /// Runs the feeder's batch, counts what leaves (through the devices' output stage when it is
    /// on), empties the batch, and every 16 batches checks the deadline and reports progress.
    @inline(__always)
    static func process(
        _ feeder: inout EngineFeeder, _ stage: borrowing OutputStage, _ c: inout LoopCounters,
        _ recorder: PacketRecorder?, start: UInt64, deadline: UInt64, progressTotal: Int, progress: ProgressReporter?
    ) {
        let egress = feeder.direction == .tun
        recorder?.record(feeder.batch, egress: egress, scalars: feeder.engine.scalarState)
        feeder.process()
        recorder?.patch(feeder.verdicts, count: feeder.batch.count, egress: egress)
        if stage.offloads {
            // As the devices write them: segments, coalesced super-packets.
            stage.prepare(feeder.batch, direction: feeder.direction)
            var underlay = 0
            var tun = 0
            for i in 0..<feeder.batch.count {
                stage.forEachRecord(of: feeder.batch, i) { _, side in
                    if side == .underlay { underlay &+= 1 } else { tun &+= 1 }
                }
            }
            c.underlayOut &+= underlay
            c.tunOut &+= tun
        } else {
            for i in 0..<feeder.batch.count {
                switch feeder.batch.side(of: i) {
                case .underlay: c.underlayOut &+= 1
                case .tun: c.tunOut &+= 1
                case .none: break
                }
            }
        }
        for g in 0..<feeder.generated.count {
            if feeder.generated.side(of: g) == .underlay { c.underlayOut &+= 1 } else { c.tunOut &+= 1 }
        }
        c.packets &+= feeder.batch.count
        feeder.batch.removeAll()
        c.batches &+= 1
        if c.batches & 15 == 0 {
            let elapsed = now() &- start
            if deadline > 0 && elapsed >= deadline { c.stop = true }
            if let progress {
                if deadline > 0 {
                    progress.update(
                        done: Int(elapsed / 1_000_000), total: Int(deadline / 1_000_000), packets: c.packets)
                } else {
                    progress.update(done: c.packets, total: progressTotal, packets: c.packets)
                }
            }
        }
    }
}

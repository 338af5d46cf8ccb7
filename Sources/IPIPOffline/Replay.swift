import IPIPCore
import Pcap

#if canImport(Glibc)
import Glibc
#endif

/// What `ipipd replay` is asked to do.
public struct ReplayOptions: Sendable {
    /// Capture of packets from local workloads (what the TUN would deliver).
    public var input: String
    /// Capture of packets arriving on the underlay (what the uplink would deliver), merged with
    /// `input` by timestamp.
    public var underlayInput: String?
    /// Every packet the engine emits, whichever side it leaves on (raw-IP pcap).
    public var output: String?
    /// Only what goes to the underlay (the raw socket).
    public var underlayOutput: String?
    /// Only what goes back into the TUN (ICMP errors toward workloads).
    public var tunOutput: String?
    /// One JSON object per input packet.
    public var verdicts: String?
    /// Packets per engine batch.
    public var batchSize: Int
    /// Treat the TUN as the live daemon opens it, with virtio headers and TSO/USO: packets toward
    /// the TUN are coalesced (`TUNCoalescer`) and every output capture is written with link type
    /// 147 (`LinkType.virtioNet`: each record a virtio header and the packet), super-packets whole.
    /// Without it, a super-packet toward the TUN is written as its segments, as a plain TUN takes it.
    /// Inputs of link type 147 are honoured either way (a `GSO_*` header makes a super-packet).
    public var offloads: Bool

    public init(
        input: String, underlayInput: String? = nil, output: String? = nil, underlayOutput: String? = nil,
        tunOutput: String? = nil,
        verdicts: String? = nil, batchSize: Int = 64, offloads: Bool = false
    ) {
        self.offloads = offloads
        self.input = input
        self.underlayInput = underlayInput
        self.output = output
        self.underlayOutput = underlayOutput
        self.tunOutput = tunOutput
        self.verdicts = verdicts
        self.batchSize = batchSize
    }
}

/// A failure of the replay as a whole (not of a packet: those are verdicts).
public struct ReplayError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Totals of one replay.
public struct ReplaySummary: Sendable {
    /// Records read from the captures.
    public var packetsIn = 0
    /// Of which from the underlay capture.
    public var underlayPacketsIn = 0
    /// Records that were not IPv4, by protocol name (`ipv6`, `arp`, `ethertype 0x…`).
    public var skipped: [String: Int] = [:]
    /// The engine's counters at the end.
    public var counters: EngineCounters?
    /// Packets written per side.
    public var emittedUnderlay = 0
    public var emittedTUN = 0

    /// A human-readable report, one fact per line.
    public func report(input: String, node: String, topology: Topology) -> String {
        var lines: [String] = []
        let skippedTotal = skipped.values.reduce(0, +)
        lines.append(
            "replay of \(input) as \(node): \(packetsIn) packets in"
                + (underlayPacketsIn > 0 ? " (\(underlayPacketsIn) from the underlay)" : "")
                + " (tunnel MTU \(topology.tunnelMTU), \(topology.nodes.count) nodes, \(topology.pools.count) pools)")
        if skippedTotal > 0 {
            let detail = skipped.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append("  skipped, not IPv4:  \(skippedTotal) (\(detail))")
        }
        if let c = counters {
            // Egress actions always, the others when they happened.
            for a in VerdictAction.allCases where a != .dropped {
                if a == .encapsulated || a == .forwarded || c.packets(a) > 0 {
                    lines.append("  " + pad(a.name + ":", 20) + "\(c.packets(a))")
                }
            }
            lines.append("  " + pad("dropped:", 20) + "\(c.packets(.dropped))")
            for r in DropReason.allCases where (c.drops[r] ?? 0) > 0 {
                lines.append("    " + pad(r.name, 28) + "\(c.drops[r]!)")
            }
            lines.append(
                "  emitted:            \(emittedUnderlay) to the underlay, \(emittedTUN) into the TUN "
                    + "(\(c.fragmentsCreated) fragments, \(c.icmpErrorsSent) ICMP errors, \(c.icmpRateLimited) rate-limited)"
            )
        }
        return lines.joined(separator: "\n")
    }

    func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
    }
}

/// One engine fed a batch at a time, each batch from one side: the rule `ipipd replay` and
/// `ipipd bench` share, so both run exactly the same engine and batch code. A packet from the
/// other side than the pending batch's waits until that batch is processed (`mustProcess`), so
/// state such as NAT sessions sees packets in arrival order.
struct EngineFeeder: ~Copyable {
    let engine: Engine
    /// Inputs; after `process()`, the outputs in place (each slot's side says where it goes).
    var batch: PacketBatch
    /// Packets the engine created for the last batch (fragments, ICMP errors), in input order.
    var generated: PacketBatch
    var verdicts: VerdictBatch
    /// The side the packets in `batch` came from.
    private(set) var direction = PacketDirection.tun

    init(engine: Engine, batchSize: Int) {
        self.engine = engine
        batch = PacketBatch(capacity: batchSize)
        generated = PacketBatch(
            capacity: batchSize * 48,
            maximumPacketByteCount: min(PacketBatch.maximumPacketByteCount, engine.topology.tunnelMTU + 20))
        verdicts = VerdictBatch(capacity: batchSize)
    }

    /// Whether the pending batch must be processed before a packet from `side` can be added.
    func mustProcess(before side: PacketDirection) -> Bool { batch.count > 0 && side != direction }

    /// Copies a packet into the batch, as a device read would. A packet longer than a slot
    /// cannot be a valid IPv4 datagram: it is cut to the slot and its header check fails.
    /// - Precondition: `!batch.isFull` and `!mustProcess(before: side)`.
    @inline(__always)
    mutating func append(
        _ bytes: UnsafeRawBufferPointer, direction side: PacketDirection, origin: Int, time: Timestamp,
        offload: SegmentationOffload = .none
    ) {
        direction = side
        batch.append(
            copying: UnsafeRawBufferPointer(rebasing: bytes.prefix(batch.maximumPacketByteCount)),
            origin: origin, time: time)
        if offload != .none { batch.setOffload(offload, of: batch.count &- 1) }
    }

    /// Runs the engine over the batch; the caller reads the outputs, then empties the batch.
    mutating func process() {
        switch direction {
        case .tun: engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
        case .underlay: engine.processIngress(&batch, generated: &generated, verdicts: &verdicts)
        }
    }
}

/// What the live daemon's device writers do with the engine's outputs, for the offline tools:
/// an underlay super-packet leaves as its segments (`Segmenter`, as `LinuxDatapath` writes them
/// into transmit frames); toward the TUN, with `offloads`, the uplink batch is coalesced first
/// (`TUNCoalescer`) and a super-packet is written whole behind its virtio header (as `TUNDevice`
/// writes it), without `offloads` a super-packet is written as its segments.
///
/// Records handed out carry a virtio header (10 bytes, `VirtioNetHeader`) when `offloads` is on,
/// and are bare IPv4 packets otherwise; they point into a scratch buffer valid until the next call.
struct OutputStage: ~Copyable {
    let offloads: Bool
    let coalescer: TUNCoalescer?
    let scratch: UnsafeMutableRawPointer
    static let scratchByteCount = 65536 + 64

    init(offloads: Bool, batchSize: Int) {
        self.offloads = offloads
        coalescer = offloads ? TUNCoalescer(batchCapacity: batchSize, coalescesUDP: true) : nil
        scratch = .allocate(byteCount: Self.scratchByteCount, alignment: 64)
    }

    deinit { scratch.deallocate() }

    /// Runs the coalescer over a batch that came from the underlay (before its outputs are read).
    func prepare(_ batch: borrowing PacketBatch, direction: PacketDirection) {
        if direction == .underlay { coalescer?.coalesce(batch) }
    }

    /// The slot packet `i` was merged into, when the coalescer merged it.
    func mergedInto(_ i: Int) -> Int? { coalescer?.mergedInto(i) }

    /// Calls `body` with every record slot `i` of `batch` puts on a device, in order.
    @inline(__always)
    func forEachRecord(of batch: borrowing PacketBatch, _ i: Int, _ body: (UnsafeRawBufferPointer, PacketSide) -> Void)
    {
        let side = batch.side(of: i)
        guard side != .none else { return }
        let packet = batch.packet(i)
        let offload = batch.offload(of: i)
        let header = offloads ? VirtioNetHeader.byteCount : 0
        if offload.isSegmented && (side == .underlay || !offloads) {
            guard let layout = Segmenter.layout(of: UnsafeRawBufferPointer(packet), offload: offload) else { return }
            if header > 0 { VirtioNetHeader().store(to: scratch) }
            for k in 0..<layout.segmentCount {
                let n = Segmenter.writeSegment(
                    k, of: UnsafeRawBufferPointer(packet), layout: layout, offload: offload,
                    to: scratch + header)
                body(UnsafeRawBufferPointer(start: scratch, count: n &+ header), side)
            }
            return
        }
        guard header > 0 else {
            body(UnsafeRawBufferPointer(packet), side)
            return
        }
        let v = side == .tun ? VirtioNetHeader.preparingTransmit(of: packet, offload: offload) : VirtioNetHeader()
        v.store(to: scratch)
        // Safe: a packet is at most 65,535 bytes, the scratch buffer holds it and its header.
        (scratch + header).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
        body(UnsafeRawBufferPointer(start: scratch, count: packet.count &+ header), side)
    }
}

/// Which side of the node a packet arrives on.
public enum PacketDirection: String, Sendable {
    /// From local workloads, through the TUN (egress processing).
    case tun
    /// From the network, on the uplink (ingress processing).
    case underlay
}

/// `ipipd replay`: runs captures through the engine: `--in` as traffic from local workloads (the
/// TUN side), `--underlay-in` as traffic arriving on the uplink, merged by timestamp (a tie goes
/// to the TUN side first).
///
/// Pipeline: libpcap readers → the next record by time → copy into a `PacketBatch` for its
/// direction (a batch holds one direction; it is processed when full or when the direction
/// changes, so state such as NAT sessions sees packets in capture order) → `Engine.processEgress`
/// or `processIngress` → for each input in order, its in-place output and then the packets
/// generated for it → pcap writers and the verdict file. Non-IPv4 records are counted and skipped.
/// Each output carries its input packet's timestamp; the engine's clock is the captures'.
///
/// A truncated or corrupt capture stops the replay with an error naming the file and packet
/// index, after everything before it (in time order) has been processed and written.
public final class Replay {
    let engine: Engine
    let options: ReplayOptions
    let progress: ProgressReporter?
    /// Called with every IPv4 input's verdict, in processing order: its side, its index in its
    /// capture, and the verdict (the flight-recording check collects them).
    public var verdictObserver: ((PacketDirection, Int, PacketVerdict) -> Void)?

    public init(engine: Engine, options: ReplayOptions, progress: ProgressReporter? = nil) {
        self.engine = engine
        self.options = options
        self.progress = progress
    }

    public func run() throws -> ReplaySummary {
        let captures = try MergedCaptures(input: options.input, underlayInput: options.underlayInput)
        let linkType: LinkType = options.offloads ? .virtioNet : .raw
        func open(_ path: String?) throws -> PcapWriter? {
            guard let path else { return nil }
            do { return try PcapWriter(path: path, linkType: linkType) } catch { throw ReplayError(error.description) }
        }
        let all = try open(options.output)
        let underlay = try open(options.underlayOutput)
        let tun = try open(options.tunOutput)
        var verdictFile: UnsafeMutablePointer<FILE>?
        if let path = options.verdicts {
            guard let f = fopen(path, "w") else {
                throw ReplayError("cannot write \(path): \(String(cString: strerror(errno)))")
            }
            verdictFile = f
        }
        defer {
            if let f = verdictFile { fclose(f) }
        }

        var summary = ReplaySummary()
        let batchSize = max(1, options.batchSize)
        var feeder = EngineFeeder(engine: engine, batchSize: batchSize)
        let stage = OutputStage(offloads: options.offloads, batchSize: batchSize)
        let recordHeader = options.offloads ? VirtioNetHeader.byteCount : 0
        // Capture index of each batch slot, so verdicts name the packet's place in its file.
        var captureIndex = [Int](repeating: 0, count: batchSize)
        // Verdict lines of skipped (non-IPv4) records, keyed by the batch slot they precede, so the
        // verdict file stays in time order.
        var skippedLines: [(beforeSlot: Int, line: String)] = []
        var fileBytesSeen = 0
        let fileSize = captures.sources.reduce(0) { $0 + Self.fileSize($1.reader.path) }

        func writeLine(_ s: String) {
            guard let f = verdictFile else { return }
            fputs(s, f)
            fputc(0x0A, f)
        }

        func emit(_ bytes: UnsafeRawBufferPointer, side: PacketSide, time: Timestamp) {
            all?.write(bytes, timestamp: time)
            switch side {
            case .underlay:
                underlay?.write(bytes, timestamp: time)
                summary.emittedUnderlay += 1
            case .tun:
                tun?.write(bytes, timestamp: time)
                summary.emittedTUN += 1
            case .none:
                break
            }
        }

        func flush() {
            feeder.process()
            let direction = feeder.direction
            stage.prepare(feeder.batch, direction: direction)
            var g = 0
            var s = 0
            for i in 0...feeder.batch.count {
                while s < skippedLines.count && skippedLines[s].beforeSlot == i {
                    writeLine(skippedLines[s].line)
                    s += 1
                }
                guard i < feeder.batch.count else { break }
                verdictObserver?(direction, captureIndex[i], feeder.verdicts[i])
                let time = feeder.batch.time(of: i)
                var outputs: [String] = []
                stage.forEachRecord(of: feeder.batch, i) { record, side in
                    emit(record, side: side, time: time)
                    if verdictFile != nil {
                        outputs.append(
                            Self.outputJSON(
                                UnsafeRawBufferPointer(rebasing: record[recordHeader...]), side: side,
                                segmentSize: recordHeader > 0 ? Self.segmentSize(record) : 0))
                    }
                }
                if verdictFile != nil, let head = stage.mergedInto(i) {
                    outputs.append("{\"side\":\"tun\",\"merged_into\":\(captureIndex[head])}")
                }
                while g < feeder.generated.count && feeder.generated.origin(of: g) == i {
                    stage.forEachRecord(of: feeder.generated, g) { record, side in
                        emit(record, side: side, time: time)
                        if verdictFile != nil {
                            outputs.append(
                                Self.outputJSON(UnsafeRawBufferPointer(rebasing: record[recordHeader...]), side: side))
                        }
                    }
                    g += 1
                }
                if verdictFile != nil {
                    writeLine(
                        Self.verdictJSON(
                            input: direction, index: captureIndex[i], time: time,
                            verdict: feeder.verdicts[i], outputs: outputs))
                }
            }
            feeder.batch.removeAll()
            skippedLines.removeAll(keepingCapacity: true)
        }

        while let (source, record) = captures.next() {
            summary.packetsIn += 1
            if source.direction == .underlay { summary.underlayPacketsIn += 1 }
            fileBytesSeen += 16 + record.capturedLength
            if record.networkProtocol == .ipv4 {
                if feeder.mustProcess(before: source.direction) { flush() }
                captureIndex[feeder.batch.count] = record.index
                record.bytes.withUnsafeBytes { b in
                    feeder.append(
                        b, direction: source.direction, origin: record.index, time: record.timestamp,
                        offload: record.offload)
                }
                if feeder.batch.isFull { flush() }
            } else {
                let name: String
                switch record.networkProtocol {
                case .ipv6: name = "ipv6"
                case .arp: name = "arp"
                default: name = record.networkProtocol.description
                }
                summary.skipped[name, default: 0] += 1
                if verdictFile != nil {
                    skippedLines.append(
                        (
                            feeder.batch.count,
                            "{\"input\":\"\(source.direction.rawValue)\",\"index\":\(record.index),"
                                + "\"time\":\"\(record.timestamp)\",\"verdict\":\"skipped\",\"reason\":\(jsonString(name))}"
                        ))
                }
            }
            progress?.update(done: fileBytesSeen, total: fileSize, packets: summary.packetsIn)
        }
        flush()
        progress?.finish(packets: summary.packetsIn)
        summary.counters = engine.counterSnapshot
        var failure: ReplayError? = captures.failure.map { ReplayError($0.description) }
        for w in [all, underlay, tun] {
            do { try w?.close() } catch { failure = failure ?? ReplayError(error.description) }
        }
        if let f = verdictFile {
            verdictFile = nil
            if fclose(f) != 0 {
                failure =
                    failure
                    ?? ReplayError("cannot write \(options.verdicts ?? ""): \(String(cString: strerror(errno)))")
            }
        }
        if let failure { throw failure }
        return summary
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    /// One output of a verdict line; `segmentSize` (a TUN super-packet's) is listed when not 0.
    static func outputJSON(_ p: UnsafeRawBufferPointer, side: PacketSide, segmentSize: Int = 0) -> String {
        "{\"side\":\"\(side)\",\"length\":\(p.count)" + (segmentSize > 0 ? ",\"segment_size\":\(segmentSize)" : "")
            + ",\"summary\":\(jsonString(PacketSummary.describe(p)))}"
    }

    /// The GSO segment size a record's virtio header announces (0: none).
    static func segmentSize(_ record: UnsafeRawBufferPointer) -> Int {
        let h = VirtioNetHeader(loadingFrom: record.baseAddress!)
        return h.gsoType == VirtioNetHeader.gsoNone ? 0 : Int(h.gsoSize)
    }

    static func verdictJSON(
        input: PacketDirection, index: Int, time: Timestamp, verdict v: PacketVerdict,
        outputs: [String]
    ) -> String {
        var s =
            "{\"input\":\"\(input.rawValue)\",\"index\":\(index),\"time\":\"\(time)\",\"verdict\":\"\(v.action.name)\""
        if let r = v.dropReason { s += ",\"reason\":\"\(r.name)\"" }
        if v.action == .encapsulated || v.action == .decapsulated { s += ",\"peer\":\"\(v.peer)\"" }
        if let t = v.icmpType { s += ",\"icmp\":{\"type\":\(t),\"code\":\(v.icmpCode)}" }
        s += ",\"outputs\":[" + outputs.joined(separator: ",") + "]}"
        return s
    }
}

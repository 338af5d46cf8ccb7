#if canImport(Glibc)
import Glibc
#endif
import IPIPCore
import Pcap

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

    init(input: String, underlayInput: String?) throws {
        var sources = [try LookaheadCapture(path: input, direction: .tun)]
        if let u = underlayInput { sources.append(try LookaheadCapture(path: u, direction: .underlay)) }
        var times: [Int64] = []
        while true {
            var pick: LookaheadCapture?
            for source in sources {
                guard let r = source.next else { continue }
                if pick == nil || r.timestamp < pick!.next!.timestamp { pick = source }
            }
            guard let source = pick, let record = source.take() else { break }
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
        if let failure = sources.lazy.compactMap(\.failure).first { throw ReplayError(failure.description) }
        guard let t0 = times.first else { throw ReplayError("no IPv4 packets in \(input)" + (underlayInput.map { " or \($0)" } ?? "")) }
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
        lines.append("bench of \(input) as \(node): \(capturePackets) IPv4 packets per pass (\(captureBytes) bytes)"
            + (skippedPerPass > 0 ? ", \(skippedPerPass) non-IPv4 skipped" : "") + ", batch \(batchSize)")
        lines.append("  passes:             \(passes)")
        lines.append("  packets:            \(packets) in \(fmt(seconds, 3)) s")
        lines.append("  rate:               \(fmt(packetsPerSecond / 1e6, 3)) Mpps, \(fmt(gigabitsPerSecond, 3)) Gbit/s (input bytes), "
            + "\(fmt(nanosecondsPerPacket, 1)) ns/packet")
        if let m = mallocs, let per = mallocsPerPacket {
            lines.append("  allocations:        \(m) during the timed loop (\(fmt(per, 6)) per packet)")
        } else {
            lines.append("  allocations:        not counted in this process (see Benchmarks/ for per-packet malloc counts)")
        }
        if let c = counters {
            for a in VerdictAction.allCases where c.packets(a) > 0 {
                let share = packets > 0 ? Double(c.packets(a)) * 100 / Double(packets) : 0
                lines.append("  " + pad(a.name + ":", 20) + "\(c.packets(a)) (\(fmt(share, 1)) %)")
            }
            for (r, n) in topDrops.prefix(5) { lines.append("    " + pad(r.name, 28) + "\(n)") }
        }
        lines.append("  emitted:            \(emittedUnderlay) to the underlay, \(emittedTUN) into the TUN (counted, not written"
            + (offloads ? "; as the devices take them: segments and coalesced super-packets)" : ")"))
        if let c = counters, c.superPacketsIn > 0 { lines.append("  super-packets:      \(c.superPacketsIn) taken whole") }
        return lines.joined(separator: "\n")
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

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
        if let c = counters {
            s += ",\"verdicts\":{" + VerdictAction.allCases.map { "\"\($0.name)\":\(c.packets($0))" }.joined(separator: ",") + "}"
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
    public init(engine: Engine, options: BenchOptions, progress: ProgressReporter? = nil,
                mallocCount: (() -> UInt64)? = nil) throws {
        self.engine = engine
        self.options = options
        self.progress = progress
        self.mallocCount = mallocCount
        captures = try LoadedCaptures(input: options.input, underlayInput: options.underlayInput)
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    public func run() -> BenchResult {
        var result = BenchResult()
        let n = captures.count
        result.capturePackets = n
        result.captureBytes = captures.lengths.reduce(0, +)
        result.skippedPerPass = captures.skipped
        result.batchSize = max(1, options.batchSize)
        result.offloads = options.offloads
        var feeder = EngineFeeder(engine: engine, batchSize: result.batchSize)
        let stage = OutputStage(offloads: options.offloads, batchSize: result.batchSize)
        let withStage = options.offloads
        let step = captures.span + 1_000
        let base = captures.first.totalNanoseconds
        let deadline = options.iterations == nil ? UInt64(options.duration * 1e9) : 0
        let passLimit = options.iterations ?? Int.max
        var underlayOut = 0
        var tunOut = 0
        var batches = 0
        var packets = 0
        var bytes = 0
        var passes = 0
        var stop = false

        let mallocsBefore = mallocCount?() ?? 0
        let start = Self.now()
        captures.bytes.withUnsafeBytes { slab in
            captures.offsets.withUnsafeBufferPointer { offsets in
                captures.lengths.withUnsafeBufferPointer { lengths in
                    captures.directions.withUnsafeBufferPointer { directions in
                      captures.offloads.withUnsafeBufferPointer { offloads in
                        captures.relativeTimes.withUnsafeBufferPointer { times in
                            func process() {
                                feeder.process()
                                if withStage {
                                    // As the devices write them: segments, coalesced super-packets.
                                    stage.prepare(feeder.batch, direction: feeder.direction)
                                    for i in 0..<feeder.batch.count {
                                        stage.forEachRecord(of: feeder.batch, i) { _, side in
                                            if side == .underlay { underlayOut &+= 1 } else { tunOut &+= 1 }
                                        }
                                    }
                                } else {
                                    for i in 0..<feeder.batch.count {
                                        switch feeder.batch.side(of: i) {
                                        case .underlay: underlayOut &+= 1
                                        case .tun: tunOut &+= 1
                                        case .none: break
                                        }
                                    }
                                }
                                for g in 0..<feeder.generated.count {
                                    if feeder.generated.side(of: g) == .underlay { underlayOut &+= 1 } else { tunOut &+= 1 }
                                }
                                packets &+= feeder.batch.count
                                feeder.batch.removeAll()
                                batches &+= 1
                                if batches & 15 == 0 {
                                    let elapsed = Self.now() &- start
                                    if deadline > 0 && elapsed >= deadline { stop = true }
                                    if let progress {
                                        if deadline > 0 {
                                            progress.update(done: Int(elapsed / 1_000_000), total: Int(deadline / 1_000_000), packets: packets)
                                        } else {
                                            progress.update(done: packets, total: passLimit &* n, packets: packets)
                                        }
                                    }
                                }
                            }
                            while passes < passLimit && !stop {
                                let offset = base &+ Int64(passes) &* step
                                passes &+= 1
                                var i = 0
                                while i < n {
                                    let d = directions[i]
                                    if feeder.mustProcess(before: d) {
                                        process()
                                        if stop { break }
                                    }
                                    let t = offset &+ times[i]
                                    let length = lengths[i]
                                    feeder.append(UnsafeRawBufferPointer(rebasing: slab[offsets[i]..<(offsets[i] &+ length)]),
                                                  direction: d, origin: i,
                                                  time: Timestamp(seconds: t / 1_000_000_000, nanoseconds: UInt32(t % 1_000_000_000)),
                                                  offload: offloads[i])
                                    bytes &+= length
                                    i &+= 1
                                    if feeder.batch.isFull {
                                        process()
                                        if stop { break }
                                    }
                                }
                                // Packets still pending are processed before the pass ends, as
                                // at the end of a replay.
                                if feeder.batch.count > 0 { process() }
                            }
                        }
                      }
                    }
                }
            }
        }
        let end = Self.now()
        let mallocsAfter = mallocCount?() ?? 0
        progress?.finish(packets: packets)
        result.passes = passes
        result.packets = packets
        result.bytes = bytes
        result.seconds = Double(end &- start) / 1e9
        result.emittedUnderlay = underlayOut
        result.emittedTUN = tunOut
        result.counters = engine.counterSnapshot
        if mallocCount != nil { result.mallocs = mallocsAfter &- mallocsBefore }
        return result
    }
}

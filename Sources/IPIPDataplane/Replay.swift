#if canImport(Glibc)
import Glibc
#endif
import IPIPCore
import Pcap

/// What `ipipd replay` is asked to do.
public struct ReplayOptions: Sendable {
    /// Capture of packets from local workloads (what the TUN would deliver).
    public var input: String
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

    public init(input: String, output: String? = nil, underlayOutput: String? = nil, tunOutput: String? = nil,
                verdicts: String? = nil, batchSize: Int = 64) {
        self.input = input
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
    /// Records read from the capture.
    public var packetsIn = 0
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
        lines.append("replay of \(input) as \(node): \(packetsIn) packets in "
            + "(tunnel MTU \(topology.tunnelMTU), \(topology.nodes.count) nodes, \(topology.pools.count) pools)")
        if skippedTotal > 0 {
            let detail = skipped.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append("  skipped, not IPv4:  \(skippedTotal) (\(detail))")
        }
        if let c = counters {
            for a in [VerdictAction.encapsulated, .forwarded, .dropped] {
                lines.append("  " + pad(a.name + ":", 20) + "\(c.packets(a))")
                if a == .dropped {
                    for r in DropReason.allCases where (c.drops[r] ?? 0) > 0 {
                        lines.append("    " + pad(r.name, 28) + "\(c.drops[r]!)")
                    }
                }
            }
            lines.append("  emitted:            \(emittedUnderlay) to the underlay, \(emittedTUN) into the TUN "
                + "(\(c.fragmentsCreated) fragments, \(c.icmpErrorsSent) ICMP errors, \(c.icmpRateLimited) rate-limited)")
        }
        return lines.joined(separator: "\n")
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
}

/// `ipipd replay`: runs a capture through the engine as traffic from local workloads.
///
/// Pipeline: libpcap reader → copy into a `PacketBatch` (non-IPv4 records are counted and
/// skipped) → `Engine.processEgress` → for each input in order, its in-place output and then the
/// packets generated for it → pcap writers and the verdict file. Each output carries the input
/// packet's timestamp; the engine's clock is the capture's.
///
/// A truncated or corrupt capture stops the replay with an error naming the packet index, after
/// everything before it has been processed and written.
public final class Replay {
    let engine: Engine
    let options: ReplayOptions
    let progress: ProgressReporter?

    public init(engine: Engine, options: ReplayOptions, progress: ProgressReporter? = nil) {
        self.engine = engine
        self.options = options
        self.progress = progress
    }

    public func run() throws -> ReplaySummary {
        let reader: PcapReader
        do { reader = try PcapReader(path: options.input) } catch { throw ReplayError(error.description) }
        func open(_ path: String?) throws -> PcapWriter? {
            guard let path else { return nil }
            do { return try PcapWriter(path: path, linkType: .raw) } catch { throw ReplayError(error.description) }
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
        var batch = PacketBatch(capacity: batchSize)
        var generated = PacketBatch(capacity: batchSize * 48,
                                    maximumPacketByteCount: min(PacketBatch.maximumPacketByteCount,
                                                                engine.topology.tunnelMTU + 20))
        var verdicts = VerdictBatch(capacity: batchSize)
        // Capture index of each batch slot, so verdicts name the packet's place in the file.
        var captureIndex = [Int](repeating: 0, count: batchSize)
        // Verdict lines of skipped (non-IPv4) records, keyed by the batch slot they precede, so the
        // verdict file stays in capture order.
        var skippedLines: [(beforeSlot: Int, line: String)] = []
        var fileBytesSeen = 0
        let fileSize = Self.fileSize(options.input)

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
            engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
            var g = 0
            var s = 0
            for i in 0...batch.count {
                while s < skippedLines.count && skippedLines[s].beforeSlot == i {
                    writeLine(skippedLines[s].line)
                    s += 1
                }
                guard i < batch.count else { break }
                let time = batch.time(of: i)
                var outputs: [String] = []
                if batch.side(of: i) != .none {
                    let p = UnsafeRawBufferPointer(batch.packet(i))
                    emit(p, side: batch.side(of: i), time: time)
                    if verdictFile != nil { outputs.append(Self.outputJSON(p, side: batch.side(of: i))) }
                }
                while g < generated.count && generated.origin(of: g) == i {
                    let p = UnsafeRawBufferPointer(generated.packet(g))
                    emit(p, side: generated.side(of: g), time: time)
                    if verdictFile != nil { outputs.append(Self.outputJSON(p, side: generated.side(of: g))) }
                    g += 1
                }
                if verdictFile != nil {
                    writeLine(Self.verdictJSON(index: captureIndex[i], time: time, verdict: verdicts[i], outputs: outputs))
                }
            }
            batch.removeAll()
            skippedLines.removeAll(keepingCapacity: true)
        }

        var failure: ReplayError?
        while true {
            let more: Bool?
            do {
                more = try reader.readNext { record -> Bool in
                    summary.packetsIn += 1
                    fileBytesSeen += 16 + record.capturedLength
                    switch record.networkProtocol {
                    case .ipv4:
                        captureIndex[batch.count] = record.index
                        // A record longer than a slot cannot be IPv4 (65535 max); its header check fails.
                        let bytes = UnsafeRawBufferPointer(rebasing: record.networkBytes.prefix(batch.maximumPacketByteCount))
                        batch.append(copying: bytes, origin: record.index, time: record.timestamp)
                        return batch.isFull
                    default:
                        let name: String
                        switch record.networkProtocol {
                        case .ipv6: name = "ipv6"
                        case .arp: name = "arp"
                        default: name = record.networkProtocol.description
                        }
                        summary.skipped[name, default: 0] += 1
                        if verdictFile != nil {
                            skippedLines.append((batch.count, "{\"index\":\(record.index),\"time\":\"\(record.timestamp)\","
                                + "\"verdict\":\"skipped\",\"reason\":\(jsonString(name))}"))
                        }
                        return false
                    }
                }
            } catch {
                failure = ReplayError(error.description)
                more = nil
            }
            guard let full = more else { break }
            if full { flush() }
            progress?.update(done: fileBytesSeen, total: fileSize, packets: summary.packetsIn)
        }
        flush()
        progress?.finish(packets: summary.packetsIn)
        summary.counters = engine.counterSnapshot
        for w in [all, underlay, tun] {
            do { try w?.close() } catch { failure = failure ?? ReplayError(error.description) }
        }
        if let f = verdictFile {
            verdictFile = nil
            if fclose(f) != 0 {
                failure = failure ?? ReplayError("cannot write \(options.verdicts ?? ""): \(String(cString: strerror(errno)))")
            }
        }
        if let failure { throw failure }
        return summary
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    static func outputJSON(_ p: UnsafeRawBufferPointer, side: PacketSide) -> String {
        "{\"side\":\"\(side)\",\"length\":\(p.count),\"summary\":\(jsonString(PacketSummary.describe(p)))}"
    }

    static func verdictJSON(index: Int, time: Timestamp, verdict v: PacketVerdict, outputs: [String]) -> String {
        var s = "{\"index\":\(index),\"time\":\"\(time)\",\"verdict\":\"\(v.action.name)\""
        if let r = v.dropReason { s += ",\"reason\":\"\(r.name)\"" }
        if v.action == .encapsulated { s += ",\"peer\":\"\(v.peer)\"" }
        if let t = v.icmpType { s += ",\"icmp\":{\"type\":\(t),\"code\":\(v.icmpCode)}" }
        s += ",\"outputs\":[" + outputs.joined(separator: ",") + "]}"
        return s
    }
}

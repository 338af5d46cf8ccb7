import IPIPCore

/// Runs programs one after the other, reusing the packet slabs between them (allocating about
/// 1 MB per program under ASan cost more than the engine work). Each program still gets a fresh
/// engine, clock and empty batches, so a result depends on the input alone. The engine's tables
/// are sized by the program (`FuzzProgram.natCapacity`), not for production: a 262,144-session
/// NAT table (23 MB to allocate and initialise) was most of what an input cost. Not thread-safe:
/// one session per thread (`ipip-fuzz` keeps one; `FuzzProgram.run` makes a fresh one per call).
public final class FuzzSession {
    /// Runners by `generated` capacity: [256 slots, 16 slots].
    var runners: [FuzzProgram.Runner?] = [nil, nil]

    public init() {}

    /// Runs the program in `input`; see `FuzzProgram`.
    public func run(_ input: UnsafeRawBufferPointer) -> [FuzzInvariants.Violation] {
        run(input, trace: nil)
    }

    func run(_ input: UnsafeRawBufferPointer, trace: ((String) -> Void)?) -> [FuzzInvariants.Violation] {
        guard let options = input.first else { return [] }
        let k = options & 0x20 != 0 ? 1 : 0
        let runner: FuzzProgram.Runner
        let natCapacity = FuzzProgram.natCapacity(inputByteCount: input.count)
        if let r = runners[k] {
            r.reset(options: options, natCapacity: natCapacity)
            runner = r
        } else {
            runner = FuzzProgram.Runner(options: options, natCapacity: natCapacity)
            runners[k] = runner
        }
        return FuzzProgram.run(input, runner: runner, trace: trace)
    }
}

/// Reads fuzzer bytes as a small program that drives one fresh engine in both directions, and
/// checks the invariants of `FuzzInvariants` after every batch.
///
/// Format:
/// ```
/// byte 0   options: bits 0-3 topology variant (FuzzTopologies); bit 4 template mode;
///          bit 5 a small `generated` batch (16 slots, so fragments overflow it);
///          bit 6 outer TTL 0 (inherit); bit 7 a tight ICMP budget (burst 2, 5 per second)
/// records, until the bytes run out:
///   h      bit 7 direction (0 egress from the TUN, 1 ingress from the underlay);
///          bits 0-6 t, the clock step before this packet: t < 48 → t·10 ms; t < 126 → (t − 48)·13 s
///          (path MTUs expire after 600 s); 126 → 2 s back; 127 → a control record: the next byte
///          picks the topology variant given to `replaceTopology`
///   raw mode:      len (2 bytes, big endian), then len bytes of packet (fewer if the input ends)
///   template mode: an 8-byte FuzzDescriptor, then its supplied payload bytes
/// ```
/// Packets of one direction collect in a batch of 8, processed when it fills, when the direction
/// changes, at a control record and at the end. The clock starts at 1000 s. The NAT table holds
/// `natCapacity(inputByteCount:)` sessions, so a program with more flows than that reaches the
/// table-full path.
public enum FuzzProgram {
    /// Packets per batch.
    public static let batchSize = 8

    /// NAT sessions of the engine for a program of `n` bytes: one per 16 bytes (a template record
    /// is 9 bytes or more, a raw one 3 or more), between 4 and 1024.
    public static func natCapacity(inputByteCount n: Int) -> Int { min(1024, max(4, n / 16)) }

    /// Runs the program in `input` and returns every invariant violation (empty when all hold).
    public static func run(_ input: UnsafeRawBufferPointer) -> [FuzzInvariants.Violation] {
        FuzzSession().run(input)
    }

    /// Runs the program and also returns one line per input packet: its verdict and side.
    public static func trace(
        _ input: UnsafeRawBufferPointer
    ) -> (violations: [FuzzInvariants.Violation], trace: [String]) {
        var lines: [String] = []
        let violations = FuzzSession().run(input, trace: { lines.append($0) })
        return (violations, lines)
    }

    static func run(
        _ input: UnsafeRawBufferPointer, runner: Runner, trace: ((String) -> Void)?
    )
        -> [FuzzInvariants.Violation]
    {
        let options = input[0]
        runner.trace = trace
        defer { runner.trace = nil }
        var at = 1
        var packet: [UInt8] = []
        packet.reserveCapacity(2048)
        var record = 0
        while at < input.count {
            let h = input[at]
            at += 1
            let step = h & 0x7F
            if step == 127 {
                guard at < input.count else { break }
                runner.flush()
                runner.replaceTopology(variant: input[at])
                at += 1
                record += 1
                continue
            }
            runner.advanceClock(step)
            let ingress = h & 0x80 != 0
            if options & 0x10 != 0 {
                guard input.count - at >= 8 else { break }
                let d = FuzzDescriptor(
                    input[at], input[at + 1], input[at + 2], input[at + 3], input[at + 4],
                    input[at + 5], input[at + 6], input[at + 7])
                at += 8
                let n = min(d.suppliedPayloadCount, input.count - at)
                d.build(
                    ingress: ingress, payload: UnsafeRawBufferPointer(rebasing: input[at..<(at + n)]), into: &packet)
                at += n
                packet.withUnsafeBytes { runner.add($0, ingress: ingress, record: record) }
            } else {
                guard input.count - at >= 2 else { break }
                let declared = Int(input[at]) << 8 | Int(input[at + 1])
                at += 2
                let n = min(declared, input.count - at)
                runner.add(UnsafeRawBufferPointer(rebasing: input[at..<(at + n)]), ingress: ingress, record: record)
                at += n
            }
            record += 1
        }
        runner.flush()
        return runner.violations
    }

    /// One engine, its batches and the clock, for one program.
    final class Runner {
        var engine: Engine
        var batch = PacketBatch(capacity: FuzzProgram.batchSize)
        var generated: PacketBatch
        var verdicts = VerdictBatch(capacity: FuzzProgram.batchSize)
        var ingress = false
        /// Program record index of each slot, for messages.
        var records = [Int](repeating: 0, count: FuzzProgram.batchSize)
        var batchNumber = 0
        /// Nanoseconds since the epoch; never negative.
        var clock: Int64 = 1_000_000_000_000
        var violations: [FuzzInvariants.Violation] = []
        var trace: ((String) -> Void)?

        init(options: UInt8, natCapacity: Int) {
            engine = Self.engine(options: options, natCapacity: natCapacity)
            generated = PacketBatch(capacity: options & 0x20 != 0 ? 16 : 256, maximumPacketByteCount: 2048)
        }

        static func engine(options: UInt8, natCapacity: Int) -> Engine {
            let configuration = EngineConfiguration(
                outerTimeToLive: options & 0x40 != 0 ? 0 : 64,
                icmpRatePerSecond: options & 0x80 != 0 ? 5 : 1000,
                icmpBurst: options & 0x80 != 0 ? 2 : 50, natCapacity: natCapacity)
            return Engine(topology: FuzzTopologies.compiled[Int(options & 0x0F)], configuration: configuration)
        }

        /// Reset for a new program: a fresh engine and clock, empty batches. The slabs are kept:
        /// allocating 1 MB per input (under ASan) cost more than the engine work.
        func reset(options: UInt8, natCapacity: Int) {
            engine = Self.engine(options: options, natCapacity: natCapacity)
            batch.removeAll()
            generated.removeAll()
            ingress = false
            batchNumber = 0
            clock = 1_000_000_000_000
            violations = []
            trace = nil
        }

        func advanceClock(_ step: UInt8) {
            if step < 48 {
                clock += Int64(step) * 10_000_000
            } else if step < 126 {
                clock += Int64(step - 48) * 13_000_000_000
            } else {
                clock = max(0, clock - 2_000_000_000)
            }
        }

        var now: Timestamp {
            Timestamp(seconds: clock / 1_000_000_000, nanoseconds: UInt32(clock % 1_000_000_000))
        }

        func replaceTopology(variant: UInt8) {
            engine.replaceTopology(FuzzTopologies.compiled[Int(variant & 0x0F)])
        }

        func add(_ packet: UnsafeRawBufferPointer, ingress: Bool, record: Int) {
            if batch.count > 0 && ingress != self.ingress { flush() }
            self.ingress = ingress
            let fits = batch.append(copying: packet, time: now)
            // A slot holds 65535 bytes; raw records are shorter than that, templates are clamped.
            guard fits else {
                violations.append(
                    .init(
                        slot: batch.count, kind: FuzzInvariants.Kind.inputBatch,
                        message: "record \(record): a \(packet.count)-byte packet did not fit the input batch"))
                return
            }
            records[batch.count - 1] = record
            if batch.isFull { flush() }
        }

        func flush() {
            guard batch.count > 0 else { return }
            let topology = engine.topology
            if ingress {
                engine.processIngress(&batch, generated: &generated, verdicts: &verdicts)
            } else {
                engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
            }
            let found = FuzzInvariants.check(
                ingress: ingress, batch: batch, generated: generated, verdicts: verdicts,
                topology: topology)
            if let trace {
                for i in 0..<batch.count {
                    let v = verdicts[i]
                    let reason = v.dropReason.map { " \($0)" } ?? ""
                    let icmp = v.icmpType.map { " icmp \($0)/\(v.icmpCode)" } ?? ""
                    trace(
                        "record \(records[i]) \(ingress ? "ingress" : "egress") \(batch.time(of: i)): "
                            + "\(v.action)\(reason)\(icmp), \(v.outputCount) out, side \(batch.side(of: i))")
                }
            }
            for v in found {
                var v = v
                v.message =
                    "batch \(batchNumber) (\(ingress ? "ingress" : "egress")), record \(records[v.slot]): \(v.message)"
                violations.append(v)
            }
            batchNumber += 1
            batch.removeAll()
        }
    }
}

import IPIPTestSupport
import Testing

@testable import IPIPCore

/// Appends one record of `length` bytes of `fill` to `ring` as `PacketRecorder` does (reserve,
/// write, commit); returns the sequence, nil when refused.
@discardableResult
func appendRecord(_ ring: RecordRing, length: Int, fill: UInt8, time: Int64 = 0) -> UInt64? {
    let size = RecordRing.recordByteCount(packetLength: length)
    guard let o = ring.reserve(size) else { return nil }
    ring.memory.storeBytes(of: UInt32(length), toByteOffset: o + 4, as: UInt32.self)
    ring.memory.storeBytes(of: time, toByteOffset: o + 16, as: Int64.self)
    (ring.memory + o + RecordRing.headerByteCount).initializeMemory(as: UInt8.self, repeating: fill, count: length)
    return ring.commit(at: o, byteCount: size)
}

@Suite("flight recorder: record rings and the packet recorder")
struct RecordRingTests {
    @Test("records come back whole and in order; the oldest are dropped as the ring wraps")
    func wrap() {
        let ring = RecordRing(capacity: 1000)
        var sequences: [UInt64] = []
        // Records of 56 + 100 → 160 bytes: six fit in 1000; write twenty of varying fill.
        for k in 0..<20 { sequences.append(appendRecord(ring, length: 100, fill: UInt8(k), time: Int64(k))!) }
        let records = RecordedPacket.parse(ring.linearized())
        #expect(records.count == ring.count)
        #expect(records.count == 6)
        // The newest six, oldest first, each with its own bytes intact.
        let buffer = ring.linearized()
        for (j, r) in records.enumerated() {
            let k = 14 + j
            #expect(r.sequence == sequences[k])
            #expect(r.time == Int64(k))
            #expect(r.bytes.count == 100)
            #expect(buffer[r.bytes].allSatisfy { $0 == UInt8(k) }, "record \(k) torn")
        }
        #expect(ring.state.written == 20 && ring.state.overwritten == 14)
        #expect(ring.oldestSequence == sequences[14])
    }

    @Test("record boundaries: mixed sizes never straddle the end; every record parses back exactly")
    func boundaries() {
        let ring = RecordRing(capacity: 4096)
        var expected: [(UInt64, Int, UInt8)] = []
        var rng = SplitMix64(seed: 7)
        for k in 0..<500 {
            let length = Int(rng.next() % 1500)
            let fill = UInt8(truncatingIfNeeded: k)
            let s = appendRecord(ring, length: length, fill: fill)!
            expected.append((s, length, fill))
            let buffer = ring.linearized()
            let records = RecordedPacket.parse(buffer)
            #expect(records.count == ring.count)
            // The ring holds exactly the newest `count` records, each intact.
            let tail = expected.suffix(records.count)
            for (r, e) in zip(records, tail) {
                #expect(r.sequence == e.0 && r.bytes.count == e.1)
                #expect(buffer[r.bytes].allSatisfy { $0 == e.2 })
            }
            #expect(records.last?.sequence == s)
        }
    }

    @Test("a record larger than the ring is refused and counted; the ring keeps what it had")
    func oversize() {
        let ring = RecordRing(capacity: 1024)
        appendRecord(ring, length: 100, fill: 1)
        #expect(appendRecord(ring, length: 2000, fill: 2) == nil)
        #expect(ring.state.oversized == 1)
        #expect(ring.count == 1)
        // Exactly the ring's size fits (alone).
        #expect(appendRecord(ring, length: 1024 - RecordRing.headerByteCount, fill: 3) != nil)
        #expect(ring.count == 1)
    }

    @Test("isLive: a record dropped to make room is no longer live, even where its bytes were")
    func liveness() {
        let ring = RecordRing(capacity: 512)
        let first = appendRecord(ring, length: 100, fill: 1)!
        let firstOffset = 0
        #expect(ring.isLive(offset: firstOffset, sequence: first))
        for k in 0..<10 { appendRecord(ring, length: 100, fill: UInt8(k)) }
        #expect(!ring.isLive(offset: firstOffset, sequence: first))
    }

    func engine() throws -> Engine { Engine(topology: try Topology.compile(exampleSpec())) }

    @Test("the packet recorder keeps each input as the engine got it, with the verdict patched in")
    func recordAndPatch() throws {
        let e = try engine()
        let r = PacketRecorder(bytesPerSide: 1 << 16, batchCapacity: 8)
        var batch = PacketBatch(capacity: 8)
        var generated = PacketBatch(capacity: 64, maximumPacketByteCount: 2048)
        var verdicts = VerdictBatch(capacity: 8)
        let toB = PacketBuilder().bytes()
        var noBlock = PacketBuilder()
        noBlock.destination = ip("192.168.200.1")
        let dropped = noBlock.bytes()
        for p in [toB, dropped] { p.withUnsafeBytes { _ = batch.append(copying: $0, time: Timestamp(seconds: 5)) } }
        batch.setOffload(SegmentationOffload(kind: .udp, segmentSize: 1000), of: 0)
        r.record(batch, egress: true, scalars: e.scalarState)
        batch.setOffload(.none, of: 0)
        e.processEgress(&batch, generated: &generated, verdicts: &verdicts)
        r.patch(verdicts, count: batch.count, egress: true)
        let buffer = r.tun.linearized()
        let records = RecordedPacket.parse(buffer)
        #expect(records.count == 2)
        #expect(r.underlay.count == 0)
        #expect(Array(buffer[records[0].bytes]) == toB, "the input, not the encapsulated output")
        #expect(records[0].offload == SegmentationOffload(kind: .udp, segmentSize: 1000))
        #expect(records[0].time == 5_000_000_000)
        #expect(records[0].verdict?.text == "encapsulated peer 10.0.0.2")
        #expect(records[1].verdict?.text == "dropped no_route icmp 3/1")
        #expect(records[0].scalars == EngineScalarState())
    }

    @Test("a batch larger than the ring: verdicts go only to records still held, never into others")
    func batchLargerThanRing() throws {
        let e = try engine()
        let r = PacketRecorder(bytesPerSide: 300, batchCapacity: 8)
        var batch = PacketBatch(capacity: 8)
        var generated = PacketBatch(capacity: 64, maximumPacketByteCount: 2048)
        var verdicts = VerdictBatch(capacity: 8)
        for k in 0..<8 {
            var b = PacketBuilder()
            b.identification = UInt16(k)
            b.bytes().withUnsafeBytes { _ = batch.append(copying: $0) }
        }
        r.record(batch, egress: true, scalars: e.scalarState)
        e.processEgress(&batch, generated: &generated, verdicts: &verdicts)
        r.patch(verdicts, count: batch.count, egress: true)
        let buffer = r.tun.linearized()
        let records = RecordedPacket.parse(buffer)
        #expect(records.count == r.tun.count && records.count < 8)
        for rec in records {
            #expect(rec.verdict?.action == .encapsulated)
            #expect(buffer[rec.bytes].count == 52 && buffer[rec.bytes.lowerBound] == 0x45, "header intact")
        }
        #expect(records.last?.sequence == 8)
    }
}

@Suite("flight recorder: engine state export and preload")
struct EngineStateTests {
    func engine(_ seed: UInt64 = 0x5EED) throws -> Engine {
        Engine(topology: try Topology.compile(exampleSpec()), configuration: .init(natSeed: seed))
    }

    @Test("a reply to a session from before the recording: untranslated with the preloaded state, unsolicited without")
    func natPreload() throws {
        let live = try engine(42)
        let out = flowPacket(proto: 17, destination: "198.51.100.10", destinationPort: 5400)
        let sent = try EgressRun(engine: live, [out], now: Timestamp(seconds: 100))
        #expect(sent.verdicts[0].action == .translated)
        let reply = mirrored(sent.outputs[0].bytes)
        let state = live.exportState()
        #expect(state.natSessions.count == 1)
        #expect(state.natSessions[0].lastActivity == 100_000_000_000)

        let preloaded = try engine(42)
        try preloaded.preload(state)
        #expect(preloaded.exportState() == state)
        let back = try IngressRun([reply], engine: preloaded, now: Timestamp(seconds: 110))
        #expect(back.verdicts[0].action == .untranslated)
        #expect(back.outputs.first?.bytes == mirrored(out))

        let fresh = try engine(42)
        let lost = try IngressRun([reply], engine: fresh, now: Timestamp(seconds: 110))
        #expect(lost.verdicts[0].text == "dropped unsolicited")
    }

    @Test("a preloaded session still expires on time (300 s UDP after its last activity)")
    func preloadedExpiry() throws {
        let live = try engine()
        let sent = try EgressRun(
            engine: live, [flowPacket(proto: 17, destination: "198.51.100.10")], now: Timestamp(seconds: 100))
        let reply = mirrored(sent.outputs[0].bytes)
        let e = try engine()
        try e.preload(live.exportState())
        let late = try IngressRun([reply], engine: e, now: Timestamp(seconds: 400))
        #expect(late.verdicts[0].text == "dropped unsolicited")
    }

    @Test("a preloaded path MTU applies: a DF packet above it is dropped fragmentation_needed with ICMP 3/4")
    func pathMTUPreload() throws {
        let e = try engine()
        try e.preload(
            EngineState(pathMTUs: [.init(peer: ip("10.0.0.2"), mtu: 1300, expires: 600_000_000_000)]))
        var big = PacketBuilder()
        big.payload = Array(repeating: 1, count: 1400)
        let run = try EgressRun(engine: e, [big.bytes()], now: Timestamp(seconds: 10))
        #expect(run.verdicts[0].text == "dropped fragmentation_needed icmp 3/4")
        let fresh = try EgressRun(engine: try engine(), [big.bytes()], now: Timestamp(seconds: 10))
        #expect(fresh.verdicts[0].text == "encapsulated peer 10.0.0.2")
    }

    @Test("the ICMP bucket and IP identification are preloaded: an empty bucket sends no ICMP error")
    func icmpPreload() throws {
        let e = try engine()
        try e.preload(
            EngineState(icmp: EngineScalarState(icmpTokens: 0, icmpLastRefill: 10_000_000_000, nextIdentification: 77)))
        var noBlock = PacketBuilder()
        noBlock.destination = ip("192.168.200.1")
        let run = try EgressRun(engine: e, [noBlock.bytes()], now: Timestamp(seconds: 10))
        #expect(run.verdicts[0].text == "dropped no_route")
        #expect(e.scalarState.nextIdentification == 77)
    }

    @Test(
        "bad state is refused whole: unknown peer, MTU below the minimum, port outside the range, one port for two endpoints"
    )
    func refusals() throws {
        let s = NATSessionState(
            proto: .udp, internalAddress: ip("192.168.0.10"), internalPort: 1, externalPort: 61000,
            remoteAddress: ip("198.51.100.10"), remotePort: 53, lastActivity: 0)
        var other = s
        other.internalPort = 2
        var outside = s
        outside.externalPort = 80
        let cases: [(EngineState, String)] = [
            (EngineState(pathMTUs: [.init(peer: ip("10.9.9.9"), mtu: 1300, expires: 1)]), "no node of the topology"),
            (EngineState(pathMTUs: [.init(peer: ip("10.0.0.2"), mtu: 100, expires: 1)]), "outside 552"),
            (EngineState(natSessions: [outside]), "outside this table's range"),
            (EngineState(natSessions: [s, other]), "belongs to 192.168.0.10:1 too"),
            (EngineState(natSessions: [s, s]), "duplicate session"),
        ]
        for (state, message) in cases {
            let e = try engine()
            #expect {
                try e.preload(state)
            } throws: { error in
                "\(error)".contains(message)
            }
            #expect(e.nat.count == 0, "nothing half-applied: \(message)")
        }
    }
}

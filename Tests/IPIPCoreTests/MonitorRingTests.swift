import Testing

@testable import IPIPCore

/// The monitor's ring between a packet loop and the control server: what is staged before the
/// engine and committed after it, wrap-around, and losses counted when the consumer lags.
@Suite("Monitor ring: stage, commit, drain, wrap, losses")
struct MonitorRingTests {
    /// A batch of `n` distinct packets (the first two payload bytes number them from 1000), times 1…n s.
    func batch(_ n: Int, from first: Int = 0) -> PacketBatch {
        var b = PacketBatch(capacity: max(1, n))
        for i in 0..<n {
            var p = PacketBuilder()
            let n = 1000 + first + i
            p.payload[0] = UInt8(n >> 8)
            p.payload[1] = UInt8(n & 0xFF)
            let bytes = p.bytes()
            _ = bytes.withUnsafeBytes { b.append(copying: $0, time: Timestamp(seconds: Int64(first + i + 1))) }
        }
        return b
    }

    func verdicts(_ actions: [VerdictAction]) -> VerdictBatch {
        let v = VerdictBatch(capacity: max(1, actions.count))
        for (i, a) in actions.enumerated() {
            v[i] = PacketVerdict(
                action: a, dropReason: a == .dropped ? .noRoute : nil, peer: a == .encapsulated ? ip("10.0.0.2") : .any)
        }
        return v
    }

    /// The numbers of what `drain` hands out, in order.
    func drained(_ ring: MonitorRing) -> [(port: Int, record: MonitorEventRecord)] {
        var out: [(Int, MonitorEventRecord)] = []
        ring.drain { r, bytes in out.append((Int(bytes[20]) << 8 | Int(bytes[21]), r)) }
        return out
    }

    @Test("an event keeps the packet as it was before the engine rewrote it, and the verdict after")
    func stagedBeforeEngine() throws {
        let ring = MonitorRing(capacity: 8, batchCapacity: 4, worker: 3)
        var b = batch(2)
        ring.stage(b, egress: true)
        // What the engine does in place: an outer header in front of slot 0.
        _ = b.prepend(20, to: 0)
        let v = verdicts([.encapsulated, .dropped])
        ring.commit(v, count: 2, mode: .all)
        let got = drained(ring)
        #expect(got.map(\.port) == [1000, 1001])
        let r = try #require(got.first?.record)
        #expect(r.egress && r.worker == 3 && r.time == Timestamp(seconds: 1))
        #expect(r.action == VerdictAction.encapsulated.rawValue && r.peer == ip("10.0.0.2"))
        #expect(Int(r.captured) == Int(r.length) && r.length == 52)
        #expect(got[1].record.reason == DropReason.noRoute.rawValue)
        #expect(ring.lost == 0)
    }

    @Test("full ring: the newest events are lost and counted, the producer never waits; after a drain it flows again")
    func losses() {
        let ring = MonitorRing(capacity: 4, batchCapacity: 8)
        #expect(ring.capacity == 4)
        let b = batch(6)
        ring.stage(b, egress: false)
        ring.commit(verdicts(Array(repeating: .decapsulated, count: 6)), count: 6, mode: .all)
        #expect(ring.lost == 2)
        #expect(drained(ring).map(\.port) == [1000, 1001, 1002, 1003])
        let c = batch(3, from: 10)
        ring.stage(c, egress: false)
        ring.commit(verdicts(Array(repeating: .decapsulated, count: 3)), count: 3, mode: .all)
        #expect(drained(ring).map(\.port) == [1010, 1011, 1012])
        #expect(ring.lost == 2)
    }

    @Test("wrap-around: 1000 batches through a ring of 8 come out in order, nothing lost while drained")
    func wrap() {
        let ring = MonitorRing(capacity: 8, batchCapacity: 3)
        var seen: [Int] = []
        for k in 0..<1000 {
            let b = batch(3, from: (k * 3) % 60000)
            ring.stage(b, egress: true)
            ring.commit(verdicts([.forwarded, .forwarded, .forwarded]), count: 3, mode: .all)
            if k % 2 == 1 { seen += drained(ring).map(\.port) }
        }
        seen += drained(ring).map(\.port)
        #expect(seen.count == 3000)
        #expect(seen == (0..<3000).map { 1000 + $0 % 60000 })
        #expect(ring.lost == 0)
    }

    @Test("drops only: the ring keeps dropped packets only; a batch larger than the staging area counts as lost")
    func dropsOnly() {
        let ring = MonitorRing(capacity: 16, batchCapacity: 2)
        let b = batch(4)
        ring.stage(b, egress: true)
        ring.commit(verdicts([.forwarded, .dropped, .dropped, .encapsulated]), count: 4, mode: .dropsOnly)
        // Slots 0 and 1 were staged (one is a drop); slots 2 and 3 did not fit (one is a drop).
        #expect(drained(ring).map(\.port) == [1001])
        #expect(ring.lost == 1)
    }

    @Test("mode and attachment: off by default; the loop's check follows the consumer's setting")
    func mode() {
        let ring = MonitorRing()
        #expect(!ring.isAttached && ring.mode == .off)
        ring.mode = .dropsOnly
        #expect(ring.isAttached && ring.mode == .dropsOnly)
        ring.mode = .off
        #expect(!ring.isAttached)
    }

    @Test("long packets keep their first 128 bytes and their whole length")
    func truncation() throws {
        let ring = MonitorRing(capacity: 2, batchCapacity: 1)
        var p = PacketBuilder()
        p.payload = Array(repeating: 7, count: 1000)
        let bytes = p.bytes()
        var b = PacketBatch(capacity: 1)
        _ = bytes.withUnsafeBytes { b.append(copying: $0) }
        ring.stage(b, egress: true)
        ring.commit(verdicts([.forwarded]), count: 1, mode: .all)
        var kept: [UInt8] = []
        var record: MonitorEventRecord?
        ring.drain { r, raw in
            record = r
            kept = Array(raw)
        }
        let r = try #require(record)
        #expect(Int(r.length) == bytes.count && Int(r.captured) == MonitorRing.capturedByteCount)
        #expect(kept == Array(bytes.prefix(MonitorRing.capturedByteCount)))
    }
}

/// Per-peer traffic counters: counted where the peer is known, carried over a reload by IP.
@Suite("Engine: per-peer counters")
struct PeerCounterTests {
    @Test(
        "encapsulated toward node-b counts egress to node-b; decapsulated from node-b counts ingress; a reload keeps both"
    )
    func perPeer() throws {
        let topology = try Topology.compile(exampleSpec())
        let engine = Engine(topology: topology)
        var out = PacketBatch(capacity: 4)
        var generated = PacketBatch(capacity: 16)
        var verdicts = VerdictBatch(capacity: 4)
        let inner = PacketBuilder().bytes()
        _ = inner.withUnsafeBytes { out.append(copying: $0) }
        engine.processEgress(&out, generated: &generated, verdicts: &verdicts)
        #expect(verdicts[0].action == .encapsulated)
        var reply = PacketBuilder()
        reply.source = ip("192.168.1.20")
        reply.destination = ip("192.168.0.10")
        let wrapped = encapsulated(reply.bytes(), from: "10.0.0.2", to: "10.0.0.1")
        var inb = PacketBatch(capacity: 4)
        _ = wrapped.withUnsafeBytes { inb.append(copying: $0) }
        engine.processIngress(&inb, generated: &generated, verdicts: &verdicts)
        #expect(verdicts[0].action == .decapsulated)
        func peerB() -> PeerCounters? { engine.peerCounterSnapshot(now: .zero).first { $0.name == "node-b" } }
        let b = try #require(peerB())
        #expect(b.address == ip("10.0.0.2"))
        #expect(b.egressPackets == 1 && b.egressBytes == UInt64(inner.count))
        #expect(b.ingressPackets == 1 && b.ingressBytes == UInt64(wrapped.count))
        #expect(engine.peerCounterSnapshot(now: .zero).first { $0.name == "node-c" }?.egressPackets == 0)
        // A reload in which node-b moves to another index (a node added in front of it).
        var spec = exampleSpec()
        spec.nodes.insert(.init(name: "node-0", address: prefix("10.0.0.9/24")), at: 0)
        engine.replaceTopology(try Topology.compile(spec))
        #expect(peerB() == b)
        #expect(engine.peerCounterSnapshot(now: .zero).first { $0.name == "node-0" }?.egressPackets == 0)
    }
}

import Testing

@testable import IPIPCore

/// Runs packets through a fresh engine and collects everything it emits.
struct EgressRun {
    struct Output: Equatable {
        var side: PacketSide
        var origin: Int
        var bytes: [UInt8]
    }
    var verdicts: [PacketVerdict] = []
    var outputs: [Output] = []
    var counters: EngineCounters

    init(
        engine: Engine? = nil, _ packets: [[UInt8]], spec: TopologySpec = exampleSpec(),
        configuration: EngineConfiguration = .init(), now: Timestamp = Timestamp(seconds: 1000)
    ) throws {
        let engine = try engine ?? Engine(topology: Topology.compile(spec), configuration: configuration)
        var batch = PacketBatch(capacity: max(packets.count, 1))
        var generated = PacketBatch(capacity: 256, maximumPacketByteCount: 2048)
        var v = VerdictBatch(capacity: max(packets.count, 1))
        for p in packets { p.withUnsafeBytes { _ = batch.append(copying: $0, time: now) } }
        engine.processEgress(&batch, generated: &generated, verdicts: &v)
        var g = 0
        for i in 0..<batch.count {
            verdicts.append(v[i])
            if batch.side(of: i) != .none {
                outputs.append(Output(side: batch.side(of: i), origin: i, bytes: Array(batch.packet(i))))
            }
            while g < generated.count && generated.origin(of: g) == i {
                outputs.append(Output(side: generated.side(of: g), origin: i, bytes: Array(generated.packet(g))))
                g += 1
            }
        }
        counters = engine.counterSnapshot
    }
}

extension Array where Element == UInt8 {
    func u16(_ o: Int) -> UInt16 { UInt16(self[o]) << 8 | UInt16(self[o + 1]) }
    func addr(_ o: Int) -> IPv4Address { IPv4Address(self[o], self[o + 1], self[o + 2], self[o + 3]) }
    var headerChecksumValid: Bool {
        let hl = Int(self[0] & 0x0F) * 4
        return self[0..<hl].withUnsafeBytes { InternetChecksum.sum($0) } == 0xFFFF
    }
}

struct EgressCase: CustomTestStringConvertible, Sendable {
    let name: String
    let mode: EncapsulationMode
    let destination: String
    let expected: VerdictAction
    let reason: DropReason?
    let peer: String?
    var testDescription: String { name }
}

@Suite("Engine egress")
struct EngineTests {
    static let routing: [EgressCase] = [
        .init(
            name: "Always, same-subnet peer: encapsulated", mode: .always, destination: "192.168.1.20",
            expected: .encapsulated, reason: nil, peer: "10.0.0.2"),
        .init(
            name: "Always, other-subnet peer: encapsulated", mode: .always, destination: "192.168.2.30",
            expected: .encapsulated, reason: nil, peer: "10.0.1.3"),
        .init(
            name: "CrossSubnet, same-subnet peer: native", mode: .crossSubnet, destination: "192.168.1.20",
            expected: .forwarded, reason: nil, peer: nil),
        .init(
            name: "CrossSubnet, other-subnet peer: encapsulated", mode: .crossSubnet, destination: "192.168.2.30",
            expected: .encapsulated, reason: nil, peer: "10.0.1.3"),
        .init(
            name: "Never: native", mode: .never, destination: "192.168.2.30",
            expected: .forwarded, reason: nil, peer: nil),
        .init(
            name: "peer tunnel address: encapsulated", mode: .always, destination: "192.168.1.1",
            expected: .encapsulated, reason: nil, peer: "10.0.0.2"),
        .init(
            name: "local block: native", mode: .always, destination: "192.168.0.20",
            expected: .forwarded, reason: nil, peer: nil),
        .init(
            name: "outside every pool, natOutgoing source: SNAT", mode: .always, destination: "203.0.113.10",
            expected: .translated, reason: nil, peer: nil),
        .init(
            name: "a node IP is outside every pool: SNAT", mode: .always, destination: "10.0.0.2",
            expected: .translated, reason: nil, peer: nil),
        .init(
            name: "pool without block: no route", mode: .always, destination: "192.168.200.5",
            expected: .dropped, reason: .noRoute, peer: nil),
        .init(
            name: "multicast destination", mode: .always, destination: "224.0.0.5",
            expected: .dropped, reason: .invalidDestination, peer: nil),
        .init(
            name: "loopback destination", mode: .always, destination: "127.0.0.1",
            expected: .dropped, reason: .invalidDestination, peer: nil),
    ]

    @Test("routing decisions", arguments: routing)
    func routingDecision(_ c: EgressCase) throws {
        var b = PacketBuilder()
        b.destination = ip(c.destination)
        let run = try EgressRun([b.bytes()], spec: exampleSpec(mode: c.mode))
        #expect(run.verdicts[0].action == c.expected)
        #expect(run.verdicts[0].dropReason == c.reason)
        if let peer = c.peer { #expect(run.verdicts[0].peer == ip(peer)) }
        #expect(run.counters.packets(c.expected) == 1)
        if let r = c.reason { #expect(run.counters.drops[r] == 1) }
    }

    @Test("outside every pool from a pool without natOutgoing: native, untouched")
    func noNATPool() throws {
        var spec = exampleSpec()
        spec.pools[0].natOutgoing = false
        var b = PacketBuilder()
        b.destination = ip("203.0.113.10")
        let run = try EgressRun([b.bytes()], spec: spec)
        #expect(run.verdicts[0].action == .forwarded)
        #expect(run.outputs[0].bytes == b.bytes())
    }

    @Test(
        "outer header fields (ENC-01…05, 07, 08, 10, 12)", arguments: [UInt8(0x00), 0xB8, 0x68, 0x6B, 0x03, 0x01, 0x02])
    func outerHeader(tos: UInt8) throws {
        var b = PacketBuilder()
        b.tos = tos
        b.dontFragment = false
        let inner = b.bytes()
        let run = try EgressRun([inner])
        #expect(run.outputs.count == 1)
        let o = run.outputs[0].bytes
        #expect(o[0] == 0x45)  // version 4, IHL 5
        #expect(o[1] == tos)  // DSCP copied, ECN copied (normal mode, CE too)
        #expect(Int(o.u16(2)) == inner.count + 20)  // total length
        #expect(o.count == inner.count + 20)
        #expect(o.u16(6) == 0x4000)  // DF always, no MF/offset
        #expect(o[8] == 64)  // TTL 64
        #expect(o[9] == 4)  // protocol 4
        #expect(o.headerChecksumValid)
        #expect(o.addr(12) == ip("10.0.0.1"))
        #expect(o.addr(16) == ip("10.0.0.2"))
        #expect(Array(o[20...]) == inner)  // inner untouched, TTL included
        #expect(run.outputs[0].side == .underlay)
    }

    @Test("outer TTL inherit when configured 0")
    func inheritTTL() throws {
        var b = PacketBuilder()
        b.ttl = 17
        let run = try EgressRun([b.bytes()], configuration: .init(outerTimeToLive: 0))
        #expect(run.outputs[0].bytes[8] == 17)
    }

    @Test("outer IDs are distinct across packets (ENC-11)")
    func identifications() throws {
        let packets = (0..<1000).map { _ in PacketBuilder().bytes() }
        let run = try EgressRun(packets)
        let ids = Set(run.outputs.map { $0.bytes.u16(4) })
        #expect(ids.count == 1000)
    }

    @Test("TTL 0 dropped, TTL 1 still encapsulated")
    func ttl() throws {
        var zero = PacketBuilder()
        zero.ttl = 0
        var one = PacketBuilder()
        one.ttl = 1
        let run = try EgressRun([zero.bytes(), one.bytes()])
        #expect(run.verdicts[0].dropReason == .ttlExpired)
        #expect(run.verdicts[0].outputCount == 0)
        #expect(run.verdicts[1].action == .encapsulated)
        #expect(run.outputs.count == 1 && run.outputs[0].bytes[28] == 1)
    }

    @Test("tunnel MTU boundary: 1480 fits, 1481 with DF gets ICMP 3/4 with MTU 1480 (ENC-14/15)")
    func mtuBoundary() throws {
        var fits = PacketBuilder()
        fits.payload = Array(repeating: 1, count: 1460)
        var big = PacketBuilder()
        big.payload = Array(repeating: 2, count: 1461)
        let run = try EgressRun([fits.bytes(), big.bytes()])
        #expect(run.verdicts[0].action == .encapsulated)
        #expect(run.verdicts[1].dropReason == .fragmentationNeeded)
        #expect(run.verdicts[1].icmpType == 3 && run.verdicts[1].icmpCode == 4)
        let icmp = run.outputs.filter { $0.origin == 1 }
        #expect(icmp.count == 1)
        let m = icmp[0].bytes
        #expect(icmp[0].side == .tun)
        #expect(m[9] == 1 && m[20] == 3 && m[21] == 4)
        #expect(m.u16(26) == 1480)
        #expect(m.addr(12) == ip("192.168.0.1"))  // from the tunnel address
        #expect(m.addr(16) == ip("192.168.0.10"))  // to the sender
        #expect(m.count == 576)  // quote fills 576 bytes
        #expect(m.headerChecksumValid)
        #expect(m[20...].withUnsafeBytes { InternetChecksum.sum($0) } == 0xFFFF)
        #expect(Array(m[28..<48]) == Array(big.bytes()[0..<20]))  // quotes the header as received
    }

    @Test("ipipMTU from FelixConfiguration wins over underlay MTU − 20")
    func ipipMTU() throws {
        var spec = exampleSpec()
        spec.ipipMTU = 1440
        var big = PacketBuilder()
        big.payload = Array(repeating: 2, count: 1421)
        let run = try EgressRun([big.bytes()], spec: spec)
        #expect(run.verdicts[0].dropReason == .fragmentationNeeded)
        #expect(run.outputs[0].bytes.u16(26) == 1440)
    }

    @Test("DF=0 too big: inner fragments, each encapsulated, reassembling to the original (ENC-16)")
    func fragmentation() throws {
        var b = PacketBuilder()
        b.dontFragment = false
        b.identification = 0x7777
        b.payload = (0..<3080).map { UInt8(truncatingIfNeeded: $0) }
        let original = b.bytes()
        let run = try EgressRun([original])
        #expect(run.verdicts[0].action == .encapsulated)
        let frags = run.outputs
        #expect(frags.count == 3)
        #expect(Int(run.verdicts[0].outputCount) == frags.count)
        var data: [Int: [UInt8]] = [:]
        for (k, f) in frags.enumerated() {
            let o = f.bytes
            #expect(o.count <= 1500)
            #expect(o.u16(6) == 0x4000)  // outer: DF, not a fragment
            #expect(o.headerChecksumValid)
            let inner = Array(o[20...])
            #expect(inner.headerChecksumValid)
            #expect(inner.u16(4) == 0x7777)  // same inner ID
            let flags = inner.u16(6)
            #expect((flags & 0x2000 != 0) == (k < frags.count - 1))
            #expect(flags & 0x4000 == 0)
            data[Int(flags & 0x1FFF) * 8] = Array(inner[20...])
        }
        var payload: [UInt8] = []
        for off in data.keys.sorted() {
            #expect(off == payload.count)
            payload += data[off]!
        }
        #expect(payload == b.payload)
    }

    @Test("fragmenting keeps only copied options in later fragments (RFC 791)")
    func fragmentOptions() throws {
        var b = PacketBuilder()
        b.dontFragment = false
        // Router Alert (copied, 4 bytes) + Record Route (not copied, 8 bytes incl. pad).
        b.options = [0x94, 0x04, 0, 0, 0x07, 0x07, 0x04, 0, 0, 0, 0, 0]
        b.payload = Array(repeating: 9, count: 2000)
        let run = try EgressRun([b.bytes()])
        #expect(run.outputs.count == 2)
        let first = Array(run.outputs[0].bytes[20...])
        let second = Array(run.outputs[1].bytes[20...])
        #expect(first[0] == 0x48 && Array(first[20..<32]) == b.options)
        #expect(second[0] == 0x46 && Array(second[20..<24]) == [0x94, 0x04, 0, 0])
        #expect(second.headerChecksumValid)
        #expect(Int(second.u16(6) & 0x1FFF) * 8 == Int(first.u16(2)) - 32)
    }

    @Test("an inner fragment that is fragmented further keeps its offset base and MF")
    func refragment() throws {
        var b = PacketBuilder()
        b.dontFragment = false
        b.moreFragments = true
        b.fragmentOffset = 100  // 800 bytes
        b.payload = Array(repeating: 3, count: 2000)
        let run = try EgressRun([b.bytes()])
        let inners = run.outputs.map { Array($0.bytes[20...]) }
        #expect(inners.count == 2)
        #expect(inners.allSatisfy { $0.u16(6) & 0x2000 != 0 })
        #expect(inners[0].u16(6) & 0x1FFF == 100)
    }

    @Test("loop rules: source is our node or the peer (ENC-19); peer reachable only through the tunnel (ENC-20)")
    func loops() throws {
        var fromUs = PacketBuilder()
        fromUs.source = ip("10.0.0.1")
        var fromPeer = PacketBuilder()
        fromPeer.source = ip("10.0.0.2")
        let run = try EgressRun([fromUs.bytes(), fromPeer.bytes()])
        #expect(run.verdicts.map(\.dropReason) == [.sourceIsTunnelEndpoint, .sourceIsTunnelEndpoint])
        #expect(run.outputs.isEmpty)

        var spec = exampleSpec()
        // node-c's own address lies inside node-b's block: its route would go through the tunnel.
        spec.nodes[2].address = prefix("192.168.1.30/26")
        let topo = try Topology.compile(spec)
        #expect(topo.nodes[2].routeLoopsThroughTunnel)
        #expect(topo.warnings.contains { $0.contains("would loop") })
        var toC = PacketBuilder()
        toC.destination = ip("192.168.2.30")
        let run2 = try EgressRun([toC.bytes()], spec: spec)
        #expect(run2.verdicts[0].dropReason == .peerRouteThroughTunnel)
    }

    @Test("workload-originated IP-in-IP is dropped (ENC-21, SEC-T10)")
    func nested() throws {
        var b = PacketBuilder()
        b.protocolNumber = 4
        var ext = PacketBuilder()
        ext.protocolNumber = 4
        ext.destination = ip("203.0.113.10")
        let run = try EgressRun([b.bytes(), ext.bytes()])
        #expect(run.verdicts.map(\.dropReason) == [.nestedEncapsulation, .nestedEncapsulation])
    }

    @Test("malformed input is a counted drop, never a crash")
    func malformed() throws {
        var good = PacketBuilder().bytes()
        var badChecksum = good
        badChecksum[10] ^= 0xFF
        var badIHL = good
        badIHL[0] = 0x44
        var longTotal = good
        longTotal[2] = 0xFF
        let v6: [UInt8] = [0x60] + Array(repeating: 0, count: 39)
        let run = try EgressRun([[], [0x45], Array(good[0..<19]), badChecksum, badIHL, longTotal, v6])
        #expect(
            run.verdicts.map(\.dropReason) == [
                .malformedHeader, .malformedHeader, .malformedHeader,
                .badHeaderChecksum, .malformedHeader, .malformedHeader, .notIPv4,
            ])
        #expect(run.outputs.isEmpty)
        // Trailing padding beyond the total length is trimmed.
        good += [0, 0, 0, 0]
        let padded = try EgressRun([good])
        #expect(padded.outputs[0].bytes.count == good.count - 4 + 20)
    }

    @Test("invariant: arbitrary bytes never trap and outputs stay well-formed")
    func fuzz() throws {
        var rng = SplitMix64(seed: 0xF022)
        var packets: [[UInt8]] = []
        for _ in 0..<3000 {
            var p = PacketBuilder()
            p.destination = IPv4Address(
                rawValue: [0xC0A8_0114, 0xC0A8_021E, 0xC0A8_C805, 0xCB00_710A][Int.random(in: 0..<4, using: &rng)])
            p.payload = (0..<Int.random(in: 0..<3000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            p.dontFragment = Bool.random(using: &rng)
            var bytes = p.bytes()
            for _ in 0..<Int.random(in: 0..<4, using: &rng) where !bytes.isEmpty {
                bytes[Int.random(in: 0..<min(bytes.count, 24), using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng))) }
            packets.append(bytes)
        }
        for chunk in stride(from: 0, to: packets.count, by: 64) {
            let run = try EgressRun(Array(packets[chunk..<min(chunk + 64, packets.count)]))
            for o in run.outputs {
                #expect(o.bytes.count >= 20 && o.bytes.headerChecksumValid)
                #expect(Int(o.bytes.u16(2)) == o.bytes.count)
            }
        }
    }

    @Test("ICMP errors are rate-limited and never sent about ICMP errors or non-first fragments")
    func icmpRules() throws {
        var toNowhere = PacketBuilder()
        toNowhere.destination = ip("192.168.200.5")
        var icmpError = toNowhere
        icmpError.protocolNumber = 1
        icmpError.payload = [3, 1, 0, 0, 0, 0, 0, 0] + Array(repeating: 0, count: 28)
        var laterFragment = toNowhere
        laterFragment.dontFragment = false
        laterFragment.fragmentOffset = 10
        let run = try EgressRun([icmpError.bytes(), laterFragment.bytes(), toNowhere.bytes()])
        #expect(run.verdicts.map(\.icmpType) == [nil, nil, 3])
        #expect(run.outputs.count == 1)

        let many = Array(repeating: toNowhere.bytes(), count: 200)
        let limited = try EgressRun(many, configuration: .init(icmpRatePerSecond: 10, icmpBurst: 5))
        #expect(limited.outputs.count == 5)
        #expect(limited.counters.icmpRateLimited == 195)
        #expect(limited.counters.drops[.noRoute] == 200)
    }

    @Test("topology: unknown local node and node without address are errors")
    func topologyErrors() {
        #expect(throws: TopologyError.self) { try Topology.compile(exampleSpec(local: "node-z")) }
        var spec = exampleSpec()
        spec.nodes[0].address = nil
        #expect(throws: TopologyError.self) { try Topology.compile(spec) }
    }

    @Test("topology: the peer set holds other nodes' IPs and externalNodesCIDRList, not ourselves")
    func peerSet() throws {
        var spec = exampleSpec()
        spec.externalNodes = [prefix("172.31.0.0/16")]
        let t = try Topology.compile(spec)
        #expect(t.isKnownPeer(ip("10.0.0.2")) && t.isKnownPeer(ip("10.0.1.3")))
        #expect(t.isKnownPeer(ip("172.31.9.9")))
        #expect(!t.isKnownPeer(ip("10.0.0.1")))  // the local node
        #expect(!t.isKnownPeer(ip("10.0.0.3")))  // same subnet, but no node
        #expect(t.peers.lookup(ip("10.0.0.2")) == 1)
    }

    @Test("topology: VXLAN pools are not routed, and say so")
    func vxlan() throws {
        var spec = exampleSpec()
        spec.pools[0].vxlanEnabled = true
        let topo = try Topology.compile(spec)
        #expect(topo.warnings.contains { $0.contains("VXLAN") })
        let run = try EgressRun([PacketBuilder().bytes()], spec: spec)
        #expect(run.verdicts[0].dropReason == .vxlanPool)
    }
}

import Testing

@testable import IPIPCore

/// Runs underlay packets through a fresh (or given) engine's ingress path.
struct IngressRun {
    var verdicts: [PacketVerdict] = []
    var outputs: [EgressRun.Output] = []
    var counters: EngineCounters

    init(
        _ packets: [[UInt8]], engine: Engine? = nil, spec: TopologySpec = exampleSpec(),
        now: Timestamp = Timestamp(seconds: 1000)
    ) throws {
        let engine = try engine ?? Engine(topology: Topology.compile(spec))
        var batch = PacketBatch(capacity: max(packets.count, 1))
        var generated = PacketBatch(capacity: 64, maximumPacketByteCount: 2048)
        var v = VerdictBatch(capacity: max(packets.count, 1))
        for p in packets { p.withUnsafeBytes { _ = batch.append(copying: $0, time: now) } }
        engine.processIngress(&batch, generated: &generated, verdicts: &v)
        for i in 0..<batch.count {
            verdicts.append(v[i])
            if batch.side(of: i) != .none {
                outputs.append(.init(side: batch.side(of: i), origin: i, bytes: Array(batch.packet(i))))
            }
        }
        for g in 0..<generated.count {
            outputs.append(
                .init(side: generated.side(of: g), origin: generated.origin(of: g), bytes: Array(generated.packet(g))))
        }
        counters = engine.counterSnapshot
    }
}

/// An inner packet from node-b's workload to node-a's workload.
func innerFromB(
    source: String = "192.168.1.20", destination: String = "192.168.0.10", ttl: UInt8 = 63,
    tos: UInt8 = 0, protocolNumber: UInt8 = IPProtocolNumber.udp, options: [UInt8] = []
) -> PacketBuilder {
    var b = PacketBuilder()
    b.source = ip(source)
    b.destination = ip(destination)
    b.ttl = ttl
    b.tos = tos
    b.protocolNumber = protocolNumber
    b.options = options
    return b
}

struct IngressCase: CustomTestStringConvertible, Sendable {
    let name: String
    let packet: [UInt8]
    let reason: DropReason?
    var testDescription: String { name }

    /// One row: name, the packet as it arrives on the uplink, and its drop reason (nil: delivered).
    init(_ name: String, _ packet: [UInt8], _ reason: DropReason?) {
        self.name = name
        self.packet = packet
        self.reason = reason
    }
}

/// `bytes` with `change` applied.
func mutated(_ bytes: [UInt8], _ change: (inout [UInt8]) -> Void) -> [UInt8] {
    var b = bytes
    change(&b)
    return b
}

@Suite("Engine ingress (decapsulation, SEC-T1…T13)")
struct IngressTests {
    static let b = "10.0.0.2"
    static let a = "10.0.0.1"
    static var good: [UInt8] { innerFromB().bytes() }

    static let cases: [IngressCase] = [
        .init("from peer node-b, workload to workload: delivered", encapsulated(good, from: b, to: a), nil),
        .init(
            "from node-b's tunnel address: delivered",
            encapsulated(innerFromB(source: "192.168.1.1").bytes(), from: b, to: a), nil),
        .init(
            "from node-b's node IP as inner source: delivered",
            encapsulated(innerFromB(source: b).bytes(), from: b, to: a), nil),
        .init(
            "to our tunnel address: delivered",
            encapsulated(innerFromB(destination: "192.168.0.1").bytes(), from: b, to: a), nil),
        .init("SEC-T1 unknown outer source", encapsulated(good, from: "10.0.0.99", to: a), .ipipUnknownPeer),
        .init(
            "SEC-T1 unknown outer source, outer fragment",
            encapsulated(good, from: "10.0.0.99", to: a, dontFragment: false, moreFragments: true), .ipipUnknownPeer),
        .init("SEC-T2 outer destination not ours", encapsulated(good, from: b, to: "10.0.0.3"), .ipipNotForUs),
        .init(
            "SEC-T3 inner destination external (open relay)",
            encapsulated(innerFromB(destination: "8.8.8.8").bytes(), from: b, to: a), .innerDestinationNotLocal),
        .init(
            "SEC-T3 inner destination a workload on a third node",
            encapsulated(innerFromB(destination: "192.168.2.30").bytes(), from: b, to: a), .innerDestinationNotLocal),
        .init(
            "SEC-T3 inner destination the uplink gateway",
            encapsulated(innerFromB(destination: "10.0.0.254").bytes(), from: b, to: a), .innerDestinationNotLocal),
        .init(
            "SEC-T3 inner destination in the pool, no block",
            encapsulated(innerFromB(destination: "192.168.200.5").bytes(), from: b, to: a), .innerDestinationNotLocal),
        .init(
            "SEC-T4 inner source in another node's block",
            encapsulated(innerFromB(source: "192.168.2.30").bytes(), from: b, to: a), .innerSourceNotFromPeer),
        .init(
            "SEC-T4 inner source outside all pools",
            encapsulated(innerFromB(source: "203.0.113.7").bytes(), from: b, to: a), .innerSourceNotFromPeer),
        .init(
            "SEC-T4 inner source equal to our workload",
            encapsulated(innerFromB(source: "192.168.0.10", destination: "192.168.0.11").bytes(), from: b, to: a),
            .innerSourceInvalid),
        .init(
            "SEC-T4 inner source equal to our node IP", encapsulated(innerFromB(source: a).bytes(), from: b, to: a),
            .innerSourceInvalid),
        .init(
            "SEC-T4 inner source 127.0.0.1", encapsulated(innerFromB(source: "127.0.0.1").bytes(), from: b, to: a),
            .innerSourceInvalid),
        .init(
            "SEC-T4 inner source 0.0.0.0", encapsulated(innerFromB(source: "0.0.0.0").bytes(), from: b, to: a),
            .innerSourceInvalid),
        .init(
            "SEC-T5 ping to our node IP from an unknown source",
            encapsulated(innerFromB(destination: a, protocolNumber: 1).bytes(), from: "198.51.100.1", to: a),
            .ipipUnknownPeer),
        .init(
            "SEC-T5 ping to our node IP from a peer",
            encapsulated(innerFromB(destination: a, protocolNumber: 1).bytes(), from: b, to: a),
            .innerDestinationNotLocal),
        .init(
            "SEC-T6 inner TTL 1 to an external address",
            encapsulated(innerFromB(destination: "8.8.8.8", ttl: 1).bytes(), from: b, to: a), .innerDestinationNotLocal),
        .init(
            "SEC-T6 inner TTL 0 to a local workload", encapsulated(innerFromB(ttl: 0).bytes(), from: b, to: a),
            .ttlExpired),
        .init(
            "SEC-T7 two nested layers", encapsulated(encapsulated(good, from: b, to: a), from: b, to: a),
            .nestedEncapsulation),
        .init(
            "SEC-T12 inner LSRR",
            encapsulated(innerFromB(options: [0x83, 7, 4, 0, 0, 0, 0, 0]).bytes(), from: b, to: a), .sourceRouted),
        .init(
            "SEC-T12 inner SSRR",
            encapsulated(innerFromB(options: [0x89, 7, 4, 0, 0, 0, 0, 0]).bytes(), from: b, to: a), .sourceRouted),
        .init("SEC-T13 inner version 6", encapsulated([0x65] + Array(good.dropFirst()), from: b, to: a), .innerNotIPv4),
        .init("SEC-T13 inner IHL 4", encapsulated([0x44] + Array(good.dropFirst()), from: b, to: a), .innerMalformed),
        .init(
            "SEC-T13 inner bad checksum", encapsulated(mutated(good) { $0[10] ^= 1 }, from: b, to: a), .innerBadChecksum
        ),
        .init(
            "SEC-T13 inner total length beyond payload", encapsulated(mutated(good) { $0[2] = 0x7F }, from: b, to: a),
            .innerMalformed),
        .init("SEC-T13 truncated inner header", encapsulated(Array(good.prefix(12)), from: b, to: a), .innerMalformed),
        .init(
            "DEC-01 outer bad checksum", mutated(encapsulated(good, from: b, to: a)) { $0[10] ^= 1 }, .badHeaderChecksum
        ),
        .init(
            "DEC-04 outer fragment from a peer",
            encapsulated(good, from: b, to: a, dontFragment: false, moreFragments: true), .outerFragment
        ),
        .init("not IP-in-IP, not to us", innerFromB(destination: "10.0.0.7").bytes(), .notForUs),
        .init("not IP-in-IP to us, no session", innerFromB(destination: a).bytes(), .unsolicited),
    ]

    @Test("one verdict per crafted packet", arguments: cases)
    func ingressCase(_ c: IngressCase) throws {
        let run = try IngressRun([c.packet])
        #expect(run.verdicts[0].dropReason == c.reason)
        if let r = c.reason {
            #expect(run.outputs.isEmpty, "no output, no ICMP for a rejected underlay packet")
            #expect(run.counters.drops[r] == 1)
        } else {
            #expect(run.verdicts[0].action == .decapsulated)
            #expect(run.outputs.count == 1 && run.outputs[0].side == .tun)
            // The inner packet is delivered byte for byte (TTL untouched: the host forwards it next).
            let inner = Array(c.packet[20...])
            #expect(run.outputs[0].bytes == inner)
        }
    }

    @Test("SEC-T7 nesting depth 2, 10 and 70 costs one check, and nothing is emitted")
    func deepNesting() throws {
        for depth in [2, 10, 70] {
            var p = innerFromB().bytes()
            for _ in 0..<depth { p = encapsulated(p, from: Self.b, to: Self.a) }
            let run = try IngressRun([p])
            #expect(run.verdicts[0].dropReason == .nestedEncapsulation, "depth \(depth)")
            #expect(run.outputs.isEmpty)
        }
    }

    @Test("SEC-T8/T9: nothing decapsulated leaves toward the underlay; a non-peer flood emits nothing")
    func noAmplification() throws {
        var packets: [[UInt8]] = []
        var rng = SplitMix64(seed: 0x5EC9)
        for _ in 0..<2000 {
            let src = IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next()))
            let dst = ["192.168.0.10", "8.8.8.8", "192.168.2.30", "10.0.0.1"][rng.next(below: 4)]
            packets.append(
                encapsulated(
                    innerFromB(destination: dst).bytes(), from: src == ip("10.0.0.2") ? "10.9.9.9" : "\(src)",
                    to: Self.a))
        }
        // A ping-pong packet: node-b wraps a packet for node-a that is itself IP-in-IP back to node-b.
        packets.append(
            encapsulated(encapsulated(innerFromB().bytes(), from: Self.a, to: Self.b), from: Self.b, to: Self.a))
        let run = try IngressRun(packets)
        #expect(run.outputs.allSatisfy { $0.side == .tun })
        #expect(run.counters.underlayPacketsOut == 0)
        #expect(run.outputs.count <= 1)
    }

    @Test("DEC-07: all 16 RFC 6040 ECN combinations, checksum valid after every rewrite")
    func ecnTable() throws {
        let expected: [ECN: [ECN: ECN?]] = [
            .notECT: [.notECT: .notECT, .ect0: .notECT, .ect1: .notECT, .ce: nil],
            .ect0: [.notECT: .ect0, .ect0: .ect0, .ect1: .ect1, .ce: .ce],
            .ect1: [.notECT: .ect1, .ect0: .ect1, .ect1: .ect1, .ce: .ce],
            .ce: [.notECT: .ce, .ect0: .ce, .ect1: .ce, .ce: .ce],
        ]
        for innerECN in ECN.allCases {
            for outerECN in ECN.allCases {
                let inner = innerFromB(tos: 0xB8 | innerECN.rawValue).bytes()
                let run = try IngressRun([encapsulated(inner, from: Self.b, to: Self.a, tos: 0xB8 | outerECN.rawValue)])
                let want = expected[innerECN]![outerECN]!
                if let want {
                    #expect(run.verdicts[0].action == .decapsulated)
                    let out = run.outputs[0].bytes
                    #expect(out[1] == 0xB8 | want.rawValue, "inner \(innerECN) outer \(outerECN)")
                    #expect(out.headerChecksumValid, "inner \(innerECN) outer \(outerECN)")
                } else {
                    #expect(run.verdicts[0].dropReason == .ecnNotECTWithCE)
                }
                if want != nil {
                    #expect(
                        (run.counters.ecnUnusedCombinations == 1)
                            == Engine.isCurrentlyUnusedECN(inner: innerECN, outer: outerECN))
                }
            }
        }
    }

    @Test("external nodes may send IP-in-IP, but only as themselves")
    func externalNodes() throws {
        var spec = exampleSpec()
        spec.externalNodes = [prefix("172.31.0.0/16")]
        let ok = encapsulated(innerFromB(source: "172.31.0.5").bytes(), from: "172.31.0.5", to: Self.a)
        let spoof = encapsulated(innerFromB(source: "192.168.1.20").bytes(), from: "172.31.0.5", to: Self.a)
        let run = try IngressRun([ok, spoof], spec: spec)
        #expect(run.verdicts.map(\.action) == [.decapsulated, .dropped])
        #expect(run.verdicts[1].dropReason == .innerSourceNotFromPeer)
    }

    /// An ICMP frag-needed from a router on the path to node-b, quoting our outer header.
    func fragNeeded(
        mtu: UInt16, quotedSource: String = "10.0.0.1", quotedDestination: String = "10.0.0.2",
        quotedProtocol: UInt8 = 4, from router: String = "10.0.0.254"
    ) -> [UInt8] {
        var quoted = PacketBuilder()
        quoted.source = ip(quotedSource)
        quoted.destination = ip(quotedDestination)
        quoted.protocolNumber = quotedProtocol
        quoted.payload = Array(innerFromB().bytes().prefix(28))
        let q = quoted.bytes()
        var icmp: [UInt8] = [3, 4, 0, 0, 0, 0, UInt8(mtu >> 8), UInt8(mtu & 0xFF)] + q
        let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xFF)
        var p = PacketBuilder()
        p.source = ip(router)
        p.destination = ip("10.0.0.1")
        p.protocolNumber = 1
        p.payload = icmp
        return p.bytes()
    }

    @Test("ENC-17: a valid frag-needed lowers node-b's path MTU; the next DF packet gets ICMP 3/4 with learned − 20")
    func pathMTU() throws {
        let engine = Engine(topology: try Topology.compile(exampleSpec()))
        let run = try IngressRun([fragNeeded(mtu: 1400)], engine: engine)
        #expect(run.verdicts[0].action == .consumed)
        #expect(run.counters.pathMTUUpdates == 1)
        #expect(engine.learnedPathMTU(toNode: 1, now: Timestamp(seconds: 1000)) == 1400)
        var big = PacketBuilder()
        big.payload = Array(repeating: 0, count: 1380)  // 1400 bytes inner
        let egress = try EgressRun(engine: engine, [big.bytes()])
        #expect(egress.verdicts[0].dropReason == .fragmentationNeeded)
        #expect(egress.outputs[0].bytes.u16(26) == 1380)
        // Other peers are unaffected; the learned value expires.
        var toC = big
        toC.destination = ip("192.168.2.30")
        #expect(try EgressRun(engine: engine, [toC.bytes()]).verdicts[0].action == .encapsulated)
        let later = try EgressRun(engine: engine, [big.bytes()], now: Timestamp(seconds: 1000 + 600))
        #expect(later.verdicts[0].action == .encapsulated)
    }

    @Test("a learned path MTU follows its node's address across a reload that reorders and adds nodes")
    func pathMTUCarriesOverByAddress() throws {
        let engine = Engine(topology: try Topology.compile(exampleSpec()))
        _ = try IngressRun([fragNeeded(mtu: 1400)], engine: engine)
        let now = Timestamp(seconds: 1000)
        #expect(engine.learnedPathMTU(toNode: 1, now: now) == 1400)
        // node-b moves from index 1 to the end, behind node-c and a new node.
        var spec = exampleSpec()
        let b = spec.nodes.remove(at: 1)
        spec.nodes.append(
            TopologySpec.Node(name: "node-d", address: IPv4Prefix("10.0.0.4/24"), tunnelAddress: nil))
        spec.nodes.append(b)
        engine.replaceTopology(try Topology.compile(spec))
        let moved = try #require(engine.topology.nodes.firstIndex { $0.name == "node-b" })
        #expect(moved == 3)
        #expect(engine.learnedPathMTU(toNode: moved, now: now) == 1400)
        for i in engine.topology.nodes.indices where i != moved {
            #expect(engine.learnedPathMTU(toNode: i, now: now) == nil)
        }
        // node-b gone: nothing carried to whoever takes its index.
        spec.nodes.removeLast()
        engine.replaceTopology(try Topology.compile(spec))
        for i in engine.topology.nodes.indices { #expect(engine.learnedPathMTU(toNode: i, now: now) == nil) }
    }

    @Test("ENC-18 / SEC-T11: forged frag-needed changes nothing; a tiny MTU is raised to the floor")
    func forgedPTB() throws {
        let engine = Engine(topology: try Topology.compile(exampleSpec()))
        let forged = [
            fragNeeded(mtu: 68, quotedSource: "10.0.0.9"),  // not our source
            fragNeeded(mtu: 40, quotedDestination: "10.0.0.77"),  // not a peer
            fragNeeded(mtu: 68, quotedProtocol: 17),  // not a tunnel packet
        ]
        let run = try IngressRun(forged, engine: engine)
        #expect(run.verdicts.map(\.dropReason) == [.icmpNotAboutOurTunnel, .icmpNotAboutOurTunnel, .unsolicited])
        #expect(engine.learnedPathMTU(toNode: 1, now: Timestamp(seconds: 1000)) == nil)
        _ = try IngressRun([fragNeeded(mtu: 40)], engine: engine)
        #expect(engine.learnedPathMTU(toNode: 1, now: Timestamp(seconds: 1000)) == 552)
        // A larger MTU never raises the learned one.
        _ = try IngressRun([fragNeeded(mtu: 1450)], engine: engine)
        #expect(engine.learnedPathMTU(toNode: 1, now: Timestamp(seconds: 1000)) == 552)
    }

    @Test("property: encapsulate on node-a, decapsulate on node-b gives the original packet byte for byte")
    func roundTrip() throws {
        let seed: UInt64 = 0xE2E
        var rng = SplitMix64(seed: seed)
        let nodeA = Engine(topology: try Topology.compile(exampleSpec(local: "node-a")))
        let nodeB = Engine(topology: try Topology.compile(exampleSpec(local: "node-b")))
        for round in 0..<500 {
            var p = PacketBuilder()
            p.source = IPv4Address(rawValue: 0xC0A8_0002 + UInt32(rng.next(below: 60)))  // node-a's block
            p.destination = IPv4Address(rawValue: 0xC0A8_0102 + UInt32(rng.next(below: 60)))  // node-b's block
            p.tos = UInt8(truncatingIfNeeded: rng.next())
            p.ttl = UInt8(1 + rng.next(below: 255))
            p.protocolNumber = [1, 6, 17, 47][rng.next(below: 4)]
            p.dontFragment = true
            p.identification = UInt16(truncatingIfNeeded: rng.next())
            p.payload = (0..<rng.next(below: 1400)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let original = p.bytes()
            let sent = try EgressRun(engine: nodeA, [original])
            guard sent.outputs.count == 1 else {
                Issue.record("round \(round): not encapsulated (seed \(seed))")
                return
            }
            let received = try IngressRun([sent.outputs[0].bytes], engine: nodeB)
            guard received.outputs.count == 1 else {
                Issue.record("round \(round): not decapsulated: \(received.verdicts[0]) (seed \(seed))")
                return
            }
            #expect(received.outputs[0].bytes == original, "round \(round) (seed \(seed))")
        }
    }
}

import Testing

@testable import IPIPCore

/// The transport checksum of a whole datagram, verified from scratch (pseudo-header for TCP/UDP).
func transportChecksumValid(_ p: [UInt8]) -> Bool {
    let hl = Int(p[0] & 0x0F) * 4
    let total = Int(p.u16(2))
    let l4 = Array(p[hl..<total])
    switch p[9] {
    case 6, 17:
        if p[9] == 17 && l4.u16(6) == 0 { return true }
        var pseudo = Array(p[12..<20]) + [0, p[9], UInt8(l4.count >> 8), UInt8(l4.count & 0xFF)]
        pseudo += l4
        return pseudo.withUnsafeBytes { InternetChecksum.sum($0) } == 0xFFFF
    case 1:
        return l4.withUnsafeBytes { InternetChecksum.sum($0) } == 0xFFFF
    default:
        return true
    }
}

/// Recomputes the IPv4 header and transport checksums from scratch (UDP: 0 becomes 0xFFFF).
func withFreshChecksums(_ packet: [UInt8]) -> [UInt8] {
    var p = packet
    let hl = Int(p[0] & 0x0F) * 4
    p[10] = 0
    p[11] = 0
    let c = p[0..<hl].withUnsafeBytes { InternetChecksum.checksum($0) }
    p[10] = UInt8(c >> 8)
    p[11] = UInt8(c & 0xFF)
    let total = Int(p.u16(2))
    let offset: Int
    switch p[9] {
    case 6: offset = hl + 16
    case 17: offset = hl + 6
    case 1: offset = hl + 2
    default: return p
    }
    p[offset] = 0
    p[offset + 1] = 0
    var data = Array(p[hl..<total])
    if p[9] != 1 { data = Array(p[12..<20]) + [0, p[9], UInt8(data.count >> 8), UInt8(data.count & 0xFF)] + data }
    var s = data.withUnsafeBytes { InternetChecksum.checksum($0) }
    if p[9] == 17 && s == 0 { s = 0xFFFF }
    p[offset] = UInt8(s >> 8)
    p[offset + 1] = UInt8(s & 0xFF)
    return p
}

/// A TCP, UDP or ICMP echo packet with a valid transport checksum.
func flowPacket(
    proto: UInt8, source: String = "192.168.0.10", sourcePort: UInt16 = 40000,
    destination: String = "203.0.113.10", destinationPort: UInt16 = 443, flags: UInt8 = 0x02,
    payload: [UInt8] = [], icmpType: UInt8 = 8
) -> [UInt8] {
    var b = PacketBuilder()
    b.source = ip(source)
    b.destination = ip(destination)
    b.protocolNumber = proto
    switch proto {
    case 6:
        var t = [UInt8](repeating: 0, count: 20)
        t[0] = UInt8(sourcePort >> 8)
        t[1] = UInt8(sourcePort & 0xFF)
        t[2] = UInt8(destinationPort >> 8)
        t[3] = UInt8(destinationPort & 0xFF)
        t[7] = 1
        t[12] = 0x50
        t[13] = flags
        t[14] = 0xFA
        b.payload = t + payload
    case 17:
        let n = 8 + payload.count
        b.payload =
            [
                UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8),
                UInt8(destinationPort & 0xFF), UInt8(n >> 8), UInt8(n & 0xFF), 0, 0,
            ] + payload
    default:
        b.payload = [icmpType, 0, 0, 0, UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), 0, 1] + payload
    }
    return withFreshChecksums(b.bytes())
}

/// The reply a remote would send to `packet`: addresses and ports swapped (echo request → reply).
func mirrored(_ packet: [UInt8]) -> [UInt8] {
    var p = packet
    let hl = Int(p[0] & 0x0F) * 4
    for k in 0..<4 { p.swapAt(12 + k, 16 + k) }
    switch p[9] {
    case 6, 17:
        p.swapAt(hl, hl + 2)
        p.swapAt(hl + 1, hl + 3)
        if p[9] == 6 { p[hl + 13] = 0x12 }
    default:
        p[hl] = 0
    }
    return withFreshChecksums(p)
}

@Suite("SNAT through the engine (NAT-01…NAT-20)")
struct NATEngineTests {
    let node = ip("10.0.0.1")

    func engine(
        portRange: ClosedRange<UInt16>? = nil, capacity: Int = 4096, timeouts: NATTimeouts = .init()
    ) throws -> Engine {
        var spec = exampleSpec()
        spec.natPortRange = portRange
        return Engine(
            topology: try Topology.compile(spec),
            configuration: .init(natCapacity: capacity, natTimeouts: timeouts))
    }

    @Test(
        "a TCP handshake out and back: source becomes the node IP, the reply is restored, checksums valid",
        arguments: [UInt8(6), 17, 1])
    func roundTrip(proto: UInt8) throws {
        let e = try engine()
        let out = flowPacket(proto: proto, payload: Array("hello".utf8))
        let sent = try EgressRun(engine: e, [out])
        #expect(sent.verdicts[0].action == .translated)
        let t = sent.outputs[0].bytes
        #expect(t.addr(12) == node && t.addr(16) == ip("203.0.113.10"))
        #expect(t.headerChecksumValid && transportChecksumValid(t))
        let reply = mirrored(t)
        let back = try IngressRun([reply], engine: e)
        #expect(back.verdicts[0].action == .untranslated)
        #expect(back.outputs.count == 1 && back.outputs[0].side == .tun)
        // What the workload gets is exactly the mirror of what it sent.
        #expect(back.outputs[0].bytes == mirrored(out))
    }

    @Test("NAT-02 endpoint-independent mapping: one internal endpoint keeps its port to every destination")
    func eim() throws {
        let e = try engine()
        let ports = try ["203.0.113.10", "203.0.113.11", "198.51.100.3"].map { d in
            try EgressRun(engine: e, [flowPacket(proto: 17, destination: d)]).outputs[0].bytes.u16(20)
        }
        #expect(Set(ports).count == 1)
    }

    @Test("NAT-04 no overloading: two workloads, same source port, same destination, two external ports")
    func noOverloading() throws {
        let e = try engine()
        let a = try EgressRun(engine: e, [flowPacket(proto: 17, source: "192.168.0.10")]).outputs[0].bytes.u16(20)
        let b = try EgressRun(engine: e, [flowPacket(proto: 17, source: "192.168.0.11")]).outputs[0].bytes.u16(20)
        #expect(a != b)
        #expect(NATTable.defaultPortRange.contains(a) && NATTable.defaultPortRange.contains(b))
    }

    @Test("port preservation inside natPortRange; outside it, a port from the range (natPortRange honoured)")
    func preservation() throws {
        let e = try engine(portRange: 20000...20010)
        let kept = try EgressRun(engine: e, [flowPacket(proto: 6, sourcePort: 20005)]).outputs[0].bytes.u16(20)
        let moved = try EgressRun(engine: e, [flowPacket(proto: 6, source: "192.168.0.11", sourcePort: 40000)]).outputs[
            0
        ].bytes.u16(20)
        #expect(kept == 20005)
        #expect((20000...20010).contains(moved) && moved != 20005)
    }

    @Test("filtering: replies from another remote address or port are unsolicited")
    func filtering() throws {
        let e = try engine()
        let t = try EgressRun(engine: e, [flowPacket(proto: 17)]).outputs[0].bytes
        var wrongAddress = mirrored(t)
        wrongAddress[15] = 99
        var wrongPort = mirrored(t)
        wrongPort[21] ^= 1
        let run = try IngressRun([withFreshChecksums(wrongAddress), withFreshChecksums(wrongPort)], engine: e)
        #expect(run.verdicts.map(\.dropReason) == [.unsolicited, .unsolicited])
    }

    @Test("NAT-19: a UDP checksum of 0 stays 0 both ways")
    func udpZeroChecksum() throws {
        let e = try engine()
        var out = flowPacket(proto: 17, payload: [1, 2, 3])
        out[26] = 0
        out[27] = 0
        let t = try EgressRun(engine: e, [out]).outputs[0].bytes
        #expect(t.u16(26) == 0)
        var reply = mirrored(t)
        reply[26] = 0
        reply[27] = 0
        let back = try IngressRun([reply], engine: e).outputs[0].bytes
        #expect(back.u16(26) == 0)
    }

    @Test("NAT-19: a translated UDP checksum that computes to 0 is sent as 0xFFFF")
    func udpComputedZero() throws {
        // First run: learn the translated checksum C with a zero payload word; a payload word of C
        // then makes the translated sum 0xFFFF, i.e. a computed checksum of 0.
        let first = try EgressRun(engine: try engine(), [flowPacket(proto: 17, payload: [0, 0])]).outputs[0].bytes
        let c = first.u16(26)
        let out = flowPacket(proto: 17, payload: [UInt8(c >> 8), UInt8(c & 0xFF)])
        let t = try EgressRun(engine: try engine(), [out]).outputs[0].bytes
        #expect(t.u16(26) == 0xFFFF)
        #expect(transportChecksumValid(t))
    }

    @Test("NAT-14: an ICMP error from the outside about a translated packet reaches the workload restored")
    func icmpErrorInbound() throws {
        let e = try engine()
        let out = flowPacket(proto: 17, sourcePort: 40000, destinationPort: 7777, payload: Array("query".utf8))
        let t = try EgressRun(engine: e, [out]).outputs[0].bytes
        // Port unreachable from the server, quoting the translated datagram (header + 8 bytes).
        var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(t.prefix(28))
        let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xFF)
        var err = PacketBuilder()
        err.source = ip("203.0.113.10")
        err.destination = node
        err.protocolNumber = 1
        err.payload = icmp
        let run = try IngressRun([err.bytes()], engine: e)
        #expect(run.verdicts[0].action == .untranslated)
        let d = run.outputs[0].bytes
        #expect(d.addr(16) == ip("192.168.0.10") && d.headerChecksumValid && transportChecksumValid(d))
        let quoted = Array(d[28...])
        #expect(quoted.addr(12) == ip("192.168.0.10") && quoted.u16(20) == 40000)
        #expect(quoted.headerChecksumValid)
        #expect(Array(quoted.prefix(28)) == Array(out.prefix(28)), "the quote is the workload's own packet again")
    }

    @Test(
        "replies translated back to an address that is not a local workload are dropped, not written to the TUN (fuzz: engine/crashes/nat-reply-to-remote-workload)"
    )
    func replyToNonLocalWorkload() throws {
        // A source in node-b's block, sent on our TUN: its pool is natOutgoing, so it is translated
        // (Calico's rule is `-s <pool>`), but its reply is not ours to deliver.
        let e = try engine()
        let spoofed = try EgressRun(engine: e, [flowPacket(proto: 17, source: "192.168.1.20")])
        #expect(spoofed.verdicts[0].action == .translated)
        let t = spoofed.outputs[0].bytes
        var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(t.prefix(28))
        let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xFF)
        var err = PacketBuilder()
        err.source = ip("203.0.113.10")
        err.destination = node
        err.protocolNumber = 1
        err.payload = icmp
        let back = try IngressRun([mirrored(t), err.bytes()], engine: e)
        #expect(back.verdicts.map(\.dropReason) == [.innerDestinationNotLocal, .innerDestinationNotLocal])
        #expect(back.outputs.isEmpty)

        // A local workload whose block moved to node-b after its flow started: the same.
        let local = try EgressRun(engine: e, [flowPacket(proto: 6, source: "192.168.0.10")]).outputs[0].bytes
        var moved = exampleSpec()
        moved.blocks = moved.blocks.map { b in
            var b = b
            if b.node == "node-a" { b.node = "node-b" }
            return b
        }
        e.replaceTopology(try Topology.compile(moved))
        let afterMove = try IngressRun([mirrored(local)], engine: e)
        #expect(afterMove.verdicts[0].dropReason == .innerDestinationNotLocal)
        #expect(afterMove.outputs.isEmpty)
    }

    @Test("NAT-14: a workload's ICMP error about a translated reply leaves with the node's endpoint")
    func icmpErrorOutbound() throws {
        let e = try engine()
        let t = try EgressRun(engine: e, [flowPacket(proto: 17, sourcePort: 40000, destinationPort: 7777)]).outputs[0]
            .bytes
        let reply = try IngressRun([mirrored(t)], engine: e).outputs[0].bytes  // as the workload received it
        var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(reply.prefix(28))
        let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xFF)
        var err = PacketBuilder()
        err.source = ip("192.168.0.10")
        err.destination = ip("203.0.113.10")
        err.protocolNumber = 1
        err.payload = icmp
        let run = try EgressRun(engine: e, [err.bytes()])
        #expect(run.verdicts[0].action == .translated)
        let o = run.outputs[0].bytes
        #expect(o.addr(12) == node && o.headerChecksumValid && transportChecksumValid(o))
        let quoted = Array(o[28...])
        #expect(quoted.addr(16) == node && quoted.u16(22) == t.u16(20) && quoted.headerChecksumValid)
        #expect(Array(quoted.prefix(28)) == Array(mirrored(t).prefix(28)), "the remote sees its own packet quoted")
    }

    @Test("NAT-16: ports exhausted: counted drop and ICMP 3/13 to the workload; existing flows unaffected")
    func exhaustion() throws {
        let e = try engine(portRange: 61000...61002)
        let first = (0..<3).map { flowPacket(proto: 17, source: "192.168.0.\(10 + $0)") }
        let mapped = try EgressRun(engine: e, first)
        #expect(mapped.verdicts.allSatisfy { $0.action == .translated })
        let fourth = try EgressRun(engine: e, [flowPacket(proto: 17, source: "192.168.0.20")])
        #expect(fourth.verdicts[0].dropReason == .natPortsExhausted)
        #expect(fourth.outputs.count == 1 && fourth.outputs[0].side == .tun)
        let m = fourth.outputs[0].bytes
        #expect(m[20] == 3 && m[21] == 13 && m.addr(16) == ip("192.168.0.20"))
        // Existing flows still translate both ways.
        let again = try EgressRun(engine: e, [first[1]])
        #expect(again.verdicts[0].action == .translated)
        let back = try IngressRun([mirrored(again.outputs[0].bytes)], engine: e)
        #expect(back.verdicts[0].action == .untranslated)
    }

    @Test("NAT-16 at scale: 64,512 flows fill ports 1024…65535; the next is refused, no port is shared")
    func exhaustionAtScale() throws {
        let e = try engine(portRange: 1024...65535, capacity: 70_000)
        var ports = Set<UInt16>()
        var batch: [[UInt8]] = []
        var n = 0
        func flush() throws {
            let run = try EgressRun(engine: e, batch)
            for (v, o) in zip(run.verdicts, run.outputs) {
                #expect(v.action == .translated)
                ports.insert(o.bytes.u16(20))
            }
            batch.removeAll()
        }
        while n < 64_512 {
            // Distinct internal endpoints: 252 workloads × 256 source ports.
            let host = 2 + n / 256
            let port = UInt16(30000 + n % 256)
            batch.append(
                flowPacket(proto: 17, source: "192.168.0.\(host % 62 + 2)", sourcePort: port + UInt16(host / 62) * 256))
            n += 1
            if batch.count == 256 { try flush() }
        }
        try flush()
        #expect(ports.count == 64_512)
        let next = try EgressRun(engine: e, [flowPacket(proto: 17, source: "192.168.0.63", sourcePort: 9)])
        #expect(next.verdicts[0].dropReason == .natPortsExhausted)
        #expect(e.nat.counters.portsExhausted == 1)
    }

    @Test(
        "NAT-09/10 timeouts at their edges through the engine",
        arguments: [
            (UInt8(17), Int64(300)), (UInt8(1), Int64(60)), (UInt8(6), Int64(240)),
        ])
    func timeouts(proto: UInt8, seconds: Int64) throws {
        // TCP: a SYN with no answer stays "opening" (transitory, 240 s).
        for (offset, alive) in [
            (Timestamp(seconds: seconds - 1, nanoseconds: 999_999_999), true),
            (Timestamp(seconds: seconds), false),
        ] {
            let e = try engine()
            let t = try EgressRun(engine: e, [flowPacket(proto: proto)], now: Timestamp(seconds: 1000)).outputs[0].bytes
            let at = Timestamp(seconds: 1000 + offset.seconds, nanoseconds: offset.nanoseconds)
            let reply = try IngressRun([mirrored(t)], engine: e, now: at)
            #expect((reply.verdicts[0].action == .untranslated) == alive, "reply at +\(offset)")
        }
    }

    @Test("TCP established survives 2 h 4 min idle (7440 s)")
    func tcpEstablished() throws {
        let e = try engine()
        let syn = flowPacket(proto: 6, flags: 0x02)
        let t = try EgressRun(engine: e, [syn], now: Timestamp(seconds: 0)).outputs[0].bytes
        _ = try IngressRun([mirrored(t)], engine: e, now: Timestamp(seconds: 1))  // SYN-ACK: established
        let ack = try EgressRun(engine: e, [flowPacket(proto: 6, flags: 0x10)], now: Timestamp(seconds: 2))
        #expect(ack.verdicts[0].action == .translated)
        let late = try IngressRun([mirrored(ack.outputs[0].bytes)], engine: e, now: Timestamp(seconds: 2 + 7439))
        #expect(late.verdicts[0].action == .untranslated)
    }

    @Test("property: SNAT then the reply's reverse SNAT gives the workload the mirror of its packet, checksums valid")
    func property() throws {
        let seed: UInt64 = 0x4E41
        var rng = SplitMix64(seed: seed)
        let e = try engine()
        for round in 0..<1000 {
            let proto: UInt8 = [6, 17, 1][rng.next(below: 3)]
            let payload = (0..<rng.next(below: 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let out = flowPacket(
                proto: proto, source: "192.168.0.\(2 + rng.next(below: 60))",
                sourcePort: UInt16(1 + rng.next(below: 65534)),
                destination: "203.0.113.\(1 + rng.next(below: 250))",
                destinationPort: UInt16(1 + rng.next(below: 65534)), payload: payload)
            let sent = try EgressRun(engine: e, [out])
            guard sent.verdicts[0].action == .translated else {
                Issue.record("round \(round): \(sent.verdicts[0]) (seed \(seed))")
                return
            }
            let t = sent.outputs[0].bytes
            #expect(t.headerChecksumValid && transportChecksumValid(t), "round \(round) (seed \(seed))")
            let back = try IngressRun([mirrored(t)], engine: e)
            #expect(back.outputs.first?.bytes == mirrored(out), "round \(round) (seed \(seed))")
        }
    }

    @Test("decapsulated packets are never translated, and workload-to-pool traffic is never translated")
    func notTranslated() throws {
        let e = try engine()
        let toPool = try EgressRun(engine: e, [flowPacket(proto: 17, destination: "192.168.2.30")])
        #expect(toPool.verdicts[0].action == .encapsulated)
        let inner = flowPacket(proto: 17, source: "192.168.1.20", destination: "192.168.0.10")
        let decap = try IngressRun([encapsulated(inner, from: "10.0.0.2", to: "10.0.0.1")], engine: e)
        #expect(decap.outputs[0].bytes == inner)
        #expect(e.nat.count == 0)
    }
}

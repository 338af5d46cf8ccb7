import Testing

@testable import IPIPCore

/// Engines of several workers side by side: who owns which packet, and SNAT split by port slices.
@Suite("Workers: NAT ownership across engines")
struct WorkerTests {
    let node = ip("10.0.0.1")

    func engines(_ n: Int, portRange: ClosedRange<UInt16>? = nil) throws -> [Engine] {
        var spec = exampleSpec()
        spec.natPortRange = portRange
        let topology = try Topology.compile(spec)
        return (0..<n).map { w in
            var c = EngineConfiguration()
            c.worker = WorkerShare(index: w, count: n)
            return Engine(topology: topology, configuration: c)
        }
    }

    @Test(
        "port slices: contiguous, disjoint, covering the range; natOwner names the slice of every port",
        arguments: [(UInt16(61000), UInt16(65535), 2), (1, 65535, 3), (20000, 20010, 4), (5000, 5002, 3), (7, 7, 1)])
    func slices(lo: UInt16, hi: UInt16, workers: Int) {
        let range = lo...hi
        var next = Int(lo)
        for w in 0..<workers {
            let s = WorkerShare.natSlice(of: range, worker: w, workers: workers)
            #expect(s != nil)
            guard let s else { continue }
            #expect(Int(s.lowerBound) == next, "slice \(w) starts where \(w - 1) ended")
            next = Int(s.upperBound) + 1
            for p in [s.lowerBound, s.upperBound, s.lowerBound + (s.upperBound - s.lowerBound) / 2] {
                #expect(WorkerShare.natOwner(port: p, range: range, workers: workers) == w, "port \(p)")
            }
        }
        #expect(next == Int(hi) + 1)
        if lo > 1 { #expect(WorkerShare.natOwner(port: lo - 1, range: range, workers: workers) == nil) }
        if hi < 65535 { #expect(WorkerShare.natOwner(port: hi + 1, range: range, workers: workers) == nil) }
    }

    @Test("fewer ports than workers: only as many workers as ports own a slice, and only they translate")
    func tinyRange() {
        let range: ClosedRange<UInt16> = 9000...9001
        #expect(WorkerShare.natWorkers(range: range, workers: 4) == 2)
        #expect(WorkerShare.natSlice(of: range, worker: 2, workers: 4) == nil)
        for s in UInt32(0)..<200 {
            #expect(WorkerShare.outboundOwner(source: 0xC0A8_0000 | s, range: range, workers: 4) < 2)
        }
    }

    @Test("a single worker owns nothing specially: every packet is anyWorker")
    func single() throws {
        let e = try engines(1)[0]
        let out = flowPacket(proto: 17)
        #expect(out.withUnsafeBytes { e.egressOwner($0) } == Engine.anyWorker)
        #expect(e.nat.portRange == NATTable.defaultPortRange)
    }

    @Test(
        "SNAT across workers, TCP, UDP and echo: the owner translates into its own slice, and the reply names it",
        arguments: [UInt8(6), 17, 1])
    func ownership(proto: UInt8) throws {
        let es = try engines(3)
        var owners = Set<Int>()
        for k in 0..<60 {
            let source = "192.168.0.\(10 + k % 40)"
            let out = flowPacket(
                proto: proto, source: source, sourcePort: UInt16(40000 + k), destination: "203.0.113.\(1 + k % 7)")
            let owner = out.withUnsafeBytes { es[0].egressOwner($0) }
            #expect(owner >= 0 && owner < 3)
            // Every worker computes the same owner.
            #expect(out.withUnsafeBytes { es[1].egressOwner($0) } == owner)
            owners.insert(owner)
            let sent = try EgressRun(engine: es[owner], [out])
            #expect(sent.verdicts[0].action == .translated)
            let t = sent.outputs[0].bytes
            let hl = 20
            let external = proto == 1 ? t.u16(hl + 4) : t.u16(hl)
            #expect(es[owner].nat.portRange.contains(external), "port \(external) in slice \(es[owner].nat.portRange)")
            let reply = mirrored(t)
            for e in es { #expect(reply.withUnsafeBytes { e.ingressOwner($0) } == owner) }
            let back = try IngressRun([reply], engine: es[owner])
            #expect(back.verdicts[0].action == .untranslated)
            #expect(back.outputs.first?.bytes == mirrored(out))
            // Any other worker has no session for it.
            let other = (owner + 1) % 3
            #expect(try IngressRun([reply], engine: es[other]).verdicts[0].dropReason == .unsolicited)
        }
        #expect(owners.count > 1, "sixty flows from forty sources spread over the workers")
    }

    @Test("NAT-02 with workers: one inside endpoint maps to one external port for every destination")
    func endpointIndependentMapping() throws {
        let es = try engines(2)
        let packets = ["203.0.113.10", "203.0.113.11", "198.51.100.3"].map { flowPacket(proto: 17, destination: $0) }
        let owners = Set(packets.map { p in p.withUnsafeBytes { es[0].egressOwner($0) } })
        #expect(owners.count == 1)
        let e = es[owners.first!]
        let ports = try packets.map { try EgressRun(engine: e, [$0]).outputs[0].bytes.u16(20) }
        #expect(Set(ports).count == 1)
    }

    @Test("an ICMP error from outside quoting a translated packet goes to the session's owner")
    func icmpErrorOwner() throws {
        let es = try engines(2)
        for k in 0..<20 {
            let out = flowPacket(proto: 17, source: "192.168.0.\(10 + k)", sourcePort: 40000, destinationPort: 7777)
            let owner = out.withUnsafeBytes { es[0].egressOwner($0) }
            let t = try EgressRun(engine: es[owner], [out]).outputs[0].bytes
            var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(t.prefix(28))
            let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
            icmp[2] = UInt8(c >> 8)
            icmp[3] = UInt8(c & 0xFF)
            var err = PacketBuilder()
            err.source = ip("203.0.113.10")
            err.destination = node
            err.protocolNumber = 1
            err.payload = icmp
            let e = err.bytes()
            #expect(e.withUnsafeBytes { es[1 - owner].ingressOwner($0) } == owner)
            #expect(try IngressRun([e], engine: es[owner]).verdicts[0].action == .untranslated)
        }
    }

    @Test("stateless traffic is anyWorker: encapsulation, decapsulation, native, packets to other addresses")
    func stateless() throws {
        let es = try engines(2)
        let toPeer = flowPacket(proto: 17, destination: "192.168.1.20")
        #expect(toPeer.withUnsafeBytes { es[0].egressOwner($0) } == Engine.anyWorker)
        let fromPeer = encapsulated(
            flowPacket(proto: 17, source: "192.168.1.20", destination: "192.168.0.10"),
            from: "10.0.0.2", to: "10.0.0.1")
        #expect(fromPeer.withUnsafeBytes { es[0].ingressOwner($0) } == Engine.anyWorker)
        let notOurs = flowPacket(proto: 17, source: "203.0.113.10", destination: "10.0.0.99")
        #expect(notOurs.withUnsafeBytes { es[0].ingressOwner($0) } == Engine.anyWorker)
        let outsideRange = flowPacket(
            proto: 17, source: "203.0.113.10", sourcePort: 53, destination: "10.0.0.1", destinationPort: 22)
        #expect(outsideRange.withUnsafeBytes { es[0].ingressOwner($0) } == Engine.anyWorker)
        // Truncated headers are nobody's in particular (the engine drops them where they are).
        let short = Array(flowPacket(proto: 6, source: "203.0.113.10", destination: "10.0.0.1").prefix(22))
        #expect(short.withUnsafeBytes { es[0].ingressOwner($0) } == Engine.anyWorker)
        #expect([UInt8]().withUnsafeBytes { es[0].egressOwner($0) } == Engine.anyWorker)
    }

    /// A frag-needed from a router on the path to node-b, quoting one of our outer headers.
    func fragNeeded(mtu: UInt16) -> [UInt8] {
        var quoted = PacketBuilder()
        quoted.source = ip("10.0.0.1")
        quoted.destination = ip("10.0.0.2")
        quoted.protocolNumber = 4
        quoted.payload = Array(flowPacket(proto: 17, destination: "192.168.1.20").prefix(28))
        var icmp: [UInt8] = [3, 4, 0, 0, 0, 0, UInt8(mtu >> 8), UInt8(mtu & 0xFF)] + quoted.bytes()
        let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xFF)
        var p = PacketBuilder()
        p.source = ip("10.0.0.254")
        p.destination = node
        p.protocolNumber = 1
        p.payload = icmp
        return p.bytes()
    }

    @Test("frag-needed about our tunnel: everyWorker; another worker absorbs it without counting it")
    func pathMTUReports() throws {
        let es = try engines(2)
        let report = fragNeeded(mtu: 1400)
        #expect(report.withUnsafeBytes { es[0].ingressOwner($0) } == Engine.everyWorker)
        let now = Timestamp(seconds: 1000)
        let run = try IngressRun([report], engine: es[0], now: now)
        #expect(run.verdicts[0].action == .consumed && run.counters.pathMTUUpdates == 1)
        #expect(es[1].learnedPathMTU(toNode: 1, now: now) == nil)
        #expect(report.withUnsafeBytes { es[1].absorbPathMTUReport($0, now: now) })
        #expect(es[1].learnedPathMTU(toNode: 1, now: now) == 1400)
        let c = es[1].counterSnapshot
        #expect(c.ingressPacketsIn == 0 && c.pathMTUUpdates == 0, "absorbed, not counted")
        // Absorbing the same report again teaches nothing new; anything else is ignored.
        #expect(!report.withUnsafeBytes { es[1].absorbPathMTUReport($0, now: now) })
        var corrupt = report
        corrupt[10] ^= 0xFF
        #expect(!corrupt.withUnsafeBytes { es[1].absorbPathMTUReport($0, now: now) })
        #expect(!flowPacket(proto: 17).withUnsafeBytes { es[1].absorbPathMTUReport($0, now: now) })
        #expect(![UInt8](repeating: 0x45, count: 10).withUnsafeBytes { es[1].absorbPathMTUReport($0, now: now) })
    }

    @Test("a topology swap keeps each worker's slice (and a changed natPortRange is split anew)")
    func swapKeepsSlices() throws {
        let es = try engines(2, portRange: 30000...30999)
        #expect(es[0].nat.portRange == 30000...30499 && es[1].nat.portRange == 30500...30999)
        var spec = exampleSpec()
        spec.natPortRange = 40000...40099
        for e in es { e.replaceTopology(try Topology.compile(spec)) }
        #expect(es[0].nat.portRange == 40000...40049 && es[1].nat.portRange == 40050...40099)
    }

    @Test("a topology replica answers every lookup as the original and shares none of its storage")
    func replica() throws {
        var spec = exampleSpec()
        // A node name too long for Swift's inline small strings, so it has storage to share.
        spec.nodes[1].name = "node-b-with-a-name-longer-than-fifteen-bytes"
        spec.blocks[1].node = spec.nodes[1].name
        let original = try Topology.compile(spec)
        let copy = original.replica()
        #expect(copy !== original)
        var rng = SplitMix64(seed: 11)
        for _ in 0..<20_000 {
            // Addresses inside and around the pool and the node subnets, and anywhere.
            let r = rng.next()
            let address: IPv4Address
            switch r % 3 {
            case 0: address = IPv4Address(rawValue: 0xC0A8_0000 | UInt32(truncatingIfNeeded: r >> 40) & 0x3FF)
            case 1: address = IPv4Address(rawValue: 0x0A00_0000 | UInt32(truncatingIfNeeded: r >> 40) & 0x1FF)
            default: address = IPv4Address(rawValue: UInt32(truncatingIfNeeded: r >> 16))
            }
            #expect(copy.route(for: address) == original.route(for: address))
            #expect(copy.peers.lookup(address) == original.peers.lookup(address))
        }
        #expect(copy.nodes.map(\.name) == original.nodes.map(\.name))
        #expect(copy.nodes.map(\.address) == original.nodes.map(\.address))
        #expect(copy.localAddress == original.localAddress && copy.tunnelMTU == original.tunnelMTU)
        // No storage in common on the per-packet path.
        func base<T>(_ a: [T]) -> UnsafeRawPointer? { a.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) } }
        #expect(base(copy.table.table) != base(original.table.table))
        #expect(base(copy.table.payloads) != base(original.table.payloads))
        #expect(base(copy.peers.table) != base(original.peers.table))
        #expect(base(copy.routes) != base(original.routes))
        #expect(base(copy.nodes) != base(original.nodes))
        #expect(base(copy.pools) != base(original.pools))
        let longName = { (t: Topology) in
            t.nodes[1].name.utf8.withContiguousStorageIfAvailable { UnsafeRawPointer($0.baseAddress) } ?? nil
        }
        #expect(longName(copy) != nil && longName(copy) != longName(original))
        // And an engine on the replica does what one on the original does, byte for byte.
        let packets = [
            flowPacket(proto: 17, destination: "192.168.1.20"), flowPacket(proto: 6),
            flowPacket(proto: 1), flowPacket(proto: 17, destination: "192.168.0.77"),
        ]
        let a = try EgressRun(engine: Engine(topology: original), packets)
        let b = try EgressRun(engine: Engine(topology: copy), packets)
        #expect(a.verdicts == b.verdicts && a.outputs == b.outputs)
        #expect(a.outputs.count == packets.count)
    }
}

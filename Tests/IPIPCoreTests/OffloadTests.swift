import Testing

@testable import IPIPCore

// Userspace GSO (Segmenter), GRO (TUNCoalescer) and the virtio header, against a slow reference
// built here from the RFCs' field definitions (RFC 791, 793, 768; checksums with the RFC 1071
// 16-bit loop), over seeded random super-packets: every segment must equal the reference byte
// for byte, and coalescing then segmenting again must give back exactly what went in.

/// One TCP or UDP flow's fixed header fields.
struct FlowFields {
    var source = ip("192.168.0.10")
    var destination = ip("192.168.2.30")
    var sourcePort: UInt16 = 40000
    var destinationPort: UInt16 = 5201
    var tos: UInt8 = 0
    var ttl: UInt8 = 64
    var dontFragment = true
    var tcp = true
    var acknowledgement: UInt32 = 0x1234_5678
    var window: UInt16 = 502
    /// TCP options (a multiple of 4 bytes, up to 40).
    var options: [UInt8] = []
}

/// The reference: one IPv4 TCP/UDP packet built field by field, checksums by RFC 1071's loop.
func referencePacket(
    _ f: FlowFields, identification: UInt16, sequence: UInt32, flags: UInt8, payload: [UInt8]
) -> [UInt8] {
    var l4: [UInt8]
    if f.tcp {
        let thl = 20 + f.options.count
        l4 = [UInt8](repeating: 0, count: thl)
        l4[0] = UInt8(f.sourcePort >> 8)
        l4[1] = UInt8(f.sourcePort & 0xFF)
        l4[2] = UInt8(f.destinationPort >> 8)
        l4[3] = UInt8(f.destinationPort & 0xFF)
        for i in 0..<4 { l4[4 + i] = UInt8(truncatingIfNeeded: sequence >> (24 - 8 * i)) }
        for i in 0..<4 { l4[8 + i] = UInt8(truncatingIfNeeded: f.acknowledgement >> (24 - 8 * i)) }
        l4[12] = UInt8(thl / 4) << 4
        l4[13] = flags
        l4[14] = UInt8(f.window >> 8)
        l4[15] = UInt8(f.window & 0xFF)
        for (i, b) in f.options.enumerated() { l4[20 + i] = b }
    } else {
        l4 = [UInt8](repeating: 0, count: 8)
        l4[0] = UInt8(f.sourcePort >> 8)
        l4[1] = UInt8(f.sourcePort & 0xFF)
        l4[2] = UInt8(f.destinationPort >> 8)
        l4[3] = UInt8(f.destinationPort & 0xFF)
        let n = 8 + payload.count
        l4[4] = UInt8(n >> 8)
        l4[5] = UInt8(n & 0xFF)
    }
    l4 += payload
    let s = f.source.octets
    let d = f.destination.octets
    let proto: UInt8 = f.tcp ? 6 : 17
    let pseudo: [UInt8] = [
        s.0, s.1, s.2, s.3, d.0, d.1, d.2, d.3, 0, proto, UInt8(l4.count >> 8), UInt8(l4.count & 0xFF),
    ]
    var c = (pseudo + l4).withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
    if !f.tcp && c == 0 { c = 0xFFFF }
    let at = f.tcp ? 16 : 6
    l4[at] = UInt8(c >> 8)
    l4[at + 1] = UInt8(c & 0xFF)
    var b = PacketBuilder()
    b.source = f.source
    b.destination = f.destination
    b.protocolNumber = proto
    b.ttl = f.ttl
    b.tos = f.tos
    b.dontFragment = f.dontFragment
    b.identification = identification
    b.payload = l4
    return b.bytes()
}

/// A super-packet as a local stack hands it over with TSO/USO: one header for all of the
/// payload, flags of the whole stream (CWR for the first segment, PSH/FIN for the last), a
/// meaningless transport checksum.
func superPacket(
    _ f: FlowFields, identification: UInt16, sequence: UInt32, flags: UInt8, payload: [UInt8],
    junkChecksum: UInt16 = 0xBEEF
) -> [UInt8] {
    var p = referencePacket(f, identification: identification, sequence: sequence, flags: flags, payload: payload)
    let at = 20 + (f.tcp ? 16 : 6)
    p[at] = UInt8(junkChecksum >> 8)
    p[at + 1] = UInt8(junkChecksum & 0xFF)
    return p
}

/// The reference segments of that super-packet.
func referenceSegments(
    _ f: FlowFields, identification: UInt16, sequence: UInt32, flags: UInt8, payload: [UInt8],
    segmentSize: Int
) -> [[UInt8]] {
    let count = (payload.count + segmentSize - 1) / segmentSize
    return (0..<count).map { k in
        var fl = flags
        if k < count - 1 { fl &= ~(TCPFlags.fin | TCPFlags.psh) }
        if k > 0 { fl &= ~TCPFlags.cwr }
        let chunk = Array(payload[(k * segmentSize)..<min(payload.count, (k + 1) * segmentSize)])
        return referencePacket(
            f, identification: identification &+ UInt16(k), sequence: sequence &+ UInt32(k * segmentSize),
            flags: fl, payload: chunk)
    }
}

/// Everything `Segmenter` makes of a super-packet.
func segment(_ p: [UInt8], _ offload: SegmentationOffload) -> [[UInt8]]? {
    p.withUnsafeBytes { raw -> [[UInt8]]? in
        guard let layout = Segmenter.layout(of: raw, offload: offload) else { return nil }
        var out: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 70000)
        for k in 0..<layout.segmentCount {
            let n = buffer.withUnsafeMutableBytes {
                Segmenter.writeSegment(k, of: raw, layout: layout, offload: offload, to: $0.baseAddress!)
            }
            #expect(n == Segmenter.segmentLength(k, layout: layout, segmentSize: Int(offload.segmentSize)))
            out.append(Array(buffer[0..<n]))
        }
        return out
    }
}

func randomFlow(_ rng: inout SplitMix64, tcp: Bool) -> FlowFields {
    var f = FlowFields()
    f.source = IPv4Address(rawValue: 0xC0A8_0000 | UInt32(rng.next(below: 65536)))
    f.destination = IPv4Address(rawValue: 0xC0A8_0000 | UInt32(rng.next(below: 65536)))
    f.sourcePort = UInt16(truncatingIfNeeded: rng.next())
    f.destinationPort = UInt16(truncatingIfNeeded: rng.next())
    f.tos = UInt8(truncatingIfNeeded: rng.next())
    f.ttl = UInt8(1 + rng.next(below: 255))
    f.dontFragment = tcp || rng.next(below: 2) == 0
    f.tcp = tcp
    f.acknowledgement = rng.nextUInt32()
    f.window = UInt16(truncatingIfNeeded: rng.next())
    f.options = tcp ? (0..<(4 * rng.next(below: 11))).map { _ in UInt8(truncatingIfNeeded: rng.next()) } : []
    return f
}

@Suite("Segmentation offload")
struct OffloadTests {
    @Test("segmenting matches the reference byte for byte over 300 seeded random super-packets (TCP, UDP, IP-in-IP)")
    func segmentationMatchesReference() throws {
        var rng = SplitMix64(seed: 0x5E6_0FF)
        for n in 0..<300 {
            let tcp = n % 3 != 0
            let f = randomFlow(&rng, tcp: tcp)
            let size = tcp ? 64 + rng.next(below: 1400) : 1 + rng.next(below: 1472)
            let headers = 20 + (tcp ? 20 + f.options.count : 8)
            let maximumPayload = min(65535 - headers - 20, size * SegmentationOffload.maximumSegmentCount)
            let payloadCount = 1 + rng.next(below: maximumPayload)
            let payload = (0..<payloadCount).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let id = UInt16(truncatingIfNeeded: rng.next())
            let seq = rng.nextUInt32()
            var flags: UInt8 = tcp ? TCPFlags.ack : 0
            if tcp {
                if rng.next(below: 2) == 0 { flags |= TCPFlags.psh }
                if rng.next(below: 4) == 0 { flags |= TCPFlags.fin }
                if rng.next(below: 4) == 0 { flags |= TCPFlags.cwr }
            }
            let offload = SegmentationOffload(kind: tcp ? .tcp : .udp, segmentSize: UInt16(size))
            let expected = referenceSegments(
                f, identification: id, sequence: seq, flags: flags, payload: payload, segmentSize: size)
            let plain = superPacket(f, identification: id, sequence: seq, flags: flags, payload: payload)
            let got = try #require(segment(plain, offload), "case \(n): no layout")
            #expect(got == expected, "case \(n) (seed 0x5E60FF): \(got.count) segments vs \(expected.count)")

            // The same inside an outer header: each segment gets its own outer length, ID, checksum.
            let outerID = UInt16(truncatingIfNeeded: rng.next())
            var o = PacketBuilder()
            o.source = ip("10.0.0.1")
            o.destination = ip("10.0.1.3")
            o.protocolNumber = IPProtocolNumber.ipInIP
            o.ttl = 64
            o.tos = f.tos
            o.identification = outerID
            o.payload = plain
            let wrapped = try #require(segment(o.bytes(), offload), "case \(n): no layout for IP-in-IP")
            let expectedWrapped = expected.enumerated().map { k, s -> [UInt8] in
                var e = o
                e.identification = outerID &+ UInt16(k)
                e.payload = s
                return e.bytes()
            }
            #expect(wrapped == expectedWrapped, "case \(n): IP-in-IP segments differ")
        }
    }

    @Test(
        "layout refuses what does not describe a super-packet",
        arguments: [
            ("UDP offload on TCP", SegmentationOffload(kind: .udp, segmentSize: 100), 0),
            ("zero segment size", SegmentationOffload(kind: .tcp, segmentSize: 0), 0),
            ("IP total length shorter than the packet", SegmentationOffload(kind: .tcp, segmentSize: 100), 1),
            ("a fragment", SegmentationOffload(kind: .tcp, segmentSize: 100), 2),
            ("headers only, no payload", SegmentationOffload(kind: .tcp, segmentSize: 100), 3),
            ("more than 256 segments", SegmentationOffload(kind: .tcp, segmentSize: 1), 0),
            ("not a super-packet", SegmentationOffload.none, 0),
        ])
    func layoutRefuses(_ name: String, _ offload: SegmentationOffload, _ damage: Int) {
        var p = superPacket(
            FlowFields(), identification: 1, sequence: 1, flags: TCPFlags.ack,
            payload: damage == 3 ? [] : [UInt8](repeating: 7, count: 3000))
        switch damage {
        case 1: p[3] &-= 1
        case 2: p[6] |= 0x20
        default: break
        }
        #expect(p.withUnsafeBytes { Segmenter.layout(of: $0, offload: offload) } == nil, "\(name)")
    }

    /// A batch of TUN-side packets, one per slot.
    func tunBatch(_ packets: [[UInt8]]) -> PacketBatch {
        var batch = PacketBatch(capacity: max(1, packets.count))
        for p in packets {
            p.withUnsafeBytes { _ = batch.append(copying: $0) }
            batch.setSide(.tun, of: batch.count - 1)
        }
        return batch
    }

    /// What the coalesced batch stands for: each output packet, super-packets cut up again.
    func expand(_ batch: borrowing PacketBatch) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for i in 0..<batch.count where batch.side(of: i) == .tun {
            let p = Array(batch.packet(i))
            let o = batch.offload(of: i)
            if o.isSegmented {
                out += segment(p, o) ?? [[]]
            } else {
                out.append(p)
            }
        }
        return out
    }

    /// Flow key of a packet, for grouping.
    func key(_ p: [UInt8]) -> [UInt8] { Array(p[9...9]) + Array(p[12..<24]) }

    @Test(
        "coalescing then segmenting gives back every flow's packets, in order, byte for byte (200 seeded random batches)"
    )
    func coalescingRoundTrip() throws {
        var rng = SplitMix64(seed: 0x6_0C0A)
        var merged = 0
        var superPackets = 0
        for n in 0..<200 {
            let udp = n % 4 == 3
            let coalescer = TUNCoalescer(batchCapacity: 128, coalescesUDP: udp || n % 2 == 0)
            // Up to 5 flows, each a run of segments as a TSO sender emits them; interleaved.
            var streams: [[[UInt8]]] = []
            for _ in 0..<(1 + rng.next(below: 5)) {
                let tcp = !(udp && rng.next(below: 2) == 0)
                let f = randomFlow(&rng, tcp: tcp)
                let size = 200 + rng.next(below: 1200)
                let count = 1 + rng.next(below: 30)
                var payload = (0..<(size * count - (rng.next(below: 2) == 0 ? rng.next(below: size) : 0)))
                    .map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if payload.isEmpty { payload = [1] }
                var flags: UInt8 = tcp ? TCPFlags.ack : 0
                if tcp && rng.next(below: 2) == 0 { flags |= TCPFlags.psh }
                var segments = referenceSegments(
                    f, identification: UInt16(truncatingIfNeeded: rng.next()),
                    sequence: rng.nextUInt32(), flags: flags, payload: payload, segmentSize: size)
                // Now and then a segment with a bad checksum, or one out of order.
                if segments.count > 2 && rng.next(below: 4) == 0 {
                    let k = rng.next(below: segments.count)
                    segments[k][segments[k].count - 1] ^= 0xFF
                }
                if segments.count > 3 && rng.next(below: 5) == 0 {
                    let k = 1 + rng.next(below: segments.count - 2)
                    segments.swapAt(k, k + 1)
                }
                streams.append(segments)
            }
            var input: [[UInt8]] = []
            var cursor = [Int](repeating: 0, count: streams.count)
            while input.count < 128,
                let s = (0..<streams.count).filter({ cursor[$0] < streams[$0].count }).randomElement(using: &rng)
            {
                input.append(streams[s][cursor[s]])
                cursor[s] += 1
            }
            let batch = tunBatch(input)
            merged += coalescer.coalesce(batch)
            superPackets += (0..<batch.count).filter { batch.offload(of: $0).isSegmented }.count
            let out = expand(batch)
            for k in Set(input.map(key)) {
                // UDP datagrams carry no sequence: a USO write numbers their IP IDs afresh, which
                // matters to no receiver (DF, or each datagram still has its own ID); TCP keeps all.
                let mask = { (p: [UInt8]) -> [UInt8] in
                    guard p[9] == IPProtocolNumber.udp else { return p }
                    var q = p
                    q[4] = 0
                    q[5] = 0
                    q[10] = 0
                    q[11] = 0
                    return q
                }
                let got = out.filter { key($0) == k }.map(mask)
                let want = input.filter { key($0) == k }.map(mask)
                #expect(
                    got == want, "batch \(n) (seed 0x60C0A): a flow of \(want.count) packets changed (\(got.count) out)"
                )
            }
            #expect(out.count == input.count, "batch \(n): \(out.count) packets out of \(input.count)")
            // Every super-packet is valid for a TUN write: its segments verify (they equal inputs).
            for i in 0..<batch.count where batch.offload(of: i).isSegmented {
                let p = Array(batch.packet(i))
                #expect(p.headerChecksumValid && Int(p.u16(2)) == p.count, "batch \(n): head \(i) lengths")
            }
        }
        // Not vacuous: most runs of a flow were merged.
        #expect(merged > 1000 && superPackets > 150, "merged \(merged) packets into \(superPackets) super-packets")
    }

    @Test("coalescing rules: what may not join a group stays alone, with its own bytes")
    func coalescingRules() throws {
        let f = FlowFields()
        func seg(_ k: Int, flags: UInt8 = TCPFlags.ack, size: Int = 1000, fields: FlowFields = FlowFields()) -> [UInt8]
        {
            referencePacket(
                fields, identification: UInt16(k), sequence: UInt32(1000 + k * 1000), flags: flags,
                payload: [UInt8](repeating: UInt8(k), count: size))
        }
        var badChecksum = seg(2)
        badChecksum[badChecksum.count - 1] ^= 1
        var otherTOS = f
        otherTOS.tos = 2
        let cases: [(String, [[UInt8]], [Int])] = [
            ("three in order merge", [seg(0), seg(1), seg(2)], [3]),
            ("a short segment ends the group", [seg(0), seg(1, size: 10), seg(2)], [2, 1]),
            ("PSH joins and ends the group", [seg(0), seg(1, flags: TCPFlags.ack | TCPFlags.psh), seg(2)], [2, 1]),
            ("PSH on the first: nothing joins it", [seg(0, flags: TCPFlags.ack | TCPFlags.psh), seg(1)], [1, 1]),
            ("FIN stays alone", [seg(0), seg(1, flags: TCPFlags.ack | TCPFlags.fin)], [1, 1]),
            ("SYN stays alone", [seg(0, flags: TCPFlags.syn | TCPFlags.ack), seg(1)], [1, 1]),
            ("a gap in the sequence", [seg(0), seg(2), seg(3)], [1, 2]),
            ("a bad checksum stays alone", [seg(0), seg(1), badChecksum, seg(3)], [2, 1, 1]),
            ("another TOS", [seg(0), seg(1, fields: otherTOS)], [1, 1]),
            ("a bigger segment does not join", [seg(0, size: 500), seg(1, size: 1000)], [1, 1]),
        ]
        for (name, packets, groups) in cases {
            let coalescer = TUNCoalescer(batchCapacity: 16, coalescesUDP: false)
            let batch = tunBatch(packets)
            coalescer.coalesce(batch)
            var sizes: [Int] = []
            for i in 0..<batch.count where batch.side(of: i) == .tun {
                let o = batch.offload(of: i)
                sizes.append(o.isSegmented ? (segment(Array(batch.packet(i)), o)?.count ?? -1) : 1)
            }
            #expect(sizes == groups, "\(name)")
            #expect(expand(batch) == packets, "\(name): bytes changed")
            if name.hasPrefix("a bad checksum") { #expect(coalescer.checksumFailures == 1) }
        }
    }

    @Test("UDP datagrams coalesce only with USO, at most 64 per write, equal sizes with a shorter last")
    func udpCoalescing() throws {
        var f = FlowFields()
        f.tcp = false
        let datagrams = (0..<70).map { k in
            referencePacket(
                f, identification: UInt16(k), sequence: 0, flags: 0,
                payload: [UInt8](repeating: UInt8(k), count: k == 69 ? 20 : 64))
        }
        let off = tunBatch(datagrams)
        TUNCoalescer(batchCapacity: 70, coalescesUDP: false).coalesce(off)
        #expect((0..<off.count).allSatisfy { off.side(of: $0) == .tun && !off.offload(of: $0).isSegmented })
        let on = tunBatch(datagrams)
        TUNCoalescer(batchCapacity: 70, coalescesUDP: true).coalesce(on)
        let heads = (0..<on.count).filter { on.side(of: $0) == .tun }
        #expect(heads.map { on.offload(of: $0).kind } == [.udp, .udp])
        #expect(expand(on) == datagrams)
        #expect(segment(Array(on.packet(heads[0])), on.offload(of: heads[0]))?.count == 64)
    }

    @Test("virtio header: round trip, the TUN write form, and taking a read in")
    func virtioHeader() throws {
        let h = VirtioNetHeader(
            flags: 1, gsoType: 0x81, headerLength: 0x1234, gsoSize: 1448, checksumStart: 20, checksumOffset: 16)
        var raw = [UInt8](repeating: 0, count: 10)
        raw.withUnsafeMutableBytes { h.store(to: $0.baseAddress!) }
        #expect(raw == [1, 0x81, 0x34, 0x12, 0xA8, 0x05, 20, 0, 16, 0], "little-endian fields")
        #expect(raw.withUnsafeBytes { VirtioNetHeader(loadingFrom: $0.baseAddress!) } == h)

        // The write form of a TCP super-packet: NEEDS_CSUM, GSO_TCPV4, and the folded (not
        // complemented) pseudo-header sum in the checksum field.
        let f = FlowFields()
        var p = superPacket(
            f, identification: 1, sequence: 9, flags: TCPFlags.ack, payload: [UInt8](repeating: 3, count: 4000))
        let w = p.withUnsafeMutableBytes {
            VirtioNetHeader.preparingTransmit(of: $0, offload: SegmentationOffload(kind: .tcp, segmentSize: 1448))
        }
        #expect(
            w
                == VirtioNetHeader(
                    flags: 1, gsoType: 1, headerLength: 40, gsoSize: 1448, checksumStart: 20, checksumOffset: 16))
        let s = f.source.octets
        let d = f.destination.octets
        let length = p.count - 20
        let pseudo: [UInt8] = [s.0, s.1, s.2, s.3, d.0, d.1, d.2, d.3, 0, 6, UInt8(length >> 8), UInt8(length & 0xFF)]
        #expect(p.u16(36) == ~pseudo.withUnsafeBytes { InternetChecksum.referenceChecksum($0) })

        // Taking in a CHECKSUM_PARTIAL packet (what a TUN read or a veth hands over): the checksum
        // is completed to exactly the reference value.
        var partial = referencePacket(f, identification: 1, sequence: 1, flags: TCPFlags.ack, payload: Array(0..<200))
        let complete = partial
        let l = partial.count - 20
        let ps: [UInt8] = [s.0, s.1, s.2, s.3, d.0, d.1, d.2, d.3, 0, 6, UInt8(l >> 8), UInt8(l & 0xFF)]
        let folded = ~ps.withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
        partial[36] = UInt8(folded >> 8)
        partial[37] = UInt8(folded & 0xFF)
        let readHeader = VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, checksumStart: 20 + 14, checksumOffset: 16)
        let taken = partial.withUnsafeMutableBytes {
            SegmentationOffload.taking(readHeader, packet: $0, linkHeaderLength: 14)
        }
        #expect(taken == .none && partial == complete)

        let table: [(String, VirtioNetHeader, SegmentationOffload)] = [
            ("TSO", VirtioNetHeader(gsoType: 1, gsoSize: 1448), SegmentationOffload(kind: .tcp, segmentSize: 1448)),
            (
                "TSO with ECN", VirtioNetHeader(gsoType: 0x81, gsoSize: 1448),
                SegmentationOffload(kind: .tcp, segmentSize: 1448, congestionWindowReduced: true)
            ),
            ("USO", VirtioNetHeader(gsoType: 5, gsoSize: 1200), SegmentationOffload(kind: .udp, segmentSize: 1200)),
            ("TCPv6 on IPv4", VirtioNetHeader(gsoType: 4, gsoSize: 1448), .invalid),
            ("UFO", VirtioNetHeader(gsoType: 3, gsoSize: 1448), .invalid),
            ("zero gso_size", VirtioNetHeader(gsoType: 1, gsoSize: 0), .invalid),
            (
                "checksum field beyond the packet", VirtioNetHeader(flags: 1, checksumStart: 60000, checksumOffset: 16),
                .invalid
            ),
        ]
        for (name, header, expected) in table {
            var q = complete
            #expect(q.withUnsafeMutableBytes { SegmentationOffload.taking(header, packet: $0) } == expected, "\(name)")
        }
    }
}

/// One batch of (packet, offload) through a fresh or given engine, either direction.
struct OffloadRun {
    var verdicts: [PacketVerdict] = []
    /// Each output slot: side, bytes, offload.
    var outputs: [(side: PacketSide, bytes: [UInt8], offload: SegmentationOffload)] = []
    var generated: [[UInt8]] = []
    var counters: EngineCounters

    init(
        _ packets: [([UInt8], SegmentationOffload)], ingress: Bool = false, engine: Engine? = nil,
        spec: TopologySpec = exampleSpec()
    ) throws {
        let engine = try engine ?? Engine(topology: Topology.compile(spec))
        var batch = PacketBatch(capacity: max(1, packets.count))
        var g = PacketBatch(capacity: 64, maximumPacketByteCount: 2048)
        var v = VerdictBatch(capacity: max(1, packets.count))
        for (p, o) in packets {
            p.withUnsafeBytes { _ = batch.append(copying: $0, time: Timestamp(seconds: 1000)) }
            batch.setOffload(o, of: batch.count - 1)
        }
        if ingress {
            engine.processIngress(&batch, generated: &g, verdicts: &v)
        } else {
            engine.processEgress(&batch, generated: &g, verdicts: &v)
        }
        for i in 0..<batch.count {
            verdicts.append(v[i])
            if batch.side(of: i) != .none {
                outputs.append((batch.side(of: i), Array(batch.packet(i)), batch.offload(of: i)))
            }
        }
        generated = (0..<g.count).map { Array(g.packet($0)) }
        counters = engine.counterSnapshot
    }
}

@Suite("Engine with super-packets")
struct EngineOffloadTests {
    /// A TCP super-packet from a1 to b1 (another node, Always: encapsulated) and its reference segments.
    /// 1428 bytes per segment: the MSS of a 1480-byte tunnel MTU with 12 bytes of TCP options.
    static func toB(
        payload: Int = 10 * 1428 + 100, size: Int = 1428, destination: String = "192.168.1.20"
    )
        -> (packet: [UInt8], offload: SegmentationOffload, segments: [[UInt8]])
    {
        var f = FlowFields()
        f.destination = ip(destination)
        f.ttl = 63
        f.options = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
        let bytes = (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let flags = TCPFlags.ack | TCPFlags.psh
        return (
            superPacket(f, identification: 0x4000, sequence: 7, flags: flags, payload: bytes),
            SegmentationOffload(kind: .tcp, segmentSize: UInt16(size)),
            referenceSegments(f, identification: 0x4000, sequence: 7, flags: flags, payload: bytes, segmentSize: size)
        )
    }

    @Test(
        "a TCP super-packet is encapsulated once; its segments are the reference's, each with its own outer header; counters count segments"
    )
    func encapsulation() throws {
        let s = Self.toB()
        let after = FlowFields()
        let next = referencePacket(after, identification: 1, sequence: 1, flags: TCPFlags.ack, payload: [1, 2, 3])
        let r = try OffloadRun([(s.packet, s.offload), (next, .none)])
        #expect(r.verdicts[0].action == .encapsulated && r.verdicts[0].outputCount == 11, "\(r.verdicts[0])")
        let out = r.outputs[0]
        #expect(out.side == .underlay && out.offload == s.offload && out.bytes[9] == IPProtocolNumber.ipInIP)
        let segments = try #require(segment(out.bytes, out.offload))
        #expect(segments.count == 11)
        let outerID = out.bytes.u16(4)
        for (k, seg) in segments.enumerated() {
            #expect(Array(seg[20...]) == s.segments[k], "segment \(k): inner packet")
            #expect(
                seg.u16(4) == outerID &+ UInt16(k) && seg.headerChecksumValid && Int(seg.u16(2)) == seg.count,
                "segment \(k): outer header")
            #expect(seg.addr(12) == ip("10.0.0.1") && seg.addr(16) == ip("10.0.0.2"))
        }
        // The next packet's outer ID comes after the 11 the super-packet took (ENC-11).
        #expect(r.outputs[1].bytes.u16(4) == outerID &+ 11)
        let c = r.counters
        #expect(c.superPacketsIn == 1 && c.egressPacketsIn == 12 && c.packets(.encapsulated) == 12)
        #expect(c.underlayPacketsOut == 12)
        let wire = segments.map(\.count).reduce(0, +) + r.outputs[1].bytes.count
        #expect(c.underlayBytesOut == UInt64(wire), "underlay bytes count every segment's headers")
        #expect(c.egressBytesIn == UInt64(s.segments.map(\.count).reduce(0, +) + next.count))
    }

    @Test("segments above the tunnel MTU: frag-needed with the MTU, the super-packet dropped as its segments")
    func tooBig() throws {
        var spec = exampleSpec()
        spec.underlayMTU = 1200
        let s = Self.toB()
        let r = try OffloadRun([(s.packet, s.offload)], spec: spec)
        #expect(
            r.verdicts[0].dropReason == .fragmentationNeeded && r.verdicts[0].icmpType == 3
                && r.verdicts[0].icmpCode == 4)
        #expect(r.generated.count == 1 && r.generated[0].u16(26) == 1180, "ICMP 3/4 carries the tunnel MTU")
        #expect(r.counters.drops[.fragmentationNeeded] == 11)
    }

    @Test(
        "offload metadata that does not fit the packet is an invalid_offload drop; a one-segment super-packet is an ordinary packet"
    )
    func invalidAndSingle() throws {
        let s = Self.toB()
        let wrongKind = SegmentationOffload(kind: .udp, segmentSize: 1428)
        var small = Self.toB(payload: 1000)
        #expect(small.segments.count == 1 && small.packet != small.segments[0], "the super-packet's checksum is junk")
        let r = try OffloadRun([(s.packet, wrongKind), (s.packet, .invalid), (small.packet, small.offload)])
        #expect(r.verdicts[0].dropReason == .invalidOffload && r.verdicts[1].dropReason == .invalidOffload)
        #expect(r.counters.drops[.invalidOffload] == 2)
        #expect(r.verdicts[2].action == .encapsulated && r.outputs[0].offload == .none)
        small.packet = Array(r.outputs[0].bytes[20...])
        #expect(small.packet == small.segments[0], "completed transport checksum")
    }

    @Test("SNAT translates a super-packet once; every segment leaves translated with valid checksums")
    func snat() throws {
        let s = Self.toB(destination: "203.0.113.10")
        let r = try OffloadRun([(s.packet, s.offload)])
        #expect(r.verdicts[0].action == .translated && r.outputs[0].offload == s.offload)
        let segments = try #require(segment(r.outputs[0].bytes, s.offload))
        #expect(segments.count == 11)
        for (k, seg) in segments.enumerated() {
            #expect(seg.addr(12) == ip("10.0.0.1") && seg.headerChecksumValid, "segment \(k): translated source")
            let l = seg.count - 20
            let pseudo: [UInt8] = [10, 0, 0, 1, 203, 0, 113, 10, 0, 6, UInt8(l >> 8), UInt8(l & 0xFF)]
            #expect(
                (pseudo + seg[20...]).withUnsafeBytes { InternetChecksum.referenceChecksum($0) } == 0,
                "segment \(k): TCP checksum")
            #expect(Array(seg[40...]) == Array(s.segments[k][40...]), "segment \(k): options and payload untouched")
        }
        #expect(r.counters.packets(.translated) == 11)
    }

    @Test("IP-in-IP super-packets from a peer (GRO) are decapsulated once and go to the TUN as super-packets")
    func decapsulation() throws {
        var f = FlowFields()
        f.source = ip("192.168.1.20")
        f.destination = ip("192.168.0.10")
        let payload = [UInt8](repeating: 9, count: 5 * 1448)
        let inner = superPacket(f, identification: 3, sequence: 100, flags: TCPFlags.ack, payload: payload)
        let outer = encapsulated(inner, from: "10.0.0.2", to: "10.0.0.1")
        let offload = SegmentationOffload(kind: .tcp, segmentSize: 1448)
        let r = try OffloadRun(
            [(outer, offload), (outer, SegmentationOffload(kind: .tcp, segmentSize: 1448))], ingress: true)
        #expect(r.verdicts[0].action == .decapsulated && r.outputs[0].side == .tun && r.outputs[0].offload == offload)
        #expect(r.outputs[0].bytes == inner)
        #expect(
            r.counters.packets(.decapsulated) == 10 && r.counters.tunPacketsOut == 10 && r.counters.superPacketsIn == 2)
        // The same from a stranger: dropped before anything else, counted as its segments.
        let stranger = encapsulated(inner, from: "198.51.100.9", to: "10.0.0.1")
        let s = try OffloadRun([(stranger, offload)], ingress: true)
        #expect(s.verdicts[0].dropReason == .ipipUnknownPeer && s.counters.drops[.ipipUnknownPeer] == 5)
    }
}

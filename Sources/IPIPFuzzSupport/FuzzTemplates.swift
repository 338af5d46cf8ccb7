import IPIPCore

/// The 8-byte descriptor of a template-mode record, turned into a valid-looking datagram.
///
/// ```
/// d0  inner source index (low nibble), inner destination index (high nibble), into
///     FuzzTopologies.interestingAddresses
/// d1  bits 0-2 inner protocol: UDP, TCP, ICMP echo, ICMP error (3/3), IP-in-IP, GRE, ICMP without
///     a body, UDP; bit 3 DF; bit 4 MF; bit 5 nonzero fragment offset ((d6 << 5) | 1);
///     bits 6-7 options: none, NOP NOP NOP EOL, router alert (copied), LSRR (copied, refused on ingress)
///     (payload bytes not supplied by the program are 0xA5 ^ d7)
/// d2  bits 0-1 ECN; bits 2-3 TTL 0, 1, 64, 255; bits 4-7 the top of the DSCP
/// d3 d4  payload length: d3 < 0xF0: (d3 & 0x0F) << 8 | d4 (≤ 4095); d3 ≥ 0xF0: (d3 & 0x0F) << 12 | d4 << 4
///     (clamped so the whole datagram stays ≤ 65535)
/// d5  ingress only: bits 0-2 outer source (FuzzTopologies.outerSources); bits 3-4 kind:
///     0 IP-in-IP to this node, 1 IP-in-IP to node-b (not for us), 2 ICMP error to this node
///     quoting an outer header we might have sent, 3 the inner datagram alone;
///     bits 5-6 outer ECN; bits 5-7 all set: outer MF too (an outer fragment)
/// d6  ICMP (kind 2): bits 0-2 type/code: 3/4 ×4, 3/1, 11/0, 0/0 (not an error), 3/4 quoting a
///     header whose source is node-b; also the fragment offset source (d1 bit 5)
/// d7  bits 0-5: how many payload bytes follow the descriptor in the program (the rest of the
///     payload is a counting pattern); bits 6-7: the frag-needed MTU: 0, d6, 552 + 4·d6, 1000 + 2·d6
/// ```
public struct FuzzDescriptor {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(
        _ d0: UInt8, _ d1: UInt8, _ d2: UInt8, _ d3: UInt8, _ d4: UInt8, _ d5: UInt8, _ d6: UInt8,
        _ d7: UInt8
    ) {
        bytes = (d0, d1, d2, d3, d4, d5, d6, d7)
    }

    /// Number of payload bytes the program supplies after the descriptor.
    public var suppliedPayloadCount: Int { Int(bytes.7 & 0x3F) }

    /// Builds the datagram into `out` (replacing its contents).
    /// - Parameters:
    ///   - ingress: wrap per `d5` (egress packets are the inner datagram alone).
    ///   - payload: the supplied payload bytes (at most `suppliedPayloadCount`).
    public func build(ingress: Bool, payload: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        let (d0, d1, d2, d3, d4, d5, d6, d7) = bytes
        let addresses = FuzzTopologies.interestingAddresses
        let kind = ingress ? (d5 >> 3) & 3 : 3
        // Room left for the wrapping headers, so every total length fits 16 bits.
        let wrapping = kind == 2 ? 48 : (kind == 3 ? 0 : 20)

        var options: [UInt8]
        switch d1 >> 6 {
        case 0: options = []
        case 1: options = [1, 1, 1, 0]
        case 2: options = [0x94, 4, 0, 0]
        default: options = [0x83, 7, 4, 10, 0, 0, 2, 1]  // LSRR via 10.0.0.2, then NOP
        }
        var inner = [UInt8](repeating: 0, count: 20)
        inner += options
        let headerLength = inner.count
        // Mostly up to 4095 bytes; d3 ≥ 0xF0 reaches the 64 KiB limit in steps of 16.
        let requested = d3 >= 0xF0 ? Int(d3 & 0x0F) << 12 | Int(d4) << 4 : Int(d3 & 0x0F) << 8 | Int(d4)
        let payloadLength = min(requested, 65535 - wrapping - headerLength)
        let protocolNumber: UInt8
        switch d1 & 7 {
        case 0, 7: protocolNumber = IPProtocolNumber.udp
        case 1: protocolNumber = IPProtocolNumber.tcp
        case 2, 3, 6: protocolNumber = IPProtocolNumber.icmp
        case 4: protocolNumber = IPProtocolNumber.ipInIP
        default: protocolNumber = 47
        }
        // A constant fill (Array(repeating:) is a memset even in debug builds; a per-byte pattern
        // loop made the harness slower than the engine) under the supplied bytes.
        var body = [UInt8](repeating: 0xA5 ^ d7, count: d1 & 7 == 6 ? 0 : payloadLength)
        if protocolNumber == IPProtocolNumber.icmp, body.count >= 8 {
            body[0] = d1 & 7 == 3 ? 3 : 8
            body[1] = d1 & 7 == 3 ? 3 : 0
        }
        let supplied = min(payload.count, body.count)
        if supplied > 0, let src = payload.baseAddress {
            body.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: src, byteCount: supplied) }
        }
        inner += body

        inner[0] = 0x40 | UInt8(headerLength / 4)
        inner[1] = (d2 & 0xF0) | (d2 & 3)
        inner[4] = d0
        inner[5] = d7
        var flags: UInt16 = 0
        if d1 & 0x08 != 0 { flags |= IPv4Header.dontFragmentFlag }
        if d1 & 0x10 != 0 { flags |= IPv4Header.moreFragmentsFlag }
        if d1 & 0x20 != 0 { flags |= (UInt16(d6) << 5 | 1) & IPv4Header.fragmentOffsetMask }
        Self.store16(flags, at: 6, in: &inner)
        inner[8] = [0, 1, 64, 255][Int(d2 >> 2) & 3]
        inner[9] = protocolNumber
        Self.store32(addresses[Int(d0 & 0x0F)].rawValue, at: 12, in: &inner)
        Self.store32(addresses[Int(d0 >> 4)].rawValue, at: 16, in: &inner)
        Self.finishHeader(&inner, headerLength: headerLength)

        switch kind {
        case 0, 1:
            let destination = kind == 0 ? FuzzTopologies.a("10.0.0.1") : FuzzTopologies.a("10.0.0.2")
            var outer = Self.header(
                source: FuzzTopologies.outerSources[Int(d5 & 7)], destination: destination,
                protocolNumber: IPProtocolNumber.ipInIP, tos: (d5 >> 5) & 3,
                flags: IPv4Header.dontFragmentFlag | (d5 & 0xE0 == 0xE0 ? IPv4Header.moreFragmentsFlag : 0))
            outer += inner
            Self.finishHeader(&outer, headerLength: 20)
            out = outer
        case 2:
            // An ICMP error from a router on the path, quoting an outer header (ours or not) and the
            // start of the inner datagram.
            let (type, code): (UInt8, UInt8) = [(3, 4), (3, 4), (3, 4), (3, 4), (3, 1), (11, 0), (0, 0), (3, 4)][
                Int(d6 & 7)]
            let quotedSource = d6 & 7 == 7 ? FuzzTopologies.a("10.0.0.2") : FuzzTopologies.a("10.0.0.1")
            var quoted = Self.header(
                source: quotedSource, destination: addresses[Int(d0 >> 4)],
                protocolNumber: IPProtocolNumber.ipInIP, tos: 0, flags: IPv4Header.dontFragmentFlag)
            quoted += inner
            Self.finishHeader(&quoted, headerLength: 20)
            let mtu: UInt16
            switch d7 >> 6 {
            case 0: mtu = 0
            case 1: mtu = UInt16(d6)
            case 2: mtu = 552 + 4 * UInt16(d6)
            default: mtu = 1000 + 2 * UInt16(d6)
            }
            var icmp: [UInt8] = [type, code, 0, 0, 0, 0, UInt8(mtu >> 8), UInt8(mtu & 0xFF)]
            icmp += quoted.prefix(576 - 28)
            let c = icmp.withUnsafeBytes { InternetChecksum.checksum($0) }
            Self.store16(c, at: 2, in: &icmp)
            var ip = Self.header(
                source: FuzzTopologies.outerSources[Int(d5 & 7)], destination: FuzzTopologies.a("10.0.0.1"),
                protocolNumber: IPProtocolNumber.icmp, tos: 0xC0,
                flags: d5 & 0xE0 == 0xE0 ? IPv4Header.moreFragmentsFlag : 0)
            ip += icmp
            Self.finishHeader(&ip, headerLength: 20)
            out = ip
        default:
            out = inner
        }
    }

    static func header(
        source: IPv4Address, destination: IPv4Address, protocolNumber: UInt8, tos: UInt8,
        flags: UInt16
    ) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 20)
        h[0] = 0x45
        h[1] = tos
        h[4] = 0x77
        h[5] = 0x01
        store16(flags, at: 6, in: &h)
        h[8] = 64
        h[9] = protocolNumber
        store32(source.rawValue, at: 12, in: &h)
        store32(destination.rawValue, at: 16, in: &h)
        return h
    }

    /// Sets the total length to the array's length and recomputes the header checksum.
    static func finishHeader(_ b: inout [UInt8], headerLength: Int) {
        store16(UInt16(truncatingIfNeeded: b.count), at: 2, in: &b)
        b[10] = 0
        b[11] = 0
        let c = b.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<headerLength])) }
        store16(c, at: 10, in: &b)
    }

    static func store16(_ v: UInt16, at o: Int, in b: inout [UInt8]) {
        b[o] = UInt8(v >> 8)
        b[o + 1] = UInt8(v & 0xFF)
    }

    static func store32(_ v: UInt32, at o: Int, in b: inout [UInt8]) {
        store16(UInt16(v >> 16), at: o, in: &b)
        store16(UInt16(v & 0xFFFF), at: o + 2, in: &b)
    }
}

import IPIPCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

    /// Builds the datagram into `out` (replacing it).
    /// - Parameters:
    ///   - ingress: wrap per `d5` (egress packets are the inner datagram alone).
    ///   - payload: the supplied payload bytes (at most `suppliedPayloadCount`).
    ///
    /// Written in place, with one fill and no intermediate arrays: building a 4 KiB datagram
    /// through arrays (body, inner, outer, quoted) cost more than the engine's work on it.
    public func build(ingress: Bool, payload: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        let (d0, d1, d2, d3, d4, d5, d6, d7) = bytes
        let addresses = FuzzTopologies.interestingAddresses
        let kind = ingress ? (d5 >> 3) & 3 : 3
        // Room left for the wrapping headers, so every total length fits 16 bits.
        let wrapping = kind == 2 ? 48 : (kind == 3 ? 0 : 20)

        let options: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
        let optionCount: Int
        switch d1 >> 6 {
        case 0: (options, optionCount) = ((0, 0, 0, 0, 0, 0, 0, 0), 0)
        case 1: (options, optionCount) = ((1, 1, 1, 0, 0, 0, 0, 0), 4)
        case 2: (options, optionCount) = ((0x94, 4, 0, 0, 0, 0, 0, 0), 4)
        default: (options, optionCount) = ((0x83, 7, 4, 10, 0, 0, 2, 1), 8)  // LSRR via 10.0.0.2, then NOP
        }
        let headerLength = 20 + optionCount
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
        let bodyCount = d1 & 7 == 6 ? 0 : payloadLength
        let innerLength = headerLength + bodyCount
        // An ICMP error quotes the first 576 − 28 bytes of the outer header it is about and the
        // inner datagram: only those bytes of the inner datagram are written.
        let innerOffset = kind == 2 ? 48 : (kind == 3 ? 0 : 20)
        let innerWritten = kind == 2 ? min(innerLength, 576 - 28 - 20) : innerLength
        let total = innerOffset + innerWritten

        // One zeroing memset: appending `repeatElement` ran an instrumented loop per byte.
        out = [UInt8](unsafeUninitializedCapacity: total) { b, initialized in
            memset(b.baseAddress!, 0, total)
            initialized = total
        }
        out.withUnsafeMutableBytes { b in
            let base = b.baseAddress!
            let inner = UnsafeMutableRawBufferPointer(rebasing: b[innerOffset...])
            // The body: a constant fill under the supplied bytes (a per-byte pattern loop made
            // the harness slower than the engine).
            let bodyWritten = innerWritten - headerLength
            if bodyWritten > 0 { memset(inner.baseAddress! + headerLength, Int32(0xA5 ^ d7), bodyWritten) }
            if protocolNumber == IPProtocolNumber.icmp, bodyCount >= 8 {
                inner[headerLength] = d1 & 7 == 3 ? 3 : 8
                inner[headerLength + 1] = d1 & 7 == 3 ? 3 : 0
            }
            let supplied = min(payload.count, bodyCount, max(0, bodyWritten))
            if supplied > 0, let src = payload.baseAddress {
                (inner.baseAddress! + headerLength).copyMemory(from: src, byteCount: supplied)
            }
            withUnsafeBytes(of: options) { o in
                for k in 0..<optionCount { inner[20 + k] = o[k] }
            }
            inner[0] = 0x40 | UInt8(headerLength / 4)
            inner[1] = (d2 & 0xF0) | (d2 & 3)
            inner[4] = d0
            inner[5] = d7
            var flags: UInt16 = 0
            if d1 & 0x08 != 0 { flags |= IPv4Header.dontFragmentFlag }
            if d1 & 0x10 != 0 { flags |= IPv4Header.moreFragmentsFlag }
            if d1 & 0x20 != 0 { flags |= (UInt16(d6) << 5 | 1) & IPv4Header.fragmentOffsetMask }
            Self.store16(flags, at: 6, in: inner)
            inner[8] = [0, 1, 64, 255][Int(d2 >> 2) & 3]
            inner[9] = protocolNumber
            Self.store32(addresses[Int(d0 & 0x0F)].rawValue, at: 12, in: inner)
            Self.store32(addresses[Int(d0 >> 4)].rawValue, at: 16, in: inner)
            Self.finishHeader(inner, totalLength: innerLength, headerLength: headerLength)

            switch kind {
            case 0, 1:
                let destination = kind == 0 ? FuzzTopologies.a("10.0.0.1") : FuzzTopologies.a("10.0.0.2")
                let outer = UnsafeMutableRawBufferPointer(start: base, count: 20)
                Self.writeHeader(
                    outer, source: FuzzTopologies.outerSources[Int(d5 & 7)], destination: destination,
                    protocolNumber: IPProtocolNumber.ipInIP, tos: (d5 >> 5) & 3,
                    flags: IPv4Header.dontFragmentFlag | (d5 & 0xE0 == 0xE0 ? IPv4Header.moreFragmentsFlag : 0))
                Self.finishHeader(outer, totalLength: 20 + innerLength, headerLength: 20)
            case 2:
                // An ICMP error from a router on the path, quoting an outer header (ours or not) and
                // the start of the inner datagram.
                let (type, code): (UInt8, UInt8) = [(3, 4), (3, 4), (3, 4), (3, 4), (3, 1), (11, 0), (0, 0), (3, 4)][
                    Int(d6 & 7)]
                let quotedSource = d6 & 7 == 7 ? FuzzTopologies.a("10.0.0.2") : FuzzTopologies.a("10.0.0.1")
                let quoted = UnsafeMutableRawBufferPointer(start: base + 28, count: 20)
                Self.writeHeader(
                    quoted, source: quotedSource, destination: addresses[Int(d0 >> 4)],
                    protocolNumber: IPProtocolNumber.ipInIP, tos: 0, flags: IPv4Header.dontFragmentFlag)
                Self.finishHeader(quoted, totalLength: 20 + innerLength, headerLength: 20)
                let mtu: UInt16
                switch d7 >> 6 {
                case 0: mtu = 0
                case 1: mtu = UInt16(d6)
                case 2: mtu = 552 + 4 * UInt16(d6)
                default: mtu = 1000 + 2 * UInt16(d6)
                }
                let icmp = UnsafeMutableRawBufferPointer(rebasing: b[20...])
                icmp[0] = type
                icmp[1] = code
                Self.store16(mtu, at: 6, in: icmp)
                Self.store16(InternetChecksum.checksum(UnsafeRawBufferPointer(icmp)), at: 2, in: icmp)
                let ip = UnsafeMutableRawBufferPointer(start: base, count: 20)
                Self.writeHeader(
                    ip, source: FuzzTopologies.outerSources[Int(d5 & 7)], destination: FuzzTopologies.a("10.0.0.1"),
                    protocolNumber: IPProtocolNumber.icmp, tos: 0xC0,
                    flags: d5 & 0xE0 == 0xE0 ? IPv4Header.moreFragmentsFlag : 0)
                Self.finishHeader(ip, totalLength: total, headerLength: 20)
            default:
                break
            }
        }
    }

    /// Writes a 20-byte header without its total length and checksum.
    static func writeHeader(
        _ h: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address, protocolNumber: UInt8,
        tos: UInt8, flags: UInt16
    ) {
        h[0] = 0x45
        h[1] = tos
        h[4] = 0x77
        h[5] = 0x01
        store16(flags, at: 6, in: h)
        h[8] = 64
        h[9] = protocolNumber
        store32(source.rawValue, at: 12, in: h)
        store32(destination.rawValue, at: 16, in: h)
    }

    /// Sets the total length (truncated to 16 bits, as on the wire) and the header checksum.
    static func finishHeader(_ b: UnsafeMutableRawBufferPointer, totalLength: Int, headerLength: Int) {
        store16(UInt16(truncatingIfNeeded: totalLength), at: 2, in: b)
        b[10] = 0
        b[11] = 0
        let c = InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: b[0..<headerLength]))
        store16(c, at: 10, in: b)
    }

    static func store16(_ v: UInt16, at o: Int, in b: UnsafeMutableRawBufferPointer) {
        b[o] = UInt8(v >> 8)
        b[o + 1] = UInt8(v & 0xFF)
    }

    static func store32(_ v: UInt32, at o: Int, in b: UnsafeMutableRawBufferPointer) {
        store16(UInt16(v >> 16), at: o, in: b)
        store16(UInt16(v & 0xFFFF), at: o + 2, in: b)
    }
}

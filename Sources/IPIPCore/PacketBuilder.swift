/// Builds well-formed IPv4 datagrams and their transport headers, checksums filled in: the one
/// packet builder of `ipipd gen`, the tests and the fuzz and benchmark fixtures. It allocates (an
/// array per packet) and is never on the per-packet path.
public struct PacketBuilder: Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var protocolNumber: UInt8
    public var ttl: UInt8
    public var tos: UInt8 = 0
    public var dontFragment = true
    public var moreFragments = false
    /// In 8-byte units.
    public var fragmentOffset: UInt16 = 0
    public var identification: UInt16
    /// Option bytes, a multiple of 4 (up to 40).
    public var options: [UInt8] = []
    /// Everything after the IPv4 header.
    public var payload: [UInt8]

    public init(
        source: IPv4Address, destination: IPv4Address, protocolNumber: UInt8 = IPProtocolNumber.udp,
        ttl: UInt8 = 64, identification: UInt16 = 0x1234, payload: [UInt8] = []
    ) {
        self.source = source
        self.destination = destination
        self.protocolNumber = protocolNumber
        self.ttl = ttl
        self.identification = identification
        self.payload = payload
    }

    /// The flags and fragment offset word (bytes 6–7).
    public var flagsAndOffset: UInt16 {
        get { fragmentOffset | (dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0) }
        set {
            dontFragment = newValue & 0x4000 != 0
            moreFragments = newValue & 0x2000 != 0
            fragmentOffset = newValue & 0x1FFF
        }
    }

    /// Header (checksum computed) and payload.
    public func bytes() -> [UInt8] {
        precondition(options.count % 4 == 0 && options.count <= 40, "IPv4 options come in words, at most 10")
        let headerLength = 20 + options.count
        var b = [UInt8](repeating: 0, count: headerLength)
        b[0] = 0x40 | UInt8(headerLength / 4)
        b[1] = tos
        Self.put16(&b, 2, UInt16(headerLength + payload.count))
        Self.put16(&b, 4, identification)
        Self.put16(&b, 6, flagsAndOffset)
        b[8] = ttl
        b[9] = protocolNumber
        Self.put32(&b, 12, source.rawValue)
        Self.put32(&b, 16, destination.rawValue)
        b.replaceSubrange(20..<headerLength, with: options)
        Self.put16(&b, 10, b.withUnsafeBytes { InternetChecksum.checksum($0) })
        return b + payload
    }

    // MARK: Transport headers

    /// A UDP header and `payload`; the checksum over the pseudo-header of `source` → `destination`
    /// (a computed 0 sent as 0xFFFF), or 0, "none", when `checksum` is false.
    public static func udp(
        source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
        payload: [UInt8], checksum: Bool = true
    ) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8)
        put16(&b, 0, sourcePort)
        put16(&b, 2, destinationPort)
        put16(&b, 4, UInt16(8 + payload.count))
        b += payload
        if checksum {
            let c = b.withUnsafeBytes {
                InternetChecksum.checksum(
                    $0, initial: pseudoHeaderSum(source, destination, IPProtocolNumber.udp, $0.count))
            }
            put16(&b, 6, c == 0 ? 0xFFFF : c)
        }
        return b
    }

    /// A TCP header without options (window 64240; the acknowledgment number only with ACK) and
    /// `payload`, checksum over the pseudo-header.
    public static func tcp(
        source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
        sequence: UInt32, acknowledgment: UInt32, flags: UInt8, payload: [UInt8]
    ) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 20)
        put16(&b, 0, sourcePort)
        put16(&b, 2, destinationPort)
        put32(&b, 4, sequence)
        put32(&b, 8, flags & TCPHeader.ack != 0 ? acknowledgment : 0)
        b[12] = 5 << 4
        b[13] = flags
        put16(&b, 14, 64240)
        b += payload
        let c = b.withUnsafeBytes {
            InternetChecksum.checksum($0, initial: pseudoHeaderSum(source, destination, IPProtocolNumber.tcp, $0.count))
        }
        put16(&b, 16, c)
        return b
    }

    /// An ICMP echo request (or reply) with `payload`, checksum computed.
    public static func icmpEcho(reply: Bool, identifier: UInt16, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8)
        b[0] = reply ? ICMPType.echoReply : ICMPType.echoRequest
        put16(&b, 4, identifier)
        put16(&b, 6, sequence)
        b += payload
        put16(&b, 2, b.withUnsafeBytes { InternetChecksum.checksum($0) })
        return b
    }

    /// Deterministic filler: byte i of the segment (counted from the start of the transport
    /// header, `offset` bytes before the filler) is i·31 + 7.
    public static func filler(count: Int, offset: Int) -> [UInt8] {
        (offset..<offset + max(0, count)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    }

    /// The pseudo-header's contribution to a TCP or UDP checksum (RFC 768, RFC 9293 §3.1).
    public static func pseudoHeaderSum(_ s: IPv4Address, _ d: IPv4Address, _ proto: UInt8, _ length: Int) -> UInt32 {
        (s.rawValue >> 16) + (s.rawValue & 0xFFFF) + (d.rawValue >> 16) + (d.rawValue & 0xFFFF) + UInt32(proto)
            + UInt32(length)
    }

    static func put16(_ b: inout [UInt8], _ o: Int, _ v: UInt16) {
        b[o] = UInt8(v >> 8)
        b[o + 1] = UInt8(v & 0xFF)
    }

    static func put32(_ b: inout [UInt8], _ o: Int, _ v: UInt32) {
        put16(&b, o, UInt16(v >> 16))
        put16(&b, o + 2, UInt16(v & 0xFFFF))
    }
}

//  RFC 792 (ICMP), RFC 768 (UDP), RFC 9293 §3.1 (TCP). Only the fields the dataplane reads or
//  rewrites are exposed. All views are unchecked: the caller validates the length first with
//  `minimumByteCount`.

/// A view of an ICMP header: type, code, checksum and the 4-byte rest-of-header word.
public struct ICMPHeader {
    /// Type, code, checksum and the rest-of-header word.
    public static let minimumByteCount = 8
    /// Start of the ICMP header.
    public let base: UnsafeMutableRawPointer
    /// Wraps `base` without any check.
    @inlinable public init(unchecked base: UnsafeMutableRawPointer) { self.base = base }

    /// Wraps `bytes` when they hold at least the 8-byte ICMP header.
    @inlinable public init?(validating bytes: UnsafeMutableRawBufferPointer) {
        guard bytes.count >= Self.minimumByteCount, let b = bytes.baseAddress else { return nil }
        base = b
    }

    /// ICMP type.
    @inlinable public var type: UInt8 {
        get { base.load(as: UInt8.self) }
        nonmutating set { base.storeBytes(of: newValue, as: UInt8.self) }
    }
    /// ICMP code.
    @inlinable public var code: UInt8 {
        get { base.load(fromByteOffset: 1, as: UInt8.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 1, as: UInt8.self) }
    }
    /// Checksum over the whole ICMP message.
    @inlinable public var checksum: UInt16 {
        get { UInt16(bigEndian: base.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
        nonmutating set { base.storeBytes(of: newValue.bigEndian, toByteOffset: 2, as: UInt16.self) }
    }
    /// Bytes 4…5: identifier for echo, unused for errors.
    @inlinable public var identifier: UInt16 {
        get { UInt16(bigEndian: base.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) }
        nonmutating set { base.storeBytes(of: newValue.bigEndian, toByteOffset: 4, as: UInt16.self) }
    }
    /// Bytes 6…7: sequence number for echo, next-hop MTU for "fragmentation needed" (RFC 1191).
    @inlinable public var sequenceOrMTU: UInt16 {
        get { UInt16(bigEndian: base.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) }
        nonmutating set { base.storeBytes(of: newValue.bigEndian, toByteOffset: 6, as: UInt16.self) }
    }

    /// Whether an ICMP type is an error message (RFC 1812 §4.3.2.7: never answer one with another).
    @inlinable public static func isError(type: UInt8) -> Bool {
        switch type {
        case ICMPType.destinationUnreachable, ICMPType.sourceQuench, ICMPType.redirect,
            ICMPType.timeExceeded, ICMPType.parameterProblem:
            return true
        default:
            return false
        }
    }
}

/// ICMP types used by the dataplane.
public enum ICMPType {
    public static let echoReply: UInt8 = 0
    public static let destinationUnreachable: UInt8 = 3
    public static let sourceQuench: UInt8 = 4
    public static let redirect: UInt8 = 5
    public static let echoRequest: UInt8 = 8
    public static let timeExceeded: UInt8 = 11
    public static let parameterProblem: UInt8 = 12
}

/// Destination-unreachable codes used by the dataplane.
public enum ICMPUnreachableCode {
    public static let network: UInt8 = 0
    public static let host: UInt8 = 1
    public static let port: UInt8 = 3
    public static let fragmentationNeeded: UInt8 = 4
    public static let administrativelyProhibited: UInt8 = 13
}

/// A view of a UDP header.
public struct UDPHeader: TransportPortsView {
    /// The fixed UDP header size.
    public static let minimumByteCount = 8
    /// Start of the UDP header.
    public let base: UnsafeMutableRawPointer
    /// Wraps `base` without any check.
    @inlinable public init(unchecked base: UnsafeMutableRawPointer) { self.base = base }
    /// Wraps `bytes` when they hold the 8-byte header and its length field fits them.
    @inlinable public init?(validating bytes: UnsafeMutableRawBufferPointer) {
        guard bytes.count >= Self.minimumByteCount, let b = bytes.baseAddress else { return nil }
        let length = Int(UInt16(bigEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
        guard length >= Self.minimumByteCount, length <= bytes.count else { return nil }
        base = b
    }
    /// Length of header and data.
    @inlinable public var length: UInt16 {
        get { load16(4) }
        nonmutating set { store16(newValue, 4) }
    }
    /// Checksum; 0 means "not computed" (RFC 768).
    @inlinable public var checksum: UInt16 {
        get { load16(6) }
        nonmutating set { store16(newValue, 6) }
    }
}

/// A view of a TCP header.
public struct TCPHeader: TransportPortsView {
    /// The header size without options.
    public static let minimumByteCount = 20
    /// Start of the TCP header.
    public let base: UnsafeMutableRawPointer
    /// Wraps `base` without any check.
    @inlinable public init(unchecked base: UnsafeMutableRawPointer) { self.base = base }
    /// Wraps `bytes` when they hold a TCP header whose data offset is 20…60 and fits them.
    @inlinable public init?(validating bytes: UnsafeMutableRawBufferPointer) {
        guard bytes.count >= Self.minimumByteCount, let b = bytes.baseAddress else { return nil }
        let headerLength = Int(b.load(fromByteOffset: 12, as: UInt8.self) >> 4) &* 4
        guard headerLength >= Self.minimumByteCount, headerLength <= bytes.count else { return nil }
        base = b
    }
    /// Data offset in bytes.
    @inlinable public var headerLength: Int { Int(base.load(fromByteOffset: 12, as: UInt8.self) >> 4) &* 4 }
    /// The flag bits (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...).
    @inlinable public var flags: UInt8 { base.load(fromByteOffset: 13, as: UInt8.self) }
    /// Checksum.
    @inlinable public var checksum: UInt16 {
        get { load16(16) }
        nonmutating set { store16(newValue, 16) }
    }

    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let ack: UInt8 = 0x10
}

/// What UDP and TCP headers share: the source and destination ports at offsets 0 and 2, and
/// big-endian 16-bit fields. Statically dispatched (the conforming views are concrete structs).
public protocol TransportPortsView {
    /// Start of the header.
    var base: UnsafeMutableRawPointer { get }
}

extension TransportPortsView {
    @inlinable func load16(_ o: Int) -> UInt16 {
        UInt16(bigEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self))
    }
    @inlinable func store16(_ v: UInt16, _ o: Int) {
        base.storeBytes(of: v.bigEndian, toByteOffset: o, as: UInt16.self)
    }
    /// Source port.
    @inlinable public var sourcePort: UInt16 {
        get { load16(0) }
        nonmutating set { store16(newValue, 0) }
    }
    /// Destination port.
    @inlinable public var destinationPort: UInt16 {
        get { load16(2) }
        nonmutating set { store16(newValue, 2) }
    }
}

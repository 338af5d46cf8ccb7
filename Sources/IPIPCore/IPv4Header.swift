//  RFC 791 §3.1, Internet Header Format:
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |Version|  IHL  |Type of Service|          Total Length         |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |         Identification        |Flags|      Fragment Offset    |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  Time to Live |    Protocol   |         Header Checksum       |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                       Source Address                          |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Destination Address                        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Options                    |    Padding    |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
//  The Type of Service byte is DSCP (6 bits) + ECN (2 bits) since RFC 2474 / RFC 3168.

/// IP protocol numbers the dataplane cares about.
public enum IPProtocolNumber {
    /// ICMP (RFC 792).
    public static let icmp: UInt8 = 1
    /// IPv4 encapsulated in IPv4 (RFC 2003).
    public static let ipInIP: UInt8 = 4
    /// TCP.
    public static let tcp: UInt8 = 6
    /// UDP.
    public static let udp: UInt8 = 17
}

/// A view of an IPv4 header in caller-owned memory. It does not own or retain the bytes.
///
/// Obtain one through `IPv4Header.validate(_:)`, which checks version, IHL, total length and the
/// captured length once; after that every accessor is an unchecked load.
/// - Warning: do not keep a view beyond the scope in which its memory is lent to you.
public struct IPv4Header {
    /// The minimum header size, without options.
    public static let minimumByteCount = 20
    /// Flag bit "don't fragment" within the flags/fragment-offset word.
    public static let dontFragmentFlag: UInt16 = 0x4000
    /// Flag bit "more fragments".
    public static let moreFragmentsFlag: UInt16 = 0x2000
    /// Mask of the fragment offset (in 8-byte units).
    public static let fragmentOffsetMask: UInt16 = 0x1FFF

    /// Start of the header.
    public let base: UnsafeMutableRawPointer

    /// Wraps `base` without any check.
    @inlinable
    public init(unchecked base: UnsafeMutableRawPointer) { self.base = base }

    /// Wraps `bytes` when `validate` finds a well-formed IPv4 header.
    @inlinable
    public init?(validating bytes: UnsafeMutableRawBufferPointer) {
        guard case .valid = Self.validate(UnsafeRawBufferPointer(bytes)), let b = bytes.baseAddress else { return nil }
        base = b
    }

    /// The outcome of validating the bytes in front of a header.
    public enum Validation: Equatable, Sendable {
        /// A well-formed header; `totalLength` bytes of the buffer belong to the datagram.
        case valid(headerLength: Int, totalLength: Int)
        /// Not IPv4 (the version nibble says something else).
        case notIPv4(version: UInt8)
        /// Too short, bad IHL, total length beyond the captured bytes or below the header length.
        case malformed
    }

    /// Checks version 4, IHL ≥ 5, header length ≤ total length ≤ captured length.
    /// Does not check the header checksum (see `hasValidChecksum`).
    @inlinable
    public static func validate(_ bytes: UnsafeRawBufferPointer) -> Validation {
        guard bytes.count >= 1 else { return .malformed }
        let v = bytes[0] >> 4
        guard v == 4 else { return .notIPv4(version: v) }
        guard bytes.count >= minimumByteCount else { return .malformed }
        let headerLength = Int(bytes[0] & 0x0F) &* 4
        let totalLength = Int(UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        guard headerLength >= minimumByteCount, totalLength >= headerLength, totalLength <= bytes.count else {
            return .malformed
        }
        return .valid(headerLength: headerLength, totalLength: totalLength)
    }

    // MARK: Fields (network byte order in memory, host order in Swift)

    @inlinable func load16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inlinable func store16(_ value: UInt16, _ offset: Int) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inlinable func load32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inlinable func store32(_ value: UInt32, _ offset: Int) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// The version nibble.
    @inlinable public var version: UInt8 { base.load(as: UInt8.self) >> 4 }
    /// Header length in bytes (IHL × 4).
    @inlinable public var headerLength: Int { Int(base.load(as: UInt8.self) & 0x0F) &* 4 }
    /// The whole Type of Service byte (DSCP and ECN).
    @inlinable public var typeOfService: UInt8 {
        get { base.load(fromByteOffset: 1, as: UInt8.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 1, as: UInt8.self) }
    }
    /// The ECN field (low two bits of the TOS byte).
    @inlinable public var ecn: ECN { ECN(rawValue: typeOfService & 0x03)! }
    /// The DSCP field (high six bits of the TOS byte).
    @inlinable public var dscp: UInt8 { typeOfService >> 2 }
    /// Total length of the datagram in bytes.
    @inlinable public var totalLength: UInt16 {
        get { load16(2) }
        nonmutating set { store16(newValue, 2) }
    }
    /// Identification.
    @inlinable public var identification: UInt16 {
        get { load16(4) }
        nonmutating set { store16(newValue, 4) }
    }
    /// The flags and fragment offset word.
    @inlinable public var flagsAndFragmentOffset: UInt16 {
        get { load16(6) }
        nonmutating set { store16(newValue, 6) }
    }
    /// DF.
    @inlinable public var dontFragment: Bool { flagsAndFragmentOffset & Self.dontFragmentFlag != 0 }
    /// MF.
    @inlinable public var moreFragments: Bool { flagsAndFragmentOffset & Self.moreFragmentsFlag != 0 }
    /// Fragment offset in 8-byte units.
    @inlinable public var fragmentOffset: UInt16 { flagsAndFragmentOffset & Self.fragmentOffsetMask }
    /// True for any fragment: MF set or a non-zero offset.
    @inlinable public var isFragment: Bool {
        flagsAndFragmentOffset & (Self.moreFragmentsFlag | Self.fragmentOffsetMask) != 0
    }
    /// Time to live.
    @inlinable public var timeToLive: UInt8 {
        get { base.load(fromByteOffset: 8, as: UInt8.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 8, as: UInt8.self) }
    }
    /// Protocol.
    @inlinable public var protocolNumber: UInt8 {
        get { base.load(fromByteOffset: 9, as: UInt8.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 9, as: UInt8.self) }
    }
    /// Header checksum as stored.
    @inlinable public var headerChecksum: UInt16 {
        get { load16(10) }
        nonmutating set { store16(newValue, 10) }
    }
    /// Source address.
    @inlinable public var sourceAddress: IPv4Address {
        get { IPv4Address(rawValue: load32(12)) }
        nonmutating set { store32(newValue.rawValue, 12) }
    }
    /// Destination address.
    @inlinable public var destinationAddress: IPv4Address {
        get { IPv4Address(rawValue: load32(16)) }
        nonmutating set { store32(newValue.rawValue, 16) }
    }

    /// The header bytes (including options).
    @inlinable public var headerBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base, count: headerLength)
    }

    /// Whether the stored checksum verifies.
    @inlinable public var hasValidChecksum: Bool { InternetChecksum.sum(headerBytes) == 0xFFFF }

    /// Recomputes the header checksum from scratch.
    @inlinable public func updateChecksum() {
        headerChecksum = 0
        headerChecksum = InternetChecksum.checksum(headerBytes)
    }

    /// Sets the TTL and patches the checksum incrementally (RFC 1624).
    @inlinable public func setTimeToLiveUpdatingChecksum(_ ttl: UInt8) {
        let old = load16(8)
        timeToLive = ttl
        headerChecksum = InternetChecksum.update(headerChecksum, old: old, new: load16(8))
    }

    /// Sets the source address and patches the header checksum incrementally.
    @inlinable public func setSourceAddressUpdatingChecksum(_ address: IPv4Address) {
        let old = sourceAddress.rawValue
        sourceAddress = address
        headerChecksum = InternetChecksum.update(headerChecksum, old: old, new: address.rawValue)
    }

    /// Sets the destination address and patches the header checksum incrementally.
    @inlinable public func setDestinationAddressUpdatingChecksum(_ address: IPv4Address) {
        let old = destinationAddress.rawValue
        destinationAddress = address
        headerChecksum = InternetChecksum.update(headerChecksum, old: old, new: address.rawValue)
    }

    /// Sets the TOS byte and patches the checksum incrementally.
    @inlinable public func setTypeOfServiceUpdatingChecksum(_ tos: UInt8) {
        let old = load16(0)
        typeOfService = tos
        headerChecksum = InternetChecksum.update(headerChecksum, old: old, new: load16(0))
    }
}

/// The two ECN bits (RFC 3168 §5).
public enum ECN: UInt8, Sendable, CaseIterable {
    /// Not ECN-capable transport.
    case notECT = 0
    /// ECN-capable transport, ECT(1).
    case ect1 = 1
    /// ECN-capable transport, ECT(0).
    case ect0 = 2
    /// Congestion experienced.
    case ce = 3
}

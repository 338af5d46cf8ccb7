/// An IPv4 address, held as a 32-bit number in host order (`a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`).
///
/// Parsing is strict: exactly four decimal octets 0…255 separated by dots, no leading `+`, no
/// whitespace, no more than three digits per octet. Leading zeros are accepted (`010` is ten, not
/// octal), as Go's `net.ParseIP` accepted them in the Calico versions this project follows.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as a host-order integer.
    public var rawValue: UInt32

    /// Creates an address from its host-order integer value.
    @inlinable
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Creates `a.b.c.d`.
    @inlinable
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses a dotted-quad string; returns nil for anything else.
    public init?(_ text: some StringProtocol) {
        var value: UInt32 = 0
        var octet: UInt32 = 0
        var digits = 0
        var dots = 0
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                digits += 1
                guard digits <= 3 else { return nil }
                octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
                guard octet <= 255 else { return nil }
            case UInt8(ascii: "."):
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | octet
                octet = 0
                digits = 0
                dots += 1
            default:
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        rawValue = value << 8 | octet
    }

    /// The four octets, most significant first.
    @inlinable
    public var octets: (UInt8, UInt8, UInt8, UInt8) {
        (
            UInt8(truncatingIfNeeded: rawValue >> 24), UInt8(truncatingIfNeeded: rawValue >> 16),
            UInt8(truncatingIfNeeded: rawValue >> 8), UInt8(truncatingIfNeeded: rawValue)
        )
    }

    /// Canonical dotted-quad text.
    public var description: String {
        let o = octets
        return "\(o.0).\(o.1).\(o.2).\(o.3)"
    }

    @inlinable
    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.rawValue < rhs.rawValue }

    /// `0.0.0.0`.
    public static let any = IPv4Address(rawValue: 0)
    /// `255.255.255.255`.
    public static let limitedBroadcast = IPv4Address(rawValue: 0xFFFF_FFFF)

    /// True for 224.0.0.0/4.
    @inlinable public var isMulticast: Bool { rawValue & 0xF000_0000 == 0xE000_0000 }
    /// True for 127.0.0.0/8.
    @inlinable public var isLoopback: Bool { rawValue & 0xFF00_0000 == 0x7F00_0000 }
    /// True for 0.0.0.0/8 ("this network", never a valid source or destination on the wire).
    @inlinable public var isThisNetwork: Bool { rawValue & 0xFF00_0000 == 0 }
    /// True for 240.0.0.0/4 (reserved, including the limited broadcast address).
    @inlinable public var isReserved: Bool { rawValue & 0xF000_0000 == 0xF000_0000 }
    /// True for 169.254.0.0/16.
    @inlinable public var isLinkLocal: Bool { rawValue & 0xFFFF_0000 == 0xA9FE_0000 }
}

/// An IPv4 prefix (`address/length`). The address may carry host bits; `network` drops them.
public struct IPv4Prefix: Hashable, Sendable, CustomStringConvertible {
    /// The address as written (host bits kept, so "not strictly masked" can be reported).
    public var address: IPv4Address
    /// Prefix length, 0…32.
    public var length: UInt8

    /// Creates a prefix. - Precondition: `length <= 32`.
    @inlinable
    public init(address: IPv4Address, length: UInt8) {
        precondition(length <= 32, "IPv4 prefix length above 32")
        self.address = address
        self.length = length
    }

    /// Parses `a.b.c.d/n`; with `allowBareAddress`, also `a.b.c.d` as a /32.
    public init?(_ text: some StringProtocol, allowBareAddress: Bool = false) {
        guard let slash = text.firstIndex(of: "/") else {
            guard allowBareAddress, let a = IPv4Address(text) else { return nil }
            self.init(address: a, length: 32)
            return
        }
        guard let a = IPv4Address(text[text.startIndex..<slash]) else { return nil }
        let lengthText = text[text.index(after: slash)...]
        guard !lengthText.isEmpty, lengthText.count <= 2,
            lengthText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let n = UInt8(lengthText), n <= 32
        else { return nil }
        self.init(address: a, length: n)
    }

    /// The netmask as a host-order integer.
    @inlinable
    public var mask: UInt32 { length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(length)) }

    /// The prefix with host bits cleared.
    @inlinable
    public var network: IPv4Prefix {
        IPv4Prefix(address: IPv4Address(rawValue: address.rawValue & mask), length: length)
    }

    /// The first address of the range.
    @inlinable
    public var first: IPv4Address { IPv4Address(rawValue: address.rawValue & mask) }

    /// The last address of the range.
    @inlinable
    public var last: IPv4Address { IPv4Address(rawValue: address.rawValue | ~mask) }

    /// True when no host bits are set.
    @inlinable
    public var isStrictlyMasked: Bool { address.rawValue & ~mask == 0 }

    /// Whether `other` lies inside this prefix.
    @inlinable
    public func contains(_ other: IPv4Address) -> Bool { (other.rawValue ^ address.rawValue) & mask == 0 }

    /// Whether `other` lies entirely inside this prefix.
    @inlinable
    public func contains(_ other: IPv4Prefix) -> Bool { other.length >= length && contains(other.address) }

    /// Whether the two ranges share at least one address.
    @inlinable
    public func overlaps(_ other: IPv4Prefix) -> Bool { contains(other.address) || other.contains(address) }

    /// Number of addresses in the range (up to 2^32).
    @inlinable
    public var addressCount: UInt64 { UInt64(1) << (32 - UInt64(length)) }

    /// `address/length` as written.
    public var description: String { "\(address)/\(length)" }

    /// `0.0.0.0/0`.
    public static let all = IPv4Prefix(address: .any, length: 0)
}

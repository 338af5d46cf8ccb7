import IPIPCore

/// An IPv6 address as two 64-bit halves in host order. Enough of IPv6 to validate Calico resources
/// (this dataplane only forwards IPv4, but Calico datastores hold IPv6 pools and node addresses).
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    /// Bits 127…64.
    public var high: UInt64
    /// Bits 63…0.
    public var low: UInt64

    /// Creates an address from its two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses RFC 4291 text: eight groups of 1–4 hex digits, at most one `::`, optionally ending in a
    /// dotted-quad IPv4 address. Zone suffixes (`%eth0`) are rejected. Returns nil for anything else.
    public init?(_ text: some StringProtocol) {
        var groups: [UInt16] = []
        var gapIndex: Int?
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        if rest.hasPrefix("::") {
            gapIndex = 0
            rest = rest.dropFirst(2)
        } else if rest.hasPrefix(":") {
            return nil
        }
        while !rest.isEmpty {
            let end = rest.firstIndex(of: ":") ?? rest.endIndex
            let piece = rest[rest.startIndex..<end]
            if end == rest.endIndex, piece.contains("."), let v4 = IPv4Address(piece) {
                groups.append(UInt16(truncatingIfNeeded: v4.rawValue >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4.rawValue))
                rest = rest[end...]
                break
            }
            guard (1...4).contains(piece.count), let group = UInt16(piece, radix: 16),
                piece.utf8.allSatisfy({ $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "-") })
            else { return nil }
            groups.append(group)
            rest = rest[end...]
            if rest.hasPrefix("::") {
                guard gapIndex == nil else { return nil }
                gapIndex = groups.count
                rest = rest.dropFirst(2)
            } else if rest.hasPrefix(":") {
                rest = rest.dropFirst()
                guard !rest.isEmpty else { return nil }  // trailing single colon
            }
        }
        guard rest.isEmpty else { return nil }
        if let gapIndex {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gapIndex)
        }
        guard groups.count == 8 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, group) in groups.enumerated() {
            if index < 4 { high = high << 16 | UInt64(group) } else { low = low << 16 | UInt64(group) }
        }
        self.init(high: high, low: low)
    }

    /// The eight 16-bit groups, most significant first.
    public var groups: [UInt16] {
        (0..<8).map { index in
            let half = index < 4 ? high : low
            return UInt16(truncatingIfNeeded: half >> (UInt64(3 - index % 4) * 16))
        }
    }

    /// RFC 5952 text: lower-case hex, no leading zeros, the longest run (two or more) of zero groups
    /// replaced by `::`, the first run on a tie.
    public var description: String {
        let groups = groups
        var bestStart = -1
        var bestLength = 1
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            let start = index
            while index < 8, groups[index] == 0 { index += 1 }
            if index - start > bestLength {
                bestStart = start
                bestLength = index - start
            }
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}

/// An IPv6 prefix (`address/length`); the address keeps any host bits as written.
public struct IPv6Prefix: Hashable, Sendable, CustomStringConvertible {
    /// The address as written.
    public var address: IPv6Address
    /// Prefix length, 0…128.
    public var length: UInt8

    /// Creates a prefix. - Precondition: `length <= 128`.
    public init(address: IPv6Address, length: UInt8) {
        precondition(length <= 128, "IPv6 prefix length above 128")
        self.address = address
        self.length = length
    }

    /// Parses `address/length`; with `allowBareAddress`, also a bare address as a /128.
    public init?(_ text: some StringProtocol, allowBareAddress: Bool = false) {
        guard let slash = text.firstIndex(of: "/") else {
            guard allowBareAddress, let address = IPv6Address(text) else { return nil }
            self.init(address: address, length: 128)
            return
        }
        let lengthText = text[text.index(after: slash)...]
        guard let address = IPv6Address(text[text.startIndex..<slash]),
            (1...3).contains(lengthText.count),
            lengthText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let length = UInt8(lengthText), length <= 128
        else { return nil }
        self.init(address: address, length: length)
    }

    private var masks: (high: UInt64, low: UInt64) {
        let bits = Int(length)
        let high: UInt64 = bits >= 64 ? ~0 : (bits == 0 ? 0 : ~UInt64(0) << UInt64(64 - bits))
        let low: UInt64 = bits <= 64 ? 0 : (bits == 128 ? ~0 : ~UInt64(0) << UInt64(128 - bits))
        return (high, low)
    }

    /// The prefix with host bits cleared.
    public var network: IPv6Prefix {
        let masks = masks
        return IPv6Prefix(
            address: IPv6Address(high: address.high & masks.high, low: address.low & masks.low),
            length: length)
    }

    /// True when no host bits are set.
    public var isStrictlyMasked: Bool { network.address == address }

    /// Whether `other` lies inside this prefix.
    public func contains(_ other: IPv6Address) -> Bool {
        let masks = masks
        return (other.high ^ address.high) & masks.high == 0 && (other.low ^ address.low) & masks.low == 0
    }

    /// Whether the two ranges share at least one address.
    public func overlaps(_ other: IPv6Prefix) -> Bool { contains(other.address) || other.contains(address) }

    /// `address/length` as written, with the address in RFC 5952 form.
    public var description: String { "\(address)/\(length)" }

    /// `fe80::/10`, the link-local range Calico keeps pools out of.
    public static let linkLocal = IPv6Prefix(address: IPv6Address(high: 0xFE80 << 48, low: 0), length: 10)
}

/// An IPv4 or IPv6 prefix, as Calico's `ParseCIDROrIP` returns it.
public enum IPPrefix: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 prefix.
    case v4(IPv4Prefix)
    /// An IPv6 prefix.
    case v6(IPv6Prefix)

    /// Parses an IPv4 or IPv6 CIDR; with `allowBareAddress`, also a bare address (/32 or /128).
    public init?(_ text: some StringProtocol, allowBareAddress: Bool = false) {
        if let v4 = IPv4Prefix(text, allowBareAddress: allowBareAddress) {
            self = .v4(v4)
        } else if let v6 = IPv6Prefix(text, allowBareAddress: allowBareAddress) {
            self = .v6(v6)
        } else {
            return nil
        }
    }

    /// The prefix with host bits cleared.
    public var network: IPPrefix {
        switch self {
        case .v4(let p): .v4(p.network)
        case .v6(let p): .v6(p.network)
        }
    }

    /// True when no host bits are set.
    public var isStrictlyMasked: Bool {
        switch self {
        case .v4(let p): p.isStrictlyMasked
        case .v6(let p): p.isStrictlyMasked
        }
    }

    /// The prefix length.
    public var length: Int {
        switch self {
        case .v4(let p): Int(p.length)
        case .v6(let p): Int(p.length)
        }
    }

    /// True for an IPv6 prefix.
    public var isIPv6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// The IPv4 prefix, if this is one.
    public var ipv4: IPv4Prefix? {
        if case .v4(let p) = self { return p }
        return nil
    }

    /// Whether the two ranges share an address (never across families).
    public func overlaps(_ other: IPPrefix) -> Bool {
        switch (self, other) {
        case (.v4(let a), .v4(let b)): a.overlaps(b)
        case (.v6(let a), .v6(let b)): a.overlaps(b)
        default: false
        }
    }

    /// Canonical text (`address/length`).
    public var description: String {
        switch self {
        case .v4(let p): p.description
        case .v6(let p): p.description
        }
    }
}

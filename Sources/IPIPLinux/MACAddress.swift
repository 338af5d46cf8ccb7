/// An Ethernet (EUI-48) address, as the uplink's own and its next hops' are.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six bytes, in transmission order.
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    /// Creates an address from its six bytes.
    public init(bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) { self.bytes = bytes }

    /// Creates an address from the first six bytes of `array`; nil when it has fewer.
    public init?(_ array: some Collection<UInt8>) {
        guard array.count >= 6 else { return nil }
        let a = Array(array.prefix(6))
        bytes = (a[0], a[1], a[2], a[3], a[4], a[5])
    }

    /// The all-zero address (no address: layer-3 links).
    public static let zero = MACAddress(bytes: (0, 0, 0, 0, 0, 0))

    /// Writes the six bytes at `p`.
    @inlinable
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: bytes.0, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: bytes.1, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: bytes.2, toByteOffset: 2, as: UInt8.self)
        p.storeBytes(of: bytes.3, toByteOffset: 3, as: UInt8.self)
        p.storeBytes(of: bytes.4, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: bytes.5, toByteOffset: 5, as: UInt8.self)
    }

    public static func == (a: MACAddress, b: MACAddress) -> Bool {
        a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1 && a.bytes.2 == b.bytes.2
            && a.bytes.3 == b.bytes.3 && a.bytes.4 == b.bytes.4 && a.bytes.5 == b.bytes.5
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.0)
        hasher.combine(bytes.1)
        hasher.combine(bytes.2)
        hasher.combine(bytes.3)
        hasher.combine(bytes.4)
        hasher.combine(bytes.5)
    }

    /// `aa:bb:cc:dd:ee:ff`.
    public var description: String {
        [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5]
            .map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

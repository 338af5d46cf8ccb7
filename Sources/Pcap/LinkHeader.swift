/// How to find the network layer in a record, per libpcap `DLT_*` value.
///
/// Finer than ``LinkType``: raw captures that promise one IP version (`LINKTYPE_IPV4`/`IPV6`)
/// are classified by that promise rather than by the version nibble.
enum LinkFraming: Sendable, Equatable {
    case rawIP, rawIPv4, rawIPv6, ethernet, linuxSLL, linuxSLL2
    /// `LINKTYPE_USER0` as swift-ipip uses it: a 10-byte virtio header, then IP.
    case virtioNet
    /// `networkOrder` false: `DLT_NULL`, host order of the capturing host (either order accepted).
    /// `networkOrder` true: `DLT_LOOP`, network order (the other order is accepted too).
    case loopback(networkOrder: Bool)

    init?(dataLinkType: Int32) {
        switch dataLinkType {
        case 12, 101: self = .rawIP
        case 228: self = .rawIPv4
        case 229: self = .rawIPv6
        case 1: self = .ethernet
        case 113: self = .linuxSLL
        case 276: self = .linuxSLL2
        case 0: self = .loopback(networkOrder: false)
        case 108: self = .loopback(networkOrder: true)
        case 147: self = .virtioNet
        default: return nil
        }
    }

    /// The result of locating the network layer in one record.
    enum Parsed: Equatable {
        /// The network layer starts at `headerByteCount`.
        case network(headerByteCount: Int, networkProtocol: NetworkProtocol)
        /// The record holds fewer than `needed` bytes, which `header` requires.
        case tooShort(needed: Int, header: String)
    }

    /// 802.1Q and 802.1ad tags are peeled, at most this many (a QinQ frame).
    static let maximumVLANTagCount = 2

    /// Locates the network layer of one record. Never traps: every read is behind a length check.
    /// - Parameter record: The captured bytes, link header included.
    func parse(_ record: UnsafeRawBufferPointer) -> Parsed {
        switch self {
        case .rawIP:
            guard let first = record.first else { return .network(headerByteCount: 0, networkProtocol: .other(0)) }
            return .network(headerByteCount: 0, networkProtocol: Self.networkProtocol(version: first >> 4))
        case .rawIPv4:
            return .network(headerByteCount: 0, networkProtocol: .ipv4)
        case .virtioNet:
            guard record.count >= 10 else { return .tooShort(needed: 10, header: "virtio_net_hdr") }
            let version = record.count > 10 ? record[10] >> 4 : 0
            return .network(headerByteCount: 10, networkProtocol: Self.networkProtocol(version: version))
        case .rawIPv6:
            return .network(headerByteCount: 0, networkProtocol: .ipv6)
        case .ethernet:
            // dst MAC (6), src MAC (6), EtherType (2).
            guard record.count >= 14 else { return .tooShort(needed: 14, header: "Ethernet header") }
            return Self.peelVLANTags(record, etherType: Self.readUInt16(record, 12), headerByteCount: 14)
        case .linuxSLL:
            // packet type (2), ARPHRD type (2), address length (2), address (8), protocol (2).
            guard record.count >= 16 else { return .tooShort(needed: 16, header: "Linux SLL header") }
            return Self.peelVLANTags(record, etherType: Self.readUInt16(record, 14), headerByteCount: 16)
        case .linuxSLL2:
            // protocol (2), reserved (2), interface index (4), ARPHRD type (2), packet type (1),
            // address length (1), address (8).
            guard record.count >= 20 else { return .tooShort(needed: 20, header: "Linux SLL2 header") }
            return Self.peelVLANTags(record, etherType: Self.readUInt16(record, 0), headerByteCount: 20)
        case .loopback(let networkOrder):
            guard record.count >= 4 else {
                return .tooShort(needed: 4, header: networkOrder ? "OpenBSD loopback header" : "BSD loopback header")
            }
            let bigEndian =
                UInt32(record[0]) << 24 | UInt32(record[1]) << 16 | UInt32(record[2]) << 8 | UInt32(record[3])
            let littleEndian = bigEndian.byteSwapped
            // Families are small numbers, so the order in which the value is small is the writer's.
            let preferred = networkOrder ? bigEndian : littleEndian
            let family = preferred <= 0xFFFF ? preferred : preferred.byteSwapped
            let networkProtocol: NetworkProtocol =
                switch family {
                case 2: .ipv4
                case 24, 28, 30: .ipv6
                default: .other(UInt16(truncatingIfNeeded: family))
                }
            return .network(headerByteCount: 4, networkProtocol: networkProtocol)
        }
    }

    /// Skips up to ``maximumVLANTagCount`` tags (TCI (2) + inner EtherType (2) each) after an
    /// EtherType field that ends at `headerByteCount`.
    private static func peelVLANTags(
        _ record: UnsafeRawBufferPointer,
        etherType: UInt16,
        headerByteCount: Int
    ) -> Parsed {
        var etherType = etherType
        var headerByteCount = headerByteCount
        var tagCount = 0
        while (etherType == 0x8100 || etherType == 0x88A8) && tagCount < maximumVLANTagCount {
            guard record.count >= headerByteCount + 4 else {
                return .tooShort(needed: headerByteCount + 4, header: "VLAN tag")
            }
            etherType = readUInt16(record, headerByteCount + 2)
            headerByteCount += 4
            tagCount += 1
        }
        return .network(headerByteCount: headerByteCount, networkProtocol: NetworkProtocol(etherType: etherType))
    }

    /// A big-endian 16-bit field. - Precondition: `offset + 2 <= record.count` (checked by callers).
    /// The network protocol an IP version nibble names.
    private static func networkProtocol(version: UInt8) -> NetworkProtocol {
        switch version {
        case 4: .ipv4
        case 6: .ipv6
        default: .other(UInt16(version))
        }
    }

    private static func readUInt16(_ record: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        UInt16(record[offset]) << 8 | UInt16(record[offset + 1])
    }
}

extension LinkType {
    /// Writes this link type's header for a network-layer packet of `networkProtocol` at the start
    /// of `buffer`, zero MAC addresses and interface indexes.
    ///
    /// - Returns: The header length (``headerByteCount``).
    /// - Precondition: `buffer.count >= headerByteCount`; raw IP carries only IPv4/IPv6, loopback
    ///   has no ARP.
    func writeHeader(for networkProtocol: NetworkProtocol, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let count = headerByteCount
        precondition(buffer.count >= count, "buffer too small for the link header")
        for i in 0..<count { buffer[i] = 0 }
        func setUInt16(_ value: UInt16, at offset: Int) {
            buffer[offset] = UInt8(truncatingIfNeeded: value >> 8)
            buffer[offset + 1] = UInt8(truncatingIfNeeded: value)
        }
        switch self {
        case .virtioNet:
            break  // all zero: an ordinary packet with complete checksums
        case .raw:
            precondition(
                networkProtocol == .ipv4 || networkProtocol == .ipv6,
                "a raw IP capture can only hold IPv4 or IPv6, not \(networkProtocol)"
            )
        case .ethernet:
            setUInt16(networkProtocol.etherType, at: 12)
        case .linuxSLL:
            setUInt16(0, at: 0)  // packet type: to us (LINUX_SLL_HOST)
            setUInt16(1, at: 2)  // ARPHRD_ETHER
            setUInt16(6, at: 4)  // address length: a MAC address (left zero)
            setUInt16(networkProtocol.etherType, at: 14)
        case .linuxSLL2:
            setUInt16(networkProtocol.etherType, at: 0)
            setUInt16(1, at: 8)  // ARPHRD_ETHER
            buffer[10] = 0  // packet type: to us
            buffer[11] = 6  // address length
        case .bsdLoopback, .openBSDLoopback:
            let family: UInt32 =
                switch networkProtocol {
                case .ipv4: 2
                case .ipv6: 24  // AF_INET6 of NetBSD and OpenBSD; readers accept 24, 28 and 30
                case .arp: preconditionFailure("a loopback capture cannot hold ARP")
                case .other(let family): UInt32(family)
                }
            let stored = self == .openBSDLoopback ? family.bigEndian : family
            // Safe: 4 bytes were checked above, storeBytes does not require alignment.
            buffer.storeBytes(of: stored, toByteOffset: 0, as: UInt32.self)
        }
        return count
    }
}

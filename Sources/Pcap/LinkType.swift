/// A capture's link-layer header type: what precedes the network-layer bytes of each record.
///
/// Values are libpcap `DLT_*` numbers as seen on Linux; libpcap maps the on-disk `LINKTYPE_*`
/// numbers (for example `LINKTYPE_RAW` 101) to these when reading and back when writing.
public enum LinkType: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Raw IP, no link header: `DLT_RAW` (12, on disk `LINKTYPE_RAW` 101). Reading also accepts
    /// `LINKTYPE_IPV4` (228) and `LINKTYPE_IPV6` (229) files as `raw`.
    case raw
    /// Ethernet II, 14-byte header, optionally followed by up to two 802.1Q/802.1ad VLAN tags:
    /// `DLT_EN10MB` (1).
    case ethernet
    /// Linux "cooked" capture v1, 16-byte header: `DLT_LINUX_SLL` (113).
    case linuxSLL
    /// Linux "cooked" capture v2, 20-byte header: `DLT_LINUX_SLL2` (276).
    case linuxSLL2
    /// BSD loopback: a 4-byte address family in the capturing host's byte order: `DLT_NULL` (0).
    case bsdLoopback
    /// OpenBSD loopback: a 4-byte address family in network byte order: `DLT_LOOP` (108).
    case openBSDLoopback
    /// A 10-byte Linux `virtio_net_hdr` (little-endian) then an IP packet, as a TUN opened with
    /// `IFF_VNET_HDR` reads and writes them: `LINKTYPE_USER0` (147), a link type for private use.
    /// swift-ipip's captures use it for segmentation offload (`SegmentationOffload`): a record
    /// whose header says `GSO_TCPV4` or `GSO_UDP_L4` is one super-packet. tshark decodes them
    /// with `-o 'uat:user_dlts:"User 0 (DLT=147)","ip","10","","0",""'`.
    case virtioNet

    /// The libpcap `DLT_*` value written into captures of this type.
    public var dataLinkType: Int32 {
        switch self {
        case .raw: 12
        case .ethernet: 1
        case .linuxSLL: 113
        case .linuxSLL2: 276
        case .bsdLoopback: 0
        case .openBSDLoopback: 108
        case .virtioNet: 147
        }
    }

    /// Maps a libpcap `DLT_*` value (as returned by `pcap_datalink`) to a link type.
    ///
    /// Accepts 12 and 101 (raw), 228 and 229 (raw IPv4/IPv6 only) as ``raw``.
    /// - Parameter dataLinkType: A `DLT_*` value.
    /// - Returns: The link type, or `nil` if this module does not support it.
    public init?(dataLinkType: Int32) {
        switch dataLinkType {
        case 12, 101, 228, 229: self = .raw
        case 1: self = .ethernet
        case 113: self = .linuxSLL
        case 276: self = .linuxSLL2
        case 0: self = .bsdLoopback
        case 108: self = .openBSDLoopback
        case 147: self = .virtioNet
        default: return nil
        }
    }

    /// Length of the fixed link-layer header this module reads and writes (without VLAN tags).
    public var headerByteCount: Int {
        switch self {
        case .raw: 0
        case .ethernet: 14
        case .linuxSLL: 16
        case .linuxSLL2: 20
        case .bsdLoopback, .openBSDLoopback: 4
        case .virtioNet: 10
        }
    }

    /// The libpcap name without the `DLT_` prefix, for example `EN10MB`.
    public var description: String {
        switch self {
        case .raw: "RAW"
        case .ethernet: "EN10MB"
        case .linuxSLL: "LINUX_SLL"
        case .linuxSLL2: "LINUX_SLL2"
        case .bsdLoopback: "NULL"
        case .openBSDLoopback: "LOOP"
        case .virtioNet: "USER0 (virtio_net_hdr + IP)"
        }
    }
}

/// The network-layer protocol of a record, classified from its link-layer header.
///
/// EtherType-style: Ethernet, SLL and SLL2 give an EtherType; raw IP is classified by the IP
/// version nibble; loopback captures by their address family (2 is IPv4; 24, 28 and 30 are IPv6,
/// from the BSDs and Darwin).
public enum NetworkProtocol: Sendable, Hashable, CustomStringConvertible {
    /// IPv4 (EtherType 0x0800, version 4, family 2).
    case ipv4
    /// IPv6 (EtherType 0x86DD, version 6, family 24/28/30).
    case ipv6
    /// ARP (EtherType 0x0806).
    case arp
    /// Anything else, carrying the link layer's own number: the EtherType (Ethernet, SLL, SLL2;
    /// after any VLAN tags, or a VLAN EtherType when more than two tags are stacked), the
    /// version nibble (raw IP, 0 for an empty record) or the address family (loopback).
    case other(UInt16)

    /// EtherType of IPv4.
    public static let ipv4EtherType: UInt16 = 0x0800
    /// EtherType of IPv6.
    public static let ipv6EtherType: UInt16 = 0x86DD
    /// EtherType of ARP.
    public static let arpEtherType: UInt16 = 0x0806

    /// Classifies an EtherType.
    /// - Parameter etherType: The EtherType, host byte order.
    public init(etherType: UInt16) {
        switch etherType {
        case Self.ipv4EtherType: self = .ipv4
        case Self.ipv6EtherType: self = .ipv6
        case Self.arpEtherType: self = .arp
        default: self = .other(etherType)
        }
    }

    /// The EtherType for Ethernet, SLL and SLL2 headers (`.other(n)` gives `n`).
    public var etherType: UInt16 {
        switch self {
        case .ipv4: Self.ipv4EtherType
        case .ipv6: Self.ipv6EtherType
        case .arp: Self.arpEtherType
        case .other(let value): value
        }
    }

    /// `IPv4`, `IPv6`, `ARP` or `other(0x88CC)`.
    public var description: String {
        switch self {
        case .ipv4: return "IPv4"
        case .ipv6: return "IPv6"
        case .arp: return "ARP"
        case .other(let value):
            let hex = String(value, radix: 16, uppercase: true)
            return "other(0x" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex + ")"
        }
    }
}

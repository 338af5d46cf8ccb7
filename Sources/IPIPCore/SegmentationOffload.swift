/// Segmentation offload metadata of one packet: a TCP or UDP *super-packet* that stands for
/// several wire packets ("segments") of `segmentSize` payload bytes each, the last one possibly
/// shorter. This is how Linux hands packets over through a TUN opened with `IFF_VNET_HDR` and
/// `TUNSETOFFLOAD` (TSO/USO), or through a packet socket with `PACKET_VNET_HDR` after GRO, and how
/// such an interface takes them back (GSO): the engine decides once per super-packet, and only
/// the output stage works per segment (`Segmenter`, `TUNCoalescer`).
///
/// Invariants of a super-packet in a `PacketBatch` slot (checked by `Segmenter.layout`):
/// - its IPv4 header (and the inner one, when it is IP-in-IP) describe all of it: total length =
///   the whole super-packet; no IP options are required or forbidden;
/// - `kind` says the transport (TCP or UDP), which the (inner) protocol field must match;
/// - its transport checksum field means nothing: the kernel leaves a partial pseudo-header sum
///   there (TUN reads) or the first segment's checksum (GRO). Whoever emits it writes what the
///   output needs: each segment's full checksum when segmenting, the partial sum for a TUN write.
///
/// Counting: everywhere the engine counts packets, a super-packet counts as the segments it
/// stands for, so counters read the same whether the kernel segmented before or after us.
public struct SegmentationOffload: Sendable, Hashable {
    /// The transport the segments carry.
    public enum Kind: UInt8, Sendable {
        /// An ordinary packet.
        case none = 0
        /// TCP segmentation (virtio `GSO_TCPV4`): sequence numbers advance per segment.
        case tcp = 1
        /// UDP segmentation (virtio `GSO_UDP_L4`, "USO"): one datagram per segment.
        case udp = 2
        /// The interface described a segmentation the engine cannot honour (an unknown or
        /// IPv6-only GSO type on IPv4, UDP fragmentation offload, a zero segment size); the engine
        /// drops the packet as `invalid_offload`.
        case invalid = 0xFF
    }

    /// What the segments carry.
    public var kind: Kind
    /// Payload bytes per segment (the TCP MSS or the UDP datagram payload); 0 for `.none`.
    public var segmentSize: UInt16
    /// TCP only: the first segment carries CWR (virtio `GSO_ECN`; GRO sets it when it merged a
    /// segment with CWR, which then must stay on the first segment only).
    public var congestionWindowReduced: Bool

    /// Creates offload metadata.
    @inlinable
    public init(kind: Kind, segmentSize: UInt16, congestionWindowReduced: Bool = false) {
        self.kind = kind
        self.segmentSize = segmentSize
        self.congestionWindowReduced = congestionWindowReduced
    }

    /// An ordinary packet.
    public static let none = SegmentationOffload(kind: .none, segmentSize: 0)
    /// Metadata the engine refuses (`invalid_offload`).
    public static let invalid = SegmentationOffload(kind: .invalid, segmentSize: 0)

    /// Whether this describes a super-packet (TCP or UDP segmentation).
    @inlinable public var isSegmented: Bool { kind == .tcp || kind == .udp }

    /// The most segments one super-packet may stand for. The kernel's own limits are 64 KiB of
    /// payload per TCP super-packet and 128 UDP datagrams (`UDP_MAX_SEGMENTS`); 256 covers a full
    /// 64 KiB TCP super-packet down to an MSS of 256 bytes. More is refused as `invalid_offload`:
    /// a packet can never make the engine emit an unbounded number of segments.
    public static let maximumSegmentCount = 256
}

/// The 10-byte `struct virtio_net_hdr` (linux/virtio_net.h) that a TUN opened with `IFF_VNET_HDR`
/// and a packet socket with `PACKET_VNET_HDR` put in front of every packet, and expect in front of
/// every packet written to them.
///
/// ```
///  0       1       2               4               6               8              10
///  +-------+-------+---------------+---------------+---------------+---------------+
///  | flags |gsotype|   hdr_len     |   gso_size    |  csum_start   |  csum_offset  |
///  +-------+-------+---------------+---------------+---------------+---------------+
/// ```
///
/// The 16-bit fields are in the byte order of the host for these legacy (pre-virtio-1.0)
/// interfaces: little-endian on x86-64 and arm64, the only hosts Swift runs ipipd on. Captures
/// that carry the header (link type 147, see `VirtioNetHeader.captureLinkType`) store them
/// little-endian.
public struct VirtioNetHeader: Sendable, Hashable {
    /// Size of the header on the wire.
    public static let byteCount = 10

    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum from `checksumStart` on is still to be
    /// computed; the field at `checksumStart + checksumOffset` holds the pseudo-header sum.
    public static let needsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified (by the NIC, or GRO).
    public static let dataValid: UInt8 = 2

    /// `VIRTIO_NET_HDR_GSO_NONE`.
    public static let gsoNone: UInt8 = 0
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    public static let gsoTCPv4: UInt8 = 1
    /// `VIRTIO_NET_HDR_GSO_UDP` (UDP fragmentation offload, obsolete).
    public static let gsoUDP: UInt8 = 3
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    public static let gsoTCPv6: UInt8 = 4
    /// `VIRTIO_NET_HDR_GSO_UDP_L4` (UDP segmentation offload).
    public static let gsoUDPL4: UInt8 = 5
    /// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into a TCP type.
    public static let gsoECN: UInt8 = 0x80

    /// Pcap link type of captures whose records are this header (little-endian) followed by an
    /// IPv4 packet: `LINKTYPE_USER0` (147), the first of the link types reserved for private use.
    /// tshark decodes them with `-o 'uat:user_dlts:"User 0 (DLT=147)","ip","10","","0",""'`.
    public static let captureLinkType: Int32 = 147

    public var flags: UInt8
    public var gsoType: UInt8
    /// Length of all headers of the first segment (a hint; recomputed from the packet).
    public var headerLength: UInt16
    /// Payload bytes per segment.
    public var gsoSize: UInt16
    /// Where checksumming starts, from the first byte after this header.
    public var checksumStart: UInt16
    /// Where, after `checksumStart`, the checksum field is.
    public var checksumOffset: UInt16

    /// An all-zero header: an ordinary packet with complete checksums.
    @inlinable
    public init(
        flags: UInt8 = 0, gsoType: UInt8 = VirtioNetHeader.gsoNone, headerLength: UInt16 = 0,
        gsoSize: UInt16 = 0, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0
    ) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads a header (host order, i.e. little-endian here).
    /// - Precondition: 10 readable bytes at `p`.
    @inlinable
    public init(loadingFrom p: UnsafeRawPointer) {
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Writes the header (little-endian).
    /// - Precondition: 10 writable bytes at `p`.
    @inlinable
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }
}

extension SegmentationOffload {
    /// Takes in a packet that came with a virtio header (a TUN read, a packet-socket receive, a
    /// capture record of link type 147): completes a checksum the kernel left to "hardware" and
    /// returns the packet's segmentation metadata.
    ///
    /// - An ordinary packet (`GSO_NONE`) with `NEEDS_CSUM` gets its transport checksum computed
    ///   now, over `checksumStart` to the end of the IP datagram, as the kernel's
    ///   `skb_checksum_help` would (a result of 0 is stored as 0xFFFF); it is then `.none`.
    /// - `GSO_TCPV4` → `.tcp`, `GSO_UDP_L4` → `.udp`, with `gsoSize` as the segment size. The
    ///   header's `hdr_len` and `csum_start` are not trusted: the segmenter derives the layout from
    ///   the packet's own headers (GRO leaves `csum_start` 0 on packets it verified).
    /// - A packet that is not IPv4 is `.none` whatever its header says (the engine drops it as
    ///   `not_ipv4`); `GSO_TCPV6` or the obsolete `GSO_UDP` on IPv4, or a zero `gsoSize`, is
    ///   `.invalid`, and so is a checksum position outside the packet.
    ///
    /// - Parameters:
    ///   - header: the header as read.
    ///   - packet: the IPv4 packet (network header first), rewritten in place when a checksum is
    ///     completed.
    ///   - linkHeaderLength: bytes between the virtio header and the network header (14 for an
    ///     Ethernet frame from a packet socket, 0 for a TUN): the header's offsets count them.
    @inlinable
    public static func taking(
        _ header: VirtioNetHeader, packet: UnsafeMutableRawBufferPointer,
        linkHeaderLength: Int = 0
    ) -> SegmentationOffload {
        guard packet.count >= IPv4Header.minimumByteCount, packet[0] >> 4 == 4 else { return .none }
        if header.gsoType == VirtioNetHeader.gsoNone {
            if header.flags & VirtioNetHeader.needsChecksum != 0 {
                let start = Int(header.checksumStart) &- linkHeaderLength
                let field = start &+ Int(header.checksumOffset)
                let end = min(
                    packet.count, Int(UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: 2, as: UInt16.self))))
                guard start >= IPv4Header.minimumByteCount, field &+ 2 <= end else { return .invalid }
                // Safe: start < field + 2 <= end <= packet.count.
                let sum = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: packet[start..<end]))
                var value = ~sum
                if value == 0 { value = 0xFFFF }
                packet.storeBytes(of: value.bigEndian, toByteOffset: field, as: UInt16.self)
            }
            return .none
        }
        guard header.gsoSize > 0 else { return .invalid }
        let ecn = header.gsoType & VirtioNetHeader.gsoECN != 0
        switch header.gsoType & ~VirtioNetHeader.gsoECN {
        case VirtioNetHeader.gsoTCPv4:
            return SegmentationOffload(kind: .tcp, segmentSize: header.gsoSize, congestionWindowReduced: ecn)
        case VirtioNetHeader.gsoUDPL4 where !ecn:
            return SegmentationOffload(kind: .udp, segmentSize: header.gsoSize)
        default:
            return .invalid
        }
    }
}

/// Userspace GSO: cuts a super-packet (see `SegmentationOffload`) into the wire packets it stands
/// for, one at a time, straight into the caller's buffer (a transmit frame, a batch slot).
///
/// A super-packet is either a plain TCP/UDP datagram or one wrapped in an outer IPv4 header
/// (protocol 4, as the engine encapsulates it). Every segment gets:
/// - the headers of the super-packet, copied, then its share of the payload;
/// - outer header (when present): total length, identification = the super-packet's + k (the
///   engine reserved that many fresh identifications), header checksum;
/// - (inner) IPv4 header: total length, identification = the super-packet's + k (as the kernel's
///   TSO/GSO does for IPv4), header checksum;
/// - TCP: sequence number + k × segment size; FIN and PSH only on the last segment, CWR only on
///   the first (`tcp_gso_segment`); the full checksum. UDP: length; the full checksum (a
///   result of 0 is sent as 0xFFFF, RFC 768).
///
/// Cost: per segment one copy of the headers and the payload and one checksum pass over the
/// transport segment; nothing is allocated.
public enum Segmenter {
    /// Where the parts of a super-packet are, derived from its own headers.
    public struct Layout: Sendable, Equatable {
        /// Bytes of the outer IPv4 header, 0 when the packet is not IP-in-IP.
        public var outerHeaderLength: Int
        /// Where the (inner) transport header starts.
        public var transportOffset: Int
        /// All header bytes each segment repeats: outer + IP + transport header.
        public var headerLength: Int
        /// Payload bytes of the whole super-packet.
        public var payloadLength: Int
        /// Segments it stands for (≥ 1).
        public var segmentCount: Int
        /// TCP (else UDP).
        public var isTCP: Bool

        /// Wire bytes of all segments together.
        @inlinable public var wireByteCount: Int { payloadLength &+ segmentCount &* headerLength }

        @inlinable
        public init(
            outerHeaderLength: Int, transportOffset: Int, headerLength: Int, payloadLength: Int,
            segmentCount: Int, isTCP: Bool
        ) {
            self.outerHeaderLength = outerHeaderLength
            self.transportOffset = transportOffset
            self.headerLength = headerLength
            self.payloadLength = payloadLength
            self.segmentCount = segmentCount
            self.isTCP = isTCP
        }
    }

    /// The layout of `packet` under `offload`, or nil when the headers do not describe a
    /// super-packet of that kind: the (inner) protocol must match, neither IP header may be a
    /// fragment, both total lengths must cover exactly the packet, the transport header must fit
    /// and carry payload, and at most `SegmentationOffload.maximumSegmentCount` segments.
    /// Never traps: every read is behind a length check.
    @inlinable
    public static func layout(of packet: UnsafeRawBufferPointer, offload: SegmentationOffload) -> Layout? {
        guard offload.isSegmented, offload.segmentSize > 0 else { return nil }
        let count = packet.count
        guard count >= 20, packet[0] >> 4 == 4 else { return nil }
        var ip = 0
        var outer = 0
        if packet[9] == IPProtocolNumber.ipInIP {
            outer = Int(packet[0] & 0x0F) &<< 2
            guard outer >= 20, count >= outer &+ 20, packet[outer] >> 4 == 4,
                Int(Self.load16(packet, 2)) == count, Self.load16(packet, 6) & 0x3FFF == 0
            else { return nil }
            ip = outer
        }
        let ihl = Int(packet[ip] & 0x0F) &<< 2
        let transport = ip &+ ihl
        guard ihl >= 20, transport <= count,
            Int(Self.load16(packet, ip &+ 2)) == count &- ip,
            Self.load16(packet, ip &+ 6) & 0x3FFF == 0
        else { return nil }
        let isTCP = offload.kind == .tcp
        let transportHeader: Int
        if isTCP {
            guard packet[ip &+ 9] == IPProtocolNumber.tcp, transport &+ 20 <= count else { return nil }
            transportHeader = Int(packet[transport &+ 12] >> 4) &<< 2
            guard transportHeader >= 20 else { return nil }
        } else {
            guard packet[ip &+ 9] == IPProtocolNumber.udp else { return nil }
            transportHeader = 8
        }
        let headers = transport &+ transportHeader
        guard headers < count else { return nil }
        let payload = count &- headers
        let size = Int(offload.segmentSize)
        let segments = (payload &+ size &- 1) / size
        guard segments <= SegmentationOffload.maximumSegmentCount else { return nil }
        return Layout(
            outerHeaderLength: outer, transportOffset: transport, headerLength: headers,
            payloadLength: payload, segmentCount: segments, isTCP: isTCP)
    }

    /// Bytes of segment `k` on the wire.
    @inlinable
    public static func segmentLength(_ k: Int, layout: Layout, segmentSize: Int) -> Int {
        layout.headerLength &+ min(segmentSize, layout.payloadLength &- k &* segmentSize)
    }

    /// Writes segment `k` of `packet` into `destination` and returns its length.
    /// - Precondition: `layout` is `layout(of: packet, offload:)`, `0 <= k < layout.segmentCount`,
    ///   and `destination` has room for `segmentLength(k, …)` bytes and does not overlap `packet`.
    @inlinable
    public static func writeSegment(
        _ k: Int, of packet: UnsafeRawBufferPointer, layout: Layout,
        offload: SegmentationOffload, to destination: UnsafeMutableRawPointer
    ) -> Int {
        precondition(k >= 0 && k < layout.segmentCount, "segment index out of range")
        let size = Int(offload.segmentSize)
        let from = layout.headerLength &+ k &* size
        let payload = min(size, layout.payloadLength &- k &* size)
        let length = layout.headerLength &+ payload
        // Safe: the layout proved headerLength + payloadLength == packet.count, and from + payload
        // stays within it.
        let source = packet.baseAddress!
        destination.copyMemory(from: source, byteCount: layout.headerLength)
        // The payload is summed as it is copied; the transport header (an even number of bytes)
        // is summed after it was patched, and the two sums add up (RFC 1071 §2(A)).
        let payloadSum = InternetChecksum.sumCopying(
            from: source.advanced(by: from), to: destination.advanced(by: layout.headerLength),
            count: payload)

        let outer = layout.outerHeaderLength
        if outer > 0 {
            let o = IPv4Header(unchecked: destination)
            o.totalLength = UInt16(truncatingIfNeeded: length)
            o.identification = o.identification &+ UInt16(truncatingIfNeeded: k)
            o.updateChecksum()
        }
        let inner = IPv4Header(unchecked: destination.advanced(by: outer))
        let ipLength = length &- outer
        inner.totalLength = UInt16(truncatingIfNeeded: ipLength)
        inner.identification = inner.identification &+ UInt16(truncatingIfNeeded: k)
        inner.updateChecksum()

        let l4 = destination.advanced(by: layout.transportOffset)
        let l4Length = length &- layout.transportOffset
        let checksumOffset: Int
        if layout.isTCP {
            let sequence = UInt32(bigEndian: l4.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            l4.storeBytes(
                of: (sequence &+ UInt32(truncatingIfNeeded: k &* size)).bigEndian, toByteOffset: 4, as: UInt32.self)
            var flags = l4.load(fromByteOffset: 13, as: UInt8.self)
            if k &+ 1 < layout.segmentCount { flags &= ~(TCPFlags.fin | TCPFlags.psh) }
            if k > 0 { flags &= ~TCPFlags.cwr }
            l4.storeBytes(of: flags, toByteOffset: 13, as: UInt8.self)
            checksumOffset = 16
        } else {
            l4.storeBytes(of: UInt16(truncatingIfNeeded: l4Length).bigEndian, toByteOffset: 4, as: UInt16.self)
            checksumOffset = 6
        }
        l4.storeBytes(of: 0, toByteOffset: checksumOffset, as: UInt16.self)
        let pseudo = InternetChecksum.pseudoHeaderSum(
            source: inner.sourceAddress, destination: inner.destinationAddress,
            protocolNumber: layout.isTCP ? IPProtocolNumber.tcp : IPProtocolNumber.udp,
            length: l4Length)
        let headerBytes = layout.headerLength &- layout.transportOffset
        var c = InternetChecksum.checksum(
            UnsafeRawBufferPointer(start: l4, count: headerBytes),
            initial: pseudo &+ UInt32(payloadSum))
        if !layout.isTCP && c == 0 { c = 0xFFFF }
        l4.storeBytes(of: c.bigEndian, toByteOffset: checksumOffset, as: UInt16.self)
        return length
    }

    @inlinable
    static func load16(_ p: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
}

/// TCP header flag bits (byte 13).
public enum TCPFlags {
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10
    public static let urg: UInt8 = 0x20
    public static let ece: UInt8 = 0x40
    public static let cwr: UInt8 = 0x80
}

extension InternetChecksum {
    /// The ones' complement sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768), folded to 16
    /// bits, to start a TCP or UDP checksum from (`sum(_:initial:)`).
    @inlinable
    public static func pseudoHeaderSum(
        source: IPv4Address, destination: IPv4Address, protocolNumber: UInt8,
        length: Int
    ) -> UInt32 {
        let s =
            UInt64(source.rawValue >> 16) &+ UInt64(source.rawValue & 0xFFFF)
            &+ UInt64(destination.rawValue >> 16) &+ UInt64(destination.rawValue & 0xFFFF)
            &+ UInt64(protocolNumber) &+ UInt64(truncatingIfNeeded: length)
        return UInt32(fold(s))
    }
}

extension VirtioNetHeader {
    /// Prepares a packet for a write into a TUN opened with `IFF_VNET_HDR` and returns the header
    /// to put in front of it.
    ///
    /// An ordinary packet (complete checksums) gets an all-zero header. A TCP or UDP super-packet
    /// gets `NEEDS_CSUM` with its transport checksum field set to the folded, not complemented
    /// pseudo-header sum (what the kernel expects of CHECKSUM_PARTIAL: it finishes the sum per
    /// segment), `GSO_TCPV4` (+ `GSO_ECN` when its first segment carries CWR) or `GSO_UDP_L4`,
    /// the segment size, `hdr_len` = IP + transport header, `csum_start` = the IP header length,
    /// `csum_offset` = 16 (TCP) or 6 (UDP); the UDP length field covers the whole super-packet.
    /// The Linux checks in `__virtio_net_hdr_to_skb` this satisfies: a non-zero `gso_size`, TCP
    /// with `csum_offset` 16, UDP_L4 with `NEEDS_CSUM` and `csum_offset` 6, transport offset ≥ 20.
    /// - Precondition: a super-packet satisfies `Segmenter.layout` without an outer header.
    @inlinable
    public static func preparingTransmit(
        of packet: UnsafeMutableRawBufferPointer, offload: SegmentationOffload
    )
        -> VirtioNetHeader
    {
        guard offload.isSegmented else { return VirtioNetHeader() }
        // Safe: the precondition gives a valid header of ihl bytes and a transport header after it.
        let ip = IPv4Header(unchecked: packet.baseAddress!)
        let ihl = ip.headerLength
        let l4Length = packet.count &- ihl
        let l4 = packet.baseAddress!.advanced(by: ihl)
        let tcp = offload.kind == .tcp
        let transportHeader = tcp ? Int(l4.load(fromByteOffset: 12, as: UInt8.self) >> 4) &<< 2 : 8
        if !tcp { l4.storeBytes(of: UInt16(truncatingIfNeeded: l4Length).bigEndian, toByteOffset: 4, as: UInt16.self) }
        let partial = InternetChecksum.pseudoHeaderSum(
            source: ip.sourceAddress, destination: ip.destinationAddress,
            protocolNumber: tcp ? IPProtocolNumber.tcp : IPProtocolNumber.udp,
            length: l4Length)
        l4.storeBytes(of: UInt16(truncatingIfNeeded: partial).bigEndian, toByteOffset: tcp ? 16 : 6, as: UInt16.self)
        var type = tcp ? gsoTCPv4 : gsoUDPL4
        if tcp && offload.congestionWindowReduced { type |= gsoECN }
        return VirtioNetHeader(
            flags: needsChecksum, gsoType: type,
            headerLength: UInt16(truncatingIfNeeded: ihl &+ transportHeader),
            gsoSize: offload.segmentSize, checksumStart: UInt16(truncatingIfNeeded: ihl),
            checksumOffset: tcp ? 16 : 6)
    }
}

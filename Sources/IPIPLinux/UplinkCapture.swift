import CIPIPLinux
import Glibc
import IPIPCore

/// Takes the dataplane's packets off the uplink: IP-in-IP to the node, replies to NAT ports,
/// ICMP errors (see `CaptureFilter`).
///
/// An `AF_PACKET`/`SOCK_RAW` socket with `PACKET_VNET_HDR`, bound to the uplink's interface
/// index: every read returns a 10-byte `virtio_net_hdr`, the link-layer header (14 bytes on an
/// Ethernet uplink, none on a layer-3 one) and the packet. The virtio header is what lets the
/// dataplane take whatever the kernel gives with the host's offloads left as they are:
/// - a GSO super-packet (GRO on the uplink, which merges IP-in-IP too, or a TSO super-packet that
///   a veth, a bridge or a virtio NIC passed on whole) arrives as one read with its segment size
///   (`SegmentationOffload`), and the engine treats it once;
/// - a `CHECKSUM_PARTIAL` packet (from a local sender over a veth) is marked `NEEDS_CSUM`, and its
///   transport checksum is completed before the engine sees it.
/// (Linux: `net/packet/af_packet.c` `packet_rcv_vnet`, `include/linux/virtio_net.h`
/// `virtio_net_hdr_from_skb`; `PACKET_VNET_HDR` requires `SOCK_RAW`.) The BPF program
/// (`CaptureFilter`) keeps only IPv4 packets for the dataplane; it reads relative to the network
/// header. `PACKET_IGNORE_OUTGOING` keeps the host's and the dataplane's own transmissions out.
/// The socket is created with protocol 0 (which receives nothing), gets its filter, and only
/// then is bound: no unfiltered packet is ever queued.
///
/// Why `ETH_P_ALL` and not `ETH_P_IP`: the kernel delivers received frames to `ETH_P_ALL`
/// packet sockets (the "taps", as tcpdump uses) *before* the ingress hooks (tc, nftables
/// netdev ingress), and to protocol-specific ones like `ETH_P_IP` only *after* them
/// (`__netif_receive_skb_core`). The nftables drop (`NFTables.apply`) removes the host's copy
/// of the dataplane's packets at netdev ingress; only a tap still receives them
/// (checked by the nftables test: an `ETH_P_IP` socket saw nothing once the table was applied).
///
/// Batching: `receiveBatch` claims the batch's free slots (up to `maximumBatchSize`), points the
/// preallocated iovecs at them so that the virtio and link headers land in the headroom and the
/// packet at the headroom, and calls `recvmmsg(2)` once; nothing is allocated per call. Slots
/// must hold 64 KiB (the default `PacketBatch`) for super-packets to arrive whole; a truncated
/// one is dropped by the engine (`invalid_offload`).
///
/// Threading: not thread-safe; `Sendable` only so that it can be handed to the worker thread
/// that owns it. `setFilter` may be called from that thread only.
public final class UplinkCapture: @unchecked Sendable {
    /// The packet socket; -1 after `close()`.
    public private(set) var fd: Int32
    /// The uplink's interface index.
    public let interfaceIndex: Int32
    /// The filter currently attached.
    public private(set) var filter: CaptureFilter
    /// The most packets one `recvmmsg` takes.
    public let maximumBatchSize: Int

    /// Bytes of link-layer header in front of each packet (14 on Ethernet, 0 on a layer-3 link).
    public let linkHeaderLength: Int

    private let messages: UnsafeMutablePointer<cipl_mmsghdr>
    private let vectors: UnsafeMutablePointer<iovec>
    /// Super-packets received (GRO, or a TSO packet passed on whole).
    public private(set) var superPackets: UInt64 = 0
    /// Reads that did not carry a whole header or were cut short (`MSG_TRUNC`): dropped here.
    public private(set) var truncated: UInt64 = 0

    /// Opens a capture on an interface by name (resolved in the calling thread's network namespace).
    /// - Throws: `SystemCallError` from `if_nametoindex` or the socket setup.
    public convenience init(
        interface: String, filter: CaptureFilter, maximumBatchSize: Int = 64,
        receiveBufferByteCount: Int? = nil
    ) throws(SystemCallError) {
        try self.init(
            interfaceIndex: try Syscall.interfaceIndex(interface), filter: filter,
            maximumBatchSize: maximumBatchSize, receiveBufferByteCount: receiveBufferByteCount)
    }

    /// Opens a capture on an interface.
    /// - Parameters:
    ///   - interfaceIndex: the uplink's index.
    ///   - filter: which packets to take.
    ///   - maximumBatchSize: the most packets per `recvmmsg`.
    ///   - receiveBufferByteCount: when given, `SO_RCVBUFFORCE`, else `SO_RCVBUF` (doubled, and for the latter capped at
    ///     `net.core.rmem_max`).
    /// - Throws: `SystemCallError` from `socket` (`EPERM` without `CAP_NET_RAW`), `setsockopt`
    ///   (`PACKET_IGNORE_OUTGOING` needs Linux 4.20) or `bind` (`ENODEV`).
    ///   - linkHeaderLength: bytes of link-layer header on this interface (see
    ///     `UplinkCapture.linkHeaderLength(interface:)`).
    ///   - ringFrameCount: when not 0, receive through a `TPACKET_V2` ring of that many 2 KiB
    ///     frames instead of `recvmmsg` (see `receiveBatch`); a power of two.
    ///   - fanoutGroup: when given, the socket joins this `PACKET_FANOUT` group in hash mode:
    ///     the kernel deals the uplink's packets out over the group's sockets (one per worker) by
    ///     a symmetric flow hash, so a flow and its replies reach the same socket.
    public init(
        interfaceIndex: Int32, filter: CaptureFilter, maximumBatchSize: Int = 64,
        receiveBufferByteCount: Int? = nil, linkHeaderLength: Int = 14, ringFrameCount: Int = 0,
        fanoutGroup: UInt16? = nil
    ) throws(SystemCallError) {
        precondition(ringFrameCount >= 0 && ringFrameCount & (ringFrameCount &- 1) == 0, "a power of two")
        precondition(maximumBatchSize > 0 && maximumBatchSize <= 1024, "1…1024 messages per recvmmsg")
        precondition(linkHeaderLength >= 0 && linkHeaderLength <= 32, "a link header of 0…32 bytes")
        let type = Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = try Syscall.socket(AF_PACKET, type, 0)
        var ring: UnsafeMutableRawPointer?
        do throws(SystemCallError) {
            try Syscall.setsockopt(
                fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, Int32(1), call: "setsockopt(PACKET_IGNORE_OUTGOING)")
            try Syscall.setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, Int32(1), call: "setsockopt(PACKET_VNET_HDR)")
            if let receiveBufferByteCount {
                // SO_RCVBUFFORCE (CAP_NET_ADMIN, which the daemon has) passes net.core.rmem_max;
                // without the capability, SO_RCVBUF takes what rmem_max allows.
                do {
                    try Syscall.setsockopt(
                        fd, SOL_SOCKET, SO_RCVBUFFORCE, Int32(receiveBufferByteCount),
                        call: "setsockopt(SO_RCVBUFFORCE)")
                } catch {
                    try Syscall.setsockopt(
                        fd, SOL_SOCKET, SO_RCVBUF, Int32(receiveBufferByteCount), call: "setsockopt(SO_RCVBUF)")
                }
            }
            try Self.attach(filter, to: fd)
            if ringFrameCount > 0 {
                var failed: UnsafePointer<CChar>?
                guard
                    let r = cipl_packet_rx_ring(
                        fd, UInt32(Self.ringBlockByteCount), UInt32(Self.ringFrameByteCount),
                        UInt32(ringFrameCount), &failed)
                else {
                    throw SystemCallError(
                        errno: errno, call: "TPACKET_V2 ring", detail: failed.map { String(cString: $0) } ?? "")
                }
                ring = r
                // Frames longer than a ring frame (GSO super-packets) are queued whole to the
                // socket as well, for recvmsg (TP_STATUS_COPY marks their place in the ring).
                try Syscall.setsockopt(
                    fd, SOL_PACKET, PACKET_COPY_THRESH, Int32(1), call: "setsockopt(PACKET_COPY_THRESH)")
            }
            var address = sockaddr_ll()
            address.sll_family = UInt16(AF_PACKET)
            address.sll_protocol = UInt16(ETH_P_ALL).bigEndian
            address.sll_ifindex = interfaceIndex
            try withUnsafeBytes(of: &address) { (raw) throws(SystemCallError) in
                try Syscall.bind(fd, raw.baseAddress!, raw.count)
            }
            if let group = fanoutGroup {
                // PACKET_FANOUT (18) with PACKET_FANOUT_HASH (0) in the upper half (linux/if_packet.h).
                try Syscall.setsockopt(fd, SOL_PACKET, 18, Int32(group) | (0 << 16), call: "setsockopt(PACKET_FANOUT)")
            }
        } catch {
            if let r = ring { cipl_packet_rx_ring_unmap(r, UInt64(ringFrameCount * Self.ringFrameByteCount)) }
            Syscall.close(fd)
            throw error
        }
        self.ring = ring
        self.ringFrameCount = ringFrameCount
        self.fd = fd
        self.interfaceIndex = interfaceIndex
        self.filter = filter
        self.maximumBatchSize = maximumBatchSize
        self.linkHeaderLength = linkHeaderLength
        messages = .allocate(capacity: maximumBatchSize)
        vectors = .allocate(capacity: maximumBatchSize)
        vectors.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: maximumBatchSize)
        messages.initialize(repeating: cipl_mmsghdr(), count: maximumBatchSize)
        for i in 0..<maximumBatchSize {
            messages[i].msg_hdr.msg_iov = vectors + i
            messages[i].msg_hdr.msg_iovlen = 1
        }
    }

    deinit {
        if let ring { cipl_packet_rx_ring_unmap(ring, UInt64(ringFrameCount * Self.ringFrameByteCount)) }
        if fd >= 0 { Syscall.close(fd) }
        messages.deallocate()
        vectors.deallocate()
    }

    // MARK: The receive ring

    /// The `TPACKET_V2` ring, when the capture uses one.
    private let ring: UnsafeMutableRawPointer?
    /// Frames in the ring (0 without one).
    public let ringFrameCount: Int
    /// The next ring frame to look at.
    private var ringCursor = 0
    /// One ring frame: the 32-byte `tpacket2_hdr` and the `sockaddr_ll` (aligned to 80 bytes),
    /// the virtio header and the frame (the kernel puts the network header at 90). 2 KiB hold an
    /// Ethernet frame of a 1,500-byte MTU; larger ones are copied to the socket (`TP_STATUS_COPY`).
    public static let ringFrameByteCount = 2048
    static let ringBlockByteCount = 1 << 17
    /// Frames that arrived through the socket because they did not fit a ring frame.
    public private(set) var ringCopies: UInt64 = 0

    /// The link-layer header length of an interface as a `SOCK_RAW` packet socket sees it: 14 for
    /// Ethernet (and loopback, which uses Ethernet framing), 0 for layer-3 devices (TUN,
    /// WireGuard, IP tunnels: `ARPHRD_NONE`, `ARPHRD_IPGRE`, …).
    /// - Throws: `SystemCallError` from `ioctl(SIOCGIFHWADDR)`.
    public static func linkHeaderLength(interface: String) throws(SystemCallError) -> Int {
        try hardwareAddress(interface: interface).isEthernet ? 14 : 0
    }

    /// The hardware address and type of an interface (`SIOCGIFHWADDR`).
    /// - Throws: `SystemCallError` from the ioctl.
    public static func hardwareAddress(
        interface: String
    ) throws(SystemCallError) -> (address: MACAddress, isEthernet: Bool) {
        var mac: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0)
        var type: UInt16 = 0
        let r = withUnsafeMutableBytes(of: &mac) { m in
            cipl_interface_hardware_address(interface, m.baseAddress!.assumingMemoryBound(to: UInt8.self), &type)
        }
        guard r == 0 else { throw SystemCallError(errno: errno, call: "ioctl(SIOCGIFHWADDR)", detail: interface) }
        // ARPHRD_ETHER 1, ARPHRD_LOOPBACK 772: both framed with a 14-byte Ethernet header.
        return (MACAddress(bytes: mac), type == 1 || type == 772)
    }

    /// Closes the socket. Idempotent.
    public func close() {
        guard fd >= 0 else { return }
        Syscall.close(fd)
        fd = -1
    }

    /// Replaces the filter (on a topology change: new node address or port range).
    ///
    /// `SO_ATTACH_FILTER` swaps the program atomically: every packet is checked by either the
    /// old or the new one. Packets the old program accepted may still be queued; the engine
    /// judges them like any other.
    /// - Throws: `SystemCallError` from `setsockopt(SO_ATTACH_FILTER)`.
    public func setFilter(_ filter: CaptureFilter) throws(SystemCallError) {
        precondition(fd >= 0, "setFilter on a closed capture")
        try Self.attach(filter, to: fd)
        self.filter = filter
    }

    private static func attach(_ filter: CaptureFilter, to fd: Int32) throws(SystemCallError) {
        var program = filter.program()
        try program.withUnsafeMutableBufferPointer { (instructions) throws(SystemCallError) in
            // The kernel copies the program during the call; the pointer does not escape it.
            let description = sock_fprog(len: UInt16(instructions.count), filter: instructions.baseAddress)
            try Syscall.setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, description, call: "setsockopt(SO_ATTACH_FILTER)")
        }
    }

    /// Receives the queued packets into the batch's free slots with one `recvmmsg(2)`.
    ///
    /// Each packet lands at its slot's headroom, with origin = its slot index and the given
    /// time, and its virtio header becomes the slot's `SegmentationOffload` (a checksum left to
    /// offload is completed here). Link-layer padding after the IPv4 total length (short frames
    /// are padded to 60 bytes) is cut off. A read that was truncated or too short to hold the
    /// headers is dropped and counted (`truncated`).
    /// - Returns: packets appended: 0 when nothing is queued, the batch is full or the uplink
    ///   went down (`ENETDOWN`, reported once by the kernel).
    /// - Throws: `SystemCallError` for any other `recvmmsg` failure.
    public func receiveBatch(into batch: inout PacketBatch, time: Timestamp) throws(SystemCallError) -> Int {
        precondition(fd >= 0, "receive on a closed capture")
        if let ring { return try receiveFromRing(ring, into: &batch, time: time) }
        return try receiveMessages(into: &batch, time: time, limit: maximumBatchSize)
    }

    /// Takes the frames the kernel filled in the ring, in order, into the batch, and hands the
    /// ring frames back; a frame marked `TP_STATUS_COPY` (too big for a ring frame) is read whole
    /// from the socket instead, where the kernel queued it in the same order.
    /// Cost per packet: one copy from the ring into the slot, no system call (`poll` only when the
    /// ring is empty).
    private func receiveFromRing(
        _ ring: UnsafeMutableRawPointer, into batch: inout PacketBatch,
        time: Timestamp
    ) throws(SystemCallError) -> Int {
        let first = batch.count
        let prefix = VirtioNetHeader.byteCount + linkHeaderLength
        precondition(batch.headroom >= prefix, "the batch's headroom must hold the virtio and link headers")
        let maximum = batch.maximumPacketByteCount
        while batch.count < batch.capacity {
            let frame = ring + ringCursor &* Self.ringFrameByteCount
            let statusWord = frame.assumingMemoryBound(to: UInt32.self)
            let status = cipl_load_acquire_u32(statusWord)
            guard status & UInt32(TP_STATUS_USER) != 0 else { break }
            if status & UInt32(TP_STATUS_COPY) != 0 {
                // The whole frame waits in the socket's queue; this ring frame is cut short.
                if try receiveMessages(into: &batch, time: time, limit: 1) == 0 { truncated &+= 1 }
                ringCopies &+= 1
            } else {
                let snap = Int(frame.load(fromByteOffset: 8, as: UInt32.self))
                let mac = Int(frame.load(fromByteOffset: 12, as: UInt16.self))
                // Safe: the kernel wrote the virtio header right before the link header, and
                // mac + snap stays within the frame.
                if snap >= linkHeaderLength &+ 20, mac >= VirtioNetHeader.byteCount,
                    mac &+ snap <= Self.ringFrameByteCount,
                    snap &- linkHeaderLength <= maximum
                {
                    let slotIndex = batch.count
                    let slot = batch.appendSlot(length: snap &- linkHeaderLength, origin: slotIndex, time: time)!
                    (slot - prefix).copyMemory(
                        from: frame + (mac &- VirtioNetHeader.byteCount), byteCount: snap &+ VirtioNetHeader.byteCount)
                    takeIn(slotIndex, of: &batch, total: snap &+ VirtioNetHeader.byteCount)
                } else {
                    truncated &+= 1
                }
            }
            cipl_store_release_u32(statusWord, UInt32(TP_STATUS_KERNEL))
            ringCursor = (ringCursor &+ 1) & (ringFrameCount &- 1)
        }
        return batch.count &- first
    }

    /// Reads the virtio header of a packet received into slot `slot` (`total` bytes from the
    /// virtio header on), trims link-layer padding and records its offload.
    @inline(__always)
    private func takeIn(_ slot: Int, of batch: inout PacketBatch, total: Int) {
        let prefix = VirtioNetHeader.byteCount + linkHeaderLength
        let header = VirtioNetHeader(loadingFrom: batch.packet(slot).baseAddress! - prefix)
        var length = min(total - prefix, batch.maximumPacketByteCount)
        if header.gsoType == VirtioNetHeader.gsoNone {
            let packet = batch.packet(slot)
            let ipLength = Int(UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            if ipLength >= 20 && ipLength < length { length = ipLength }
        }
        batch.setLength(length, of: slot)
        let offload = SegmentationOffload.taking(header, packet: batch.packet(slot), linkHeaderLength: linkHeaderLength)
        batch.setOffload(offload, of: slot)
        if offload.isSegmented { superPackets &+= 1 }
    }

    /// `recvmmsg` of at most `limit` packets into the batch's free slots.
    private func receiveMessages(
        into batch: inout PacketBatch, time: Timestamp, limit: Int
    ) throws(SystemCallError) -> Int {
        let first = batch.count
        let count = min(batch.capacity - first, maximumBatchSize, limit)
        guard count > 0 else { return 0 }
        let maximum = batch.maximumPacketByteCount
        let prefix = VirtioNetHeader.byteCount + linkHeaderLength
        precondition(batch.headroom >= prefix, "the batch's headroom must hold the virtio and link headers")
        for k in 0..<count {
            // Safe: `count` slots are free, so appendSlot cannot fail; the headroom holds `prefix`.
            let slot = batch.appendSlot(length: maximum, origin: first + k, time: time)!
            vectors[k].iov_base = slot - prefix
            vectors[k].iov_len = maximum + prefix
            messages[k].msg_hdr.msg_flags = 0
            messages[k].msg_len = 0
        }
        let received: Int
        do {
            switch try Syscall.recvmmsg(fd, messages, count) {
            case .processed(let n): received = Int(n)
            case .wouldBlock: received = 0
            }
        } catch {
            batch.truncate(to: first)
            if error.errno == ENETDOWN { return 0 }
            throw error
        }
        var kept = first
        for k in 0..<received {
            let total = Int(messages[k].msg_len)
            guard total >= prefix + 20, messages[k].msg_hdr.msg_flags & Int32(MSG_TRUNC) == 0 else {
                truncated &+= 1
                continue
            }
            // Received into slot first + k; move it down over dropped ones (rare: truncations).
            if first + k != kept { batch.copySlot(first + k, to: kept) }
            takeIn(kept, of: &batch, total: total)
            kept += 1
        }
        batch.truncate(to: kept)
        return kept - first
    }

    /// The kernel's counters for this socket since the last call (reading resets them):
    /// packets that passed the filter, and those dropped because the receive queue was full.
    /// - Throws: `SystemCallError` from `getsockopt(PACKET_STATISTICS)`.
    public func statistics() throws(SystemCallError) -> (packets: UInt32, drops: UInt32) {
        var stats = tpacket_stats()
        try Syscall.getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &stats, call: "getsockopt(PACKET_STATISTICS)")
        return (stats.tp_packets, stats.tp_drops)
    }
}

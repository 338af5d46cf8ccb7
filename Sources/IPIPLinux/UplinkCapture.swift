import CIPIPLinux
import Glibc
import IPIPCore

/// Takes the dataplane's packets off the uplink: IP-in-IP to the node, replies to NAT ports,
/// ICMP errors (see `CaptureFilter`).
///
/// An `AF_PACKET`/`SOCK_DGRAM` socket bound to the uplink's interface index, so a read returns
/// the network-layer packet without its link-layer header; the BPF program (`CaptureFilter`)
/// keeps only IPv4 packets for the dataplane. `PACKET_IGNORE_OUTGOING` keeps the host's and the
/// dataplane's own transmissions out. The socket is created with protocol 0 (which receives
/// nothing), gets its filter, and only then is bound: no unfiltered packet is ever queued.
///
/// Why `ETH_P_ALL` and not `ETH_P_IP`: the kernel delivers received frames to `ETH_P_ALL`
/// packet sockets (the "taps", as tcpdump uses) *before* the ingress hooks (tc, nftables
/// netdev ingress), and to protocol-specific ones like `ETH_P_IP` only *after* them
/// (`__netif_receive_skb_core`). The nftables drop (`NFTables.apply`) removes the host's copy
/// of the dataplane's packets at netdev ingress; only a tap still receives them (DESIGN.md §4;
/// checked by the nftables test: an `ETH_P_IP` socket saw nothing once the table was applied).
///
/// Batching: `receiveBatch` claims the batch's free slots (up to `maximumBatchSize`), points the
/// preallocated iovecs at them (at the headroom) and calls `recvmmsg(2)` once; nothing is
/// allocated per call.
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

    private let messages: UnsafeMutablePointer<cipl_mmsghdr>
    private let vectors: UnsafeMutablePointer<iovec>
    /// Per-message control buffers for PACKET_AUXDATA (one `tpacket_auxdata` each).
    private let controls: UnsafeMutableRawPointer
    private static let controlByteCount = 64
    /// Packets whose TCP/UDP checksum the capture completed (they arrived CHECKSUM_PARTIAL).
    public private(set) var checksumsCompleted: UInt64 = 0

    /// Opens a capture on an interface by name (resolved in the calling thread's network namespace).
    /// - Throws: `SystemCallError` from `if_nametoindex` or the socket setup.
    public convenience init(interface: String, filter: CaptureFilter, maximumBatchSize: Int = 64,
                            receiveBufferByteCount: Int? = nil) throws(SystemCallError) {
        try self.init(interfaceIndex: try Syscall.interfaceIndex(interface), filter: filter,
                      maximumBatchSize: maximumBatchSize, receiveBufferByteCount: receiveBufferByteCount)
    }

    /// Opens a capture on an interface.
    /// - Parameters:
    ///   - interfaceIndex: the uplink's index.
    ///   - filter: which packets to take.
    ///   - maximumBatchSize: the most packets per `recvmmsg`.
    ///   - receiveBufferByteCount: when given, `SO_RCVBUF` (doubled and capped by the kernel at
    ///     `net.core.rmem_max`).
    /// - Throws: `SystemCallError` from `socket` (`EPERM` without `CAP_NET_RAW`), `setsockopt`
    ///   (`PACKET_IGNORE_OUTGOING` needs Linux 4.20) or `bind` (`ENODEV`).
    public init(interfaceIndex: Int32, filter: CaptureFilter, maximumBatchSize: Int = 64,
                receiveBufferByteCount: Int? = nil) throws(SystemCallError) {
        precondition(maximumBatchSize > 0 && maximumBatchSize <= 1024, "1…1024 messages per recvmmsg")
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = try Syscall.socket(AF_PACKET, type, 0)
        do {
            try Syscall.setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, Int32(1), call: "setsockopt(PACKET_IGNORE_OUTGOING)")
            // Ask for each packet's tpacket_auxdata: its status says whether the transport
            // checksum is still to be filled in (a CHECKSUM_PARTIAL packet from a local sender
            // over a veth), which the capture then completes before the engine sees it.
            try Syscall.setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, Int32(1), call: "setsockopt(PACKET_AUXDATA)")
            if let receiveBufferByteCount {
                try Syscall.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, Int32(receiveBufferByteCount), call: "setsockopt(SO_RCVBUF)")
            }
            try Self.attach(filter, to: fd)
            var address = sockaddr_ll()
            address.sll_family = UInt16(AF_PACKET)
            address.sll_protocol = UInt16(ETH_P_ALL).bigEndian
            address.sll_ifindex = interfaceIndex
            try withUnsafeBytes(of: &address) { (raw) throws(SystemCallError) in
                try Syscall.bind(fd, raw.baseAddress!, raw.count)
            }
        } catch {
            Syscall.close(fd)
            throw error
        }
        self.fd = fd
        self.interfaceIndex = interfaceIndex
        self.filter = filter
        self.maximumBatchSize = maximumBatchSize
        messages = .allocate(capacity: maximumBatchSize)
        vectors = .allocate(capacity: maximumBatchSize)
        vectors.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: maximumBatchSize)
        messages.initialize(repeating: cipl_mmsghdr(), count: maximumBatchSize)
        controls = .allocate(byteCount: maximumBatchSize * Self.controlByteCount, alignment: 8)
        controls.initializeMemory(as: UInt8.self, repeating: 0, count: maximumBatchSize * Self.controlByteCount)
        for i in 0..<maximumBatchSize {
            messages[i].msg_hdr.msg_iov = vectors + i
            messages[i].msg_hdr.msg_iovlen = 1
            messages[i].msg_hdr.msg_control = controls + i * Self.controlByteCount
        }
    }

    deinit {
        if fd >= 0 { Syscall.close(fd) }
        messages.deallocate()
        vectors.deallocate()
        controls.deallocate()
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
    /// time. Link-layer padding after the IPv4 total length (short frames are padded to 60
    /// bytes) is cut off. A packet longer than the slot is truncated; the engine's length check
    /// drops it.
    /// - Returns: packets appended: 0 when nothing is queued, the batch is full or the uplink
    ///   went down (`ENETDOWN`, reported once by the kernel).
    /// - Throws: `SystemCallError` for any other `recvmmsg` failure.
    public func receiveBatch(into batch: inout PacketBatch, time: Timestamp) throws(SystemCallError) -> Int {
        precondition(fd >= 0, "receive on a closed capture")
        let first = batch.count
        let count = min(batch.capacity - first, maximumBatchSize)
        guard count > 0 else { return 0 }
        let maximum = batch.maximumPacketByteCount
        for k in 0..<count {
            // Safe: `count` slots are free, so appendSlot cannot fail.
            let slot = batch.appendSlot(length: maximum, origin: first + k, time: time)!
            vectors[k].iov_base = slot
            vectors[k].iov_len = maximum
            messages[k].msg_hdr.msg_flags = 0
            messages[k].msg_hdr.msg_controllen = Self.controlByteCount
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
        for k in 0..<received {
            var length = Int(messages[k].msg_len)
            let packet = batch.packet(first + k)
            if length >= 20 {
                let totalLength = Int(UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                if totalLength >= 20 && totalLength < length { length = totalLength }
            }
            batch.setLength(min(length, maximum), of: first + k)
            if checksumNotReady(message: k) && InternetChecksum.completeTransportChecksum(batch.packet(first + k)) {
                checksumsCompleted &+= 1
            }
        }
        batch.truncate(to: first + received)
        return received
    }

    /// Whether message `k`'s tpacket_auxdata says TP_STATUS_CSUMNOTREADY. The control message is
    /// `struct cmsghdr` (length 8 bytes, level 4, type 4) followed by `tpacket_auxdata`, whose
    /// first field is `tp_status`; it is the only control message this socket asks for.
    @inline(__always)
    private func checksumNotReady(message k: Int) -> Bool {
        // Safe: the control buffer of message k is controlByteCount bytes; the kernel wrote
        // msg_controllen bytes of it, checked before reading past the header.
        guard Int(messages[k].msg_hdr.msg_controllen) >= 16 + 4 else { return false }
        let c = controls + k * Self.controlByteCount
        guard c.load(fromByteOffset: 8, as: Int32.self) == SOL_PACKET,
              c.load(fromByteOffset: 12, as: Int32.self) == PACKET_AUXDATA
        else { return false }
        return c.load(fromByteOffset: 16, as: UInt32.self) & UInt32(TP_STATUS_CSUMNOTREADY) != 0
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

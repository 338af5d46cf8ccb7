import CIPIPLinux
import Glibc
import IPIPCore

/// A layer-3 TUN device: the workloads' side of the dataplane.
///
/// Opened with `IFF_TUN | IFF_NO_PI`: every `read(2)` returns exactly one IP packet with no
/// prefix, every `write(2)` injects exactly one. The descriptor is non-blocking and
/// close-on-exec; the device is not persistent, so it disappears when the descriptor is closed.
///
/// With `offloads` (the daemon's default) it is opened with `IFF_VNET_HDR` as well, and
/// `TUNSETOFFLOAD` asks for checksum offload, TSO for IPv4 and IPv6, and USO where the kernel has
/// it (Linux 6.2+; `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6`, falling back
/// to the set without USO, then to checksum offload alone, then to none). Every read then starts
/// with a 10-byte `virtio_net_hdr` and may return a TCP (or UDP) super-packet of up to 64 KiB
/// that stands for many MTU-sized packets (`SegmentationOffload`); every write carries such a
/// header, so a coalesced super-packet goes to the kernel in one call. `readBatch` and `write`
/// put the header in the slot's headroom, right before the packet: no copy.
/// (Linux: `drivers/net/tun.c` `tun_put_user`/`tun_get_user`, `include/linux/virtio_net.h`.)
///
/// Bringing the link up, its MTU and its address are rtnetlink's job (see the route and link
/// reconcilers); `setUp(mtu:)` is a small ioctl fallback for tests and tools.
///
/// Contract: as soon as the link is up the kernel sends IPv6 router solicitations and MLD
/// reports into it; `readBatch` returns them like any packet and the engine drops them as
/// `not_ipv4`. Packets longer than the batch's `maximumPacketByteCount` are truncated by
/// `read(2)` and then dropped by the engine's length checks.
///
/// Threading: not thread-safe. It is `Sendable` only so that it can be handed to the worker
/// thread that owns it; use it from one thread at a time.
public final class TUNDevice: @unchecked Sendable {
    /// The device's name, as the kernel chose it (a pattern like `ipip%d` is expanded).
    public let name: String
    /// The device's interface index (in the network namespace it was created in).
    public let index: Int32
    /// The TUN descriptor; -1 after `close()`.
    public private(set) var fd: Int32
    /// Whether every read and write carries a `virtio_net_hdr` (`IFF_VNET_HDR`).
    public let hasVirtioHeaders: Bool
    /// The `TUN_F_*` offloads the kernel accepted (0 without virtio headers).
    public let offloadFlags: UInt32
    /// Whether UDP super-packets (USO) may be written: the kernel accepted `TUN_F_USO4`, which
    /// is also when it takes `GSO_UDP_L4` on a write.
    public var acceptsUDPSegmentation: Bool { offloadFlags & UInt32(CIPL_TUN_F_USO4) != 0 }
    /// Whether reads may return TCP super-packets.
    public var deliversTCPSegmentation: Bool { offloadFlags & UInt32(CIPL_TUN_F_TSO4) != 0 }
    /// Scratch for packets that must be segmented before a write (a UDP super-packet without USO,
    /// any super-packet on a TUN without virtio headers); allocated once.
    private let scratch: UnsafeMutableRawPointer
    private static let scratchByteCount = 65536 + 64
    /// Packets written as segments because the TUN could not take them whole.
    public private(set) var segmentedWrites: UInt64 = 0
    /// Super-packets written whole (with a GSO virtio header).
    public private(set) var superPacketWrites: UInt64 = 0
    /// Super-packets read.
    public private(set) var superPacketReads: UInt64 = 0

    /// Whether the device was opened with `IFF_MULTI_QUEUE` (this descriptor is one of its queues).
    public let isMultiQueue: Bool
    /// `IFF_MULTI_QUEUE` (linux/if_tun.h).
    static let multiQueueFlag: Int32 = 0x0100

    /// Opens one more queue of this multi-queue device: a descriptor of its own, with the same
    /// flags and offloads, for another worker. The kernel picks a queue per flow when it hands
    /// packets to the device (by the flow's hash, and afterwards the queue that flow's packets
    /// were last written on: `tun_automq_select_queue`), so one flow stays on one queue.
    /// The device goes away when its last queue is closed.
    /// - Precondition: `isMultiQueue`.
    /// - Throws: `SystemCallError` from `open` or `ioctl(TUNSETIFF)` (the kernel allows 256 queues).
    public func attachQueue() throws(SystemCallError) -> TUNDevice {
        precondition(isMultiQueue, "attachQueue needs a device opened with multiQueue")
        return try TUNDevice(name: name, offloads: hasVirtioHeaders, multiQueue: true)
    }

    /// The kernel's own IP-in-IP device, which this dataplane must never take over.
    public static let reservedName = "tunl0"

    /// Creates a TUN device (or attaches to an existing persistent one of that name).
    /// - Parameters:
    ///   - name: the device name, at most 15 bytes; may contain one `%d` for the kernel to fill in.
    ///   - mtu: when given, the device's MTU is set (through `SIOCSIFMTU`).
    /// - Precondition: `name` is not `tunl0` (the kernel ipip module's device) and fits `IFNAMSIZ`.
    /// - Throws: `SystemCallError` from `open(/dev/net/tun)`, `ioctl(TUNSETIFF)`, `if_nametoindex`
    ///   or `ioctl(SIOCSIFMTU)`.
    ///   - offloads: open with `IFF_VNET_HDR` and ask for checksum and segmentation offloads
    ///     (see the type's description); `offloadFlags` says what the kernel accepted.
    ///   - multiQueue: open with `IFF_MULTI_QUEUE`, so that `attachQueue()` can add queues (one
    ///     per worker; the kernel spreads flows over them, see `attachQueue`).
    public init(name: String, mtu: Int? = nil, offloads: Bool = false, multiQueue: Bool = false) throws(SystemCallError)
    {
        precondition(name != TUNDevice.reservedName, "tunl0 belongs to the kernel's ipip module")
        precondition(!name.isEmpty && name.utf8.count < Int(IFNAMSIZ), "interface names are 1…15 bytes")
        let fd = try Syscall.open("/dev/net/tun", flags: O_RDWR | O_CLOEXEC | O_NONBLOCK)
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: name.utf8) }
        request.ifr_ifru.ifru_flags = Int16(
            truncatingIfNeeded: IFF_TUN | IFF_NO_PI | (offloads ? Int32(cipl_iff_vnet_hdr()) : 0)
                | (multiQueue ? Self.multiQueueFlag : 0))
        var accepted: UInt32 = 0
        do {
            try withUnsafeMutableBytes(of: &request) { (raw) throws(SystemCallError) in
                try Syscall.ioctl(fd, cipl_tunsetiff(), raw.baseAddress!, call: "ioctl(TUNSETIFF)")
            }
            if offloads {
                _ = try Syscall.checked("ioctl(TUNSETVNETHDRSZ)") {
                    cipl_tun_set_vnet_header_size(fd, Int32(VirtioNetHeader.byteCount))
                }
                accepted = Self.negotiateOffloads(fd)
            }
        } catch {
            Syscall.close(fd)
            throw error
        }
        let actual = withUnsafeBytes(of: request.ifr_ifrn.ifrn_name) {
            String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        self.fd = fd
        self.name = actual
        isMultiQueue = multiQueue
        hasVirtioHeaders = offloads
        offloadFlags = accepted
        scratch = .allocate(byteCount: Self.scratchByteCount, alignment: 64)
        do {
            index = try Syscall.interfaceIndex(actual)
            if let mtu { try Self.setMTU(mtu, of: actual) }
        } catch {
            Syscall.close(fd)
            throw error
        }
    }

    deinit {
        if fd >= 0 { Syscall.close(fd) }
        scratch.deallocate()
    }

    /// The accepted offloads by name (`csum tso4 tso6 uso4 uso6`), for logs.
    public var offloadDescription: String {
        let names: [(Int, String)] = [
            (CIPL_TUN_F_CSUM, "csum"), (CIPL_TUN_F_TSO4, "tso4"), (CIPL_TUN_F_TSO6, "tso6"),
            (CIPL_TUN_F_USO4, "uso4"), (CIPL_TUN_F_USO6, "uso6"),
        ]
        let on = names.filter { offloadFlags & UInt32($0.0) != 0 }.map(\.1)
        return on.isEmpty ? "none accepted" : on.joined(separator: " ")
    }

    /// Asks for the richest offload set the kernel takes; returns the accepted `TUN_F_*` flags.
    private static func negotiateOffloads(_ fd: Int32) -> UInt32 {
        let csum = UInt32(CIPL_TUN_F_CSUM)
        let tso = csum | UInt32(CIPL_TUN_F_TSO4) | UInt32(CIPL_TUN_F_TSO6)
        let uso = tso | UInt32(CIPL_TUN_F_USO4) | UInt32(CIPL_TUN_F_USO6)
        for flags in [uso, tso, csum] where cipl_tun_set_offload(fd, flags) == 0 { return flags }
        return 0
    }

    /// Closes the descriptor; the (non-persistent) device disappears. Idempotent.
    public func close() {
        guard fd >= 0 else { return }
        Syscall.close(fd)
        fd = -1
    }

    /// Reads packets until the device has none left, the batch is full or `limit` packets were read.
    ///
    /// Each packet lands at its slot's headroom (so the engine can prepend an outer header),
    /// with origin = its slot index and the given time. With virtio headers, the header lands in
    /// the 10 bytes before it and becomes the slot's `SegmentationOffload`
    /// (`SegmentationOffload.taking`: a checksum left to offload is completed here). A read
    /// shorter than the header is dropped.
    /// - Parameters:
    ///   - batch: the batch to append to (its existing packets are kept).
    ///   - time: the arrival time recorded on each packet.
    ///   - limit: the most packets to read in this call.
    /// - Returns: how many packets were appended (0 when the device would block).
    /// - Throws: `SystemCallError` from `read(2)` other than `EAGAIN` (for example `EBADFD`
    ///   when the device was removed).
    public func readBatch(
        into batch: inout PacketBatch, time: Timestamp, limit: Int = .max
    )
        throws(SystemCallError) -> Int
    {
        precondition(fd >= 0, "read from a closed TUN device")
        var read = 0
        let header = hasVirtioHeaders ? VirtioNetHeader.byteCount : 0
        while read < limit, !batch.isFull {
            let slot = batch.count
            let maximum = batch.maximumPacketByteCount
            guard let p = batch.appendSlot(length: maximum, origin: slot, time: time) else { break }
            let result: IOResult<Int>
            do {
                // Safe: every slot has at least 20 bytes of headroom (PacketBatch), room for the header.
                result = try Syscall.read(fd, p - header, maximum + header)
            } catch {
                batch.truncate(to: slot)
                throw error
            }
            switch result {
            case .processed(let n) where n > header:
                batch.setLength(n - header, of: slot)
                if header > 0 {
                    let offload = SegmentationOffload.taking(
                        VirtioNetHeader(loadingFrom: p - header), packet: batch.packet(slot))
                    batch.setOffload(offload, of: slot)
                    if offload.isSegmented { superPacketReads &+= 1 }
                }
                read += 1
            case .processed(let n) where n > 0:
                batch.truncate(to: slot)  // only part of a header: nothing to process
            case .processed, .wouldBlock:
                batch.truncate(to: slot)
                return read
            }
        }
        return read
    }

    /// Writes every packet of `batch` whose side is `side`, one `write(2)` per packet.
    ///
    /// With virtio headers, each packet gets its header in the 10 bytes in front of it
    /// (`VirtioNetHeader.preparingTransmit`): a TCP or UDP super-packet goes in whole. A
    /// super-packet the device cannot take whole (UDP without USO, or no virtio headers at all) is
    /// cut into its segments first (`Segmenter`) and each is written.
    ///
    /// Per-packet failures are counted, not thrown: `EAGAIN` (the device's queue is full: the
    /// kernel is not keeping up, waiting would only delay everything else), `ENOBUFS`,
    /// `EINVAL` (not an IP packet, or a virtio header the kernel refuses) and `EMSGSIZE` drop
    /// that packet.
    /// - Returns: packets written and packets dropped (a super-packet counts once).
    /// - Throws: `SystemCallError` for anything else (for example `EIO`, `EBADFD`).
    public func write(
        _ batch: borrowing PacketBatch, side: PacketSide = .tun
    ) throws(SystemCallError)
        -> (written: Int, dropped: Int)
    {
        precondition(fd >= 0, "write to a closed TUN device")
        var written = 0
        var dropped = 0
        for i in 0..<batch.count where batch.side(of: i) == side {
            let packet = batch.packet(i)
            guard let base = packet.baseAddress, !packet.isEmpty else {
                dropped += 1
                continue
            }
            let offload = batch.offload(of: i)
            let ok: Bool
            if offload.isSegmented && (!hasVirtioHeaders || (offload.kind == .udp && !acceptsUDPSegmentation)) {
                ok = try writeSegments(of: UnsafeRawBufferPointer(packet), offload: offload)
            } else if hasVirtioHeaders {
                let start: UnsafeMutableRawPointer
                if batch.headroom(of: i) >= VirtioNetHeader.byteCount {
                    start = base - VirtioNetHeader.byteCount
                } else {
                    // Safe: a packet is at most 65,535 bytes; the scratch buffer holds it and a header.
                    start = scratch
                    scratch.advanced(by: VirtioNetHeader.byteCount).copyMemory(from: base, byteCount: packet.count)
                }
                let body = UnsafeMutableRawBufferPointer(start: start + VirtioNetHeader.byteCount, count: packet.count)
                VirtioNetHeader.preparingTransmit(of: body, offload: offload).store(to: start)
                ok = try writeOne(start, packet.count + VirtioNetHeader.byteCount)
                if ok && offload.isSegmented { superPacketWrites &+= 1 }
            } else {
                ok = try writeOne(base, packet.count)
            }
            if ok { written += 1 } else { dropped += 1 }
        }
        return (written, dropped)
    }

    /// One write(2); false when that packet was refused or the queue was full.
    private func writeOne(_ start: UnsafeRawPointer, _ length: Int) throws(SystemCallError) -> Bool {
        do {
            switch try Syscall.write(fd, start, length) {
            case .processed: return true
            case .wouldBlock: return false
            }
        } catch {
            guard Self.isPerPacketWriteError(error.errno) else { throw error }
            return false
        }
    }

    /// Writes a super-packet as its segments (with an all-zero virtio header when the device has
    /// them); false when it is malformed or any segment was refused.
    private func writeSegments(
        of packet: UnsafeRawBufferPointer, offload: SegmentationOffload
    ) throws(SystemCallError) -> Bool {
        guard let layout = Segmenter.layout(of: packet, offload: offload) else { return false }
        let header = hasVirtioHeaders ? VirtioNetHeader.byteCount : 0
        if header > 0 { VirtioNetHeader().store(to: scratch) }
        var ok = true
        for k in 0..<layout.segmentCount {
            let n = Segmenter.writeSegment(k, of: packet, layout: layout, offload: offload, to: scratch + header)
            if !(try writeOne(scratch, n + header)) { ok = false }
        }
        segmentedWrites &+= 1
        return ok
    }

    /// Write errors that concern one packet, not the device.
    static func isPerPacketWriteError(_ code: Int32) -> Bool {
        code == ENOBUFS || code == EINVAL || code == EMSGSIZE || code == ENOMEM
    }

    /// Sets the MTU (`SIOCSIFMTU`) and brings the link up (`SIOCSIFFLAGS` with `IFF_UP`).
    /// A fallback for tests and tools: the daemon configures links through rtnetlink.
    /// - Throws: `SystemCallError` from the socket or the ioctls.
    public func setUp(mtu: Int? = nil) throws(SystemCallError) {
        if let mtu { try Self.setMTU(mtu, of: name) }
        try Self.withControlSocket { (socket) throws(SystemCallError) in
            var request = Self.request(for: name)
            try withUnsafeMutableBytes(of: &request) { (raw) throws(SystemCallError) in
                try Syscall.ioctl(socket, UInt(SIOCGIFFLAGS), raw.baseAddress!, call: "ioctl(SIOCGIFFLAGS)")
            }
            request.ifr_ifru.ifru_flags |= Int16(truncatingIfNeeded: IFF_UP)
            try withUnsafeMutableBytes(of: &request) { (raw) throws(SystemCallError) in
                try Syscall.ioctl(socket, UInt(SIOCSIFFLAGS), raw.baseAddress!, call: "ioctl(SIOCSIFFLAGS)")
            }
        }
    }

    private static func setMTU(_ mtu: Int, of name: String) throws(SystemCallError) {
        try withControlSocket { (socket) throws(SystemCallError) in
            var request = request(for: name)
            request.ifr_ifru.ifru_mtu = Int32(mtu)
            try withUnsafeMutableBytes(of: &request) { (raw) throws(SystemCallError) in
                try Syscall.ioctl(socket, UInt(SIOCSIFMTU), raw.baseAddress!, call: "ioctl(SIOCSIFMTU)")
            }
        }
    }

    private static func request(for name: String) -> ifreq {
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) {
            $0.copyBytes(from: name.utf8.prefix(Int(IFNAMSIZ) - 1))
        }
        return request
    }

    private static func withControlSocket(_ body: (Int32) throws(SystemCallError) -> Void) throws(SystemCallError) {
        let socket = try Syscall.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { Syscall.close(socket) }
        try body(socket)
    }
}

import CIPIPLinux
import Glibc
import IPIPCore

/// A layer-3 TUN device: the workloads' side of the dataplane.
///
/// Opened with `IFF_TUN | IFF_NO_PI`: every `read(2)` returns exactly one IP packet with no
/// prefix, every `write(2)` injects exactly one. The descriptor is non-blocking and
/// close-on-exec; the device is not persistent, so it disappears when the descriptor is closed.
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

    /// The kernel's own IP-in-IP device, which this dataplane must never take over.
    public static let reservedName = "tunl0"

    /// Creates a TUN device (or attaches to an existing persistent one of that name).
    /// - Parameters:
    ///   - name: the device name, at most 15 bytes; may contain one `%d` for the kernel to fill in.
    ///   - mtu: when given, the device's MTU is set (through `SIOCSIFMTU`).
    /// - Precondition: `name` is not `tunl0` (the kernel ipip module's device) and fits `IFNAMSIZ`.
    /// - Throws: `SystemCallError` from `open(/dev/net/tun)`, `ioctl(TUNSETIFF)`, `if_nametoindex`
    ///   or `ioctl(SIOCSIFMTU)`.
    public init(name: String, mtu: Int? = nil) throws(SystemCallError) {
        precondition(name != TUNDevice.reservedName, "tunl0 belongs to the kernel's ipip module")
        precondition(!name.isEmpty && name.utf8.count < Int(IFNAMSIZ), "interface names are 1…15 bytes")
        let fd = try Syscall.open("/dev/net/tun", flags: O_RDWR | O_CLOEXEC | O_NONBLOCK)
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: name.utf8) }
        request.ifr_ifru.ifru_flags = Int16(truncatingIfNeeded: IFF_TUN | IFF_NO_PI)
        do {
            try withUnsafeMutableBytes(of: &request) { (raw) throws(SystemCallError) in
                try Syscall.ioctl(fd, cipl_tunsetiff(), raw.baseAddress!, call: "ioctl(TUNSETIFF)")
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
        do {
            index = try Syscall.interfaceIndex(actual)
            if let mtu { try Self.setMTU(mtu, of: actual) }
        } catch {
            Syscall.close(fd)
            throw error
        }
    }

    deinit { if fd >= 0 { Syscall.close(fd) } }

    /// Closes the descriptor; the (non-persistent) device disappears. Idempotent.
    public func close() {
        guard fd >= 0 else { return }
        Syscall.close(fd)
        fd = -1
    }

    /// Reads packets until the device has none left, the batch is full or `limit` packets were read.
    ///
    /// Each packet lands at its slot's headroom (so the engine can prepend an outer header),
    /// with origin = its slot index and the given time.
    /// - Parameters:
    ///   - batch: the batch to append to (its existing packets are kept).
    ///   - time: the arrival time recorded on each packet.
    ///   - limit: the most packets to read in this call.
    /// - Returns: how many packets were appended (0 when the device would block).
    /// - Throws: `SystemCallError` from `read(2)` other than `EAGAIN` (for example `EBADFD`
    ///   when the device was removed).
    public func readBatch(into batch: inout PacketBatch, time: Timestamp, limit: Int = .max)
        throws(SystemCallError) -> Int
    {
        precondition(fd >= 0, "read from a closed TUN device")
        var read = 0
        while read < limit, !batch.isFull {
            let slot = batch.count
            let maximum = batch.maximumPacketByteCount
            guard let p = batch.appendSlot(length: maximum, origin: slot, time: time) else { break }
            let result: IOResult<Int>
            do {
                result = try Syscall.read(fd, p, maximum)
            } catch {
                batch.truncate(to: slot)
                throw error
            }
            switch result {
            case .processed(let n) where n > 0:
                batch.setLength(n, of: slot)
                read += 1
            case .processed, .wouldBlock:
                batch.truncate(to: slot)
                return read
            }
        }
        return read
    }

    /// Writes every packet of `batch` whose side is `side`, one `write(2)` per packet.
    ///
    /// Per-packet failures are counted, not thrown: `EAGAIN` (the device's queue is full: the
    /// kernel is not keeping up, waiting would only delay everything else), `ENOBUFS`,
    /// `EINVAL` (not an IP packet) and `EMSGSIZE` drop that packet.
    /// - Returns: packets written and packets dropped.
    /// - Throws: `SystemCallError` for anything else (for example `EIO`, `EBADFD`).
    public func write(_ batch: borrowing PacketBatch, side: PacketSide = .tun) throws(SystemCallError)
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
            do {
                switch try Syscall.write(fd, base, packet.count) {
                case .processed: written += 1
                case .wouldBlock: dropped += 1
                }
            } catch {
                guard Self.isPerPacketWriteError(error.errno) else { throw error }
                dropped += 1
            }
        }
        return (written, dropped)
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
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: name.utf8.prefix(Int(IFNAMSIZ) - 1)) }
        return request
    }

    private static func withControlSocket(_ body: (Int32) throws(SystemCallError) -> Void) throws(SystemCallError) {
        let socket = try Syscall.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { Syscall.close(socket) }
        try body(socket)
    }
}

import CIPIPLinux
import Glibc
import IPIPCore

/// What one `RawIPv4Socket.send` did with the packets it was given.
///
/// Every packet of the requested side is counted exactly once: `sent + dropped`.
public struct SendReport: Sendable, Equatable {
    /// Packets the kernel accepted.
    public var sent = 0
    /// `ENOBUFS`/`ENOMEM`: the qdisc or socket memory is exhausted.
    public var noBuffers = 0
    /// `EHOSTUNREACH`, `ENETUNREACH`, `ENETDOWN`, `EHOSTDOWN`: no route, or the link is down.
    public var unreachable = 0
    /// `EMSGSIZE`: bigger than the route's MTU (the engine sized it before; a PMTU change raced).
    public var tooBig = 0
    /// `EPERM`/`EACCES`: a firewall rule (nftables output drop) or a broadcast destination.
    public var denied = 0
    /// `EINVAL`, or shorter than an IPv4 header: the kernel would not send it.
    public var malformed = 0
    /// `EAGAIN` persisted past the bounded wait: the socket's send buffer stayed full.
    public var wouldBlock = 0

    /// Creates an empty report.
    public init() {}

    /// All packets not sent.
    public var dropped: Int { noBuffers + unreachable + tooBig + denied + malformed + wouldBlock }
}

/// A raw IPv4 socket (`IPPROTO_RAW`, so `IP_HDRINCL` is implied) for everything the dataplane
/// sends on the underlay: encapsulated packets, SNATed packets, ICMP errors.
///
/// The packets carry their complete IPv4 header. The kernel routes each by its destination
/// (taken from the header and passed as the message's address), fills in a zero source address
/// and ID, and always rewrites the total length and header checksum.
///
/// Batching: `send` hands the packets of one side to `sendmmsg(2)` in chunks of at most
/// `maximumBatchSize`, using message, iovec and address arrays allocated once in `init`;
/// nothing is allocated per call. After a partial send it continues from the first unsent
/// message. When a message fails (the kernel then reports that message's error), it is counted
/// in `SendReport` by errno and skipped; the rest of the chunk is sent.
///
/// Would-block policy: `EAGAIN` means the socket's send buffer is full. The socket then waits
/// for `POLLOUT` for at most `sendWaitMilliseconds` and retries, at most
/// `maximumWaitsPerSend` times per `send` call; after that the unsent rest of the batch is
/// dropped and counted as `wouldBlock`. A bounded wait keeps the worker's other direction
/// (the TUN, the capture) from starving behind a full queue, and a dropped packet is what a
/// congested router would do anyway.
///
/// Threading: not thread-safe (the preallocated arrays are reused); `Sendable` only so that it
/// can be handed to the worker thread that owns it.
public final class RawIPv4Socket: @unchecked Sendable {
    /// The socket; -1 after `close()`.
    public private(set) var fd: Int32
    /// The most messages handed to one `sendmmsg`.
    public let maximumBatchSize: Int
    /// How long one wait for the send buffer to drain may take.
    public var sendWaitMilliseconds: Int32 = 1
    /// How many such waits one `send` call may do before dropping the rest.
    public var maximumWaitsPerSend = 4

    private let messages: UnsafeMutablePointer<cipl_mmsghdr>
    private let vectors: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_in>

    /// Opens the socket.
    /// - Parameters:
    ///   - maximumBatchSize: the most messages per `sendmmsg` (the kernel caps one call at 1024).
    ///   - sendBufferByteCount: when given, `SO_SNDBUF` (the kernel doubles it and caps it at
    ///     `net.core.wmem_max`).
    /// - Throws: `SystemCallError` from `socket` (`EPERM` without `CAP_NET_RAW`) or `setsockopt`.
    public init(maximumBatchSize: Int = 64, sendBufferByteCount: Int? = nil) throws(SystemCallError) {
        precondition(maximumBatchSize > 0 && maximumBatchSize <= 1024, "1…1024 messages per sendmmsg")
        let type = Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        fd = try Syscall.socket(AF_INET, type, Int32(IPPROTO_RAW))
        if let sendBufferByteCount {
            do {
                try Syscall.setsockopt(
                    fd, SOL_SOCKET, SO_SNDBUF, Int32(sendBufferByteCount), call: "setsockopt(SO_SNDBUF)")
            } catch {
                Syscall.close(fd)
                throw error
            }
        }
        self.maximumBatchSize = maximumBatchSize
        messages = .allocate(capacity: maximumBatchSize)
        vectors = .allocate(capacity: maximumBatchSize)
        addresses = .allocate(capacity: maximumBatchSize)
        vectors.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: maximumBatchSize)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        addresses.initialize(repeating: address, count: maximumBatchSize)
        messages.initialize(repeating: cipl_mmsghdr(), count: maximumBatchSize)
        for i in 0..<maximumBatchSize {
            // The pointers into the arrays never change: set them once.
            messages[i].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
            messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            messages[i].msg_hdr.msg_iov = vectors + i
            messages[i].msg_hdr.msg_iovlen = 1
        }
    }

    deinit {
        if fd >= 0 { Syscall.close(fd) }
        messages.deallocate()
        vectors.deallocate()
        addresses.deallocate()
    }

    /// Closes the socket. Idempotent.
    public func close() {
        guard fd >= 0 else { return }
        Syscall.close(fd)
        fd = -1
    }

    /// Sends every packet of `batch` whose side is `side`, in order.
    /// - Parameters:
    ///   - batch: complete IPv4 packets (header included).
    ///   - side: which packets to send (default `.underlay`).
    /// - Returns: per-errno counts; `sent + dropped` is the number of packets of that side.
    /// - Throws: `SystemCallError` only for errors that are not about one packet (`EBADF`,
    ///   `ENOTSOCK`, `EFAULT`, …): the socket is unusable.
    public func send(
        _ batch: borrowing PacketBatch, side: PacketSide = .underlay
    ) throws(SystemCallError)
        -> SendReport
    {
        precondition(fd >= 0, "send on a closed raw socket")
        var report = SendReport()
        var waits = 0
        var next = 0
        while next < batch.count {
            // Fill one chunk.
            var count = 0
            while next < batch.count, count < maximumBatchSize {
                defer { next += 1 }
                guard batch.side(of: next) == side else { continue }
                let packet = batch.packet(next)
                guard packet.count >= 20, let base = packet.baseAddress else {
                    report.malformed += 1
                    continue
                }
                // The destination, in network order, exactly as the header stores it.
                addresses[count].sin_addr.s_addr = packet.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
                vectors[count].iov_base = base
                vectors[count].iov_len = packet.count
                count += 1
            }
            // Send it, resuming after partial sends and skipping failed messages.
            var start = 0
            while start < count {
                do {
                    switch try Syscall.sendmmsg(fd, messages + start, count - start) {
                    case .processed(let n):
                        report.sent += Int(n)
                        start += Int(n)
                    case .wouldBlock:
                        if waits < maximumWaitsPerSend, try waitUntilWritable() {
                            waits += 1
                        } else {
                            waits = maximumWaitsPerSend
                            report.wouldBlock += count - start
                            start = count
                        }
                    }
                } catch {
                    guard Self.count(error.errno, in: &report) else { throw error }
                    start += 1
                }
            }
        }
        return report
    }

    /// Counts a per-message error; false when the error is about the socket, not the message.
    static func count(_ code: Int32, in report: inout SendReport) -> Bool {
        switch code {
        case ENOBUFS, ENOMEM: report.noBuffers += 1
        case EHOSTUNREACH, ENETUNREACH, ENETDOWN, EHOSTDOWN: report.unreachable += 1
        case EMSGSIZE: report.tooBig += 1
        case EPERM, EACCES: report.denied += 1
        case EINVAL: report.malformed += 1
        default: return false
        }
        return true
    }

    private func waitUntilWritable() throws(SystemCallError) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = try withUnsafeMutablePointer(to: &entry) { (p) throws(SystemCallError) in
            try Syscall.poll(p, 1, sendWaitMilliseconds)
        }
        return ready > 0
    }
}

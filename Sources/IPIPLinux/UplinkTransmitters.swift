import CIPIPLinux
import Glibc
import IPIPCore

/// How the dataplane puts its encapsulated packets on the uplink (`ipipd run --uplink-io`).
///
/// Measured on this project's test machine (docs/decisions.md, "Uplink transmit"): per packet
/// into a veth, AF_XDP in copy mode costs ~1.1–1.2 µs, an AF_PACKET `sendmmsg` ~1.8–1.9 µs, a raw
/// IPv4 socket's `sendmmsg` ~2.6–2.7 µs. AF_XDP and AF_PACKET write link-layer frames themselves:
/// they need an Ethernet uplink and the next hop's MAC address (from the kernel's neighbour
/// table); whatever they cannot take (an unresolved next hop, native and translated packets that
/// need the kernel's routing) goes through the raw socket, which every method keeps.
public enum UplinkIOMethod: String, Sendable, CaseIterable, CustomStringConvertible {
    /// AF_XDP socket in copy mode bound to the uplink's queue 0, one `sendto` per batch.
    case xdp
    /// AF_PACKET `SOCK_RAW` socket with `PACKET_QDISC_BYPASS`, `sendmmsg` per batch.
    case packet
    /// The raw IPv4 socket (`IPPROTO_RAW`), `sendmmsg` per batch: the kernel routes and resolves.
    case raw

    public var description: String { rawValue }
}

/// An `AF_PACKET`/`SOCK_RAW` socket that sends complete link-layer frames on one interface.
///
/// `PACKET_QDISC_BYPASS` hands frames straight to the driver (`dev_direct_xmit`), as AF_XDP does:
/// the dataplane's own batching replaces the queueing discipline. Bound with protocol 0, so it
/// receives nothing. `send` passes the frames of a batch to `sendmmsg(2)` in chunks, with the same
/// partial-send and per-errno accounting as `RawIPv4Socket.send`.
///
/// Threading: not thread-safe (preallocated arrays); one per worker.
public final class PacketTransmitSocket: @unchecked Sendable {
    public private(set) var fd: Int32
    public let interfaceIndex: Int32
    public let maximumBatchSize: Int
    private let messages: UnsafeMutablePointer<cipl_mmsghdr>
    private let vectors: UnsafeMutablePointer<iovec>

    /// - Throws: `SystemCallError` from `socket` (`EPERM` without `CAP_NET_RAW`), `setsockopt` or `bind`.
    public init(interfaceIndex: Int32, maximumBatchSize: Int = 256) throws(SystemCallError) {
        precondition(maximumBatchSize > 0 && maximumBatchSize <= 1024)
        let type = Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = try Syscall.socket(AF_PACKET, type, 0)
        do {
            try Syscall.setsockopt(
                fd, SOL_PACKET, PACKET_QDISC_BYPASS, Int32(1), call: "setsockopt(PACKET_QDISC_BYPASS)")
            var address = sockaddr_ll()
            address.sll_family = UInt16(AF_PACKET)
            address.sll_protocol = 0
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
        self.maximumBatchSize = maximumBatchSize
        messages = .allocate(capacity: maximumBatchSize)
        messages.initialize(repeating: cipl_mmsghdr(), count: maximumBatchSize)
        vectors = .allocate(capacity: maximumBatchSize)
        vectors.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: maximumBatchSize)
        for i in 0..<maximumBatchSize {
            messages[i].msg_hdr.msg_iov = vectors + i
            messages[i].msg_hdr.msg_iovlen = 1
        }
    }

    deinit {
        if fd >= 0 { Syscall.close(fd) }
        messages.deallocate()
        vectors.deallocate()
    }

    public func close() {
        guard fd >= 0 else { return }
        Syscall.close(fd)
        fd = -1
    }

    /// Sends every packet of `batch` (each a complete frame, link-layer header first), in order.
    /// - Returns: per-errno counts; `sent + dropped == batch.count`.
    /// - Throws: `SystemCallError` only for errors that are about the socket, not a frame.
    public func send(_ batch: borrowing PacketBatch) throws(SystemCallError) -> SendReport {
        precondition(fd >= 0, "send on a closed packet socket")
        var report = SendReport()
        var next = 0
        while next < batch.count {
            let count = min(maximumBatchSize, batch.count - next)
            for k in 0..<count {
                let p = batch.packet(next + k)
                vectors[k].iov_base = p.baseAddress
                vectors[k].iov_len = p.count
            }
            var start = 0
            var stalls = 0
            while start < count {
                do {
                    switch try Syscall.sendmmsg(fd, messages + start, count - start) {
                    case .processed(let n):
                        report.sent += Int(n)
                        start += Int(n)
                    case .wouldBlock:
                        // The driver queue is full (with the qdisc bypassed nothing buffers):
                        // retry a few times, then drop the rest of the chunk.
                        stalls += 1
                        if stalls > 4 {
                            report.wouldBlock += count - start
                            start = count
                        }
                    }
                } catch {
                    guard RawIPv4Socket.count(error.errno, in: &report) else { throw error }
                    start += 1
                }
            }
            next += count
        }
        return report
    }
}

/// An AF_XDP socket used for transmission only, in copy mode (every driver, veth included;
/// zero-copy drivers would take the same rings).
///
/// Frames live in the UMEM (`frameCount` frames of `frameSize` bytes); the caller reserves a
/// frame, writes a complete link-layer frame into it and submits it; `flush` publishes the TX
/// ring and kicks the kernel (`sendto`), which builds one skb per descriptor and hands it to the
/// driver without a qdisc (`__xsk_generic_xmit` → `__dev_direct_xmit`). Frames come back through
/// the completion ring once the kernel is done with them; `reserve` reaps it when it runs out.
/// Linux 6.17+ accepts a per-`sendto` budget above 32 descriptors (`XDP_MAX_TX_SKB_BUDGET`), so
/// one call sends a whole batch; older kernels need one call per 32 (`flush` loops).
///
/// Only transmit rings are set up (the fill ring exists because `bind` insists on one, and stays
/// empty): no XDP program is attached, so nothing else on the interface is affected.
///
/// Threading: not thread-safe; one per worker (one per queue).
public final class XDPTransmitSocket: @unchecked Sendable {
    private var x = cipl_xsk()
    public let frameSize: Int
    public let frameCount: Int
    public let ringSize: Int
    /// Whether one `sendto` may transmit a whole ring (`XDP_MAX_TX_SKB_BUDGET` accepted).
    public let largeBudget: Bool
    /// Free frame indices (a stack).
    private let free: UnsafeMutablePointer<UInt32>
    private var freeCount: Int
    /// Our copy of the TX producer index, published by `flush`.
    private var producer: UInt32
    private var completionConsumer: UInt32
    /// The frame reserved last (reserve → submit).
    private var reserved: UInt32 = UInt32.max

    /// `sendto` calls made to transmit.
    public private(set) var kicks: UInt64 = 0
    /// Frames `reserve` could not provide (all in flight): the caller dropped the packet.
    public private(set) var exhausted: UInt64 = 0

    public var fd: Int32 { x.fd }

    /// Opens the socket on `interfaceIndex`, TX queue `queue`.
    /// - Parameters:
    ///   - frameSize: bytes per frame, 2048 or 4096 (a frame holds one link-layer frame).
    ///   - frameCount: frames in the UMEM; `ringSize` (a power of two) entries per ring.
    /// - Throws: `SystemCallError` naming the step that failed (`socket(AF_XDP)` is `EAFNOSUPPORT`
    ///   without AF_XDP, `bind(AF_XDP)` `EBUSY` when another socket holds the queue).
    public init(
        interfaceIndex: Int32, queue: UInt32 = 0, frameSize: Int = 2048, frameCount: Int = 4096,
        ringSize: Int = 2048
    ) throws(SystemCallError) {
        precondition(frameSize == 2048 || frameSize == 4096, "AF_XDP frames of 2048 or 4096 bytes")
        precondition(ringSize > 0 && ringSize & (ringSize - 1) == 0 && frameCount >= ringSize)
        var failed: UnsafePointer<CChar>?
        let r = cipl_xsk_open(
            &x, interfaceIndex, queue, UInt32(frameCount), UInt32(frameSize), UInt32(ringSize), UInt32(ringSize),
            UInt16(CIPL_XDP_COPY), &failed)
        if r != 0 {
            let code = errno
            let call = failed.map { String(cString: $0) } ?? "AF_XDP"
            throw SystemCallError(errno: code, call: "AF_XDP setup", detail: call)
        }
        self.frameSize = frameSize
        self.frameCount = frameCount
        self.ringSize = ringSize
        largeBudget = x.tx_budget_accepted != 0
        free = .allocate(capacity: frameCount)
        for i in 0..<frameCount { free[i] = UInt32(frameCount - 1 - i) }
        freeCount = frameCount
        producer = cipl_load_acquire_u32(x.tx_producer)
        completionConsumer = cipl_load_acquire_u32(x.cq_consumer)
    }

    deinit {
        cipl_xsk_close(&x)
        free.deallocate()
    }

    /// The largest frame (link-layer header included) a frame holds.
    public var maximumFrameByteCount: Int { frameSize }

    /// A frame to write the next packet into; nil when every frame is in flight even after
    /// kicking the kernel and reaping completions (the caller drops the packet and counts it).
    @inline(__always)
    public func reserve() -> UnsafeMutableRawPointer? {
        if freeCount == 0 || ringIsFull {
            reapCompletions()
            if freeCount == 0 || ringIsFull {
                flush()
                reapCompletions()
                if freeCount == 0 || ringIsFull {
                    exhausted &+= 1
                    return nil
                }
            }
        }
        freeCount &-= 1
        reserved = free[freeCount]
        return UnsafeMutableRawPointer(x.umem) + Int(reserved) &* frameSize
    }

    /// Queues the frame `reserve` returned, `length` bytes long.
    @inline(__always)
    public func submit(length: Int) {
        precondition(reserved != UInt32.max && length > 0 && length <= frameSize, "submit without a reserved frame")
        let slot = Int(producer & UInt32(ringSize - 1))
        let d = x.tx_descriptors! + slot &* 16
        d.storeBytes(of: UInt64(reserved) &* UInt64(frameSize), as: UInt64.self)
        d.storeBytes(of: UInt32(length), toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        producer &+= 1
        reserved = UInt32.max
    }

    /// Publishes the queued descriptors and makes the kernel transmit them; returns frames to the
    /// free list as the kernel completes them.
    public func flush() {
        cipl_store_release_u32(x.tx_producer, producer)
        // Copy mode transmits inside sendto; each call handles up to the budget (32 before Linux
        // 6.17). Bounded: a stuck driver costs a few calls, not a spin.
        var attempts = 0
        while cipl_load_acquire_u32(x.tx_consumer) != producer && attempts < 64 {
            attempts &+= 1
            kicks &+= 1
            // EAGAIN: the budget ran out with descriptors left, call again. Anything else (ENOBUFS:
            // no skb; EBUSY; ENETDOWN) is left for the next flush; the ring keeps the frames.
            if cipl_xsk_kick(x.fd) < 0 && errno != EAGAIN { break }
        }
        reapCompletions()
    }

    @inline(__always)
    private var ringIsFull: Bool {
        producer &- cipl_load_acquire_u32(x.tx_consumer) >= UInt32(ringSize)
    }

    @inline(__always)
    private func reapCompletions() {
        let end = cipl_load_acquire_u32(x.cq_producer)
        var c = completionConsumer
        while c != end {
            let address = x.cq_addresses[Int(c & UInt32(ringSize - 1))]
            free[freeCount] = UInt32(truncatingIfNeeded: address / UInt64(frameSize))
            freeCount &+= 1
            c &+= 1
        }
        if c != completionConsumer {
            completionConsumer = c
            cipl_store_release_u32(x.cq_consumer, c)
        }
    }
}

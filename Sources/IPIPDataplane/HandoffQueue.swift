import IPIPCore
import Synchronization

/// A bounded single-producer, single-consumer queue of packets from one worker to another
/// (docs/decisions.md, "Workers"): how a packet that landed on the wrong worker reaches the
/// worker that owns its SNAT session.
///
/// Layout: one ring of `byteCount` bytes (a power of two) allocated in `init`. An entry is a
/// 24-byte header (length, segmentation offload, arrival time) and the packet's bytes, padded to
/// 8 bytes; an entry never wraps: when it does not fit before the end of the ring, a wrap marker
/// sends the consumer back to the start. Entries of any size up to a 64 KiB super-packet fit, so
/// a GRO'd download is handed over whole.
///
/// Positions only grow (`head`, `tail`: bytes ever consumed and produced; the offset into the
/// ring is the position modulo its size). The producer writes an entry, then publishes the new
/// tail with release ordering; the consumer reads the tail with acquire ordering, copies entries
/// out, then publishes the new head with release ordering, which is when the producer may reuse
/// the space. No locks, no allocation per packet.
///
/// Bounded: `enqueue` on a full ring returns false and the producer counts the packet as lost
/// (`handoff_full`); nothing waits and nothing grows. Order is kept: entries leave in the order
/// they entered, so packets of one flow, which always come from the same producer, stay in order.
///
/// Threading: exactly one producer thread and one consumer thread.
public final class HandoffQueue: @unchecked Sendable {
    /// Ring size in bytes.
    public let byteCount: Int
    let mask: Int
    let ring: UnsafeMutableRawPointer
    /// Bytes consumed (written by the consumer).
    let head = Atomic<Int>(0)
    /// Bytes produced (written by the producer).
    let tail = Atomic<Int>(0)
    // Each side's private view (no sharing, no atomics): its own position and the last value it
    // read of the other side's, so most calls touch the shared positions once.
    var producerTail = 0
    var producerSeenHead = 0
    var consumerHead = 0
    var consumerSeenTail = 0

    static let headerByteCount = 24
    static let wrapMarker = UInt32.max

    /// - Parameter byteCount: ring size, rounded up to a power of two, at least 256 KiB (four
    ///   64 KiB super-packets).
    public init(byteCount: Int = 4 << 20) {
        var n = 256 << 10
        while n < byteCount { n <<= 1 }
        self.byteCount = n
        mask = n - 1
        ring = .allocate(byteCount: n, alignment: 64)
    }

    deinit { ring.deallocate() }

    @inline(__always)
    static func entryByteCount(_ length: Int) -> Int { (headerByteCount &+ length &+ 7) & ~7 }

    /// Producer: appends one packet. Returns false, and changes nothing, when the ring has no room.
    @discardableResult
    public func enqueue(_ packet: UnsafeRawBufferPointer, offload: SegmentationOffload, time: Timestamp) -> Bool {
        let size = Self.entryByteCount(packet.count)
        let offset = producerTail & mask
        let toEnd = byteCount &- offset
        // A wrap marker first when the entry does not fit before the end (it costs the rest).
        let needed = size <= toEnd ? size : toEnd &+ size
        if needed > byteCount &- (producerTail &- producerSeenHead) {
            producerSeenHead = head.load(ordering: .acquiring)
            if needed > byteCount &- (producerTail &- producerSeenHead) { return false }
        }
        var at = offset
        if size > toEnd {
            ring.storeBytes(of: Self.wrapMarker, toByteOffset: at, as: UInt32.self)
            producerTail &+= toEnd
            at = 0
        }
        let e = ring + at
        e.storeBytes(of: UInt32(truncatingIfNeeded: packet.count), as: UInt32.self)
        e.storeBytes(of: offload.kind.rawValue, toByteOffset: 4, as: UInt8.self)
        e.storeBytes(of: offload.congestionWindowReduced ? 1 : 0, toByteOffset: 5, as: UInt8.self)
        e.storeBytes(of: offload.segmentSize, toByteOffset: 6, as: UInt16.self)
        e.storeBytes(of: time.seconds, toByteOffset: 8, as: Int64.self)
        e.storeBytes(of: time.nanoseconds, toByteOffset: 16, as: UInt32.self)
        if packet.count > 0 {
            (e + Self.headerByteCount).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
        }
        producerTail &+= size
        tail.store(producerTail, ordering: .releasing)
        return true
    }

    /// Consumer: whether an entry may be waiting (a cheap check; `dequeue` is the real one).
    @inline(__always)
    public var mayHaveEntries: Bool {
        consumerHead != consumerSeenTail || tail.load(ordering: .acquiring) != consumerHead
    }

    /// Consumer: moves entries into `batch` (at its headroom, side `.none`) until the ring is
    /// empty or the batch is full; returns how many. An entry that does not fit the batch's slots
    /// (a batch too small for it) is consumed and counted in `oversized`.
    public func dequeue(into batch: inout PacketBatch) -> Int {
        var moved = 0
        if consumerHead == consumerSeenTail { consumerSeenTail = tail.load(ordering: .acquiring) }
        while consumerHead != consumerSeenTail && !batch.isFull {
            let e = ring + (consumerHead & mask)
            let length = e.load(as: UInt32.self)
            if length == Self.wrapMarker {
                consumerHead &+= byteCount &- (consumerHead & mask)
                continue
            }
            let n = Int(length)
            let time = Timestamp(
                seconds: e.load(fromByteOffset: 8, as: Int64.self),
                nanoseconds: e.load(fromByteOffset: 16, as: UInt32.self))
            if let dst = batch.appendSlot(length: n, origin: batch.count, time: time) {
                if n > 0 { dst.copyMemory(from: e + Self.headerByteCount, byteCount: n) }
                let kind = SegmentationOffload.Kind(rawValue: e.load(fromByteOffset: 4, as: UInt8.self)) ?? .invalid
                if kind != .none {
                    batch.setOffload(
                        SegmentationOffload(
                            kind: kind, segmentSize: e.load(fromByteOffset: 6, as: UInt16.self),
                            congestionWindowReduced: e.load(fromByteOffset: 5, as: UInt8.self) != 0),
                        of: batch.count - 1)
                }
                moved &+= 1
            } else {
                oversized &+= 1
            }
            consumerHead &+= Self.entryByteCount(n)
            if consumerHead == consumerSeenTail { consumerSeenTail = tail.load(ordering: .acquiring) }
        }
        head.store(consumerHead, ordering: .releasing)
        return moved
    }

    /// Consumer: entries dropped because they did not fit the consumer's batch slots.
    public private(set) var oversized: UInt64 = 0
}

/// Where a packet goes after the engine has looked at it.
public enum PacketSide: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Nowhere: dropped, or consumed (its content was emitted as other packets).
    case none = 0
    /// To the underlay: the raw socket in live mode.
    case underlay = 1
    /// Back into the TUN, toward local workloads (ICMP errors, decapsulated packets).
    case tun = 2

    public var description: String {
        switch self {
        case .none: "none"
        case .underlay: "underlay"
        case .tun: "tun"
        }
    }
}

/// A batch of packets in one preallocated slab: the unit of work of every stage.
///
/// Layout: `capacity` slots of `slotByteCount` bytes each. A packet in slot `i` starts at
/// `offset(i)` bytes into its slot and is `length(i)` bytes long. Packets are received at
/// `headroom`, which leaves room to write an outer header in front of a packet without moving it
/// (the encapsulation path moves the start back by 20 bytes).
///
/// Per slot the batch also records the side the packet leaves on (`PacketSide`), its arrival
/// time (the engine's clock: capture time in replay), the index of the input packet it came
/// from (`origin`), so a batch of packets the engine generated
/// (fragments, ICMP errors) can be merged back in input order, and its segmentation offload
/// (`SegmentationOffload`: whether it is a TCP/UDP super-packet and its segment size).
///
/// Memory is allocated once in `init` and freed in `deinit`; nothing here allocates afterwards.
/// Contract: one owner at a time (the type is `~Copyable`), and pointers lent out by the
/// accessors stay valid until the slot is rewritten or the batch is reset.
public struct PacketBatch: ~Copyable {
    /// Number of slots.
    public let capacity: Int
    /// Bytes per slot, headroom included.
    public let slotByteCount: Int
    /// Bytes kept free in front of a newly appended packet.
    public let headroom: Int
    /// Number of packets in the batch (slots `0..<count` are in use).
    @inlinable public var count: Int { _count }
    @usableFromInline var _count: Int = 0

    @usableFromInline let memory: UnsafeMutableRawPointer
    @usableFromInline let offsets: UnsafeMutablePointer<Int32>
    @usableFromInline let lengths: UnsafeMutablePointer<Int32>
    @usableFromInline let sides: UnsafeMutablePointer<PacketSide>
    @usableFromInline let origins: UnsafeMutablePointer<Int32>
    @usableFromInline let times: UnsafeMutablePointer<Timestamp>
    @usableFromInline let offloads: UnsafeMutablePointer<SegmentationOffload>

    /// Default space in front of each packet: enough for an outer IPv4 header with options.
    public static let defaultHeadroom = 64
    /// The largest IPv4 datagram.
    public static let maximumPacketByteCount = 65535

    /// Allocates a batch.
    /// - Parameters:
    ///   - capacity: number of slots (the batch size).
    ///   - maximumPacketByteCount: the largest packet a slot must hold (after headroom).
    ///   - headroom: bytes in front of each received packet.
    public init(
        capacity: Int, maximumPacketByteCount: Int = PacketBatch.maximumPacketByteCount,
        headroom: Int = PacketBatch.defaultHeadroom
    ) {
        precondition(capacity > 0 && maximumPacketByteCount > 0 && headroom >= 20)
        self.capacity = capacity
        self.headroom = headroom
        // Round slots to 64 bytes so each packet starts on its own cache line.
        self.slotByteCount = (headroom + maximumPacketByteCount + 63) & ~63
        memory = UnsafeMutableRawPointer.allocate(byteCount: capacity * slotByteCount, alignment: 64)
        offsets = .allocate(capacity: capacity)
        offsets.initialize(repeating: Int32(headroom), count: capacity)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
        sides = .allocate(capacity: capacity)
        sides.initialize(repeating: .none, count: capacity)
        origins = .allocate(capacity: capacity)
        origins.initialize(repeating: 0, count: capacity)
        times = .allocate(capacity: capacity)
        times.initialize(repeating: .zero, count: capacity)
        offloads = .allocate(capacity: capacity)
        offloads.initialize(repeating: .none, count: capacity)
    }

    deinit {
        memory.deallocate()
        offsets.deallocate()
        lengths.deallocate()
        sides.deallocate()
        origins.deallocate()
        times.deallocate()
        offloads.deallocate()
    }

    /// The largest packet a slot holds when it starts at the headroom.
    @inlinable public var maximumPacketByteCount: Int { slotByteCount - headroom }

    /// Whether every slot is in use.
    @inlinable public var isFull: Bool { count == capacity }

    /// Empties the batch (the memory is kept).
    @inlinable public mutating func removeAll() { _count = 0 }

    /// Drops the packets in slots `count..<self.count` (undoes appends). - Precondition: `count <= self.count`.
    @inlinable public mutating func truncate(to count: Int) {
        precondition(count >= 0 && count <= _count)
        _count = count
    }

    /// Claims the next slot for a packet of `length` bytes written at the headroom, and returns
    /// where to write it; nil when the batch is full or the packet does not fit a slot.
    /// The slot's side is reset to `.none`, its offload to `.none` and its origin set to `origin`.
    @inlinable
    public mutating func appendSlot(length: Int, origin: Int = 0, time: Timestamp = .zero) -> UnsafeMutableRawPointer? {
        guard _count < capacity, length >= 0, length <= slotByteCount - headroom else { return nil }
        let i = _count
        _count &+= 1
        offsets[i] = Int32(truncatingIfNeeded: headroom)
        lengths[i] = Int32(truncatingIfNeeded: length)
        sides[i] = .none
        origins[i] = Int32(truncatingIfNeeded: origin)
        times[i] = time
        offloads[i] = SegmentationOffload(kind: .none, segmentSize: 0)
        return memory + (i &* slotByteCount &+ headroom)
    }

    /// Copies `bytes` into the next slot; false when full or too big.
    @inlinable @discardableResult
    public mutating func append(copying bytes: UnsafeRawBufferPointer, origin: Int = 0, time: Timestamp = .zero) -> Bool
    {
        guard let p = appendSlot(length: bytes.count, origin: origin, time: time) else { return false }
        if let b = bytes.baseAddress, !bytes.isEmpty { p.copyMemory(from: b, byteCount: bytes.count) }
        return true
    }

    /// The packet in slot `i`. - Precondition: `i < count`.
    @inlinable
    public func packet(_ i: Int) -> UnsafeMutableRawBufferPointer {
        precondition(i >= 0 && i < count, "packet index out of range")
        return UnsafeMutableRawBufferPointer(
            start: memory + (i &* slotByteCount &+ Int(offsets[i])), count: Int(lengths[i]))
    }

    /// Bytes free in front of packet `i`.
    @inlinable public func headroom(of i: Int) -> Int { Int(offsets[i]) }

    /// Moves the start of packet `i` back by `byteCount` bytes (to write a header in front) and
    /// returns the new start. - Precondition: enough headroom.
    @inlinable
    public func prepend(_ byteCount: Int, to i: Int) -> UnsafeMutableRawPointer {
        precondition(Int(offsets[i]) >= byteCount, "not enough headroom")
        offsets[i] &-= Int32(truncatingIfNeeded: byteCount)
        lengths[i] &+= Int32(truncatingIfNeeded: byteCount)
        return memory + (i &* slotByteCount &+ Int(offsets[i]))
    }

    /// Drops the first `byteCount` bytes of packet `i` (to strip an outer header); they become
    /// headroom. - Precondition: the packet is at least that long.
    @inlinable
    public func removeFront(_ byteCount: Int, of i: Int) {
        precondition(byteCount >= 0 && Int(lengths[i]) >= byteCount, "cannot strip more than the packet")
        offsets[i] &+= Int32(truncatingIfNeeded: byteCount)
        lengths[i] &-= Int32(truncatingIfNeeded: byteCount)
    }

    /// Shortens packet `i` to `length` bytes (e.g. trailing link-layer padding).
    @inlinable
    public func setLength(_ length: Int, of i: Int) {
        precondition(length >= 0 && length <= Int(lengths[i]))
        lengths[i] = Int32(truncatingIfNeeded: length)
    }

    /// The side packet `i` leaves on.
    @inlinable public func side(of i: Int) -> PacketSide { sides[i] }
    /// Sets the side packet `i` leaves on.
    @inlinable public func setSide(_ side: PacketSide, of i: Int) { sides[i] = side }
    /// The input index packet `i` came from.
    @inlinable public func origin(of i: Int) -> Int { Int(origins[i]) }
    /// When packet `i` arrived (the engine's clock for it).
    @inlinable public func time(of i: Int) -> Timestamp { times[i] }
    /// Sets the arrival time of packet `i`.
    @inlinable public func setTime(_ time: Timestamp, of i: Int) { times[i] = time }
    /// The segmentation offload of packet `i` (`.none` for an ordinary packet).
    @inlinable public func offload(of i: Int) -> SegmentationOffload { offloads[i] }
    /// Sets the segmentation offload of packet `i`.
    @inlinable public func setOffload(_ offload: SegmentationOffload, of i: Int) { offloads[i] = offload }

    /// Copies slot `from` (headroom, packet and everything recorded about it) over slot `to`,
    /// for compacting a batch after a read dropped some slots. - Precondition: both `< count`.
    @inlinable
    public func copySlot(_ from: Int, to: Int) {
        precondition(from >= 0 && from < count && to >= 0 && to < count, "slot index out of range")
        guard from != to else { return }
        (memory + to &* slotByteCount).copyMemory(from: memory + from &* slotByteCount, byteCount: slotByteCount)
        offsets[to] = offsets[from]
        lengths[to] = lengths[from]
        sides[to] = sides[from]
        origins[to] = origins[from]
        times[to] = times[from]
        offloads[to] = offloads[from]
    }

    /// Moves the packet of slot `from` and everything recorded about it into slot `to`, at the
    /// same offset, copying only the packet's bytes (not the whole slot as `copySlot` does): for
    /// compacting a batch after some packets left it. - Precondition: both `< count`.
    @inlinable
    public func moveSlot(_ from: Int, to: Int) {
        precondition(from >= 0 && from < count && to >= 0 && to < count, "slot index out of range")
        guard from != to else { return }
        let offset = Int(offsets[from])
        (memory + (to &* slotByteCount &+ offset)).copyMemory(
            from: memory + (from &* slotByteCount &+ offset),
            byteCount: Int(lengths[from]))
        offsets[to] = offsets[from]
        lengths[to] = lengths[from]
        sides[to] = sides[from]
        origins[to] = origins[from]
        times[to] = times[from]
        offloads[to] = offloads[from]
    }

    /// Bytes free in slot `i` after the end of its packet.
    @inlinable public func tailroom(of i: Int) -> Int { slotByteCount &- Int(offsets[i]) &- Int(lengths[i]) }

    /// Lengthens packet `i` by `byteCount` bytes and returns where they start (the old end), for
    /// appending data in place (the coalescer). - Precondition: `byteCount <= tailroom(of: i)`.
    @inlinable
    public func extend(_ i: Int, by byteCount: Int) -> UnsafeMutableRawPointer {
        precondition(byteCount >= 0 && byteCount <= tailroom(of: i), "not enough room after the packet")
        let end = memory + (i &* slotByteCount &+ Int(offsets[i]) &+ Int(lengths[i]))
        lengths[i] &+= Int32(truncatingIfNeeded: byteCount)
        return end
    }
}

/// A bounded byte ring of variable-size records, the flight recorder's store for one side of one
/// packet loop (docs/flight-recorder.md). Records are contiguous (one never wraps around the end:
/// a record that does not fit before the end starts again at 0) and the oldest whole records are
/// dropped to make room for a new one, so the ring always holds the newest records that fit.
///
/// Record layout (host byte order, 8-byte aligned), `headerByteCount` bytes then the packet:
/// ```
///  0 u32 record bytes (header + packet, padded to 8)   4 u32 packet length
///  8 u64 sequence number                              16 i64 time (ns, the loop's clock)
/// 24 i64 ICMP tokens before the batch                 32 i64 ICMP last refill before the batch
/// 40 u16 next IP identification before the batch      42 u8 offload kind  43 u8 flags
/// 44 u16 segment size                                 46 u8 verdict action  47 u8 drop reason
/// 48 u32 peer (verdict)                               52 u8 ICMP type  53 u8 ICMP code  54 u8 has ICMP
/// ```
/// flags: bit 0 the offload's CWR, bit 1 the verdict was patched in.
///
/// Memory: `capacity` bytes, plus a size index of 4 bytes per 56 (rounded up to a power of two:
/// at most 1/7 more), allocated in
/// `init` and freed in `deinit`;
/// `reserve` and `commit` allocate nothing. Not thread-safe: one owner (the loop thread), and a
/// dump copies it on that same thread (`LoopRecorder.serviceDump` in IPIPDataplane).
///
/// Hazards: an offset handed out by `reserve` stays the record's only until later reservations
/// drop it; `isLive(offset:sequence:)` says whether it still is (the verdict patch checks it,
/// so a batch larger than the ring never writes into another record).
public final class RecordRing {
    public let capacity: Int
    @usableFromInline let memory: UnsafeMutableRawPointer
    @usableFromInline let cursor: UnsafeMutablePointer<Cursor>
    /// The size of every live record, by sequence number modulo `sizeSlots`: dropping the
    /// oldest record reads its size here (one cache line per 16 records, in order) instead of
    /// from its header far behind in the ring, which cost a cache miss per packet (measured).
    let sizes: UnsafeMutablePointer<UInt32>
    /// A power of two minus one (a mask, not a division, per packet).
    let sizeMask: UInt64

    public static let headerByteCount = 56

    public struct Cursor {
        /// Offset of the oldest record; of the next write.
        @usableFromInline var head = 0
        @usableFromInline var tail = 0
        /// Where the data before a wrap ends (valid while `wrapped`).
        @usableFromInline var wrapEnd = 0
        /// True when the live records are [head, wrapEnd) then [0, tail).
        @usableFromInline var wrapped = false
        @usableFromInline var count = 0
        @usableFromInline var nextSequence: UInt64 = 1
        /// Records written, dropped to make room, and refused as larger than the ring.
        public internal(set) var written: UInt64 = 0
        public internal(set) var overwritten: UInt64 = 0
        public internal(set) var oversized: UInt64 = 0
        @usableFromInline init() {}
    }

    /// - Parameter capacity: bytes, rounded down to a multiple of 8; at least one header.
    public init(capacity: Int) {
        let c = max(Self.headerByteCount + 8, capacity & ~7)
        self.capacity = c
        memory = .allocate(byteCount: c, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: c)
        // A record takes at least a header, so at most c / header records are live at once.
        var slots = 1
        while slots < c / Self.headerByteCount + 1 { slots <<= 1 }
        sizeMask = UInt64(slots - 1)
        sizes = .allocate(capacity: slots)
        sizes.initialize(repeating: 0, count: slots)
        cursor = .allocate(capacity: 1)
        cursor.initialize(to: Cursor())
    }

    deinit {
        memory.deallocate()
        sizes.deallocate()
        cursor.deallocate()
    }

    /// Bytes a record of a packet of `length` bytes takes.
    @inline(__always)
    public static func recordByteCount(packetLength: Int) -> Int { (headerByteCount &+ packetLength &+ 7) & ~7 }

    /// Makes room for a record of `byteCount` bytes (a multiple of 8), dropping the oldest
    /// records as needed, and returns its offset; nil (counted) when it is larger than the ring.
    /// The caller writes the record and calls `commit`.
    @inline(__always)
    public func reserve(_ byteCount: Int) -> Int? {
        guard byteCount <= capacity else {
            cursor.pointee.oversized &+= 1
            return nil
        }
        while true {
            if cursor.pointee.count == 0 {
                cursor.pointee.head = 0
                cursor.pointee.tail = 0
                cursor.pointee.wrapped = false
            }
            let tail = cursor.pointee.tail
            if !cursor.pointee.wrapped {
                if tail &+ byteCount <= capacity { return tail }
                cursor.pointee.wrapEnd = tail
                cursor.pointee.tail = 0
                cursor.pointee.wrapped = true
            } else {
                if tail &+ byteCount <= cursor.pointee.head { return tail }
                dropOldest()
            }
        }
    }

    func dropOldest() {
        let head = cursor.pointee.head
        let size = Int(sizes[Int(truncatingIfNeeded: oldestSequence & sizeMask)])
        var next = head &+ size
        if cursor.pointee.wrapped && next >= cursor.pointee.wrapEnd {
            next = 0
            cursor.pointee.wrapped = false
        }
        cursor.pointee.head = next
        cursor.pointee.count &-= 1
        cursor.pointee.overwritten &+= 1
    }

    /// Stamps the record at `offset` (its size and a fresh sequence number) and makes it live;
    /// returns the sequence number.
    @inline(__always)
    public func commit(at offset: Int, byteCount: Int) -> UInt64 {
        let sequence = cursor.pointee.nextSequence
        cursor.pointee.nextSequence = sequence &+ 1
        memory.storeBytes(of: UInt32(truncatingIfNeeded: byteCount), toByteOffset: offset, as: UInt32.self)
        memory.storeBytes(of: sequence, toByteOffset: offset &+ 8, as: UInt64.self)
        sizes[Int(truncatingIfNeeded: sequence & sizeMask)] = UInt32(truncatingIfNeeded: byteCount)
        cursor.pointee.tail = offset &+ byteCount
        cursor.pointee.count &+= 1
        cursor.pointee.written &+= 1
        return sequence
    }

    /// Whether the record written at `offset` with `sequence` is still in the ring.
    @inline(__always)
    public func isLive(offset: Int, sequence: UInt64) -> Bool {
        // Sequence numbers are handed out in order and records leave in order, so the live ones
        // are exactly oldest..<next (no need to read the record: its bytes may be reused).
        sequence >= oldestSequence && sequence < cursor.pointee.nextSequence
    }

    /// The sequence number of the oldest record (the next one when empty).
    public var oldestSequence: UInt64 { cursor.pointee.nextSequence &- UInt64(cursor.pointee.count) }

    /// Number of records held.
    public var count: Int { cursor.pointee.count }
    /// The counters and positions.
    public var state: Cursor { cursor.pointee }

    /// The records, oldest first, copied into one array (allocates: a dump, never per packet).
    public func linearized() -> [UInt8] {
        let c = cursor.pointee
        guard c.count > 0 else { return [] }
        var out: [UInt8] = []
        if c.wrapped {
            out.reserveCapacity(c.wrapEnd - c.head + c.tail)
            out.append(contentsOf: UnsafeRawBufferPointer(start: memory + c.head, count: c.wrapEnd - c.head))
            out.append(contentsOf: UnsafeRawBufferPointer(start: memory, count: c.tail))
        } else {
            out.append(contentsOf: UnsafeRawBufferPointer(start: memory + c.head, count: c.tail - c.head))
        }
        return out
    }
}

/// One record as a dump reads it back out of `RecordRing.linearized()`.
public struct RecordedPacket: Sendable {
    public var sequence: UInt64
    /// Nanoseconds on the recording loop's clock.
    public var time: Int64
    public var scalars: EngineScalarState
    public var offload: SegmentationOffload
    /// Nil when the verdict was never patched in (cannot happen between batches; kept honest).
    public var verdict: PacketVerdict?
    /// Where the packet's bytes are in the linearized buffer.
    public var bytes: Range<Int>

    /// Every record of a linearized ring, in order.
    public static func parse(_ buffer: [UInt8]) -> [RecordedPacket] {
        var out: [RecordedPacket] = []
        buffer.withUnsafeBytes { b in
            var o = 0
            while o + RecordRing.headerByteCount <= b.count {
                let size = Int(b.loadUnaligned(fromByteOffset: o, as: UInt32.self))
                let length = Int(b.loadUnaligned(fromByteOffset: o + 4, as: UInt32.self))
                guard size >= RecordRing.headerByteCount + length, o + size <= b.count else { break }
                let flags = b[o + 43]
                let kind = SegmentationOffload.Kind(rawValue: b[o + 42]) ?? .invalid
                let offload = SegmentationOffload(
                    kind: kind, segmentSize: b.loadUnaligned(fromByteOffset: o + 44, as: UInt16.self),
                    congestionWindowReduced: flags & 1 != 0)
                var verdict: PacketVerdict?
                if flags & 2 != 0, let action = VerdictAction(rawValue: b[o + 46]) {
                    let reason = b[o + 47] == 0xFF ? nil : DropReason(rawValue: b[o + 47])
                    verdict = PacketVerdict(
                        action: action, dropReason: reason,
                        peer: IPv4Address(rawValue: b.loadUnaligned(fromByteOffset: o + 48, as: UInt32.self)),
                        icmpType: b[o + 54] != 0 ? b[o + 52] : nil, icmpCode: b[o + 53])
                }
                out.append(
                    RecordedPacket(
                        sequence: b.loadUnaligned(fromByteOffset: o + 8, as: UInt64.self),
                        time: b.loadUnaligned(fromByteOffset: o + 16, as: Int64.self),
                        scalars: EngineScalarState(
                            icmpTokens: b.loadUnaligned(fromByteOffset: o + 24, as: Int64.self),
                            icmpLastRefill: b.loadUnaligned(fromByteOffset: o + 32, as: Int64.self),
                            nextIdentification: b.loadUnaligned(fromByteOffset: o + 40, as: UInt16.self)),
                        offload: offload, verdict: verdict,
                        bytes: (o + RecordRing.headerByteCount)..<(o + RecordRing.headerByteCount + length)))
                o += size
            }
        }
        return out
    }
}

/// The recording half of the flight recorder for one engine: a ring per side (what came from
/// the TUN, what came from the uplink), filled as each batch goes into the engine (`record`)
/// and patched with the engine's verdicts right after (`patch`). The live daemon's packet loops
/// use it through `LoopRecorder` (IPIPDataplane), `ipipd bench --record-buffer` directly, so the
/// cost measured is the cost paid live.
///
/// Per packet: one reserve, a 56-byte header and a copy of the packet, into memory allocated in
/// `init`; nothing allocated. Not thread-safe: the engine's thread only.
///
/// Hazards: `record` and `patch` must bracket one engine call on the same batch, of at most
/// `batchCapacity` packets (more are not recorded).
public final class PacketRecorder {
    public let tun: RecordRing
    public let underlay: RecordRing
    public let batchCapacity: Int
    /// Per slot of the batch being processed: its record's offset (-1: not recorded) and sequence.
    let pendingOffsets: UnsafeMutablePointer<Int>
    let pendingSequences: UnsafeMutablePointer<UInt64>

    /// - Parameters:
    ///   - bytesPerSide: the size of each of the two rings.
    ///   - batchCapacity: the largest batch `record` is given.
    public init(bytesPerSide: Int, batchCapacity: Int) {
        tun = RecordRing(capacity: bytesPerSide)
        underlay = RecordRing(capacity: bytesPerSide)
        self.batchCapacity = max(1, batchCapacity)
        pendingOffsets = .allocate(capacity: self.batchCapacity)
        pendingOffsets.initialize(repeating: -1, count: self.batchCapacity)
        pendingSequences = .allocate(capacity: self.batchCapacity)
        pendingSequences.initialize(repeating: 0, count: self.batchCapacity)
    }

    deinit {
        pendingOffsets.deallocate()
        pendingSequences.deallocate()
    }

    /// Records every packet of `batch` (the engine's input, before it rewrites the batch) with
    /// the engine's scalars as they are before the batch.
    public func record(_ batch: borrowing PacketBatch, egress: Bool, scalars: EngineScalarState) {
        let ring = egress ? tun : underlay
        let n = min(batch.count, batchCapacity)
        for i in 0..<n {
            let p = batch.packet(i)
            let size = RecordRing.recordByteCount(packetLength: p.count)
            guard let o = ring.reserve(size) else {
                pendingOffsets[i] = -1
                continue
            }
            let m = ring.memory
            let offload = batch.offload(of: i)
            m.storeBytes(of: UInt32(truncatingIfNeeded: p.count), toByteOffset: o &+ 4, as: UInt32.self)
            m.storeBytes(of: batch.time(of: i).totalNanoseconds, toByteOffset: o &+ 16, as: Int64.self)
            m.storeBytes(of: scalars.icmpTokens, toByteOffset: o &+ 24, as: Int64.self)
            m.storeBytes(of: scalars.icmpLastRefill, toByteOffset: o &+ 32, as: Int64.self)
            m.storeBytes(of: scalars.nextIdentification, toByteOffset: o &+ 40, as: UInt16.self)
            m.storeBytes(of: offload.kind.rawValue, toByteOffset: o &+ 42, as: UInt8.self)
            m.storeBytes(of: offload.congestionWindowReduced ? 1 : 0, toByteOffset: o &+ 43, as: UInt8.self)
            m.storeBytes(of: offload.segmentSize, toByteOffset: o &+ 44, as: UInt16.self)
            if let b = p.baseAddress, p.count > 0 {
                (m + (o &+ RecordRing.headerByteCount)).copyMemory(from: b, byteCount: p.count)
            }
            pendingOffsets[i] = o
            pendingSequences[i] = ring.commit(at: o, byteCount: size)
        }
    }

    /// Writes the engine's verdicts into the records `record` made for the same batch (those
    /// still in the ring).
    public func patch(_ verdicts: borrowing VerdictBatch, count: Int, egress: Bool) {
        let ring = egress ? tun : underlay
        let m = ring.memory
        for i in 0..<min(count, batchCapacity) {
            let o = pendingOffsets[i]
            guard o >= 0, ring.isLive(offset: o, sequence: pendingSequences[i]) else { continue }
            let v = verdicts[i]
            m.storeBytes(of: v.action.rawValue, toByteOffset: o &+ 46, as: UInt8.self)
            m.storeBytes(of: v.dropReason?.rawValue ?? 0xFF, toByteOffset: o &+ 47, as: UInt8.self)
            m.storeBytes(of: v.peer.rawValue, toByteOffset: o &+ 48, as: UInt32.self)
            m.storeBytes(of: v.icmpType ?? 0, toByteOffset: o &+ 52, as: UInt8.self)
            m.storeBytes(of: v.icmpCode, toByteOffset: o &+ 53, as: UInt8.self)
            m.storeBytes(of: v.icmpType == nil ? 0 : 1, toByteOffset: o &+ 54, as: UInt8.self)
            let flags = m.load(fromByteOffset: o &+ 43, as: UInt8.self)
            m.storeBytes(of: flags | 2, toByteOffset: o &+ 43, as: UInt8.self)
            pendingOffsets[i] = -1
        }
    }
}

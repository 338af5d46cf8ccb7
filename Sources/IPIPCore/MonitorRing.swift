import Synchronization

/// One verdict as the monitor ring keeps it: fixed size, plain values, so that a ring of them is
/// one preallocated block and recording an event is a few stores and one copy of header bytes.
public struct MonitorEventRecord: Sendable, Equatable {
    /// When the packet was read (the batch's clock: monotonic in live mode).
    public var time: Timestamp
    /// The input packet's length in bytes (a super-packet's whole length).
    public var length: UInt32
    /// How many of its first bytes were kept (at most `MonitorRing.capturedByteCount`).
    public var captured: UInt16
    /// Read from the TUN (egress) or from the uplink (ingress).
    public var egress: Bool
    /// `VerdictAction.rawValue`.
    public var action: UInt8
    /// `DropReason.rawValue`, 0 unless dropped.
    public var reason: UInt8
    /// The packet worker that decided.
    public var worker: UInt8
    /// `PacketVerdict.peer`: the peer node of an encapsulated, decapsulated or consumed packet.
    public var peer: IPv4Address

    public init(
        time: Timestamp = .zero, length: UInt32 = 0, captured: UInt16 = 0, egress: Bool = false, action: UInt8 = 0,
        reason: UInt8 = 0, worker: UInt8 = 0, peer: IPv4Address = .any
    ) {
        self.time = time
        self.length = length
        self.captured = captured
        self.egress = egress
        self.action = action
        self.reason = reason
        self.worker = worker
        self.peer = peer
    }
}

/// The bounded single-producer, single-consumer ring between one packet loop and the monitor
/// (`ipipctl monitor`): the loop records each input packet's verdict with its first
/// `capturedByteCount` bytes; the control server's thread takes what is there.
///
/// Never slows the dataplane: the producer never waits. When the ring is full the event is
/// dropped and counted (`lost`), so a monitor that cannot keep up sees how much it missed
/// instead of holding the packets back. Everything is allocated in `init`; recording allocates
/// nothing.
///
/// The producer works in two steps around the engine, because the engine rewrites packets in
/// place (it prepends outer headers, strips them, translates addresses) and the verdict exists
/// only afterwards: `stage` copies the input packets' first bytes into a staging area before
/// the engine runs, `commit` pairs them with the verdicts and publishes the ones the mode
/// selects.
///
/// Attachment: `mode` is what the consumer wants (`off`, every verdict, drops only); the loop
/// reads it once per batch (one relaxed load), and with `off` does nothing else.
///
/// Hazards: `stage` and `commit` belong to one thread (the loop), `drain` to one other thread;
/// a record published by `commit` is read only after the acquiring load of `head` that shows it.
public final class MonitorRing: @unchecked Sendable {
    /// What the loop records.
    public enum Mode: Int, Sendable {
        /// Nothing: no monitor attached.
        case off = 0
        /// Every verdict.
        case all = 1
        /// Only dropped packets (`--drops`, `--reason`): the ring's room goes to what matters.
        case dropsOnly = 2
    }

    /// Bytes of each input packet kept with its event: the outer and inner IPv4 headers with
    /// options and the transport header of an IP-in-IP packet fit.
    public static let capturedByteCount = 128

    /// Events the ring holds (a power of two).
    public let capacity: Int
    /// The worker whose loop produces into this ring.
    public let worker: UInt8
    let mask: Int
    let records: UnsafeMutablePointer<MonitorEventRecord>
    let bytes: UnsafeMutableRawPointer
    /// The batch in flight (producer only).
    let stageCapacity: Int
    let stagedRecords: UnsafeMutablePointer<MonitorEventRecord>
    let stagedBytes: UnsafeMutableRawPointer
    var stagedCount = 0
    /// Events published (producer stores, consumer loads).
    let head = Atomic<Int>(0)
    /// Events taken (consumer stores, producer loads).
    let tail = Atomic<Int>(0)
    let lostEvents = Atomic<UInt64>(0)
    let modeValue = Atomic<Int>(Mode.off.rawValue)

    /// - Parameters:
    ///   - capacity: events the ring holds, rounded up to a power of two.
    ///   - batchCapacity: the largest batch the loop hands to `stage`.
    public init(capacity: Int = 4096, batchCapacity: Int = 1024, worker: Int = 0) {
        var c = 1
        while c < max(2, capacity) { c <<= 1 }
        self.capacity = c
        mask = c - 1
        self.worker = UInt8(truncatingIfNeeded: worker)
        records = .allocate(capacity: c)
        records.initialize(repeating: MonitorEventRecord(), count: c)
        bytes = .allocate(byteCount: c * Self.capturedByteCount, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: c * Self.capturedByteCount)
        stageCapacity = max(1, batchCapacity)
        stagedRecords = .allocate(capacity: stageCapacity)
        stagedRecords.initialize(repeating: MonitorEventRecord(), count: stageCapacity)
        stagedBytes = .allocate(byteCount: stageCapacity * Self.capturedByteCount, alignment: 16)
        stagedBytes.initializeMemory(as: UInt8.self, repeating: 0, count: stageCapacity * Self.capturedByteCount)
    }

    deinit {
        records.deallocate()
        bytes.deallocate()
        stagedRecords.deallocate()
        stagedBytes.deallocate()
    }

    /// What the loop records; set by the consumer's side.
    public var mode: Mode {
        get { Mode(rawValue: modeValue.load(ordering: .relaxed)) ?? .off }
        set { modeValue.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// The loop's per-batch check: whether a monitor wants events (one relaxed load).
    @inline(__always)
    public var isAttached: Bool { modeValue.load(ordering: .relaxed) != 0 }

    /// Events the ring had no room for since it was created.
    public var lost: UInt64 { lostEvents.load(ordering: .relaxed) }

    // MARK: Producer (the packet loop)

    /// Copies the first bytes, length and time of every input packet of `batch` into the staging
    /// area, before the engine rewrites them. Packets beyond the staging capacity are counted
    /// as lost by `commit`.
    public func stage(_ batch: borrowing PacketBatch, egress: Bool) {
        let n = min(batch.count, stageCapacity)
        for i in 0..<n {
            let p = batch.packet(i)
            let kept = min(p.count, Self.capturedByteCount)
            if kept > 0, let base = p.baseAddress {
                (stagedBytes + i &* Self.capturedByteCount).copyMemory(from: base, byteCount: kept)
            }
            stagedRecords[i] = MonitorEventRecord(
                time: batch.time(of: i), length: UInt32(truncatingIfNeeded: p.count),
                captured: UInt16(truncatingIfNeeded: kept), egress: egress, worker: worker)
        }
        stagedCount = n
    }

    /// Pairs the staged packets with their verdicts and publishes those the mode selects; an
    /// event that finds the ring full is counted in `lost`. `count` is the batch's size.
    public func commit(_ verdicts: borrowing VerdictBatch, count: Int, mode: Mode) {
        let dropsOnly = mode == .dropsOnly
        var h = head.load(ordering: .relaxed)
        let t = tail.load(ordering: .acquiring)
        var lost = 0
        for i in 0..<stagedCount {
            let v = verdicts[i]
            if dropsOnly && v.action != .dropped { continue }
            if h &- t >= capacity {
                lost &+= 1
                continue
            }
            let slot = h & mask
            var r = stagedRecords[i]
            r.action = v.action.rawValue
            r.reason = v.dropReason?.rawValue ?? 0
            r.peer = v.peer
            records[slot] = r
            (bytes + slot &* Self.capturedByteCount).copyMemory(
                from: stagedBytes + i &* Self.capturedByteCount, byteCount: Int(r.captured))
            h &+= 1
        }
        if count > stagedCount {
            // Packets the staging area had no room for (a batch larger than announced).
            var i = stagedCount
            while i < count {
                if !dropsOnly || verdicts[i].action == .dropped { lost &+= 1 }
                i &+= 1
            }
        }
        stagedCount = 0
        head.store(h, ordering: .releasing)
        if lost > 0 { lostEvents.add(UInt64(lost), ordering: .relaxed) }
    }

    // MARK: Consumer (the control server)

    /// Hands every published event to `body` (its record and its captured bytes, valid only
    /// during the call) in order, and frees their slots. Returns how many it took.
    @discardableResult
    public func drain(_ body: (MonitorEventRecord, UnsafeRawBufferPointer) -> Void) -> Int {
        let h = head.load(ordering: .acquiring)
        var t = tail.load(ordering: .relaxed)
        let n = h &- t
        while t != h {
            let slot = t & mask
            let r = records[slot]
            body(r, UnsafeRawBufferPointer(start: bytes + slot &* Self.capturedByteCount, count: Int(r.captured)))
            t &+= 1
        }
        tail.store(t, ordering: .releasing)
        return n
    }

    /// Throws away what is queued (a monitor attaches and wants only what happens from now on).
    public func discardPending() {
        tail.store(head.load(ordering: .acquiring), ordering: .releasing)
    }
}

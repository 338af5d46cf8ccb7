/// Slots of the engine's plain-integer counter array (per engine; summed on read, vpp style).
@usableFromInline
enum CounterSlot: Int {
    case egressPacketsIn = 0, egressBytesIn
    case encapsulatedPackets, encapsulatedBytes
    case forwardedPackets, forwardedBytes
    case droppedPackets, droppedBytes
    case underlayPacketsOut, underlayBytesOut
    case tunPacketsOut, tunBytesOut
    case fragmentsCreated, icmpErrorsSent, icmpRateLimited
    /// Drop reasons follow at `dropBase + reason.rawValue`.
    case dropBase = 32

    @usableFromInline static let totalCount = 32 + 256
}

/// A snapshot of the engine's counters.
public struct EngineCounters: Sendable, Equatable {
    /// Packets handed to the egress path (from workloads / the TUN).
    public var egressPacketsIn: UInt64
    public var egressBytesIn: UInt64
    public var encapsulatedPackets: UInt64
    public var encapsulatedBytes: UInt64
    public var forwardedPackets: UInt64
    public var forwardedBytes: UInt64
    public var droppedPackets: UInt64
    public var droppedBytes: UInt64
    /// Packets emitted toward the underlay (raw socket), fragments counted one each.
    public var underlayPacketsOut: UInt64
    public var underlayBytesOut: UInt64
    /// Packets emitted into the TUN (ICMP errors to workloads).
    public var tunPacketsOut: UInt64
    public var tunBytesOut: UInt64
    /// Inner fragments created before encapsulation (ENC-16).
    public var fragmentsCreated: UInt64
    /// ICMP errors generated.
    public var icmpErrorsSent: UInt64
    /// ICMP errors suppressed by the rate limit.
    public var icmpRateLimited: UInt64
    /// Drops per reason; every reason is present, zero included.
    public var drops: [DropReason: UInt64]

    init(_ c: UnsafeMutablePointer<UInt64>) {
        func v(_ s: CounterSlot) -> UInt64 { c[s.rawValue] }
        egressPacketsIn = v(.egressPacketsIn)
        egressBytesIn = v(.egressBytesIn)
        encapsulatedPackets = v(.encapsulatedPackets)
        encapsulatedBytes = v(.encapsulatedBytes)
        forwardedPackets = v(.forwardedPackets)
        forwardedBytes = v(.forwardedBytes)
        droppedPackets = v(.droppedPackets)
        droppedBytes = v(.droppedBytes)
        underlayPacketsOut = v(.underlayPacketsOut)
        underlayBytesOut = v(.underlayBytesOut)
        tunPacketsOut = v(.tunPacketsOut)
        tunBytesOut = v(.tunBytesOut)
        fragmentsCreated = v(.fragmentsCreated)
        icmpErrorsSent = v(.icmpErrorsSent)
        icmpRateLimited = v(.icmpRateLimited)
        var d: [DropReason: UInt64] = [:]
        for r in DropReason.allCases { d[r] = c[CounterSlot.dropBase.rawValue + Int(r.rawValue)] }
        drops = d
    }

    /// Packets per verdict action.
    public func packets(_ action: VerdictAction) -> UInt64 {
        switch action {
        case .dropped: droppedPackets
        case .encapsulated: encapsulatedPackets
        case .forwarded: forwardedPackets
        }
    }
}

/// Verdicts for one batch, one per input slot, in preallocated memory.
public struct VerdictBatch: ~Copyable {
    /// Number of verdicts it can hold.
    public let capacity: Int
    @usableFromInline let storage: UnsafeMutablePointer<PacketVerdict>

    /// Allocates room for `capacity` verdicts.
    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        storage.initialize(repeating: PacketVerdict(action: .dropped), count: capacity)
    }

    deinit {
        storage.deinitialize(count: capacity)
        storage.deallocate()
    }

    /// The verdict for input slot `i`.
    @inlinable public subscript(i: Int) -> PacketVerdict {
        get {
            precondition(i >= 0 && i < capacity)
            return storage[i]
        }
        nonmutating set {
            precondition(i >= 0 && i < capacity)
            storage[i] = newValue
        }
    }
}

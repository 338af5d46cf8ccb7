/// Slots of the engine's plain-integer counter array (per engine; summed on read, vpp style).
@usableFromInline
enum CounterSlot: Int {
    case egressPacketsIn = 0, egressBytesIn
    case ingressPacketsIn, ingressBytesIn
    case underlayPacketsOut, underlayBytesOut
    case tunPacketsOut, tunBytesOut
    case fragmentsCreated, icmpErrorsSent, icmpRateLimited
    case pathMTUUpdates, ecnUnusedCombinations
    /// Super-packets taken in whole (`SegmentationOffload`), both directions.
    case superPacketsIn
    /// Packets and bytes per verdict action follow at `actionBase + 2 × action.rawValue`.
    case actionBase = 16
    /// Drop reasons follow at `dropBase + reason.rawValue`.
    case dropBase = 48

    @usableFromInline static let totalCount = 48 + 256
}

/// A snapshot of the engine's counters.
public struct EngineCounters: Sendable, Equatable {
    /// Packets handed to the egress path (from workloads / the TUN).
    public var egressPacketsIn: UInt64
    public var egressBytesIn: UInt64
    /// Packets handed to the ingress path (from the underlay).
    public var ingressPacketsIn: UInt64
    public var ingressBytesIn: UInt64
    /// Packets emitted toward the underlay (raw socket), fragments counted one each.
    public var underlayPacketsOut: UInt64
    public var underlayBytesOut: UInt64
    /// Packets emitted into the TUN (decapsulated, untranslated, ICMP errors to workloads).
    public var tunPacketsOut: UInt64
    public var tunBytesOut: UInt64
    /// Inner fragments created before encapsulation (ENC-16).
    public var fragmentsCreated: UInt64
    /// ICMP errors generated.
    public var icmpErrorsSent: UInt64
    /// ICMP errors suppressed by the rate limit.
    public var icmpRateLimited: UInt64
    /// Valid ICMP frag-needed messages that lowered a peer's path MTU (ENC-17).
    public var pathMTUUpdates: UInt64
    /// Decapsulations with an ECN combination RFC 6040 calls currently unused (logged, not dropped).
    public var ecnUnusedCombinations: UInt64
    /// Super-packets (segmentation offload) taken in whole, both directions; each also counts as
    /// its segments in every packet counter.
    public var superPacketsIn: UInt64
    /// Input packets and bytes per verdict action; every action is present.
    public var actions: [VerdictAction: (packets: UInt64, bytes: UInt64)]
    /// Drops per reason; every reason is present, zero included.
    public var drops: [DropReason: UInt64]

    init(_ c: UnsafeMutablePointer<UInt64>) {
        func v(_ s: CounterSlot) -> UInt64 { c[s.rawValue] }
        egressPacketsIn = v(.egressPacketsIn)
        egressBytesIn = v(.egressBytesIn)
        ingressPacketsIn = v(.ingressPacketsIn)
        ingressBytesIn = v(.ingressBytesIn)
        underlayPacketsOut = v(.underlayPacketsOut)
        underlayBytesOut = v(.underlayBytesOut)
        tunPacketsOut = v(.tunPacketsOut)
        tunBytesOut = v(.tunBytesOut)
        fragmentsCreated = v(.fragmentsCreated)
        icmpErrorsSent = v(.icmpErrorsSent)
        icmpRateLimited = v(.icmpRateLimited)
        pathMTUUpdates = v(.pathMTUUpdates)
        ecnUnusedCombinations = v(.ecnUnusedCombinations)
        superPacketsIn = v(.superPacketsIn)
        var a: [VerdictAction: (packets: UInt64, bytes: UInt64)] = [:]
        for x in VerdictAction.allCases {
            let base = CounterSlot.actionBase.rawValue + 2 * Int(x.rawValue)
            a[x] = (c[base], c[base + 1])
        }
        actions = a
        var d: [DropReason: UInt64] = [:]
        for r in DropReason.allCases { d[r] = c[CounterSlot.dropBase.rawValue + Int(r.rawValue)] }
        drops = d
    }

    /// Adds another engine's counters (workers' counters are summed on read, VPP style).
    public mutating func add(_ o: EngineCounters) {
        egressPacketsIn &+= o.egressPacketsIn
        egressBytesIn &+= o.egressBytesIn
        ingressPacketsIn &+= o.ingressPacketsIn
        ingressBytesIn &+= o.ingressBytesIn
        underlayPacketsOut &+= o.underlayPacketsOut
        underlayBytesOut &+= o.underlayBytesOut
        tunPacketsOut &+= o.tunPacketsOut
        tunBytesOut &+= o.tunBytesOut
        fragmentsCreated &+= o.fragmentsCreated
        icmpErrorsSent &+= o.icmpErrorsSent
        icmpRateLimited &+= o.icmpRateLimited
        pathMTUUpdates &+= o.pathMTUUpdates
        ecnUnusedCombinations &+= o.ecnUnusedCombinations
        superPacketsIn &+= o.superPacketsIn
        for (a, v) in o.actions {
            let mine = actions[a] ?? (0, 0)
            actions[a] = (mine.packets &+ v.packets, mine.bytes &+ v.bytes)
        }
        for (r, v) in o.drops { drops[r, default: 0] &+= v }
    }

    /// Input packets with the given verdict.
    public func packets(_ action: VerdictAction) -> UInt64 { actions[action]?.packets ?? 0 }
    /// Input bytes with the given verdict.
    public func bytes(_ action: VerdictAction) -> UInt64 { actions[action]?.bytes ?? 0 }

    public static func == (l: EngineCounters, r: EngineCounters) -> Bool {
        l.egressPacketsIn == r.egressPacketsIn && l.egressBytesIn == r.egressBytesIn
            && l.ingressPacketsIn == r.ingressPacketsIn && l.ingressBytesIn == r.ingressBytesIn
            && l.underlayPacketsOut == r.underlayPacketsOut && l.underlayBytesOut == r.underlayBytesOut
            && l.tunPacketsOut == r.tunPacketsOut && l.tunBytesOut == r.tunBytesOut
            && l.fragmentsCreated == r.fragmentsCreated && l.icmpErrorsSent == r.icmpErrorsSent
            && l.icmpRateLimited == r.icmpRateLimited && l.pathMTUUpdates == r.pathMTUUpdates
            && l.ecnUnusedCombinations == r.ecnUnusedCombinations && l.superPacketsIn == r.superPacketsIn
            && l.drops == r.drops
            && VerdictAction.allCases.allSatisfy { l.packets($0) == r.packets($0) && l.bytes($0) == r.bytes($0) }
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

/// The layout of an engine's per-peer counters: four per node.
enum PeerCounterSlot {
    /// Egress packets, egress bytes, ingress packets, ingress bytes.
    static let count = 4
}

/// One peer node's traffic as an engine counted it: what it encapsulated toward the peer
/// (egress) and what it decapsulated from it (ingress), super-packets counted as their
/// segments, bytes as the packets arrived (inner bytes out, outer bytes in), the same
/// convention as `ipipd_bytes_total`.
public struct PeerCounters: Sendable, Equatable {
    public var name: String
    public var address: IPv4Address
    public var egressPackets: UInt64
    public var egressBytes: UInt64
    public var ingressPackets: UInt64
    public var ingressBytes: UInt64
    /// The learned path MTU (outer packet size) toward the peer, if one holds.
    public var pathMTU: Int?

    public init(
        name: String, address: IPv4Address, egressPackets: UInt64 = 0, egressBytes: UInt64 = 0,
        ingressPackets: UInt64 = 0, ingressBytes: UInt64 = 0, pathMTU: Int? = nil
    ) {
        self.name = name
        self.address = address
        self.egressPackets = egressPackets
        self.egressBytes = egressBytes
        self.ingressPackets = ingressPackets
        self.ingressBytes = ingressBytes
        self.pathMTU = pathMTU
    }

    /// Adds another worker's counts of the same peer (the smaller learned path MTU wins).
    public mutating func add(_ o: PeerCounters) {
        egressPackets &+= o.egressPackets
        egressBytes &+= o.egressBytes
        ingressPackets &+= o.ingressPackets
        ingressBytes &+= o.ingressBytes
        if let m = o.pathMTU { pathMTU = min(pathMTU ?? m, m) }
    }
}

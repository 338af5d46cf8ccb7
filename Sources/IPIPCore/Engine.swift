/// Knobs of the engine that do not come from the cluster topology.
public struct EngineConfiguration: Sendable, Equatable {
    /// Outer TTL; 0 means "inherit" the inner TTL (Linux's `ttl 0`). Default 64, as VPP (ENC-10).
    public var outerTimeToLive: UInt8
    /// ICMP errors the engine may generate per second (token bucket, RFC 1812 §4.3.2.8).
    public var icmpRatePerSecond: Int
    /// Bucket depth: how many ICMP errors may leave back to back.
    public var icmpBurst: Int
    /// Verify the IPv4 header checksum of every input packet.
    public var verifyHeaderChecksums: Bool
    /// The smallest path MTU an ICMP frag-needed may teach us; lower values are raised to it
    /// (ENC-18, RFC 4459 §5; Linux's `min_pmtu` default).
    public var minimumPathMTU: Int
    /// How long a learned path MTU holds before the tunnel MTU applies again (Linux `mtu_expires`).
    public var pathMTUExpirySeconds: Int64

    /// Most SNAT sessions the engine tracks at once (NAT-16: a bounded table).
    public var natCapacity: Int
    /// SNAT idle timeouts (NAT-09/10).
    public var natTimeouts: NATTimeouts
    /// Seeds SNAT port choice and hashing: fixed (the default) so replays reproduce; the live
    /// daemon passes a random one.
    public var natSeed: UInt64
    /// Which of the node's workers this engine is (`Engine+Workers.swift`): its slice of
    /// `natPortRange` and the owners `egressOwner`/`ingressOwner` name.
    public var worker: WorkerShare = .single

    public init(
        outerTimeToLive: UInt8 = 64, icmpRatePerSecond: Int = 1000, icmpBurst: Int = 50,
        verifyHeaderChecksums: Bool = true, minimumPathMTU: Int = 552, pathMTUExpirySeconds: Int64 = 600,
        natCapacity: Int = 262_144, natTimeouts: NATTimeouts = NATTimeouts(), natSeed: UInt64 = 0x5EED
    ) {
        self.natCapacity = natCapacity
        self.natTimeouts = natTimeouts
        self.natSeed = natSeed
        self.outerTimeToLive = outerTimeToLive
        self.icmpRatePerSecond = icmpRatePerSecond
        self.icmpBurst = icmpBurst
        self.verifyHeaderChecksums = verifyHeaderChecksums
        self.minimumPathMTU = minimumPathMTU
        self.pathMTUExpirySeconds = pathMTUExpirySeconds
    }
}

/// The packet engine: a pure function of (topology, state, packet, time) → verdict, applied a
/// batch at a time. The live daemon, `ipipd replay` and the benchmarks all call this same code.
///
/// Egress pipeline (packets from local workloads, i.e. read from the TUN), per packet:
/// 1. validate the IPv4 header (version, IHL, lengths, checksum); trim link-layer padding;
/// 2. refuse TTL 0, martian sources and destinations, and workload-originated protocol 4;
/// 3. look the destination up in the topology's LPM table;
/// 4. outside every pool, a local block, or a remote block that needs no tunnel: forward natively;
///    in a pool without a block: drop + ICMP 3/1; a remote block that needs the tunnel: check
///    the loop rules (ENC-19/20), then the MTU: fits → write the outer header into the headroom;
///    too big with DF → drop + ICMP 3/4 with the tunnel MTU; too big without DF → fragment the
///    inner packet into the `generated` batch and encapsulate each fragment.
///
/// Output: each input slot gets a `PacketSide` (where it leaves, `.none` when dropped or consumed)
/// and a verdict; packets the engine creates (fragments, ICMP errors) are appended to `generated`
/// with the input index as their origin, in input order.
///
/// Threading: one engine per worker; not Sendable. The topology is swapped between batches by
/// `replaceTopology(_:)`. Memory: everything is allocated in `init`; the per-packet path
/// allocates nothing (no classes, arrays, strings or existentials are created per packet).
///
/// Hazards: the headroom of every input slot must be at least 20 bytes (PacketBatch guarantees
/// it); generated packets are bounded by `generated.capacity`, and a packet whose fragments do
/// not fit is dropped whole (`outputFull`) rather than sent in part.
public final class Engine {
    /// The compiled view of the cluster in use.
    public private(set) var topology: Topology
    /// Path MTU soft state per peer (ENC-17), indexed like `topology.nodes`.
    var pathMTUs: PathMTUTable
    /// SNAT sessions (natOutgoing).
    public private(set) var nat: NATTable
    /// The engine's own knobs.
    public let configuration: EngineConfiguration

    @usableFromInline let counters: UnsafeMutablePointer<UInt64>
    @usableFromInline let state: UnsafeMutablePointer<MutableState>
    /// Scratch for the batched route lookup: destinations in, route indices out.
    let lookupAddresses: UnsafeMutablePointer<IPv4Address>
    let lookupRoutes: UnsafeMutablePointer<UInt32>
    /// Per-peer traffic, indexed like `topology.nodes`: `PeerCounterSlot.count` counters per
    /// node (packets and bytes sent to it encapsulated, received from it decapsulated).
    /// Reallocated by `replaceTopology` (carried over by peer IP), never per packet.
    @usableFromInline var peerCounts: UnsafeMutablePointer<UInt64>
    var peerCountNodes: Int
    /// How many packets one batched lookup covers; larger batches are processed in chunks.
    static let lookupChunk = 256
    /// The route index meaning "no route" in `lookupRoutes`.
    static let noRoute = UInt32.max

    /// Per-peer path MTU soft state: the learned outer MTU (0 = none) and when it expires (ns).
    final class PathMTUTable {
        let count: Int
        let mtu: UnsafeMutablePointer<UInt16>
        let expiry: UnsafeMutablePointer<Int64>
        init(nodeCount: Int) {
            count = max(1, nodeCount)
            mtu = .allocate(capacity: count)
            mtu.initialize(repeating: 0, count: count)
            expiry = .allocate(capacity: count)
            expiry.initialize(repeating: 0, count: count)
        }
        deinit {
            mtu.deallocate()
            expiry.deallocate()
        }
    }

    @usableFromInline
    struct MutableState {
        /// Next IPv4 identification for packets we originate (outer headers, ICMP).
        var nextIdentification: UInt16 = 1
        /// ICMP token bucket, in billionths of a token.
        var icmpTokens: Int64 = 0
        /// Time of the last refill, ns since the epoch; `Int64.min` before the first.
        var icmpLastRefill: Int64 = .min
        /// The packet being processed: the wire packets it stands for (its segments when it is a
        /// super-packet, else 1) and the header bytes each of them repeats, as it arrived. Every
        /// count of the packet uses them, so a super-packet counts as its segments would.
        var segments = 1
        var segmentHeaderBytes = 0
    }

    /// Creates an engine for a topology.
    public init(topology: Topology, configuration: EngineConfiguration = EngineConfiguration()) {
        self.topology = topology
        self.configuration = configuration
        pathMTUs = PathMTUTable(nodeCount: topology.nodes.count)
        nat = NATTable(
            capacity: configuration.natCapacity,
            portRange: Self.natRange(topology.natPortRange, share: configuration.worker),
            timeouts: configuration.natTimeouts, seed: configuration.natSeed)
        counters = .allocate(capacity: CounterSlot.totalCount)
        counters.initialize(repeating: 0, count: CounterSlot.totalCount)
        state = .allocate(capacity: 1)
        state.initialize(to: MutableState())
        lookupAddresses = .allocate(capacity: Self.lookupChunk)
        lookupAddresses.initialize(repeating: .any, count: Self.lookupChunk)
        lookupRoutes = .allocate(capacity: Self.lookupChunk)
        lookupRoutes.initialize(repeating: Self.noRoute, count: Self.lookupChunk)
        peerCountNodes = max(1, topology.nodes.count)
        peerCounts = .allocate(capacity: peerCountNodes * PeerCounterSlot.count)
        peerCounts.initialize(repeating: 0, count: peerCountNodes * PeerCounterSlot.count)
    }

    deinit {
        peerCounts.deallocate()
        counters.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
        lookupAddresses.deallocate()
        lookupRoutes.deallocate()
    }

    /// Installs a new topology; takes effect from the next batch. Learned path MTUs carry over
    /// for peers that keep their address; NAT sessions carry over unless `natPortRange` or the
    /// node IP changed (the sessions' external endpoint would no longer be ours).
    public func replaceTopology(_ topology: Topology) {
        let range = Self.natRange(topology.natPortRange, share: configuration.worker)
        if range != nat.portRange || topology.localAddress != self.topology.localAddress {
            nat = NATTable(
                capacity: configuration.natCapacity, portRange: range,
                timeouts: configuration.natTimeouts, seed: configuration.natSeed)
        }
        let old = self.topology
        let table = PathMTUTable(nodeCount: topology.nodes.count)
        // By address, in O(nodes): this runs on the packet worker's thread between two batches,
        // and a scan of the old nodes per new node was 25 million comparisons for 5,000 nodes.
        // Nothing learned (the usual case): nothing to carry over.
        if (0..<old.nodes.count).contains(where: { pathMTUs.mtu[$0] != 0 }) {
            var learned: [IPv4Address: Int] = [:]
            for (j, n) in old.nodes.enumerated() {
                if let a = n.address, learned[a] == nil { learned[a] = j }
            }
            for (i, n) in topology.nodes.enumerated() {
                guard let a = n.address, let j = learned[a] else { continue }
                table.mtu[i] = pathMTUs.mtu[j]
                table.expiry[i] = pathMTUs.expiry[j]
            }
        }
        pathMTUs = table
        carryPeerCounters(from: old, to: topology)
        self.topology = topology
    }

    /// Moves the per-peer counters to a table sized for `next`, each to the node with the same
    /// IP (a peer renamed or re-indexed keeps its counts; a peer that left takes its counts
    /// with it, as Prometheus expects of a series that disappears).
    func carryPeerCounters(from old: Topology, to next: Topology) {
        let nodes = max(1, next.nodes.count)
        let fresh = UnsafeMutablePointer<UInt64>.allocate(capacity: nodes * PeerCounterSlot.count)
        fresh.initialize(repeating: 0, count: nodes * PeerCounterSlot.count)
        var byAddress: [IPv4Address: Int] = [:]
        for (j, n) in old.nodes.enumerated() where j < peerCountNodes {
            if let a = n.address, byAddress[a] == nil { byAddress[a] = j }
        }
        for (i, n) in next.nodes.enumerated() {
            guard let a = n.address, let j = byAddress[a] else { continue }
            (fresh + i * PeerCounterSlot.count).update(
                from: peerCounts + j * PeerCounterSlot.count, count: PeerCounterSlot.count)
        }
        peerCounts.deallocate()
        peerCounts = fresh
        peerCountNodes = nodes
    }

    /// Counts the current packet (its segments, its bytes as they arrived) against peer node
    /// `node`: two adds at a computed address, no check beyond the index.
    @inline(__always)
    func countPeer(_ node: Int, egress: Bool, bytes: Int) {
        guard node >= 0 && node < peerCountNodes else { return }
        let base = node &* PeerCounterSlot.count &+ (egress ? 0 : 2)
        peerCounts[base] &+= UInt64(truncatingIfNeeded: state.pointee.segments)
        peerCounts[base &+ 1] &+= UInt64(
            truncatingIfNeeded: segmentedBytes(bytes, headers: state.pointee.segmentHeaderBytes))
    }

    /// Every other node's traffic counters so far, in `topology.nodes` order (the local node
    /// and nodes without an IP left out). Control-plane code: allocates.
    public func peerCounterSnapshot(now: Timestamp) -> [PeerCounters] {
        var out: [PeerCounters] = []
        for (i, n) in topology.nodes.enumerated() where i != topology.localNodeIndex && i < peerCountNodes {
            guard let a = n.address else { continue }
            let c = peerCounts + i * PeerCounterSlot.count
            out.append(
                PeerCounters(
                    name: n.name, address: a, egressPackets: c[0], egressBytes: c[1], ingressPackets: c[2],
                    ingressBytes: c[3], pathMTU: learnedPathMTU(toNode: i, now: now)))
        }
        return out
    }

    /// The learned path MTU to node `index` (outer packet size), if one holds at `now`.
    public func learnedPathMTU(toNode index: Int, now: Timestamp) -> Int? {
        let m = pathMTUs.mtu[index]
        return m != 0 && now.totalNanoseconds < pathMTUs.expiry[index] ? Int(m) : nil
    }

    /// A snapshot of all counters.
    public var counterSnapshot: EngineCounters { EngineCounters(counters) }

    @inline(__always) @usableFromInline
    func count(_ slot: CounterSlot, _ n: Int = 1) {
        counters[slot.rawValue] &+= UInt64(truncatingIfNeeded: n)
    }

    // MARK: Shared helpers

    /// Starts the counting of one input packet: `segments` wire packets (1 for an ordinary
    /// packet) of which each repeats `headerBytes` bytes of headers.
    @inline(__always)
    func beginPacket(segments: Int, headerBytes: Int) {
        state.pointee.segments = segments
        state.pointee.segmentHeaderBytes = headerBytes
    }

    /// The bytes the current packet's segments take together when the packet is `length` bytes
    /// long and each segment repeats `headers` bytes of headers.
    @inline(__always)
    func segmentedBytes(_ length: Int, headers: Int) -> Int {
        length &+ (state.pointee.segments &- 1) &* headers
    }

    /// Counts the current packet under `action`: its segments, and its bytes as they arrived.
    @inline(__always)
    func countAction(_ action: VerdictAction, bytes: Int) {
        let base = CounterSlot.actionBase.rawValue &+ 2 &* Int(action.rawValue)
        counters[base] &+= UInt64(truncatingIfNeeded: state.pointee.segments)
        counters[base &+ 1] &+= UInt64(
            truncatingIfNeeded: segmentedBytes(bytes, headers: state.pointee.segmentHeaderBytes))
    }

    @inline(__always)
    func drop(_ reason: DropReason, length: Int, icmp: (UInt8, UInt8)? = nil) -> PacketVerdict {
        countAction(.dropped, bytes: length)
        counters[CounterSlot.dropBase.rawValue &+ Int(reason.rawValue)] &+= UInt64(
            truncatingIfNeeded: state.pointee.segments)
        return PacketVerdict(
            action: .dropped, dropReason: reason, outputCount: icmp == nil ? 0 : 1,
            icmpType: icmp?.0, icmpCode: icmp?.1 ?? 0)
    }

    /// Sends input slot `i` on `side` as it stands (one output of `length` bytes, or the segments
    /// of a super-packet) and counts it.
    @inline(__always)
    func emitWhole(
        _ i: Int, in batch: borrowing PacketBatch, side: PacketSide, action: VerdictAction,
        length: Int
    ) -> PacketVerdict {
        batch.setSide(side, of: i)
        countAction(action, bytes: length)
        let segments = state.pointee.segments
        let bytes = segmentedBytes(length, headers: state.pointee.segmentHeaderBytes)
        if side == .tun {
            count(.tunPacketsOut, segments)
            count(.tunBytesOut, bytes)
        } else {
            count(.underlayPacketsOut, segments)
            count(.underlayBytesOut, bytes)
        }
        return PacketVerdict(action: action, outputCount: UInt16(truncatingIfNeeded: segments))
    }

    /// Takes the offload metadata of input slot `i` into account before anything else looks at
    /// it: an ordinary packet counts as one; a super-packet as its segments (`beginPacket`); a
    /// super-packet of one segment becomes an ordinary packet (its transport checksum, which the
    /// kernel left partial, is completed); metadata that does not fit the packet is refused.
    /// - Returns: the layout of a super-packet, nil for an ordinary one; `.failure` when refused
    ///   (the caller drops the packet as `invalid_offload`).
    ///
    /// An ordinary packet costs one load here: the per-packet counting state stays at (1, 0)
    /// between packets, and `endOffload` puts it back after a super-packet.
    @inline(__always)
    func takeOffload(of i: Int, in batch: borrowing PacketBatch) -> Result<Segmenter.Layout?, OffloadRefused> {
        let offload = batch.offload(of: i)
        if offload.kind == .none { return .success(nil) }
        return takeSegmentationOffload(offload, of: i, in: batch)
    }

    /// `takeOffload` for a slot that has offload metadata (the rare path, out of line).
    @inline(never)
    func takeSegmentationOffload(
        _ offload: SegmentationOffload, of i: Int, in batch: borrowing PacketBatch
    )
        -> Result<Segmenter.Layout?, OffloadRefused>
    {
        guard let layout = Segmenter.layout(of: UnsafeRawBufferPointer(batch.packet(i)), offload: offload) else {
            return .failure(OffloadRefused())
        }
        if layout.segmentCount == 1 {
            InternetChecksum.completeTransportChecksum(batch.packet(i))
            batch.setOffload(.none, of: i)
            return .success(nil)
        }
        beginPacket(segments: layout.segmentCount, headerBytes: layout.headerLength)
        count(.superPacketsIn)
        return .success(layout)
    }

    /// Puts the counting state back to an ordinary packet's after slot `i` was processed.
    @inline(__always)
    func endOffload(of i: Int, in batch: borrowing PacketBatch) {
        if batch.offload(of: i).kind != .none { beginPacket(segments: 1, headerBytes: 0) }
    }

    /// Offload metadata that does not describe the packet (see `takeOffload`).
    struct OffloadRefused: Error {}

    /// 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4 and 240.0.0.0/4 (broadcast included): never a
    /// forwardable source or unicast destination (RFC 1812 §5.3.7).
    @inline(__always)
    static func isMartian(_ a: IPv4Address) -> Bool {
        a.isThisNetwork || a.isLoopback || a.isMulticast || a.isReserved
    }

    /// Takes `count` consecutive fresh identifications (one per segment of a super-packet) and
    /// returns the first.
    @inline(__always)
    func takeIdentification(count: Int = 1) -> UInt16 {
        let id = state.pointee.nextIdentification
        state.pointee.nextIdentification = id &+ UInt16(truncatingIfNeeded: count)
        return id
    }

    // MARK: ICMP errors

    /// Takes one token from the ICMP bucket, refilled from the packet clock.
    @inline(__always)
    func takeICMPToken(now: Timestamp) -> Bool {
        let rate = Int64(configuration.icmpRatePerSecond)
        let capacity = Int64(configuration.icmpBurst) &* 1_000_000_000
        guard rate > 0, capacity > 0 else { return false }
        let t = now.totalNanoseconds
        var s = state.pointee
        if s.icmpLastRefill == .min {
            s.icmpTokens = capacity
        } else if t > s.icmpLastRefill {
            // Clamp the elapsed time so the multiplication cannot overflow.
            let elapsed = min(t &- s.icmpLastRefill, capacity / rate &+ 1)
            s.icmpTokens = min(capacity, s.icmpTokens &+ elapsed &* rate)
        }
        s.icmpLastRefill = max(s.icmpLastRefill, t)
        let ok = s.icmpTokens >= 1_000_000_000
        if ok { s.icmpTokens &-= 1_000_000_000 }
        state.pointee = s
        return ok
    }

    /// Builds an ICMP error about `offending` toward its source, into `generated` (side `.tun`).
    /// Follows RFC 1812 §4.3.2.7: never about an ICMP error, a non-first fragment, or a packet
    /// to/from a broadcast, multicast or invalid address; quotes as much of the offending datagram
    /// as fits in 576 bytes; rate-limited. Returns whether one was generated.
    func sendICMPError(
        about offending: IPv4Header, length: Int, type: UInt8, code: UInt8, mtu: UInt16, origin: Int,
        into generated: inout PacketBatch, topology: Topology, now: Timestamp
    ) -> Bool {
        if offending.fragmentOffset != 0 { return false }
        if Self.isMartian(offending.sourceAddress) || Self.isMartian(offending.destinationAddress) { return false }
        let headerLength = offending.headerLength
        if offending.protocolNumber == IPProtocolNumber.icmp {
            // An ICMP packet too short to show its type is treated as an error message: say nothing.
            guard length >= headerLength &+ 1 else { return false }
            if ICMPHeader.isError(type: offending.base.load(fromByteOffset: headerLength, as: UInt8.self)) {
                return false
            }
        }
        guard takeICMPToken(now: now) else {
            count(.icmpRateLimited)
            return false
        }
        let quote = min(length, 576 &- 28)
        let total = 28 &+ quote
        guard let p = generated.appendSlot(length: total, origin: origin, time: now) else { return false }
        // Safe: the slot holds `total` bytes: 20 (IP) + 8 (ICMP) + quote.
        let ip = IPv4Header(unchecked: p)
        p.storeBytes(of: 0x45, as: UInt8.self)
        // Precedence "internetwork control", as Linux marks the ICMP errors it sends.
        ip.typeOfService = 0xC0
        ip.totalLength = UInt16(truncatingIfNeeded: total)
        ip.identification = takeIdentification()
        ip.flagsAndFragmentOffset = 0
        ip.timeToLive = 64
        ip.protocolNumber = IPProtocolNumber.icmp
        ip.sourceAddress = topology.icmpSourceAddress
        ip.destinationAddress = offending.sourceAddress
        ip.updateChecksum()
        let icmp = ICMPHeader(unchecked: p.advanced(by: 20))
        icmp.type = type
        icmp.code = code
        icmp.checksum = 0
        icmp.identifier = 0
        icmp.sequenceOrMTU = mtu
        p.advanced(by: 28).copyMemory(from: offending.base, byteCount: quote)
        icmp.checksum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: p.advanced(by: 20), count: 8 &+ quote))
        generated.setSide(.tun, of: generated.count &- 1)
        count(.icmpErrorsSent)
        count(.tunPacketsOut)
        count(.tunBytesOut, total)
        return true
    }
}

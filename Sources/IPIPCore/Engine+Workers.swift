/// Several engines side by side, one per worker thread (docs/decisions.md, "Workers").
///
/// Only SNAT has per-flow state that two workers could disagree about, so only SNAT decides where
/// a packet must be processed; everything else (encapsulation, decapsulation, native forwarding)
/// is stateless and runs on whichever worker read the packet. The split follows VPP's NAT44:
/// - **Outbound** (egress to be translated): the worker is named by a hash of the inside source
///   address, so every flow of one inside endpoint meets the same mapping table and
///   endpoint-independent mapping holds across destinations (RFC 4787 REQ-1);
/// - **Inbound** (replies to the node IP): each worker hands out external ports from its own
///   slice of `natPortRange`, so a reply's destination port (an echo reply's identifier, the
///   quoted source port of an ICMP error) names the worker that owns its session.
/// A packet that lands on another worker is handed over (a bounded queue, see the dataplane).
/// ICMP frag-needed about our own tunnel changes per-peer soft state every worker keeps: the
/// worker that reads it processes it, and every other worker absorbs a copy
/// (`absorbPathMTUReport`) without counting it again.
///
/// With one worker every function here answers "this worker" and the engine behaves exactly as
/// it always has: the whole port range, preservation of any free port in it.
public struct WorkerShare: Sendable, Equatable, CustomStringConvertible {
    /// This worker's index, `0..<count`.
    public var index: Int
    /// How many workers share the node.
    public var count: Int

    /// The only worker.
    public static let single = WorkerShare(index: 0, count: 1)

    public init(index: Int, count: Int) {
        precondition(count >= 1 && index >= 0 && index < count, "worker \(index) of \(count)")
        self.index = index
        self.count = count
    }

    public var description: String { "worker \(index) of \(count)" }

    /// Workers that own a port slice: all of them, unless the range has fewer ports than workers.
    @inlinable
    public static func natWorkers(range: ClosedRange<UInt16>, workers: Int) -> Int {
        min(workers, Int(range.upperBound) - Int(range.lowerBound) + 1)
    }

    /// The external ports worker `worker` hands out: slice `worker` of `range` cut into
    /// `natWorkers` contiguous parts of (nearly) equal size; nil for a worker without a slice.
    public static func natSlice(of range: ClosedRange<UInt16>, worker: Int, workers: Int) -> ClosedRange<UInt16>? {
        let n = natWorkers(range: range, workers: workers)
        guard worker < n else { return nil }
        let size = Int(range.upperBound) - Int(range.lowerBound) + 1
        // Slice i holds the ports p with (p - lo) * n / size == i (see `natOwner`).
        let lo = Int(range.lowerBound) + (worker * size + n - 1) / n
        let hi = Int(range.lowerBound) + ((worker + 1) * size + n - 1) / n - 1
        return UInt16(lo)...UInt16(hi)
    }

    /// The worker whose slice holds `port`; nil outside `range`.
    @inlinable
    public static func natOwner(port: UInt16, range: ClosedRange<UInt16>, workers: Int) -> Int? {
        guard range.contains(port) else { return nil }
        let size = Int(range.upperBound) - Int(range.lowerBound) + 1
        return (Int(port) - Int(range.lowerBound)) * natWorkers(range: range, workers: workers) / size
    }

    /// The worker that translates outbound traffic of inside address `source`.
    @inlinable
    public static func outboundOwner(source: UInt32, range: ClosedRange<UInt16>, workers: Int) -> Int {
        let h = (UInt64(source) &* 0x9E37_79B9_7F4A_7C15) >> 32
        return Int(h % UInt64(natWorkers(range: range, workers: workers)))
    }
}

extension Engine {
    /// `egressOwner`/`ingressOwner`: any worker may process the packet (it has no SNAT state).
    public static let anyWorker = -1
    /// `ingressOwner`: process it here, and let every other worker absorb it too (frag-needed
    /// about our tunnel: path MTU soft state).
    public static let everyWorker = -2

    /// The port range this engine's NAT hands out, for its `WorkerShare` (the whole range for
    /// the only worker, or for a worker without a slice: it is never given outbound traffic).
    static func natRange(_ range: ClosedRange<UInt16>, share: WorkerShare) -> ClosedRange<UInt16> {
        guard share.count > 1 else { return range }
        return WorkerShare.natSlice(of: range, worker: share.index, workers: share.count) ?? range
    }

    /// The worker that must process this packet read from the TUN: for traffic the engine will
    /// translate (destination outside every pool and block, source in a natOutgoing pool), the
    /// owner of its inside source address; else `anyWorker`. Reads at most the fixed header;
    /// validation is the engine's job (a malformed packet is `anyWorker` and dropped where it is).
    public func egressOwner(_ packet: UnsafeRawBufferPointer) -> Int {
        let share = configuration.worker
        guard share.count > 1, topology.hasNATOutgoing, packet.count >= 20, packet[0] >> 4 == 4 else {
            return Self.anyWorker
        }
        let destination = IPv4Address(
            rawValue: UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        guard topology.table.lookup(destination) == nil else { return Self.anyWorker }
        let source = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        guard sourceNeedsSNAT(IPv4Address(rawValue: source), topology: topology) else { return Self.anyWorker }
        return WorkerShare.outboundOwner(source: source, range: topology.natPortRange, workers: share.count)
    }

    /// The worker that must process this packet read from the uplink: for a packet to the node IP
    /// that may belong to an SNAT session (TCP, UDP, ICMP echo reply, an ICMP error quoting one
    /// of our translated packets), the owner of its external port; `everyWorker` for a
    /// frag-needed quoting one of our outer headers; else `anyWorker` (IP-in-IP, everything the
    /// engine will drop). Reads only bytes the packet has.
    public func ingressOwner(_ packet: UnsafeRawBufferPointer) -> Int {
        let share = configuration.worker
        guard share.count > 1, packet.count >= 20, packet[0] >> 4 == 4 else { return Self.anyWorker }
        let proto = packet[9]
        guard proto != IPProtocolNumber.ipInIP,
            UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
                == topology.localAddress.rawValue,
            packet.loadUnaligned(fromByteOffset: 6, as: UInt16.self).bigEndian & 0x1FFF == 0
        else { return Self.anyWorker }
        let hl = Int(packet[0] & 0x0F) &* 4
        guard hl >= 20, packet.count >= hl &+ 8 else { return Self.anyWorker }
        let range = topology.natPortRange
        let port: UInt16
        switch proto {
        case IPProtocolNumber.tcp, IPProtocolNumber.udp:
            port = packet.loadUnaligned(fromByteOffset: hl &+ 2, as: UInt16.self).bigEndian
        case IPProtocolNumber.icmp:
            let type = packet[hl]
            if type == ICMPType.echoReply {
                port = packet.loadUnaligned(fromByteOffset: hl &+ 4, as: UInt16.self).bigEndian
            } else if ICMPHeader.isError(type: type) {
                // The quoted packet is one we sent: its source port (or echo identifier) is ours.
                let q = hl &+ 8
                guard packet.count >= q &+ 20, packet[q] >> 4 == 4 else { return Self.anyWorker }
                let qhl = Int(packet[q] & 0x0F) &* 4
                let qproto = packet[q &+ 9]
                if qproto == IPProtocolNumber.ipInIP {
                    return type == ICMPType.destinationUnreachable
                        && packet[hl &+ 1] == ICMPUnreachableCode.fragmentationNeeded
                        ? Self.everyWorker : Self.anyWorker
                }
                guard qhl >= 20, packet.count >= q &+ qhl &+ 8 else { return Self.anyWorker }
                switch qproto {
                case IPProtocolNumber.tcp, IPProtocolNumber.udp:
                    port = packet.loadUnaligned(fromByteOffset: q &+ qhl, as: UInt16.self).bigEndian
                case IPProtocolNumber.icmp:
                    port = packet.loadUnaligned(fromByteOffset: q &+ qhl &+ 4, as: UInt16.self).bigEndian
                default:
                    return Self.anyWorker
                }
            } else {
                return Self.anyWorker
            }
        default:
            return Self.anyWorker
        }
        return WorkerShare.natOwner(port: port, range: range, workers: share.count) ?? Self.anyWorker
    }

    /// Takes in what a frag-needed about our tunnel teaches (the peer's lower path MTU), as
    /// another worker processed it: the same checks and the same update as the ingress path,
    /// but no verdict and no counters. Anything else is ignored. Returns whether it lowered a
    /// path MTU.
    @discardableResult
    public func absorbPathMTUReport(_ packet: UnsafeRawBufferPointer, now: Timestamp) -> Bool {
        guard case .valid(_, let totalLength) = IPv4Header.validate(packet), totalLength <= packet.count else {
            return false
        }
        let ip = IPv4Header(unchecked: UnsafeMutableRawPointer(mutating: packet.baseAddress!))
        guard ip.destinationAddress == topology.localAddress, ip.protocolNumber == IPProtocolNumber.icmp,
            !configuration.verifyHeaderChecksums || ip.hasValidChecksum,
            ip.fragmentOffset == 0, !ip.moreFragments,
            totalLength &- ip.headerLength >= ICMPHeader.minimumByteCount &+ IPv4Header.minimumByteCount
        else { return false }
        let icmp = ICMPHeader(unchecked: ip.base.advanced(by: ip.headerLength))
        guard icmp.type == ICMPType.destinationUnreachable, icmp.code == ICMPUnreachableCode.fragmentationNeeded else {
            return false
        }
        let quoted = IPv4Header(unchecked: icmp.base.advanced(by: ICMPHeader.minimumByteCount))
        guard quoted.version == 4, quoted.protocolNumber == IPProtocolNumber.ipInIP,
            quoted.sourceAddress == topology.localAddress,
            let node = topology.peers.lookup(quoted.destinationAddress), node != Topology.externalPeer
        else { return false }
        return lowerPathMTU(toNode: Int(node), reported: Int(icmp.sequenceOrMTU), now: now)
    }

    /// Lowers the learned path MTU to node `n` to `reported` (raised to `minimumPathMTU`) if that
    /// is below what holds now; RFC 1191 §5: a zero next-hop MTU teaches nothing.
    func lowerPathMTU(toNode n: Int, reported: Int, now: Timestamp) -> Bool {
        guard reported > 0 else { return false }
        let mtu = max(reported, configuration.minimumPathMTU)
        let current = learnedPathMTU(toNode: n, now: now) ?? (topology.tunnelMTU &+ Topology.encapsulationOverhead)
        guard mtu < current else { return false }
        pathMTUs.mtu[n] = UInt16(truncatingIfNeeded: mtu)
        pathMTUs.expiry[n] = now.totalNanoseconds &+ configuration.pathMTUExpirySeconds &* 1_000_000_000
        return true
    }
}

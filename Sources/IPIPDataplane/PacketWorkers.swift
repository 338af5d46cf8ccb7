import Foundation
import IPIPCore
import IPIPLinux
import Synchronization

/// One worker's queues to and from every other worker (indexed by the other worker; nil at its
/// own index): handed-over egress packets, ingress packets, and path MTU reports to absorb.
/// Each queue has exactly one producer (the `...To` side of one worker) and one consumer (the
/// `...From` side of the other).
final class WorkerLinks: @unchecked Sendable {
    let index: Int
    let count: Int
    let egressTo: [HandoffQueue?]
    let ingressTo: [HandoffQueue?]
    let reportsTo: [HandoffQueue?]
    let egressFrom: [HandoffQueue?]
    let ingressFrom: [HandoffQueue?]
    let reportsFrom: [HandoffQueue?]
    /// Every queue this worker consumes.
    let inbound: [HandoffQueue]

    init(
        index: Int, count: Int, egressTo: [HandoffQueue?], ingressTo: [HandoffQueue?], reportsTo: [HandoffQueue?],
        egressFrom: [HandoffQueue?], ingressFrom: [HandoffQueue?], reportsFrom: [HandoffQueue?]
    ) {
        self.index = index
        self.count = count
        self.egressTo = egressTo
        self.ingressTo = ingressTo
        self.reportsTo = reportsTo
        self.egressFrom = egressFrom
        self.ingressFrom = ingressFrom
        self.reportsFrom = reportsFrom
        inbound = (egressFrom + ingressFrom + reportsFrom).compactMap { $0 }
    }

    /// Consumer side: whether any queue to this worker may hold something.
    @inline(__always)
    var hasInbound: Bool {
        for q in inbound where q.mayHaveEntries { return true }
        return false
    }

    /// The links of `count` workers: for every ordered pair (a, b) one queue of each kind.
    static func mesh(count: Int, packetQueueByteCount: Int = 4 << 20) -> [WorkerLinks] {
        func grid(_ bytes: Int) -> [[HandoffQueue?]] {
            (0..<count).map { a in (0..<count).map { b in a == b ? nil : HandoffQueue(byteCount: bytes) } }
        }
        let egress = grid(packetQueueByteCount)
        let ingress = grid(packetQueueByteCount)
        let reports = grid(256 << 10)
        return (0..<count).map { w in
            WorkerLinks(
                index: w, count: count,
                egressTo: egress[w], ingressTo: ingress[w], reportsTo: reports[w],
                egressFrom: (0..<count).map { egress[$0][w] }, ingressFrom: (0..<count).map { ingress[$0][w] },
                reportsFrom: (0..<count).map { reports[$0][w] })
        }
    }
}

/// The live daemon's workers (docs/decisions.md, "Workers"): one `PacketLoop` per worker, each
/// with its own engine (its `WorkerShare`: a slice of the NAT ports), devices (a TUN queue, a
/// capture socket of the fanout group, a transmit path) and batches, on a thread of its own.
/// Nothing mutable is shared on the per-packet path: the workers meet only in the handoff
/// queues between them.
///
/// From the control thread: `publish` hands a new topology to every worker (each installs it
/// before its next batch, so no batch mixes two topologies); `latestSnapshot` adds the workers'
/// counters up and keeps each worker's own (`MetricsSnapshot.workers`); `stop` stops them all.
public final class PacketWorkers<IO: DatapathIO>: @unchecked Sendable {
    public let loops: [PacketLoop<IO>]
    var threads: [Thread] = []

    /// - Parameters:
    ///   - ios: one device set per worker.
    ///   - engines: one engine per worker, `engines[i].configuration.worker` = worker i of N.
    ///   - recorders: the flight recorder's rings, one per worker (nil: the recorder is off).
    ///   - monitorEvents: events each worker's monitor ring holds (`MonitorRing`); 0 gives the
    ///     loops no ring, so no monitor can attach.
    public init(
        ios: [IO], engines: [Engine], batchSize: Int = 64, spinMicroseconds: Int = 0,
        recorders: [LoopRecorder]? = nil, monitorEvents: Int = 0
    ) {
        precondition(recorders == nil || recorders!.count == engines.count, "one recorder per worker")
        precondition(ios.count == engines.count && !ios.isEmpty, "one engine per worker")
        for (i, e) in engines.enumerated() {
            precondition(
                e.configuration.worker == WorkerShare(index: i, count: engines.count),
                "engine \(i) has \(e.configuration.worker)")
        }
        loops = zip(ios, engines).enumerated().map { i, pair in
            PacketLoop(
                io: pair.0, engine: pair.1, batchSize: batchSize, spinMicroseconds: spinMicroseconds,
                monitor: monitorEvents > 0
                    ? MonitorRing(capacity: monitorEvents, batchCapacity: batchSize, worker: i) : nil)
        }
        if let recorders {
            for (l, r) in zip(loops, recorders) { l.recorder = r }
        }
        if loops.count > 1 {
            let links = WorkerLinks.mesh(count: loops.count)
            for (i, l) in loops.enumerated() {
                l.links = links[i]
                l.peers = loops
            }
        }
    }

    public var count: Int { loops.count }

    /// The loops' monitor rings, in worker order (empty without them).
    public var monitorRings: [MonitorRing] { loops.compactMap(\.monitor) }

    /// Starts one thread per worker (`ipipd-worker-N`).
    public func start() {
        for (i, l) in loops.enumerated() {
            let run = LoopRunner(l.run)
            let t = Thread { run.body() }
            t.name = "ipipd-worker-\(i)"
            t.start()
            threads.append(t)
        }
    }

    /// Hands a new topology to every worker: the first takes it, every other worker a replica of
    /// its own (`Topology.replica()`), so no two workers write one object's reference count.
    public func publish(_ topology: Topology) {
        for (i, l) in loops.enumerated() { l.publish(i == 0 ? topology : topology.replica()) }
    }

    /// Stops every worker and waits for their threads.
    public func stop() {
        for l in loops { l.stop() }
        while threads.contains(where: { !$0.isFinished }) { MonotonicClock.sleep(seconds: 0.005) }
        for l in loops { l.peers = [] }
    }

    public func refreshSnapshot() {
        for l in loops { l.refreshSnapshot() }
    }

    /// The first worker's failure, if one failed.
    public var failure: String? {
        for l in loops { if let f = l.failure.withLock({ $0 }) { return f } }
        return nil
    }

    /// The workers' snapshots added up, each also kept in `workers`.
    public func latestSnapshot() -> MetricsSnapshot {
        MetricsSnapshot.combining(loops.map { $0.latestSnapshot() })
    }
}

/// A loop's `run`, handed to its thread.
struct LoopRunner: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

extension MetricsSnapshot {
    /// Device counters that describe shared state (the next-hop table every worker receives)
    /// rather than work done: combined by taking one worker's value, not the sum.
    static let sharedIOCounters: Set<String> = ["next_hops_resolved", "next_hops_unresolved"]

    /// The sum of the workers' snapshots; with more than one, each is kept in `workers`.
    public static func combining(_ parts: [MetricsSnapshot]) -> MetricsSnapshot {
        guard parts.count > 1 else { return parts.first ?? MetricsSnapshot() }
        var s = MetricsSnapshot()
        var counters: EngineCounters?
        for p in parts {
            if let c = p.counters {
                if counters == nil { counters = c } else { counters!.add(c) }
            }
            s.natSessions += p.natSessions
            s.natMappings += p.natMappings
            s.natPortsInRange += p.natPortsInRange
            s.peers = PeerCounters.combining(s.peers, p.peers)
            for (k, v) in p.ioDrops { s.ioDrops[k, default: 0] &+= v }
            for (k, v) in p.ioCounters {
                if sharedIOCounters.contains(k) {
                    s.ioCounters[k] = max(s.ioCounters[k] ?? 0, v)
                } else {
                    s.ioCounters[k, default: 0] &+= v
                }
            }
        }
        s.counters = counters
        s.workers = parts
        return s
    }
}

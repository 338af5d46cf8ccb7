import IPIPCore
import IPIPLinux
import Synchronization

/// The device side of the packet loop: where batches come from and go to. The live daemon's
/// implementation is the TUN, the uplink capture and the raw socket (`LinuxDatapath`); tests use
/// an in-memory one.
///
/// Contract: called from the packet-loop thread only, except `wake()`, which any thread (or a
/// signal handler) may call. Reads append to the batch at its headroom and return how many
/// packets they added; sends and writes handle every slot whose side matches and return how many
/// were lost (counted by the implementation as I/O drops).
public protocol DatapathIO: AnyObject {
    /// Blocks until a side is readable, `wake()` is called, or the timeout passes.
    func wait(timeoutMilliseconds: Int32) throws -> (tun: Bool, uplink: Bool)
    func readTUN(into batch: inout PacketBatch, time: Timestamp) throws -> Int
    func readUplink(into batch: inout PacketBatch, time: Timestamp) throws -> Int
    func sendUnderlay(_ batch: borrowing PacketBatch) -> Int
    func writeTUN(_ batch: borrowing PacketBatch) -> Int
    /// Hands the host-side packets ipipd generated itself (ICMP errors toward workloads) to the
    /// host. The default writes them into the TUN like any other.
    func deliverGenerated(_ batch: borrowing PacketBatch) -> Int
    func wake()
    /// Losses at the devices so far, by cause (metrics).
    var ioDrops: [String: UInt64] { get }
    /// Other device counters (super-packets read and written, frames per transmit path), for metrics.
    var ioCounters: [String: UInt64] { get }
    /// Which super-packets `writeTUN` takes whole; the loop coalesces toward the TUN accordingly.
    var tunOffloads: TUNOffloadSupport { get }
}

extension DatapathIO {
    public func deliverGenerated(_ batch: borrowing PacketBatch) -> Int { writeTUN(batch) }
    public var ioCounters: [String: UInt64] { [:] }
    public var tunOffloads: TUNOffloadSupport { TUNOffloadSupport(tcp: false, udp: false) }
}

/// Which super-packets a TUN write takes whole (virtio headers; USO for UDP).
public struct TUNOffloadSupport: Sendable, Equatable {
    public var tcp: Bool
    public var udp: Bool
    public init(tcp: Bool, udp: Bool) {
        self.tcp = tcp
        self.udp = udp
    }
}

/// The packet loop: one thread, one engine, batches in both directions. The live daemon runs
/// one per worker (`PacketWorkers`), each on its own TUN queue, capture socket and transmit path.
///
/// Per iteration: take a newly published topology if there is one (an atomic generation check,
/// then a lock only when it changed: the loop never pauses for a reload), wait for the devices,
/// then per readable side read a batch, run the engine, and hand the in-place and generated
/// outputs to their sides. Packets from the uplink that go to the TUN are coalesced first
/// (`TUNCoalescer`, when the TUN takes super-packets), so a TCP flow's segments leave in one
/// write. Every second (and on request) it publishes a counters snapshot that other threads read
/// for `/metrics` and SIGUSR1.
///
/// With other workers (`links`): after each read, packets whose SNAT session another worker owns
/// (`Engine.egressOwner`, `ingressOwner`) go into that worker's handoff queue instead of this
/// engine, and the loop also drains the queues other workers fill for it; a worker about to
/// sleep says so (`sleeping`), and a worker that handed it packets wakes it.
///
/// Wake-ups: with `spinMicroseconds` > 0, after a batch the loop polls without sleeping for that
/// long before it blocks in `poll` again, so a packet that follows soon (a round trip, the next
/// burst) finds it awake.
///
/// Flight recorder (`recorder`, `--record-buffer`): `process` records each input batch as the
/// engine gets it and patches the engine's verdicts in after, and between iterations the loop
/// hands a copy of its rings over when a recording asks for one (docs/flight-recorder.md).
///
/// Hazards: the engine and batches belong to the loop thread; nothing else may touch them.
/// `stop()` and `publish(_:)` are the only ways in from outside (and the recorder's dump request).
public final class PacketLoop<IO: DatapathIO>: @unchecked Sendable {
    let io: IO
    let engine: Engine
    let batchSize: Int
    let spinNanoseconds: Int64
    let pendingTopology = Mutex<Topology?>(nil)
    let topologyGeneration = Atomic<Int>(0)
    let stopRequested = Atomic<Bool>(false)
    let snapshotRequested = Atomic<Bool>(false)
    let snapshot = Mutex<MetricsSnapshot>(MetricsSnapshot())
    /// The loop thread's coalescer (read by `publishSnapshot` on the same thread).
    var coalescer: TUNCoalescer?
    /// Set when the loop ended because of an I/O error.
    public let failure = Mutex<String?>(nil)
    /// This worker's queues to and from the other workers, and the other workers' loops (set by
    /// `PacketWorkers` before `run`); nil when it is the only worker.
    var links: WorkerLinks?
    var peers: [PacketLoop<IO>] = []
    /// True while the loop is (about to be) blocked in `poll` with nothing handed to it.
    let sleeping = Atomic<Bool>(false)
    // Handoff counters (loop thread only).
    var handedOff: UInt64 = 0
    var handoffFull: UInt64 = 0
    var handoffReceived: UInt64 = 0
    var reportsSent: UInt64 = 0
    var reportsAbsorbed: UInt64 = 0
    var wakeupsSent: UInt64 = 0
    /// Bit w set: this iteration handed worker w something (wake it if it sleeps).
    var pendingWakes: UInt64 = 0
    /// The health checks' heartbeat: monotonic nanoseconds of the loop's last turn, stored
    /// (relaxed) once per iteration, never per packet; 0 before the first. The loop wakes at
    /// least every 100 ms when idle, so an old value means a stuck loop (docs/health.md).
    public let heartbeat = Atomic<Int64>(0)
    /// Debug (FelixConfiguration `debugSimulateDataplaneHangAfter`): once the monotonic clock
    /// passes this many nanoseconds the loop blocks, without turning, until `stop()`; the
    /// default never comes. One relaxed load per iteration.
    let hangAt = Atomic<Int64>(Int64.max)
    /// Set while the loop blocks in a simulated hang.
    public let hanging = Atomic<Bool>(false)
    /// The flight recorder's rings for this loop (`--record-buffer`), set before `run`; nil when
    /// the recorder is off, which costs `process` one nil check per batch.
    public var recorder: LoopRecorder?
    /// The monitor's ring (`ipipctl monitor`); nil when nothing can attach (no control socket).
    /// Unattached, it costs `process` one relaxed load per batch. A `let`, so that reading it
    /// per batch needs no retain.
    let monitor: MonitorRing?

    public init(
        io: IO, engine: Engine, batchSize: Int = 64, spinMicroseconds: Int = 0, monitor: MonitorRing? = nil
    ) {
        self.monitor = monitor
        self.io = io
        self.engine = engine
        self.batchSize = batchSize
        spinNanoseconds = Int64(max(0, spinMicroseconds)) * 1000
    }
    /// Hands a new topology to the loop; it is installed before the next batch.
    public func publish(_ topology: Topology) {
        pendingTopology.withLock { $0 = topology }
        topologyGeneration.add(1, ordering: .releasing)
        io.wake()
    }

    /// Asks the loop to finish its current batch and return.
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        io.wake()
    }

    /// Makes the loop hang (block without turning, until `stop()`) once the monotonic clock
    /// passes `nanoseconds`: Felix's `debugSimulateDataplaneHangAfter`, for testing liveness.
    public func simulateHang(atNanoseconds nanoseconds: Int64) {
        hangAt.store(nanoseconds, ordering: .relaxed)
        io.wake()
    }

    /// The latest published counters (at most a second old, or fresh after `refreshSnapshot`).
    public func latestSnapshot() -> MetricsSnapshot { snapshot.withLock { $0 } }

    /// Asks the loop to publish a snapshot at its next iteration.
    public func refreshSnapshot() {
        snapshotRequested.store(true, ordering: .relaxed)
        io.wake()
    }

    /// The engine's monotonic clock.
    public static func now() -> Timestamp {
        let t = MonotonicClock.now()
        return Timestamp(seconds: t.seconds, nanoseconds: t.nanoseconds)
    }

    /// Runs until `stop()`; returns normally, or after recording `failure` on a fatal I/O error.
    public func run() {
        var batch = PacketBatch(capacity: batchSize)
        // Packets read from the TUN are at most its MTU, so fragmentation makes a few pieces at
        // most (a learned path MTU is never below 552) and ICMP errors one per packet: eight
        // generated slots per input are plenty; running out is a counted drop (`output_full`).
        var generated = PacketBatch(
            capacity: batchSize * 8,
            maximumPacketByteCount: min(PacketBatch.maximumPacketByteCount, 9216 + 20))
        var verdicts = VerdictBatch(capacity: batchSize)
        let offloads = io.tunOffloads
        let coalescer = offloads.tcp ? TUNCoalescer(batchCapacity: batchSize, coalescesUDP: offloads.udp) : nil
        self.coalescer = coalescer
        let links = self.links
        var seenGeneration = 0
        var lastSnapshot: Int64 = 0
        var spinUntil: Int64 = 0
        recorder?.waker.withLock { $0 = { [weak self] in self?.io.wake() } }
        publishSnapshot()
        heartbeat.store(Self.now().totalNanoseconds, ordering: .relaxed)
        while !stopRequested.load(ordering: .relaxed) {
            let generation = topologyGeneration.load(ordering: .acquiring)
            if generation != seenGeneration {
                seenGeneration = generation
                if let t = pendingTopology.withLock({ p -> Topology? in
                    defer { p = nil }
                    return p
                }) {
                    engine.replaceTopology(t)
                }
            }
            do {
                var timeout: Int32 = 100
                if spinNanoseconds > 0 && Self.now().totalNanoseconds < spinUntil {
                    timeout = 0
                } else if let links {
                    // Say we sleep, then look at the queues once more: a worker that enqueues
                    // after this sees the flag and wakes us (both sides fence in between).
                    sleeping.store(true, ordering: .relaxed)
                    atomicMemoryFence(ordering: .sequentiallyConsistent)
                    if links.hasInbound { timeout = 0 }
                }
                let ready = try io.wait(timeoutMilliseconds: timeout)
                if links != nil { sleeping.store(false, ordering: .relaxed) }
                var worked = false
                if ready.tun {
                    batch.removeAll()
                    if try io.readTUN(into: &batch, time: Self.now()) > 0 {
                        worked = true
                        if let links { steer(&batch, egress: true, links: links) }
                        if batch.count > 0 {
                            process(&batch, egress: true, &generated, &verdicts, coalescer)
                        }
                    }
                }
                if ready.uplink {
                    batch.removeAll()
                    if try io.readUplink(into: &batch, time: Self.now()) > 0 {
                        worked = true
                        if let links { steer(&batch, egress: false, links: links) }
                        if batch.count > 0 {
                            process(&batch, egress: false, &generated, &verdicts, coalescer)
                        }
                    }
                }
                if let links {
                    if links.hasInbound {
                        worked = true
                        drain(links, &batch, &generated, &verdicts, coalescer)
                    }
                    if pendingWakes != 0 { wakePeers() }
                }
                if worked && spinNanoseconds > 0 { spinUntil = Self.now().totalNanoseconds &+ spinNanoseconds }
            } catch {
                failure.withLock { $0 = "\(error)" }
                break
            }
            // A recording asked for: copy the rings between two batches (docs/flight-recorder.md).
            recorder?.serviceDump(engine)
            let t = Self.now().totalNanoseconds
            heartbeat.store(t, ordering: .relaxed)
            if t >= hangAt.load(ordering: .relaxed) { hang() }
            if t &- lastSnapshot >= 1_000_000_000 || snapshotRequested.exchange(false, ordering: .relaxed) {
                lastSnapshot = t
                publishSnapshot()
            }
        }
        publishSnapshot()
    }

    /// The simulated hang: blocks (sleeps, never spins) without turning, so the heartbeat goes
    /// stale, until `stop()`, so that shutdown still cleans up.
    func hang() {
        hanging.store(true, ordering: .relaxed)
        while !stopRequested.load(ordering: .relaxed) { MonotonicClock.sleep(seconds: 0.1) }
        hanging.store(false, ordering: .relaxed)
    }

    /// Takes out of `batch` the packets another worker must process and queues them for it
    /// (order kept among those that stay); a frag-needed about our tunnel stays and a copy goes
    /// to every other worker. A full queue loses the packet, counted (`handoff_full`).
    func steer(_ batch: inout PacketBatch, egress: Bool, links: WorkerLinks) {
        let me = links.index
        var kept = 0
        for i in 0..<batch.count {
            let p = UnsafeRawBufferPointer(batch.packet(i))
            var owner = egress ? engine.egressOwner(p) : engine.ingressOwner(p)
            if owner == Engine.everyWorker {
                for w in 0..<links.count where w != me {
                    if links.reportsTo[w]!.enqueue(p, offload: .none, time: batch.time(of: i)) {
                        reportsSent &+= 1
                        pendingWakes |= 1 << UInt64(w)
                    } else {
                        handoffFull &+= 1
                    }
                }
                owner = me
            }
            if owner >= 0 && owner != me {
                let q = egress ? links.egressTo[owner]! : links.ingressTo[owner]!
                if q.enqueue(p, offload: batch.offload(of: i), time: batch.time(of: i)) {
                    handedOff &+= 1
                    pendingWakes |= 1 << UInt64(owner)
                } else {
                    handoffFull &+= 1
                }
                continue
            }
            if kept != i { batch.moveSlot(i, to: kept) }
            kept &+= 1
        }
        if kept != batch.count { batch.truncate(to: kept) }
    }

    /// Processes what other workers handed this one: one batch per queue per call.
    func drain(
        _ links: WorkerLinks, _ batch: inout PacketBatch, _ generated: inout PacketBatch,
        _ verdicts: inout VerdictBatch, _ coalescer: TUNCoalescer?
    ) {
        for w in 0..<links.count where w != links.index {
            let e = links.egressFrom[w]!
            if e.mayHaveEntries {
                batch.removeAll()
                if e.dequeue(into: &batch) > 0 {
                    handoffReceived &+= UInt64(batch.count)
                    process(&batch, egress: true, &generated, &verdicts, coalescer)
                }
            }
            let g = links.ingressFrom[w]!
            if g.mayHaveEntries {
                batch.removeAll()
                if g.dequeue(into: &batch) > 0 {
                    handoffReceived &+= UInt64(batch.count)
                    process(&batch, egress: false, &generated, &verdicts, coalescer)
                }
            }
            let r = links.reportsFrom[w]!
            if r.mayHaveEntries {
                batch.removeAll()
                if r.dequeue(into: &batch) > 0 {
                    for i in 0..<batch.count {
                        engine.absorbPathMTUReport(UnsafeRawBufferPointer(batch.packet(i)), now: batch.time(of: i))
                    }
                    reportsAbsorbed &+= UInt64(batch.count)
                }
            }
        }
    }

    /// Wakes the workers this iteration handed packets to, those that sleep (or are about to).
    func wakePeers() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        var m = pendingWakes
        pendingWakes = 0
        while m != 0 {
            let w = m.trailingZeroBitCount
            m &= m &- 1
            if peers[w].sleeping.load(ordering: .relaxed) {
                peers[w].io.wake()
                wakeupsSent &+= 1
            }
        }
    }

    /// One batch through the engine and out: the one place every packet this loop handles
    /// passes, read from its own devices or handed over by another worker, so that whatever
    /// looks at input packets and their verdicts (the monitor, the flight recorder) hooks in
    /// here, before the engine rewrites the batch in place and after it has decided.
    @inline(__always)
    func process(
        _ batch: inout PacketBatch, egress: Bool, _ generated: inout PacketBatch, _ verdicts: inout VerdictBatch,
        _ coalescer: TUNCoalescer?
    ) {
        // The flight recorder keeps the input as the engine gets it, then the engine's verdicts.
        let recorder = self.recorder
        recorder?.record(batch, egress: egress, scalars: engine.scalarState)
        // The monitor: the input's first bytes before the engine rewrites them, the verdicts after.
        let watching = monitor?.isAttached == true
        if watching { monitor!.stage(batch, egress: egress) }
        if egress {
            engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
        } else {
            engine.processIngress(&batch, generated: &generated, verdicts: &verdicts)
        }
        recorder?.patch(verdicts, count: batch.count, egress: egress)
        if watching { monitor!.commit(verdicts, count: batch.count, mode: monitor!.mode) }
        if !egress { coalescer?.coalesce(batch) }
        emit(batch, generated)
    }

    @inline(__always)
    func emit(_ batch: borrowing PacketBatch, _ generated: borrowing PacketBatch) {
        _ = io.sendUnderlay(batch)
        _ = io.writeTUN(batch)
        if generated.count > 0 {
            _ = io.sendUnderlay(generated)
            _ = io.deliverGenerated(generated)
        }
    }

    func publishSnapshot() {
        // Sessions expire as batches pass; once a second also here, so that a worker without
        // traffic releases its expired sessions and ports too.
        engine.nat.expire(now: Self.now())
        let counters = engine.counterSnapshot
        let nat = engine.nat
        var drops = io.ioDrops
        var io = self.io.ioCounters
        if let c = coalescer {
            io["tun_coalesced_packets"] = c.mergedPackets
            io["tun_coalesced_super_packets"] = c.superPackets
            io["tun_coalesce_checksum_failures"] = c.checksumFailures
        }
        if let links {
            io["handoff_sent"] = handedOff
            io["handoff_received"] = handoffReceived
            io["handoff_reports_sent"] = reportsSent
            io["handoff_reports_absorbed"] = reportsAbsorbed
            io["handoff_wakeups"] = wakeupsSent
            if handoffFull > 0 { drops["handoff_full"] = handoffFull }
            let oversized = links.inbound.reduce(0) { $0 + $1.oversized }
            if oversized > 0 { drops["handoff_oversized"] = oversized }
        }
        let peerCounters = engine.peerCounterSnapshot(now: Self.now())
        snapshot.withLock {
            $0.peers = peerCounters
            $0.ioCounters = io
            $0.counters = counters
            $0.natSessions = nat.count
            $0.natMappings = nat.mappingCount
            $0.natPortsInRange = nat.portRange.count
            $0.ioDrops = drops
        }
    }
}

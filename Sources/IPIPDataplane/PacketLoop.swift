#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import IPIPCore

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

/// The packet loop: one thread, one engine, batches in both directions.
///
/// Per iteration: take a newly published topology if there is one (an atomic generation check,
/// then a lock only when it changed: the loop never pauses for a reload), wait for the devices,
/// then per readable side read a batch, run the engine, and hand the in-place and generated
/// outputs to their sides. Packets from the uplink that go to the TUN are coalesced first
/// (`TUNCoalescer`, when the TUN takes super-packets), so a TCP flow's segments leave in one
/// write. Every second (and on request) it publishes a counters snapshot that other threads read
/// for `/metrics` and SIGUSR1.
///
/// Hazards: the engine and batches belong to the loop thread; nothing else may touch them.
/// `stop()` and `publish(_:)` are the only ways in from outside.
public final class PacketLoop<IO: DatapathIO>: @unchecked Sendable {
    let io: IO
    let engine: Engine
    let batchSize: Int
    let pendingTopology = Mutex<Topology?>(nil)
    let topologyGeneration = Atomic<Int>(0)
    let stopRequested = Atomic<Bool>(false)
    let snapshotRequested = Atomic<Bool>(false)
    let snapshot = Mutex<MetricsSnapshot>(MetricsSnapshot())
    /// The loop thread's coalescer (read by `publishSnapshot` on the same thread).
    var coalescer: TUNCoalescer?
    /// Set when the loop ended because of an I/O error.
    public let failure = Mutex<String?>(nil)

    public init(io: IO, engine: Engine, batchSize: Int = 64) {
        self.io = io
        self.engine = engine
        self.batchSize = batchSize
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

    /// The latest published counters (at most a second old, or fresh after `refreshSnapshot`).
    public func latestSnapshot() -> MetricsSnapshot { snapshot.withLock { $0 } }

    /// Asks the loop to publish a snapshot at its next iteration.
    public func refreshSnapshot() {
        snapshotRequested.store(true, ordering: .relaxed)
        io.wake()
    }

    /// The engine's monotonic clock.
    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    }

    /// Runs until `stop()`; returns normally, or after recording `failure` on a fatal I/O error.
    public func run() {
        var batch = PacketBatch(capacity: batchSize)
        // Packets read from the TUN are at most its MTU, so fragmentation makes a few pieces at
        // most (a learned path MTU is never below 552) and ICMP errors one per packet: eight
        // generated slots per input are plenty; running out is a counted drop (`output_full`).
        var generated = PacketBatch(capacity: batchSize * 8,
                                    maximumPacketByteCount: min(PacketBatch.maximumPacketByteCount, 9216 + 20))
        var verdicts = VerdictBatch(capacity: batchSize)
        let offloads = io.tunOffloads
        let coalescer = offloads.tcp ? TUNCoalescer(batchCapacity: batchSize, coalescesUDP: offloads.udp) : nil
        self.coalescer = coalescer
        var seenGeneration = 0
        var lastSnapshot: Int64 = 0
        publishSnapshot()
        while !stopRequested.load(ordering: .relaxed) {
            let generation = topologyGeneration.load(ordering: .acquiring)
            if generation != seenGeneration {
                seenGeneration = generation
                if let t = pendingTopology.withLock({ p -> Topology? in defer { p = nil }; return p }) {
                    engine.replaceTopology(t)
                }
            }
            do {
                let ready = try io.wait(timeoutMilliseconds: 100)
                if ready.tun {
                    batch.removeAll()
                    if try io.readTUN(into: &batch, time: Self.now()) > 0 {
                        engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
                        emit(batch, generated)
                    }
                }
                if ready.uplink {
                    batch.removeAll()
                    if try io.readUplink(into: &batch, time: Self.now()) > 0 {
                        engine.processIngress(&batch, generated: &generated, verdicts: &verdicts)
                        coalescer?.coalesce(batch)
                        emit(batch, generated)
                    }
                }
            } catch {
                failure.withLock { $0 = "\(error)" }
                break
            }
            let t = Self.now().totalNanoseconds
            if t &- lastSnapshot >= 1_000_000_000 || snapshotRequested.exchange(false, ordering: .relaxed) {
                lastSnapshot = t
                publishSnapshot()
            }
        }
        publishSnapshot()
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
        let counters = engine.counterSnapshot
        let nat = engine.nat
        let drops = io.ioDrops
        var io = self.io.ioCounters
        if let c = coalescer {
            io["tun_coalesced_packets"] = c.mergedPackets
            io["tun_coalesced_super_packets"] = c.superPackets
            io["tun_coalesce_checksum_failures"] = c.checksumFailures
        }
        snapshot.withLock {
            $0.ioCounters = io
            $0.counters = counters
            $0.natSessions = nat.count
            $0.natMappings = nat.mappingCount
            $0.natPortsInRange = nat.portRange.count
            $0.ioDrops = drops
        }
    }
}

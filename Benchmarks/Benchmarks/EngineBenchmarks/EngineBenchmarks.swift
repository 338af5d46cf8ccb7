// Egress dataplane and checksum benchmarks for IPIPCore.
//
// Unit: ONE packet (or one checksum). Every benchmark uses `scalingFactor: .kilo`: one iteration
// pushes 1,000 packets through `Engine.processEgress` in batches of 64 (15 full batches and one
// of 40), so the reported wall clock is nanoseconds per packet, throughput is packets per second
// (in K or M), and `Malloc (total)` is per 1,000 packets: it must be 0.
//
// The engine rewrites its input in place (the encapsulation moves each packet's start back by 20
// bytes into the headroom), so before every batch the input is restored: `removeAll()` and one
// `append(copying:)` per packet from a pristine pool built in `setup:`. The copy is part of the
// timed region; every engine benchmark has a "restore only" twin (same pool, same loop, no
// engine), and the engine's own cost is the difference of the two.
//
// The pristine pool holds about 1 MiB of distinct packets (at least 64), cycled in order, so
// consecutive batches look up different destinations, as a busy node would; the pool is larger
// than L1 and smaller than L2 (2 MiB per core on the reference machine).
//
// Each workload runs one batch in `setup:` and checks the verdicts and counters, so a benchmark
// cannot silently measure a different path (a drop instead of an encapsulation, say).

import Benchmark
import IPIPCore

// MARK: - Deterministic randomness

// SplitMix64 (IPIPCore): a fixed, seeded sequence, so every run benchmarks the same routes and packets.

// MARK: - Topology

/// The workload pool: every block lies in 10.0.0.0/8, IP-in-IP Always.
let poolPrefix = IPv4Prefix(address: IPv4Address(10, 0, 0, 0), length: 8)
/// The source of every inner packet: a workload of the local node (its own block, 10.255.255.0/26).
let localWorkload = IPv4Address(10, 255, 255, 10)

/// A Calico-like cluster seen from `node-0`: `blockCount` remote /26 blocks spread round-robin
/// over `nodeCount` remote nodes (underlay 172.16.0.0/16, one subnet), drawn without repetition
/// from the first 2·blockCount blocks of the pool (a half-used pool, clustered but not
/// contiguous), plus one local block. Routes in the LPM table: blocks + local block + pool.
struct Cluster {
    var spec: TopologySpec
    /// The remote blocks, for choosing destinations.
    var blocks: [IPv4Prefix]
    /// Node IPs, indexed by node number (0 = the local node).
    var nodeAddresses: [IPv4Address]
    let nodeCount: Int

    /// - Parameters:
    ///   - natOutgoing: the pool's `natOutgoing` (SNAT of traffic from workloads to outside every pool).
    ///   - natPortRange: FelixConfiguration `natPortRange` (nil: the default 61000…65535).
    init(
        blockCount: Int, nodeCount: Int = 100, underlayMTU: Int, seed: UInt64 = 0xB10C_2026,
        natOutgoing: Bool = false, natPortRange: ClosedRange<UInt16>? = nil
    ) {
        precondition(2 * blockCount < 1 << 18 - 4, "the /8 pool holds 2^18 /26 blocks")
        var rng = SplitMix64(seed: seed)
        var nodes: [TopologySpec.Node] = [
            .init(name: "node-0", address: IPv4Prefix(address: IPv4Address(172, 16, 0, 1), length: 16))
        ]
        self.nodeCount = nodeCount
        for n in 1...nodeCount {
            nodes.append(
                .init(
                    name: "node-\(n)",
                    address: IPv4Prefix(
                        address: IPv4Address(172, 16, UInt8(n >> 8), UInt8(n & 0xFF) &+ 1),
                        length: 16)))
        }
        nodeAddresses = nodes.map { $0.address!.address }
        var indices = Set<Int>()
        while indices.count < blockCount { indices.insert(rng.next(below: 2 * blockCount)) }
        blocks = indices.sorted().map {
            IPv4Prefix(address: IPv4Address(rawValue: poolPrefix.first.rawValue | UInt32($0) << 6), length: 26)
        }
        var specBlocks = blocks.enumerated().map { i, b in
            TopologySpec.Block(prefix: b, node: "node-\(1 + i % nodeCount)")
        }
        specBlocks.append(.init(prefix: IPv4Prefix(address: IPv4Address(10, 255, 255, 0), length: 26), node: "node-0"))
        spec = TopologySpec(
            localNodeName: "node-0",
            pools: [
                .init(name: "default-ipv4-ippool", prefix: poolPrefix, ipipMode: .always, natOutgoing: natOutgoing)
            ],
            nodes: nodes,
            blocks: specBlocks,
            underlayMTU: underlayMTU,
            natPortRange: natPortRange)
    }

    /// The node IP of the node that owns remote block `blocks[index]`.
    func ownerAddress(ofBlock index: Int) -> IPv4Address { nodeAddresses[1 + index % nodeCount] }

    /// Route count of the compiled LPM table (blocks, the local block and the pool).
    var routeCount: Int { blocks.count + 2 }

    /// A random address inside a random remote block.
    func randomRemoteAddress(_ rng: inout SplitMix64) -> IPv4Address {
        let b = blocks[rng.next(below: blocks.count)]
        return IPv4Address(rawValue: b.first.rawValue | rng.nextUInt32() & ~b.mask)
    }
}

// MARK: - Packets

// The packets are built by IPIPCore's PacketBuilder (the one of gen and the tests) at set-up and
// copied into the benchmark's buffers; nothing here runs in a timed loop.

/// Copies `bytes` to `p`.
func store(_ bytes: [UInt8], into p: UnsafeMutableRawPointer) {
    bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
}

/// An IPv4 header (IHL 5, TOS 0) at `p` for a datagram of `totalLength` bytes, header checksum
/// filled in (the payload after it is the caller's).
func writeIPv4Header(
    into p: UnsafeMutableRawPointer, totalLength: Int, protocolNumber: UInt8, source: IPv4Address,
    destination: IPv4Address, dontFragment: Bool, identification: UInt16, ttl: UInt8 = 63
) {
    var b = PacketBuilder(
        source: source, destination: destination, protocolNumber: protocolNumber, ttl: ttl,
        identification: identification, payload: [UInt8](repeating: 0, count: totalLength - 20))
    b.dontFragment = dontFragment
    store(Array(b.bytes().prefix(20)), into: p)
}

/// An IPv4/UDP datagram of exactly `size` bytes (IHL 5), header checksum filled in, UDP
/// checksum 0 (none, which IPv4 allows). The payload is zeros (the engine never reads it except
/// to copy it).
func writeDatagram(
    into p: UnsafeMutableRawPointer, size: Int, source: IPv4Address, destination: IPv4Address,
    dontFragment: Bool, identification: UInt16
) {
    precondition(size >= 28 && size <= 65535)
    var b = PacketBuilder(
        source: source, destination: destination, ttl: 63, identification: identification,
        payload: PacketBuilder.udp(
            source: source, destination: destination, sourcePort: 40000, destinationPort: 8080,
            payload: [UInt8](repeating: 0, count: size - 28), checksum: false))
    b.dontFragment = dontFragment
    store(b.bytes(), into: p)
}

/// A TCP (protocol 6) or UDP (17) packet of exactly `size` bytes with zero payload, DF set, and
/// valid IPv4 and transport checksums (pseudo-header included; so the NAT's incremental patch
/// of the transport checksum is exercised, unlike with UDP's "no checksum" 0). TCP: sequence and
/// acknowledgment numbers 1, no options, the given flags.
func writeFlowPacket(
    into p: UnsafeMutableRawPointer, size: Int, protocolNumber: UInt8, source: IPv4Address,
    sourcePort: UInt16, destination: IPv4Address, destinationPort: UInt16, tcpFlags: UInt8 = 0x10,
    identification: UInt16
) {
    precondition(protocolNumber == 6 || protocolNumber == 17)
    let l4Length = size - 20
    precondition(l4Length >= (protocolNumber == 6 ? 20 : 8) && size <= 65535)
    let transport =
        protocolNumber == 6
        ? PacketBuilder.tcp(
            source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
            sequence: 1, acknowledgment: 1, flags: tcpFlags, payload: [UInt8](repeating: 0, count: l4Length - 20))
        : PacketBuilder.udp(
            source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
            payload: [UInt8](repeating: 0, count: l4Length - 8))
    store(
        PacketBuilder(
            source: source, destination: destination, protocolNumber: protocolNumber, ttl: 63,
            identification: identification, payload: transport
        ).bytes(), into: p)
}

/// The reply a remote sends to `p` (IHL 5, TCP or UDP): addresses and ports swapped in place.
/// Every checksum stays valid: the IPv4 and pseudo-header sums do not depend on the order of
/// the swapped words. TCP flags are kept (an ACK answers an ACK).
func mirrorFlowPacket(_ p: UnsafeMutableRawPointer) {
    let s = p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
    let d = p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
    p.storeBytes(of: d, toByteOffset: 12, as: UInt32.self)
    p.storeBytes(of: s, toByteOffset: 16, as: UInt32.self)
    let sp = p.loadUnaligned(fromByteOffset: 20, as: UInt16.self)
    let dp = p.loadUnaligned(fromByteOffset: 22, as: UInt16.self)
    p.storeBytes(of: dp, toByteOffset: 20, as: UInt16.self)
    p.storeBytes(of: sp, toByteOffset: 22, as: UInt16.self)
}

/// Pristine input packets in one contiguous allocation, cycled through by the restore loop.
/// Immutable after `init`; freed by `deinit`.
final class PacketPool {
    let storage: UnsafeMutableRawPointer
    /// Start offset and length of each packet in `storage`.
    let starts: UnsafeMutablePointer<Int>
    let lengths: UnsafeMutablePointer<Int>
    let count: Int
    let totalBytes: Int

    /// - Parameters:
    ///   - sizes: the packet sizes, one per packet; each packet starts on a 64-byte boundary.
    ///   - write: called once per packet, in order, with (where, index, size): writes the packet.
    init(sizes: [Int], write: (UnsafeMutableRawPointer, Int, Int) -> Void) {
        count = sizes.count
        totalBytes = sizes.reduce(0) { $0 + ($1 + 63) & ~63 }
        storage = .allocate(byteCount: totalBytes, alignment: 64)
        starts = .allocate(capacity: count)
        lengths = .allocate(capacity: count)
        var at = 0
        for (i, size) in sizes.enumerated() {
            starts[i] = at
            lengths[i] = size
            write(storage + at, i, size)
            at += (size + 63) & ~63
        }
    }

    /// UDP datagrams from `localWorkload` (the egress workloads).
    /// - Parameter destination: called once per packet, in order.
    convenience init(sizes: [Int], dontFragment: Bool, destination: (Int) -> IPv4Address) {
        self.init(sizes: sizes) { p, i, size in
            writeDatagram(
                into: p, size: size, source: localWorkload, destination: destination(i),
                dontFragment: dontFragment, identification: UInt16(truncatingIfNeeded: i))
        }
    }

    deinit {
        storage.deallocate()
        starts.deallocate()
        lengths.deallocate()
    }

    @inline(__always)
    func packet(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + starts[i], count: lengths[i])
    }
}

/// How many packets of these sizes make about 1 MiB (at least 64, a whole number of `sizes`
/// cycles so a mix keeps its ratio).
func poolPacketCount(cycle sizes: [Int], budget: Int = 1 << 20) -> Int {
    let cycleBytes = sizes.reduce(0) { $0 + ($1 + 63) & ~63 }
    let cycles = max(1, budget / cycleBytes, (64 + sizes.count - 1) / sizes.count)
    return cycles * sizes.count
}

// MARK: - Engine workload

/// Packets per batch (the dataplane's batch size).
let batchSize = 64
/// Packets per benchmark iteration (the scaling factor).
let packetsPerIteration = BenchmarkScalingFactor.kilo.rawValue

/// What a workload's check in `setup:` expects of every input packet.
enum ExpectedPath {
    case encapsulated
    case forwarded
    /// Encapsulated as this many fragments.
    case fragmented(Int)
    /// Dropped with fragmentation needed, and an ICMP error generated.
    case icmpFragmentationNeeded
}

/// Which engine entry point a workload drives.
enum Direction {
    /// `processEgress`: packets from local workloads (the TUN).
    case egress
    /// `processIngress`: packets from the underlay.
    case ingress
}

/// An engine, its batches and a pristine packet pool, built in `setup:`. A class because the
/// batches are `~Copyable` and the benchmark closure receives the workload by value.
final class EngineWorkload {
    /// Replaced only between measurements (`Egress SNAT new flows` recreates it when the NAT
    /// table has taken half the port range); read once per `run`.
    var engine: Engine
    let pool: PacketPool
    let direction: Direction
    /// How far the engine's clock advances per batch, in ns.
    let tickNanoseconds: UInt32
    var batch: PacketBatch
    var generated: PacketBatch
    var verdicts: VerdictBatch
    /// Next pool packet to restore.
    var next = 0
    /// The monitor's ring when one is attached: staged before and committed after every batch,
    /// drained at once (what `PacketLoop.process` and the control server do).
    var monitor: MonitorRing?
    /// The engine's clock: packet arrival times, advanced by `tickNanoseconds` per batch.
    var now = Timestamp(seconds: 1_700_000_000)

    init(
        engine: Engine, pool: PacketPool, direction: Direction = .egress, tickNanoseconds: UInt32 = 1_000_000,
        generatedPerInput: Int, maximumGeneratedByteCount: Int
    ) {
        precondition(tickNanoseconds > 0 && tickNanoseconds < 1_000_000_000)
        self.engine = engine
        self.pool = pool
        self.direction = direction
        self.tickNanoseconds = tickNanoseconds
        var largest = 0
        for i in 0..<pool.count { largest = max(largest, pool.lengths[i]) }
        batch = PacketBatch(capacity: batchSize, maximumPacketByteCount: largest)
        generated = PacketBatch(
            capacity: batchSize * generatedPerInput, maximumPacketByteCount: maximumGeneratedByteCount)
        verdicts = VerdictBatch(capacity: batchSize)
    }

    /// An egress workload over a fresh engine for `cluster`, checked against `expected`.
    convenience init(
        cluster: Cluster, configuration: EngineConfiguration = .init(), pool: PacketPool,
        generatedPerInput: Int, maximumGeneratedByteCount: Int, expected: ExpectedPath
    ) {
        self.init(
            engine: makeEngine(cluster, configuration), pool: pool, generatedPerInput: generatedPerInput,
            maximumGeneratedByteCount: maximumGeneratedByteCount)
        check(expected)
    }

    /// Runs one batch and verifies every packet took the expected path; then rewinds the pool.
    func check(_ expected: ExpectedPath) {
        restore(batchSize)
        engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
        for i in 0..<batchSize {
            let v = verdicts[i]
            switch expected {
            case .encapsulated:
                precondition(
                    v.action == .encapsulated && v.outputCount == 1 && batch.side(of: i) == .underlay,
                    "packet \(i): \(v)")
                precondition(batch.packet(i).count == pool.lengths[i] + 20)
            case .forwarded:
                precondition(v.action == .forwarded && batch.side(of: i) == .underlay, "packet \(i): \(v)")
            case .fragmented(let n):
                precondition(v.action == .encapsulated && Int(v.outputCount) == n, "packet \(i): \(v)")
            case .icmpFragmentationNeeded:
                precondition(
                    v.action == .dropped && v.dropReason == .fragmentationNeeded && v.icmpType == 3
                        && v.outputCount == 1, "packet \(i): \(v)")
            }
        }
        switch expected {
        case .fragmented(let n): precondition(generated.count == batchSize * n)
        case .icmpFragmentationNeeded: precondition(generated.count == batchSize)
        default: precondition(generated.count == 0)
        }
        next = 0
    }

    /// Setup only: runs the whole pool once, in order and in batches, through the engine, and
    /// calls `body(pool index, verdict, side, output bytes)` for every packet; then rewinds.
    func processAll(_ body: (Int, PacketVerdict, PacketSide, UnsafeMutableRawBufferPointer) -> Void) {
        next = 0
        var done = 0
        while done < pool.count {
            let n = min(batchSize, pool.count - done)
            restore(n)
            process(engine)
            precondition(generated.count == 0, "unexpected generated packets")
            for i in 0..<n { body(done + i, verdicts[i], batch.side(of: i), batch.packet(i)) }
            done += n
        }
        next = 0
    }

    /// Refills the input batch with the next `count` pristine packets (a copy of each), with the
    /// clock advanced by one tick. One exclusive access to `batch` per call, not one per packet.
    @inline(__always)
    func restore(_ count: Int) {
        var ns = now.nanoseconds &+ tickNanoseconds
        var s = now.seconds
        if ns >= 1_000_000_000 {
            ns &-= 1_000_000_000
            s &+= 1
        }
        now = Timestamp(seconds: s, nanoseconds: ns)
        next = Self.fill(&batch, from: pool, start: next, count: count, time: now)
    }

    /// `removeAll()`, then copies `count` packets from `pool` starting at `start` (wrapping);
    /// returns the next start.
    @inline(__always)
    static func fill(_ batch: inout PacketBatch, from pool: PacketPool, start: Int, count: Int, time: Timestamp) -> Int
    {
        batch.removeAll()
        var n = start
        for _ in 0..<count {
            batch.append(copying: pool.packet(n), time: time)
            n &+= 1
            if n == pool.count { n = 0 }
        }
        return n
    }

    @inline(__always)
    func process(_ engine: Engine) {
        switch direction {
        case .egress: engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
        case .ingress: engine.processIngress(&batch, generated: &generated, verdicts: &verdicts)
        }
    }

    /// The timed loop: `packets` packets, restored and processed a batch at a time.
    func run(packets: Int, engineToo: Bool) {
        let engine = self.engine
        var left = packets
        while left > 0 {
            let n = min(batchSize, left)
            restore(n)
            if engineToo {
                if let m = monitor { m.stage(batch, egress: direction == .egress) }
                process(engine)
                if let m = monitor {
                    m.commit(verdicts, count: n, mode: .all)
                    m.drain { r, _ in blackHole(r.length) }
                }
                blackHole(verdicts[n - 1])
            } else {
                blackHole(batch.count)
            }
            left &-= n
        }
    }
}

/// An engine for `cluster` (its topology compiled without warnings).
func makeEngine(_ cluster: Cluster, _ configuration: EngineConfiguration = .init()) -> Engine {
    let topology: Topology
    do { topology = try Topology.compile(cluster.spec) } catch { fatalError("topology: \(error)") }
    precondition(topology.warnings.isEmpty, "unexpected topology warnings: \(topology.warnings)")
    return Engine(topology: topology, configuration: configuration)
}

// MARK: - Workloads

let defaultUnderlayMTU = 1500
/// For the encapsulation benchmarks: a jumbo underlay, so a 1500-byte inner packet fits whole
/// (tunnel MTU 8980). With the default 1500 the tunnel MTU is 1480 and 1500-byte packets would
/// take the fragmentation or ICMP path instead.
let jumboUnderlayMTU = 9000

/// Packets of the given size cycle to random addresses in remote blocks: the encapsulation path.
func encapsulationWorkload(sizes: [Int], blockCount: Int, seed: UInt64 = 0xD57_0001) -> EngineWorkload {
    let cluster = Cluster(blockCount: blockCount, underlayMTU: jumboUnderlayMTU)
    var rng = SplitMix64(seed: seed)
    let count = poolPacketCount(cycle: sizes)
    let all = (0..<count).map { sizes[$0 % sizes.count] }
    var shuffled = all
    // A mix is interleaved at random (seeded), not in runs.
    if sizes.count > 1 {
        for i in stride(from: shuffled.count - 1, to: 0, by: -1) { shuffled.swapAt(i, rng.next(below: i + 1)) }
    }
    let pool = PacketPool(sizes: shuffled, dontFragment: true) { _ in cluster.randomRemoteAddress(&rng) }
    return EngineWorkload(
        cluster: cluster, pool: pool, generatedPerInput: 1, maximumGeneratedByteCount: 64,
        expected: .encapsulated)
}

/// 64-byte packets to 198.18.0.0/15 (benchmarking addresses, RFC 2544): outside every pool and
/// block, so the lookup misses and the packet is forwarded natively.
func nativeWorkload(blockCount: Int) -> EngineWorkload {
    let cluster = Cluster(blockCount: blockCount, underlayMTU: defaultUnderlayMTU)
    var rng = SplitMix64(seed: 0xD57_0002)
    let sizes = [64]
    let pool = PacketPool(sizes: Array(repeating: 64, count: poolPacketCount(cycle: sizes)), dontFragment: true) { _ in
        IPv4Address(rawValue: 0xC612_0000 | rng.nextUInt32() >> 15)
    }
    return EngineWorkload(
        cluster: cluster, pool: pool, generatedPerInput: 1, maximumGeneratedByteCount: 64,
        expected: .forwarded)
}

/// 3000-byte packets without DF over a 1500-byte underlay (tunnel MTU 1480): each becomes 3
/// fragments (1476 + 1476 + 88 bytes of inner datagram), each encapsulated, in `generated`.
func fragmentWorkload(blockCount: Int) -> EngineWorkload {
    let cluster = Cluster(blockCount: blockCount, underlayMTU: defaultUnderlayMTU)
    var rng = SplitMix64(seed: 0xD57_0003)
    let pool = PacketPool(sizes: Array(repeating: 3000, count: poolPacketCount(cycle: [3000])), dontFragment: false) {
        _ in
        cluster.randomRemoteAddress(&rng)
    }
    return EngineWorkload(
        cluster: cluster, pool: pool, generatedPerInput: 3, maximumGeneratedByteCount: 1500,
        expected: .fragmented(3))
}

/// 1500-byte packets with DF over a 1500-byte underlay (tunnel MTU 1480): each is dropped and
/// answered with ICMP 3/4 (576 bytes: 28 + 548 quoted). The ICMP token bucket is made large
/// enough (10^9 tokens, refilled at 10^9/s of packet time) that it never runs dry, so every
/// packet pays for building the error; with the default 1000/s almost all would be rate-limited.
func icmpWorkload(blockCount: Int) -> EngineWorkload {
    let cluster = Cluster(blockCount: blockCount, underlayMTU: defaultUnderlayMTU)
    var rng = SplitMix64(seed: 0xD57_0004)
    let pool = PacketPool(sizes: Array(repeating: 1500, count: poolPacketCount(cycle: [1500])), dontFragment: true) {
        _ in
        cluster.randomRemoteAddress(&rng)
    }
    return EngineWorkload(
        cluster: cluster,
        configuration: .init(icmpRatePerSecond: 1_000_000_000, icmpBurst: 1_000_000_000),
        pool: pool, generatedPerInput: 1, maximumGeneratedByteCount: 576,
        expected: .icmpFragmentationNeeded)
}

// MARK: - Checksum workload

/// `count` buffers of `size` bytes with distinct contents, so the compiler cannot hoist a
/// checksum out of the loop; 16 × 9000 B fits L2, the smaller sizes fit L1.
final class ChecksumBuffers {
    let storage: UnsafeMutableRawPointer
    let size: Int
    let stride: Int
    static let count = 16

    init(size: Int) {
        self.size = size
        stride = (size + 63) & ~63
        storage = .allocate(byteCount: stride * Self.count, alignment: 64)
        var rng = SplitMix64(seed: UInt64(size))
        for i in 0..<(stride * Self.count) {
            storage.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: i, as: UInt8.self)
        }
    }

    deinit { storage.deallocate() }

    @inline(__always)
    func buffer(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + (i & (Self.count - 1)) * stride, count: size)
    }
}

// MARK: - Benchmarks

let benchmarks: @Sendable () -> Void = {
    // Any allocation on these paths is a failure: the absolute tolerance is 0 at every
    // percentile, for `baseline check`; `thresholds check` reads the p90 values (0) from
    // Thresholds/EngineBenchmarks.<name>.p90.json (see Benchmarks/README.md).
    let noAllocations: [BenchmarkMetric: BenchmarkThresholds] = [
        .mallocCountTotal: .init(absolute: [.p0: 0, .p25: 0, .p50: 0, .p75: 0, .p90: 0, .p99: 0, .p100: 0])
    ]
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 10_000,
        thresholds: noAllocations
    )

    /// An engine benchmark and its "restore only" twin over the same workload.
    func engineBenchmark(_ name: String, restoreName: String?, _ make: @escaping @Sendable () -> EngineWorkload) {
        Benchmark(name) { benchmark, workload in
            workload.run(packets: benchmark.scaledIterations.count, engineToo: true)
        } setup: {
            make()
        }
        if let restoreName {
            Benchmark(restoreName) { benchmark, workload in
                workload.run(packets: benchmark.scaledIterations.count, engineToo: false)
            } setup: {
                make()
            }
        }
    }

    // Encapsulation, by packet size, 10k routes.
    for size in [64, 512, 1500] {
        engineBenchmark("Egress encapsulate \(size)B, 10k routes", restoreName: "Restore only \(size)B") {
            encapsulationWorkload(sizes: [size], blockCount: 10_000)
        }
    }
    engineBenchmark("Egress encapsulate IMIX, 10k routes", restoreName: "Restore only IMIX") {
        // 7:4:1 of 64, 576 and 1500 bytes (simple IMIX): 354 bytes on average.
        encapsulationWorkload(
            sizes: Array(repeating: 64, count: 7) + Array(repeating: 576, count: 4) + [1500],
            blockCount: 10_000)
    }
    // The LPM effect: the same 64-byte workload with 1k and 100k routes (restore as for 64B).
    for blockCount in [1_000, 100_000] {
        engineBenchmark("Egress encapsulate 64B, \(blockCount / 1_000)k routes", restoreName: nil) {
            encapsulationWorkload(sizes: [64], blockCount: blockCount)
        }
    }
    // The monitor attached to every verdict (`MonitorRing`: stage, commit, drain per batch) over
    // the 64-byte encapsulation: its cost is the difference, and it must allocate nothing.
    engineBenchmark("Egress encapsulate 64B, 10k routes, monitor attached", restoreName: nil) {
        let w = encapsulationWorkload(sizes: [64], blockCount: 10_000)
        w.monitor = MonitorRing(capacity: 4096, batchCapacity: batchSize)
        return w
    }
    engineBenchmark("Egress forward natively 64B, 10k routes", restoreName: nil) {
        nativeWorkload(blockCount: 10_000)
    }
    engineBenchmark("Egress fragment DF=0 3000B, 10k routes", restoreName: "Restore only 3000B") {
        fragmentWorkload(blockCount: 10_000)
    }
    engineBenchmark("Egress ICMP frag-needed 1500B DF=1, 10k routes", restoreName: nil) {
        // Restore cost: "Restore only 1500B".
        icmpWorkload(blockCount: 10_000)
    }

    // Ingress: decapsulation of IP-in-IP from the peers to local workloads.
    for size in [64, 1500] {
        engineBenchmark("Ingress decapsulate \(size)B, 10k routes", restoreName: "Restore only \(size + 20)B") {
            decapsulationWorkload(innerSize: size, blockCount: 10_000)
        }
    }

    // SNAT, 100,000 established flows of one protocol: requests (egress) and replies (ingress).
    // Their restore twin: the same copy loop over a pool of 100,000 64-byte packets.
    for (proto, name) in [(UInt8(17), "UDP"), (UInt8(6), "TCP")] {
        Benchmark("Egress SNAT established flow 64B \(name), 100k flows") { benchmark, flows in
            flows.egress.run(packets: benchmark.scaledIterations.count, engineToo: true)
        } setup: {
            establishedFlows(protocolNumber: proto)
        }
        Benchmark("Ingress un-SNAT established flow 64B \(name), 100k flows") { benchmark, flows in
            flows.ingress.run(packets: benchmark.scaledIterations.count, engineToo: true)
        } setup: {
            establishedFlows(protocolNumber: proto)
        }
    }
    Benchmark("Restore only 64B, 100k-packet pool") { benchmark, workload in
        workload.run(packets: benchmark.scaledIterations.count, engineToo: false)
    } setup: {
        restoreOnlyWorkload(packetCount: 100_000)
    }

    // SNAT, every packet a new flow (new mapping and session). The engine is recreated, outside
    // the measurement, before an iteration that would run past the pool's distinct endpoints.
    Benchmark("Egress SNAT new flows 64B UDP") { benchmark, workload in
        let packets = benchmark.scaledIterations.count
        if workload.wouldWrap(packets) { workload.resetNAT() }
        benchmark.startMeasurement()
        workload.run(packets: packets, engineToo: true)
    } setup: {
        newFlowsWorkload()
    }
    Benchmark("Restore only 64B, 32k-packet pool") { benchmark, workload in
        let packets = benchmark.scaledIterations.count
        if workload.wouldWrap(packets) { workload.next = 0 }
        benchmark.startMeasurement()
        workload.run(packets: packets, engineToo: false)
    } setup: {
        restoreOnlyWorkload(packetCount: newFlowsPoolCount)
    }

    // Checksums: one checksum per scaled iteration.
    for size in [20, 64, 1500, 9000] {
        Benchmark("Checksum RFC 1071 \(size)B") { benchmark, buffers in
            for i in benchmark.scaledIterations {
                blackHole(InternetChecksum.checksum(buffers.buffer(i)))
            }
        } setup: {
            ChecksumBuffers(size: size)
        }
    }
    // Super-packets (OffloadWorkloads.swift): per segment.
    Benchmark("Segment TCP super-packet 1428B segments, per segment") { benchmark, workload in
        workload.run(segments: benchmark.scaledIterations.count)
    } setup: {
        SegmentWorkload()
    }
    Benchmark("Egress encapsulate TCP super-packet 45 x 1428B + segment, per segment") { benchmark, workload in
        workload.run(segments: benchmark.scaledIterations.count)
    } setup: {
        SuperPacketEgressWorkload()
    }
    Benchmark("Ingress decapsulate 1428B TCP segments, 4 flows") { benchmark, workload in
        workload.run(packets: benchmark.scaledIterations.count)
    } setup: {
        coalesceWorkload(coalesce: false)
    }
    Benchmark("Ingress decapsulate + coalesce 1428B TCP segments, 4 flows") { benchmark, workload in
        workload.run(packets: benchmark.scaledIterations.count)
    } setup: {
        coalesceWorkload(coalesce: true)
    }

    Benchmark("Checksum RFC 1624 update 16-bit") { benchmark in
        var c: UInt16 = 0xB1E6
        for i in benchmark.scaledIterations {
            c = InternetChecksum.update(c, old: UInt16(truncatingIfNeeded: i), new: UInt16(truncatingIfNeeded: i &* 7))
        }
        blackHole(c)
    }
    Benchmark("Checksum RFC 1624 update 32-bit") { benchmark in
        var c: UInt16 = 0xB1E6
        for i in benchmark.scaledIterations {
            c = InternetChecksum.update(
                c, old: UInt32(truncatingIfNeeded: i), new: UInt32(truncatingIfNeeded: i &* 0x9E37))
        }
        blackHole(c)
    }
}

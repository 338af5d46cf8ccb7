// Workloads for the ingress (decapsulation) and SNAT benchmarks. Same conventions as the egress
// ones in EngineBenchmarks.swift: one iteration is 1,000 packets in batches of 64, each batch
// restored from a pristine pool first (timed; the `Restore only` twins time it alone), and every
// workload checks in `setup:` that each packet of its pool takes the path it claims to measure.

import Benchmark
import IPIPCore

// MARK: - Ingress: decapsulation

/// This node's IP (node-0 in `Cluster`): the outer destination of every tunnel packet.
let localNodeAddress = IPv4Address(172, 16, 0, 1)
/// The local block of `Cluster` (10.255.255.0/26): the destinations of decapsulated packets.
let localBlock = IPv4Prefix(address: IPv4Address(10, 255, 255, 0), length: 26)

/// IP-in-IP packets from the peer nodes to this node, as the egress benchmarks of those peers
/// would send them: the inner packet is IPv4/UDP of `innerSize` bytes from a random address in a
/// random remote block to a random workload address of the local block; the outer header (20 B,
/// DF, TTL 64) runs from the node that owns that block to this node. So the engine's checks pass:
/// known peer, inner source in the sender's blocks (DEC-10), inner destination local (DEC-09).
/// About 1 MiB of distinct packets, cycled.
///
/// Per packet the engine does two LPM lookups (inner source and inner destination), one at a
/// time; with 10k routes the source lookup is the random, cache-missing one.
func decapsulationWorkload(innerSize: Int, blockCount: Int, seed: UInt64 = 0xD57_0101) -> EngineWorkload {
    let cluster = Cluster(blockCount: blockCount, underlayMTU: jumboUnderlayMTU)
    var rng = SplitMix64(seed: seed)
    let size = innerSize + 20
    let pool = PacketPool(sizes: Array(repeating: size, count: poolPacketCount(cycle: [size]))) { p, i, size in
        let b = rng.next(below: cluster.blocks.count)
        let block = cluster.blocks[b]
        let source = IPv4Address(rawValue: block.first.rawValue | rng.nextUInt32() & ~block.mask)
        let destination = IPv4Address(rawValue: localBlock.first.rawValue | rng.nextUInt32() & ~localBlock.mask)
        writeIPv4Header(
            into: p, totalLength: size, protocolNumber: 4, source: cluster.ownerAddress(ofBlock: b),
            destination: localNodeAddress, dontFragment: true, identification: UInt16(truncatingIfNeeded: i),
            ttl: 64)
        writeDatagram(
            into: p + 20, size: innerSize, source: source, destination: destination, dontFragment: true,
            identification: UInt16(truncatingIfNeeded: i &* 7))
    }
    let w = EngineWorkload(
        engine: makeEngine(cluster), pool: pool, direction: .ingress,
        generatedPerInput: 1, maximumGeneratedByteCount: 64)
    w.processAll { i, v, side, out in
        precondition(v.action == .decapsulated && side == .tun && out.count == innerSize, "packet \(i): \(v)")
    }
    let c = w.engine.counterSnapshot
    precondition(c.tunPacketsOut == UInt64(pool.count), "decapsulated \(c.tunPacketsOut) of \(pool.count)")
    return w
}

// MARK: - SNAT

/// `natPortRange` of the SNAT workloads: 64,512 external ports per protocol.
let natBenchmarkPortRange: ClosedRange<UInt16> = 1024...65535
/// Workload addresses the SNAT flows come from: 10.255.255.10 … 10.255.255.59 (local block).
let natSourceAddressCount = 50

/// Internal endpoint `k`: one of 50 workload addresses of the local block, and a port.
@inline(__always)
func natInternalEndpoint(_ k: Int, basePort: Int) -> (IPv4Address, UInt16) {
    (
        IPv4Address(rawValue: localBlock.first.rawValue + 10 + UInt32(k % natSourceAddressCount)),
        UInt16(basePort + k / natSourceAddressCount)
    )
}

/// A random address of 198.18.0.0/15 (RFC 2544 benchmarking): outside every pool and block, so
/// traffic from a `natOutgoing` pool to it is translated.
@inline(__always)
func randomExternalAddress(_ rng: inout SplitMix64) -> IPv4Address {
    IPv4Address(rawValue: 0xC612_0000 | rng.nextUInt32() >> 15)
}

/// The configuration of the SNAT engines: the default `natCapacity` (262,144 sessions) and
/// timeouts (UDP 300 s, TCP established 7440 s, transitory 240 s). The workloads' clock advances
/// 1 µs per batch, so no session comes near expiring during a run.
let natConfiguration = EngineConfiguration()
let natTickNanoseconds: UInt32 = 1_000

/// An established-flow workload: its egress side (requests) and its ingress side (replies)
/// share one engine, so they are built together.
struct EstablishedFlows {
    /// Requests from the workloads (`processEgress`), one packet per flow, shuffled.
    var egress: EngineWorkload
    /// The remote's replies to the translated requests (`processIngress`), same order.
    var ingress: EngineWorkload
}

/// `flowCount` live SNAT sessions of one protocol, built in setup: `flowCount / 2` internal
/// endpoints (50 workload addresses × ports from 20000) each talking to 2 remote endpoints
/// (random addresses in 198.18.0.0/15, port 443), so 2 sessions share each endpoint-independent
/// mapping (50,000 mappings for 100,000 flows: within the 64,512 ports of 1024…65535).
///
/// Setup, every step verified packet by packet:
/// 1. every request once through `processEgress`: `.translated`, and the table creates one
///    session per packet (TCP: ACK packets, picked up mid-stream as `opening`);
/// 2. the translated requests, mirrored (addresses and ports swapped: the replies), once through
///    `processIngress`: `.untranslated`, back to the workload's own endpoint (TCP: the ACK
///    moves the session to `established`);
/// 3. every request again through `processEgress`: `.translated`, no session created.
/// The pool holds one packet per flow, all 100,000 (6.1 MiB: 64-byte packets, 64-byte aligned),
/// shuffled (seeded), so the timed loop visits every flow in a random order that repeats.
func establishedFlows(
    protocolNumber: UInt8, flowCount: Int = 100_000, packetSize: Int = 64,
    seed: UInt64 = 0xD57_0201
) -> EstablishedFlows {
    precondition(flowCount % 2 == 0)
    let cluster = Cluster(
        blockCount: 10_000, underlayMTU: defaultUnderlayMTU, natOutgoing: true,
        natPortRange: natBenchmarkPortRange)
    let engine = makeEngine(cluster, natConfiguration)
    var rng = SplitMix64(seed: seed)
    // Flow f: endpoint f / 2, remote address d(endpoint) or d(endpoint) ^ 1 (distinct).
    var remotes = (0..<flowCount / 2).map { _ in randomExternalAddress(&rng) }
    var order = Array(0..<flowCount)
    for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.next(below: i + 1)) }
    let requests = PacketPool(sizes: Array(repeating: packetSize, count: flowCount)) { p, i, size in
        let f = order[i]
        let (source, port) = natInternalEndpoint(f / 2, basePort: 20000)
        let remote = IPv4Address(rawValue: remotes[f / 2].rawValue ^ UInt32(f & 1))
        writeFlowPacket(
            into: p, size: size, protocolNumber: protocolNumber, source: source, sourcePort: port,
            destination: remote, destinationPort: 443, tcpFlags: 0x10,
            identification: UInt16(truncatingIfNeeded: i))
    }
    remotes = []
    let egress = EngineWorkload(
        engine: engine, pool: requests, direction: .egress, tickNanoseconds: natTickNanoseconds,
        generatedPerInput: 1, maximumGeneratedByteCount: 64)
    // 1. Create; keep the translated packets.
    let translated = UnsafeMutableRawPointer.allocate(byteCount: flowCount * packetSize, alignment: 64)
    defer { translated.deallocate() }
    egress.processAll { i, v, side, out in
        precondition(v.action == .translated && side == .underlay && out.count == packetSize, "request \(i): \(v)")
        precondition(
            IPv4Address(rawValue: UInt32(bigEndian: out.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
                == localNodeAddress, "request \(i): source not translated")
        (translated + i * packetSize).copyMemory(from: out.baseAddress!, byteCount: packetSize)
    }
    precondition(engine.nat.count == flowCount, "\(engine.nat.count) sessions, expected \(flowCount)")
    precondition(engine.nat.mappingCount == flowCount / 2, "\(engine.nat.mappingCount) mappings")
    // 2. The replies.
    let replies = PacketPool(sizes: Array(repeating: packetSize, count: flowCount)) { p, i, size in
        p.copyMemory(from: translated + i * size, byteCount: size)
        mirrorFlowPacket(p)
    }
    let ingress = EngineWorkload(
        engine: engine, pool: replies, direction: .ingress, tickNanoseconds: natTickNanoseconds,
        generatedPerInput: 1, maximumGeneratedByteCount: 64)
    ingress.processAll { i, v, side, out in
        precondition(v.action == .untranslated && side == .tun, "reply \(i): \(v)")
        // The workload gets the mirror of what it sent.
        let request = requests.packet(i)
        precondition(
            out.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
                == request.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
                && out.loadUnaligned(fromByteOffset: 22, as: UInt16.self)
                    == request.loadUnaligned(fromByteOffset: 20, as: UInt16.self),
            "reply \(i): not restored")
    }
    // 3. Established: translated again without creating anything.
    egress.now = ingress.now
    egress.processAll { i, v, side, _ in
        precondition(v.action == .translated && side == .underlay, "request \(i) (again): \(v)")
    }
    ingress.now = egress.now
    precondition(engine.nat.counters.created == UInt64(flowCount) && engine.nat.count == flowCount)
    return EstablishedFlows(egress: egress, ingress: ingress)
}

/// New flows: each packet comes from an internal endpoint not seen before (50 workload addresses
/// × ports from 32768, an ephemeral-like range), to a random remote (198.18.0.0/15, port 53,
/// UDP 64 B), so each creates a mapping (an external port) and a session. The pool holds 32,768
/// such packets (2 MiB). A mapping takes one of the 64,512 ports of 1024…65535, so the table
/// cannot take new endpoints forever: before an iteration that would run past the end of the
/// pool, the engine is recreated and the pool rewound, outside the measured region (the
/// benchmark calls `startMeasurement()` after it). So every measured packet creates a session,
/// with between 0 and 32,000 mappings (≤ 50 % of the ports) already in the table.
///
/// Setup verifies the whole pool: every packet `.translated`, one session and one mapping each.
func newFlowsWorkload(seed: UInt64 = 0xD57_0301) -> EngineWorkload {
    let cluster = Cluster(
        blockCount: 10_000, underlayMTU: defaultUnderlayMTU, natOutgoing: true,
        natPortRange: natBenchmarkPortRange)
    var rng = SplitMix64(seed: seed)
    let count = newFlowsPoolCount
    let pool = PacketPool(sizes: Array(repeating: 64, count: count)) { p, i, size in
        let (source, port) = natInternalEndpoint(i, basePort: 32768)
        writeFlowPacket(
            into: p, size: size, protocolNumber: 17, source: source, sourcePort: port,
            destination: randomExternalAddress(&rng), destinationPort: 53,
            identification: UInt16(truncatingIfNeeded: i))
    }
    let w = EngineWorkload(
        engine: makeEngine(cluster, natConfiguration), pool: pool, direction: .egress,
        tickNanoseconds: natTickNanoseconds, generatedPerInput: 1, maximumGeneratedByteCount: 64)
    w.processAll { i, v, side, _ in
        precondition(v.action == .translated && side == .underlay, "packet \(i): \(v)")
    }
    precondition(
        w.engine.nat.count == count && w.engine.nat.mappingCount == count
            && w.engine.nat.counters.created == UInt64(count), "not one new session per packet")
    w.resetNAT()
    return w
}

/// Packets (distinct internal endpoints) in the new-flows pool.
let newFlowsPoolCount = 32_768

extension EngineWorkload {
    /// A new engine over the same topology and configuration (empty NAT table), pool rewound.
    /// Not for the timed region: it allocates the NAT table.
    func resetNAT() {
        engine = Engine(topology: engine.topology, configuration: engine.configuration)
        next = 0
    }

    /// For the new-flows benchmark: whether the next `packets` packets would wrap the pool.
    func wouldWrap(_ packets: Int) -> Bool { next + packets > pool.count }
}

/// A `Restore only` twin for a pool of `count` 64-byte packets (the copy does not depend on the
/// contents).
func restoreOnlyWorkload(packetCount: Int, size: Int = 64) -> EngineWorkload {
    let cluster = Cluster(blockCount: 16, underlayMTU: defaultUnderlayMTU)
    let pool = PacketPool(sizes: Array(repeating: size, count: packetCount), dontFragment: true) { _ in
        IPv4Address(198, 18, 0, 1)
    }
    return EngineWorkload(engine: makeEngine(cluster), pool: pool, generatedPerInput: 1, maximumGeneratedByteCount: 64)
}

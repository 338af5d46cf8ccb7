// Super-packet benchmarks: what the live daemon does with TSO reads and toward a TUN with virtio
// headers. Unit: ONE segment (scalingFactor .kilo: 1,000 segments per iteration), so the numbers
// compare with the per-packet engine benchmarks above; `Malloc (total)` must be 0.
//
// - "Segment": `Segmenter.writeSegment` alone, cutting one encapsulated 64 KiB TCP super-packet
//   (45 segments of 1,428 bytes: a 1,480-byte tunnel MTU with 12 bytes of TCP options) into a
//   transmit frame, segment after segment.
// - "Egress encapsulate TCP super-packet": per batch of 8 super-packets, the restore (one 64 KiB
//   copy each, as a TUN read), `processEgress` and the segmentation of every segment: the whole
//   egress path of a TSO read but the system calls.
// - "Ingress decapsulate + coalesce": 1,428-byte IP-in-IP segments of 4 TCP flows from a peer,
//   interleaved, in batches of 64: restore, `processIngress`, `TUNCoalescer.coalesce` (verify
//   and copy every payload). Its twin "Ingress decapsulate 1428B TCP segments" leaves the
//   coalescer out, so the coalescer's own cost is the difference.

import Benchmark
import IPIPCore

/// 1,428-byte TCP payload per segment, 45 segments (64,260 bytes) per super-packet.
let superSegmentSize = 1428
let superSegments = 45
/// TCP options of the segments (NOP, NOP, timestamps): 12 bytes, as Linux sends them.
let tcpTimestampOptions: [UInt8] = [1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]

/// A TCP/IPv4 packet with the timestamp options and `payload` bytes of data, valid checksums.
func writeTCPSegment(
    into p: UnsafeMutableRawPointer, payload: Int, source: IPv4Address, destination: IPv4Address,
    sourcePort: UInt16, sequence: UInt32, identification: UInt16
) {
    let thl = 20 + tcpTimestampOptions.count
    let size = 20 + thl + payload
    p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    writeIPv4Header(
        into: p, totalLength: size, protocolNumber: 6, source: source, destination: destination,
        dontFragment: true, identification: identification)
    let l4 = p + 20
    l4.storeBytes(of: sourcePort.bigEndian, as: UInt16.self)
    l4.storeBytes(of: UInt16(5201).bigEndian, toByteOffset: 2, as: UInt16.self)
    l4.storeBytes(of: sequence.bigEndian, toByteOffset: 4, as: UInt32.self)
    l4.storeBytes(of: UInt32(1).bigEndian, toByteOffset: 8, as: UInt32.self)
    l4.storeBytes(of: UInt8(thl / 4) << 4, toByteOffset: 12, as: UInt8.self)
    l4.storeBytes(of: TCPFlags.ack, toByteOffset: 13, as: UInt8.self)
    l4.storeBytes(of: UInt16(502).bigEndian, toByteOffset: 14, as: UInt16.self)
    for (i, b) in tcpTimestampOptions.enumerated() { l4.storeBytes(of: b, toByteOffset: 20 + i, as: UInt8.self) }
    for i in 0..<payload {
        l4.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ Int(sequence)), toByteOffset: thl + i, as: UInt8.self)
    }
    let pseudo = InternetChecksum.pseudoHeaderSum(
        source: source, destination: destination, protocolNumber: 6,
        length: thl + payload)
    let c = InternetChecksum.checksum(UnsafeRawBufferPointer(start: l4, count: thl + payload), initial: pseudo)
    l4.storeBytes(of: c.bigEndian, toByteOffset: 16, as: UInt16.self)
}

/// Cuts one encapsulated super-packet into a frame, segment after segment (the transmit side's
/// inner loop, without the engine).
final class SegmentWorkload {
    let packet: UnsafeMutableRawBufferPointer
    let frame: UnsafeMutableRawPointer
    let offload = SegmentationOffload(kind: .tcp, segmentSize: UInt16(superSegmentSize))
    let layout: Segmenter.Layout
    var next = 0

    init() {
        let inner = 20 + 32 + superSegments * superSegmentSize
        packet = .allocate(byteCount: inner + 20, alignment: 64)
        writeTCPSegment(
            into: packet.baseAddress! + 20, payload: superSegments * superSegmentSize, source: localWorkload,
            destination: IPv4Address(10, 1, 2, 3), sourcePort: 40000, sequence: 1, identification: 7)
        writeIPv4Header(
            into: packet.baseAddress!, totalLength: inner + 20, protocolNumber: 4,
            source: IPv4Address(172, 16, 0, 1), destination: IPv4Address(172, 16, 0, 2), dontFragment: true,
            identification: 99, ttl: 64)
        frame = .allocate(byteCount: 2048, alignment: 64)
        layout = Segmenter.layout(of: UnsafeRawBufferPointer(packet), offload: offload)!
        precondition(layout.segmentCount == superSegments && layout.outerHeaderLength == 20)
    }

    deinit {
        packet.deallocate()
        frame.deallocate()
    }

    func run(segments: Int) {
        let p = UnsafeRawBufferPointer(packet)
        for _ in 0..<segments {
            let n = Segmenter.writeSegment(next, of: p, layout: layout, offload: offload, to: frame)
            blackHole(n)
            next = next &+ 1 == superSegments ? 0 : next &+ 1
        }
    }
}

/// TSO reads through the engine and the segmenter: restore 8 super-packets per batch, encapsulate,
/// cut every segment into a frame.
final class SuperPacketEgressWorkload {
    let engine: Engine
    let pool: PacketPool
    var batch: PacketBatch
    var generated: PacketBatch
    var verdicts: VerdictBatch
    let frame: UnsafeMutableRawPointer
    let offload = SegmentationOffload(kind: .tcp, segmentSize: UInt16(superSegmentSize))
    var next = 0
    static let batchSuperPackets = 8

    init() {
        let cluster = Cluster(blockCount: 10_000, underlayMTU: 1500)
        var rng = SplitMix64(seed: 0x7550)
        let size = 20 + 32 + superSegments * superSegmentSize
        pool = PacketPool(sizes: Array(repeating: size, count: 16)) { p, i, _ in
            writeTCPSegment(
                into: p, payload: superSegments * superSegmentSize, source: localWorkload,
                destination: cluster.randomRemoteAddress(&rng), sourcePort: UInt16(40000 + i),
                sequence: UInt32(i) << 20, identification: UInt16(i) << 8)
        }
        engine = makeEngine(cluster)
        batch = PacketBatch(capacity: Self.batchSuperPackets)
        generated = PacketBatch(capacity: Self.batchSuperPackets, maximumPacketByteCount: 2048)
        verdicts = VerdictBatch(capacity: Self.batchSuperPackets)
        frame = .allocate(byteCount: 2048, alignment: 64)
        let segments = run(segments: Self.batchSuperPackets * superSegments)
        precondition(segments == Self.batchSuperPackets * superSegments)
        for i in 0..<Self.batchSuperPackets {
            precondition(
                verdicts[i].action == .encapsulated && Int(verdicts[i].outputCount) == superSegments, "\(verdicts[i])")
        }
        next = 0
    }

    deinit { frame.deallocate() }

    /// Returns the segments written (a whole number of batches: at least `segments`).
    @discardableResult
    func run(segments: Int) -> Int {
        var done = 0
        var now = Timestamp(seconds: 1_700_000_000)
        while done < segments {
            batch.removeAll()
            for _ in 0..<Self.batchSuperPackets {
                batch.append(copying: pool.packet(next), time: now)
                batch.setOffload(offload, of: batch.count - 1)
                next = next &+ 1 == pool.count ? 0 : next &+ 1
            }
            engine.processEgress(&batch, generated: &generated, verdicts: &verdicts)
            for i in 0..<batch.count where batch.side(of: i) == .underlay {
                let p = UnsafeRawBufferPointer(batch.packet(i))
                let layout = Segmenter.layout(of: p, offload: batch.offload(of: i))!
                for k in 0..<layout.segmentCount {
                    blackHole(Segmenter.writeSegment(k, of: p, layout: layout, offload: offload, to: frame))
                }
                done &+= layout.segmentCount
            }
            now = Timestamp(seconds: now.seconds, nanoseconds: now.nanoseconds &+ 1000)
        }
        return done
    }
}

/// Interleaved IP-in-IP segments of 4 flows from one peer: decapsulation, and coalescing too.
func coalesceWorkload(coalesce: Bool) -> CoalesceWorkload { CoalesceWorkload(coalesce: coalesce) }

final class CoalesceWorkload {
    let engine: Engine
    let pool: PacketPool
    var batch: PacketBatch
    var generated: PacketBatch
    var verdicts: VerdictBatch
    let coalescer: TUNCoalescer?
    var next = 0
    static let flows = 4

    init(coalesce: Bool) {
        let cluster = Cluster(blockCount: 10_000, underlayMTU: 1500)
        let block = cluster.blocks[0]
        let peer = cluster.ownerAddress(ofBlock: 0)
        // 64 segments per flow, flows interleaved: segment k of flow f at 4k + f.
        let size = 20 + 20 + 32 + superSegmentSize
        let count = 64 * Self.flows
        pool = PacketPool(sizes: Array(repeating: size, count: count)) { p, i, _ in
            let flow = i % Self.flows
            let k = i / Self.flows
            writeIPv4Header(
                into: p, totalLength: size, protocolNumber: 4, source: peer, destination: localNodeAddress,
                dontFragment: true, identification: UInt16(truncatingIfNeeded: i), ttl: 64)
            writeTCPSegment(
                into: p + 20, payload: superSegmentSize,
                source: IPv4Address(rawValue: block.first.rawValue + 2 + UInt32(flow)), destination: localWorkload,
                sourcePort: UInt16(5000 + flow), sequence: UInt32(1 + k * superSegmentSize),
                identification: UInt16(truncatingIfNeeded: k))
        }
        engine = makeEngine(cluster)
        batch = PacketBatch(capacity: batchSize)
        generated = PacketBatch(capacity: batchSize, maximumPacketByteCount: 2048)
        verdicts = VerdictBatch(capacity: batchSize)
        coalescer = coalesce ? TUNCoalescer(batchCapacity: batchSize, coalescesUDP: false) : nil
        run(packets: batchSize)
        for i in 0..<batchSize { precondition(verdicts[i].action == .decapsulated, "packet \(i): \(verdicts[i])") }
        if let coalescer {
            // 64 interleaved packets of 4 flows: 4 super-packets of 16 segments each.
            precondition(
                coalescer.superPackets == 4 && coalescer.mergedPackets == 60,
                "coalesced \(coalescer.mergedPackets) into \(coalescer.superPackets)")
        }
        next = 0
    }

    func run(packets: Int) {
        var left = packets
        var now = Timestamp(seconds: 1_700_000_000)
        while left > 0 {
            let n = min(batchSize, left)
            batch.removeAll()
            for _ in 0..<n {
                batch.append(copying: pool.packet(next), time: now)
                next = next &+ 1 == pool.count ? 0 : next &+ 1
            }
            engine.processIngress(&batch, generated: &generated, verdicts: &verdicts)
            if let coalescer { blackHole(coalescer.coalesce(batch)) } else { blackHole(verdicts[n - 1]) }
            left &-= n
            now = Timestamp(seconds: now.seconds, nanoseconds: now.nanoseconds &+ 1000)
        }
    }
}

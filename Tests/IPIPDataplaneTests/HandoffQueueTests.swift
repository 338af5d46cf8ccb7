import Foundation
import IPIPCore
import Testing

@testable import IPIPDataplane

@Suite("Handoff queue")
struct HandoffQueueTests {
    /// A packet whose bytes say which it is: its sequence number in the first 4 bytes, then a
    /// pattern derived from it.
    static func packet(_ n: UInt32, length: Int) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: max(4, length))
        p[0] = UInt8(n >> 24)
        p[1] = UInt8(n >> 16 & 0xFF)
        p[2] = UInt8(n >> 8 & 0xFF)
        p[3] = UInt8(n & 0xFF)
        for i in 4..<p.count { p[i] = UInt8(truncatingIfNeeded: Int(n) &* 31 &+ i) }
        return p
    }

    static func sequence(_ p: UnsafeMutableRawBufferPointer) -> UInt32 {
        UInt32(p[0]) << 24 | UInt32(p[1]) << 16 | UInt32(p[2]) << 8 | UInt32(p[3])
    }

    @Test("entries leave in order with their bytes, offload and time; wrapping the ring many times")
    func orderAndContent() {
        let q = HandoffQueue(byteCount: 256 << 10)
        var batch = PacketBatch(capacity: 64)
        var rng = SplitMix64(seed: 7)
        var sent: UInt32 = 0
        var received: UInt32 = 0
        var lengths: [UInt32: Int] = [:]
        while received < 20_000 {
            // Enqueue a random burst, then drain it, so the ring wraps at every possible offset.
            for _ in 0..<Int(rng.next(below: 40)) {
                let length = [20, 64, 1500, 9000, 65535][rng.next(below: 5)] - rng.next(below: 16)
                let p = Self.packet(sent, length: length)
                let offload =
                    sent % 3 == 0
                    ? SegmentationOffload(
                        kind: .tcp, segmentSize: UInt16(1000 + sent % 400), congestionWindowReduced: sent % 2 == 0)
                    : .none
                let ok = p.withUnsafeBytes {
                    q.enqueue($0, offload: offload, time: Timestamp(seconds: Int64(sent), nanoseconds: sent % 1000))
                }
                if !ok { break }
                lengths[sent] = p.count
                sent += 1
            }
            batch.removeAll()
            let n = q.dequeue(into: &batch)
            #expect(n == batch.count)
            for i in 0..<batch.count {
                let p = batch.packet(i)
                let s = Self.sequence(p)
                #expect(s == received, "order")
                #expect(p.count == lengths[s])
                #expect(Array(p) == Self.packet(s, length: lengths[s]!), "bytes of \(s)")
                #expect(batch.time(of: i) == Timestamp(seconds: Int64(s), nanoseconds: s % 1000))
                let o = batch.offload(of: i)
                if s % 3 == 0 {
                    #expect(
                        o
                            == SegmentationOffload(
                                kind: .tcp, segmentSize: UInt16(1000 + s % 400), congestionWindowReduced: s % 2 == 0))
                } else {
                    #expect(o == .none)
                }
                received += 1
            }
        }
        #expect(q.oversized == 0)
    }

    @Test("a full ring refuses the packet and changes nothing; room comes back after a dequeue")
    func full() {
        let q = HandoffQueue(byteCount: 256 << 10)
        let p = Self.packet(0, length: 1500)
        var accepted = 0
        while p.withUnsafeBytes({ q.enqueue($0, offload: .none, time: .zero) }) { accepted += 1 }
        // 256 KiB of 1528-byte entries (1500 + header, padded).
        #expect(accepted == (256 << 10) / 1528)
        #expect(!p.withUnsafeBytes { q.enqueue($0, offload: .none, time: .zero) }, "still full")
        var batch = PacketBatch(capacity: 8)
        #expect(q.dequeue(into: &batch) == 8)
        var more = 0
        while p.withUnsafeBytes({ q.enqueue($0, offload: .none, time: .zero) }) { more += 1 }
        #expect(more == 8)
        var total = 0
        repeat {
            batch.removeAll()
            total += q.dequeue(into: &batch)
        } while batch.count > 0
        #expect(total == accepted, "nothing lost, nothing duplicated")
        #expect(!q.mayHaveEntries)
    }

    @Test("an entry larger than the consumer's slots is consumed and counted, the rest still arrive")
    func oversized() {
        let q = HandoffQueue()
        _ = Self.packet(0, length: 100).withUnsafeBytes { q.enqueue($0, offload: .none, time: .zero) }
        _ = Self.packet(1, length: 4000).withUnsafeBytes { q.enqueue($0, offload: .none, time: .zero) }
        _ = Self.packet(2, length: 100).withUnsafeBytes { q.enqueue($0, offload: .none, time: .zero) }
        var batch = PacketBatch(capacity: 8, maximumPacketByteCount: 2048)
        #expect(q.dequeue(into: &batch) == 2)
        #expect((0..<batch.count).map { Self.sequence(batch.packet($0)) } == [0, 2])
        #expect(q.oversized == 1)
    }

    @Test("two threads: a producer that retries on full and a consumer lose nothing and keep order")
    func threads() {
        let q = HandoffQueue(byteCount: 256 << 10)
        let total: UInt32 = 200_000
        let producer = Thread {
            var n: UInt32 = 0
            while n < total {
                let p = Self.packet(n, length: Int(n % 1400) + 20)
                if p.withUnsafeBytes({ q.enqueue($0, offload: .none, time: .zero) }) { n += 1 }
            }
        }
        producer.start()
        var batch = PacketBatch(capacity: 64, maximumPacketByteCount: 2048)
        var expected: UInt32 = 0
        var wrong = 0
        let deadline = Date().addingTimeInterval(60)
        while expected < total && Date() < deadline {
            batch.removeAll()
            _ = q.dequeue(into: &batch)
            for i in 0..<batch.count {
                let p = batch.packet(i)
                let s = Self.sequence(p)
                if s != expected || p.count != Int(s % 1400) + 20
                    || p[p.count - 1] != Self.packet(s, length: p.count)[p.count - 1]
                {
                    wrong += 1
                }
                expected = s + 1
            }
        }
        #expect(expected == total)
        #expect(wrong == 0)
    }
}

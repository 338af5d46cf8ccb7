import Testing

@testable import IPIPCore

@Suite("Internet checksum")
struct ChecksumTests {
    @Test("RFC 1624 §4 worked example: eqn. 3 gives 0x0000, not -0")
    func rfc1624Vector() {
        // Header checksum 0xDD2F; a field changes from 0x5555 to 0x3285.
        #expect(InternetChecksum.update(0xDD2F, old: 0x5555 as UInt16, new: 0x3285 as UInt16) == 0x0000)
    }

    @Test("RFC 1071 §3 example sum")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        #expect(bytes.withUnsafeBytes { InternetChecksum.sum($0) } == 0xDDF2)
    }

    @Test("fast sum equals the RFC 1071 reference for every length 0…2048 and offsets 0…7, and spot lengths to 9001")
    func fullVersusReference() {
        var rng = SplitMix64(seed: 0x1071)
        let data = (0..<9010).map { _ in UInt8.random(in: 0...255, using: &rng) }
        data.withUnsafeBytes { all in
            var lengths = Array(0...2048)
            lengths += stride(from: 2049, through: 9001, by: 97).map { $0 } + [9000, 9001]
            for offset in 0..<8 {
                for n in lengths {
                    let b = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + n)])
                    let fast = InternetChecksum.checksum(b)
                    let slow = InternetChecksum.referenceChecksum(b)
                    if fast != slow {
                        Issue.record("length \(n) offset \(offset): fast \(fast) reference \(slow) (seed 0x1071)")
                        return
                    }
                }
            }
        }
    }

    @Test("a sum that continues a partial sum, and the copying sum, equal the reference; the copy is exact")
    func initialAndCopying() {
        var rng = SplitMix64(seed: 0x5C0F)
        let data = (0..<3000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var copy = [UInt8](repeating: 0, count: 3000)
        data.withUnsafeBytes { all in
            for n in Array(0...300) + [1447, 1448, 1480, 2999] {
                for offset in [0, 1, 3] where offset + n <= all.count {
                    let b = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + n)])
                    let initial = UInt32(truncatingIfNeeded: rng.next()) & 0x1_FFFF
                    let reference = InternetChecksum.fold(
                        UInt64(~InternetChecksum.referenceChecksum(b)) + UInt64(initial))
                    #expect(InternetChecksum.sum(b, initial: initial) == reference, "length \(n) offset \(offset)")
                    let copied = copy.withUnsafeMutableBytes { c in
                        InternetChecksum.sumCopying(
                            from: b.baseAddress!, to: c.baseAddress!, count: n, initial: initial)
                    }
                    #expect(
                        copied == reference && Array(copy[0..<n]) == Array(b), "copying, length \(n) offset \(offset)")
                }
            }
        }
    }

    @Test("incremental update equals full recomputation on random headers (16- and 32-bit fields)")
    func incrementalVersusFull() {
        let seed: UInt64 = 0x1624
        var rng = SplitMix64(seed: seed)
        for round in 0..<20_000 {
            var h = (0..<20).map { _ in UInt8.random(in: 0...255, using: &rng) }
            h[10] = 0
            h[11] = 0
            let c = h.withUnsafeBytes { InternetChecksum.checksum($0) }
            h[10] = UInt8(c >> 8)
            h[11] = UInt8(c & 0xFF)
            // Change a 16-bit word (not the checksum) and a 32-bit address.
            let word = [0, 2, 4, 6, 8][Int.random(in: 0..<5, using: &rng)]
            let old16 = UInt16(h[word]) << 8 | UInt16(h[word + 1])
            let new16 = UInt16.random(in: 0...0xFFFF, using: &rng)
            h[word] = UInt8(new16 >> 8)
            h[word + 1] = UInt8(new16 & 0xFF)
            var updated = InternetChecksum.update(c, old: old16, new: new16)
            let old32 = h[12...15].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let new32 = UInt32.random(in: 0...UInt32.max, using: &rng)
            for k in 0..<4 { h[12 + k] = UInt8(truncatingIfNeeded: new32 >> (24 - 8 * UInt32(k))) }
            updated = InternetChecksum.update(updated, old: old32, new: new32)
            h[10] = 0
            h[11] = 0
            let full = h.withUnsafeBytes { InternetChecksum.checksum($0) }
            // Both are valid encodings; the only allowed difference is +0 vs -0 for a zero sum,
            // which cannot occur for an IPv4 header (version/IHL is never zero).
            if updated != full {
                Issue.record("round \(round): incremental \(updated) full \(full) (seed \(seed))")
                return
            }
            h[10] = UInt8(updated >> 8)
            h[11] = UInt8(updated & 0xFF)
            #expect(h.withUnsafeBytes { InternetChecksum.sum($0) } == 0xFFFF)
        }
    }
}

@Suite("Completing transport checksums (CHECKSUM_PARTIAL packets)")
struct CompleteChecksumTests {
    @Test(
        "a TCP/UDP checksum holding only the pseudo-header sum is completed, plain and inside IP-in-IP",
        arguments: [UInt8(6), 17])
    func complete(proto: UInt8) {
        let good = flowPacket(proto: proto, payload: Array("partial checksum".utf8))
        let offset = 20 + (proto == 6 ? 16 : 6)
        var partial = good
        partial[offset] = 0x12
        partial[offset + 1] = 0x34  // what a NIC would have overwritten
        #expect(!transportChecksumValid(partial))
        partial.withUnsafeMutableBytes { #expect(InternetChecksum.completeTransportChecksum($0)) }
        #expect(partial == good)

        var wrapped = encapsulated(good, from: "10.0.0.2", to: "10.0.0.1")
        wrapped[20 + offset] ^= 0xFF
        wrapped.withUnsafeMutableBytes { #expect(InternetChecksum.completeTransportChecksum($0)) }
        #expect(Array(wrapped[20...]) == good)
    }

    @Test("fragments, ICMP and malformed packets are left alone")
    func leftAlone() {
        var icmp = flowPacket(proto: 1)
        let before = icmp
        icmp.withUnsafeMutableBytes { #expect(!InternetChecksum.completeTransportChecksum($0)) }
        #expect(icmp == before)
        var b = PacketBuilder()
        b.dontFragment = false
        b.moreFragments = true
        var fragment = b.bytes()
        fragment.withUnsafeMutableBytes { #expect(!InternetChecksum.completeTransportChecksum($0)) }
        var junk: [UInt8] = [0x45, 0, 0, 10]
        junk.withUnsafeMutableBytes { #expect(!InternetChecksum.completeTransportChecksum($0)) }
    }
}

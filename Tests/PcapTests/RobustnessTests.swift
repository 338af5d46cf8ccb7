import IPIPCore
import Pcap
import Testing

/// Whatever the file holds, the reader hands out in-bounds views or throws; it never traps.
@Suite struct RobustnessTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var fileLinkType: UInt32
        var testDescription: String { "LINKTYPE \(fileLinkType)" }
    }

    static let cases = [101, 228, 229, 1, 113, 276, 0, 108].map { Case(fileLinkType: $0) }

    @Test(arguments: cases)
    func arbitraryRecordsNeverTrap(_ c: Case) throws {
        let seed: UInt64 = 0x5EED_0000 + UInt64(c.fileLinkType)
        var generator = SplitMix64(seed: seed)
        // Short records of every length around the headers, biased to VLAN EtherTypes so that
        // tag peeling runs out of bytes at every position.
        var frames: [[UInt8]] = []
        for length in 0..<40 {
            for _ in 0..<8 {
                var frame = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                for offset in [0, 12, 14, 16, 18, 20] where offset + 1 < length && Bool.random(using: &generator) {
                    frame[offset] = Bool.random(using: &generator) ? 0x81 : 0x88
                    frame[offset + 1] = frame[offset] == 0x81 ? 0x00 : 0xA8
                }
                frames.append(frame)
            }
        }
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let file = CaptureFiles.classic(
            linkType: c.fileLinkType,
            records: frames.map { .init(seconds: 1, fraction: 0, data: $0) }
        )
        let reader = try PcapReader(path: try directory.write(file, to: "random.pcap"))
        var handedOut = 0
        var tooShort = 0
        while true {
            do {
                guard
                    let inBounds = try reader.readNext({ record -> Bool in
                        let captured = record.capturedBytes
                        let network = record.networkBytes
                        return record.capturedLength == captured.count
                            && (network.count == 0
                                || (network.baseAddress! >= captured.baseAddress!
                                    && network.baseAddress! + network.count == captured.baseAddress! + captured.count))
                    })
                else { break }
                #expect(inBounds, "seed \(seed)")
                handedOut += 1
            } catch {
                #expect(error.code == .recordTooShort, "seed \(seed): \(error)")
                tooShort += 1
            }
        }
        #expect(handedOut + tooShort == frames.count, "seed \(seed)")
    }

    @Test func outOfRangeFractionCarriesIntoSeconds() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let file = CaptureFiles.classic(
            linkType: 101,
            records: [.init(seconds: 10, fraction: 2_500_000, data: Packets.ipv4())]  // 2.5 s of microseconds
        )
        let (records, error) = readAll(try PcapReader(path: try directory.write(file, to: "odd.pcap")))
        #expect(error == nil)
        #expect(records.map(\.timestamp) == [Timestamp(seconds: 12, nanoseconds: 500_000_000)])
    }
}

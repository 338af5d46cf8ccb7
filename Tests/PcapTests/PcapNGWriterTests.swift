import Foundation
import IPIPCore
import IPIPTestSupport
import Pcap
import Testing

/// The pcapng writer: libpcap reads back what it wrote (bytes, lengths, nanosecond times), tshark
/// shows the per-packet comments, and a failed write leaves nothing under the final name.
@Suite struct PcapNGWriterTests {
    static let times = [
        Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789),
        Timestamp(seconds: 1_700_000_001, nanoseconds: 5),
    ]

    static func write(_ path: String, snapshotLength: Int = 262_144) throws -> [[UInt8]] {
        let packets = [Packets.ipv4(source: (10, 0, 0, 1)), Packets.ipv4(source: (192, 0, 2, 7))]
        let writer = try PcapNGWriter(
            path: path, linkType: .raw, snapshotLength: snapshotLength, comment: "test section",
            interfaceName: "ipip0")
        for (i, p) in packets.enumerated() {
            p.withUnsafeBytes {
                writer.write($0, timestamp: Self.times[i], comment: i == 0 ? "verdict=encapsulated" : nil)
            }
        }
        #expect(writer.recordCount == 2)
        try writer.close()
        return packets
    }

    @Test func libpcapReadsItBack() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("out.pcapng")
        let packets = try Self.write(path)
        let (records, error) = readAll(try PcapReader(path: path))
        #expect(error == nil)
        #expect(records.map(\.networkBytes) == packets)
        #expect(records.map(\.timestamp) == Self.times)
        #expect(records.allSatisfy { $0.networkProtocol == .ipv4 })
        // Nothing else is left in the directory (the temporary file was renamed).
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.url.path)
        #expect(names == ["out.pcapng"])
    }

    @Test func snapshotLengthCutsRecordsKeepingTheirLength() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("cut.pcapng")
        let packets = try Self.write(path, snapshotLength: 24)
        let (records, _) = readAll(try PcapReader(path: path))
        #expect(records.map(\.capturedLength) == [24, 24])
        #expect(records.map(\.originalLength) == packets.map(\.count))
    }

    @Test(.needsTshark) func tsharkShowsTheComments() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("c.pcapng")
        _ = try Self.write(path)
        let tshark = try #require(TestEnvironment.require(TestEnvironment.tshark, "tshark", package: "tshark"))
        let r = try Processes.run(tshark, ["-n", "-r", path, "-T", "fields", "-e", "ip.src", "-e", "frame.comment"])
        #expect(r.status == 0)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "10.0.0.1\tverdict=encapsulated", "tshark printed: \(r.stdout)")
        #expect(lines.dropFirst().first == "192.0.2.7\t", "tshark printed: \(r.stdout)")
    }

    /// /dev/full fails every write with ENOSPC: close() says so, and no file appears under the
    /// final name (the temporary one is removed).
    @Test func fullDiskLeavesNoFileUnderTheFinalName() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("full.pcapng")
        // Atomic writers rename onto `path`; point the temporary file at /dev/full by making the
        // final name's directory hold a symlink at the temporary name.
        let temporary = directory.path(".full.pcapng.partial-\(getpid())")
        try FileManager.default.createSymbolicLink(atPath: temporary, withDestinationPath: "/dev/full")
        let writer = try PcapNGWriter(path: path)
        var big = [UInt8](repeating: 0x45, count: 60_000)
        big.withUnsafeMutableBytes { b in
            for k in 0..<40 { writer.write(UnsafeRawBufferPointer(b), timestamp: Timestamp(seconds: Int64(k))) }
        }
        #expect(throws: PcapError.self) { try writer.close() }
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(!FileManager.default.fileExists(atPath: temporary))
        _ = big
    }
}

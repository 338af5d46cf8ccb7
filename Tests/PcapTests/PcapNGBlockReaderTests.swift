import Foundation
import IPIPCore
import IPIPTestSupport
import Pcap
import Testing

/// The pcapng block reader: it reads back what PcapNGWriter wrote (bytes, times, link type and
/// the per-packet comments libpcap does not expose), numbers packets as libpcap does, agrees
/// with tshark about the comments, and names the file, byte offset and packet index of damage.
@Suite struct PcapNGBlockReaderTests {
    static let comments: [String?] = ["encapsulated peer 10.0.0.2", nil, "dropped ipip_unknown_peer; worker 1"]

    static func write(_ path: String, linkType: LinkType = .raw) throws -> [[UInt8]] {
        let packets = [
            Packets.ipv4(source: (10, 0, 0, 1)), Packets.ipv4(source: (192, 0, 2, 7)),
            Packets.ipv4(source: (198, 51, 100, 10)),
        ]
        let writer = try PcapNGWriter(path: path, linkType: linkType, comment: "section one", interfaceName: "tun")
        for (i, p) in packets.enumerated() {
            p.withUnsafeBytes {
                writer.write(
                    $0, timestamp: Timestamp(seconds: 1_764_000_000 + Int64(i), nanoseconds: UInt32(i * 7)),
                    comment: comments[i])
            }
        }
        try writer.close()
        return packets
    }

    @Test func roundTripWithTheWriter() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("v.pcapng")
        let packets = try Self.write(path, linkType: .virtioNet)
        let r = try PcapNGBlockReader(path: path)
        #expect(r.sectionComments == ["section one"])
        #expect(r.packets.map(\.data) == packets)
        #expect(r.packets.map(\.comment) == Self.comments)
        #expect(r.packets.map(\.index) == [0, 1, 2])
        #expect(r.packets.allSatisfy { $0.linkType == 147 })
        let times: [Timestamp?] = (0..<3).map { k -> Timestamp? in
            Timestamp(seconds: 1_764_000_000 + Int64(k), nanoseconds: UInt32(k * 7))
        }
        #expect(r.packets.map(\.timestamp) == times)
        // libpcap numbers and reads the same records.
        let (records, error) = readAll(try PcapReader(path: path))
        #expect(error == nil)
        #expect(records.map(\.index) == r.packets.map(\.index))
        #expect(records.map { Array($0.capturedBytes) } == r.packets.map(\.data))
    }

    @Test(.needsTshark) func tsharkReadsTheSameComments() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("c.pcapng")
        _ = try Self.write(path)
        let tshark = try #require(TestEnvironment.require(TestEnvironment.tshark, "tshark", package: "tshark"))
        let t = try Processes.run(
            tshark, ["-n", "-r", path, "-T", "fields", "-e", "frame.number", "-e", "frame.comment"])
        #expect(t.status == 0)
        let theirs = t.stdout.split(separator: "\n").map { line -> String in
            let f = line.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            return f.count > 1 ? String(f[1]) : ""
        }
        let ours = try PcapNGBlockReader(path: path).packets.map { $0.comment ?? "" }
        #expect(theirs == ours, "tshark printed: \(t.stdout)")
    }

    @Test func damageIsNamed() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("d.pcapng")
        _ = try Self.write(path)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // Cut inside the last packet block.
        #expect {
            try PcapNGBlockReader(bytes: Array(bytes.dropLast(10)), name: "cut.pcapng")
        } throws: { e in
            let p = e as? PcapError
            return p?.code == .truncated && "\(e)".contains("cut.pcapng")
                && "\(e)".contains("file ends inside the block")
        }
        // Not pcapng at all (a pcap file header).
        #expect {
            try PcapNGBlockReader(bytes: [0xD4, 0xC3, 0xB2, 0xA1] + Array(repeating: 0, count: 20), name: "x.pcap")
        } throws: { e in
            (e as? PcapError)?.code == .corrupt && "\(e)".contains("not a pcapng file")
        }
        // A trailing length that disagrees with the leading one.
        var bad = bytes
        bad[bad.count - 1] ^= 0x01
        #expect {
            try PcapNGBlockReader(bytes: bad, name: "t.pcapng")
        } throws: { e in
            "\(e)".contains("trailing length differs")
        }
        // The undamaged bytes read fine.
        let r = try PcapNGBlockReader(bytes: bytes, name: "ok")
        #expect(r.packets.count == 3)
    }

    @Test func packetBlockDamageNamesThePacketIndex() throws {
        func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func le16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
            let n = UInt32(12 + body.count)
            return le32(type) + le32(n) + body + le32(n)
        }
        let shb = block(0x0A0D_0D0A, le32(0x1A2B_3C4D) + le16(1) + le16(0) + [UInt8](repeating: 0xFF, count: 8))
        let idb = block(1, le16(101) + le16(0) + le32(65535))
        func epb(interface: UInt32, options: [UInt8]) -> [UInt8] {
            block(6, le32(interface) + le32(0) + le32(0) + le32(4) + le32(4) + [0x45, 0, 0, 20] + options)
        }
        let good = epb(interface: 0, options: [])
        // Packet 1 names interface 3, which no block described.
        #expect {
            try PcapNGBlockReader(bytes: shb + idb + good + epb(interface: 3, options: []), name: "i.pcapng")
        } throws: { e in
            (e as? PcapError)?.packetIndex == 1 && "\(e)".contains("interface 3 was not described")
        }
        // Packet 0's comment option announces 200 bytes in a block that has 8.
        #expect {
            try PcapNGBlockReader(
                bytes: shb + idb + epb(interface: 0, options: le16(1) + le16(200) + [0x61, 0x62, 0, 0]),
                name: "o.pcapng")
        } throws: { e in
            (e as? PcapError)?.packetIndex == 0 && "\(e)".contains("o.pcapng: packet index 0: block at byte")
                && "\(e)".contains("option 1 runs past the block")
        }
        #expect(try PcapNGBlockReader(bytes: shb + idb + good + good, name: "ok").packets.map(\.index) == [0, 1])
    }

    @Test func big_endianSectionsAndMicrosecondResolution() throws {
        // A hand-made big-endian section: SHB, IDB (link type 101, if_tsresol 6), one EPB with a comment.
        func be32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
        func be16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
        func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
            let n = UInt32(12 + body.count)
            return be32(type) + be32(n) + body + be32(n)
        }
        let shb = block(0x0A0D_0D0A, be32(0x1A2B_3C4D) + be16(1) + be16(0) + [UInt8](repeating: 0xFF, count: 8))
        let idb = block(1, be16(101) + be16(0) + be32(65535) + be16(9) + be16(1) + [6, 0, 0, 0] + be16(0) + be16(0))
        let data: [UInt8] = [0x45, 0, 0, 20]
        let ticks: UInt64 = 1_500_000_250
        let comment = Array("live: consumed".utf8)
        let epb = block(
            6,
            be32(0) + be32(UInt32(ticks >> 32)) + be32(UInt32(ticks & 0xFFFF_FFFF)) + be32(4) + be32(4) + data
                + be16(1) + be16(UInt16(comment.count)) + comment + [0, 0] + be16(0) + be16(0))
        let r = try PcapNGBlockReader(bytes: shb + idb + epb, name: "be")
        #expect(r.packets.count == 1)
        #expect(r.packets[0].linkType == 101)
        #expect(r.packets[0].timestamp == Timestamp(seconds: 1500, nanoseconds: 250_000))
        #expect(r.packets[0].comment == "live: consumed")
        #expect(r.packets[0].data == data)
    }
}

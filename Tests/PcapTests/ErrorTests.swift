import Foundation
import IPIPCore
import Pcap
import Testing

/// What the reader and writer say when files are missing, foreign, cut short or corrupt.
@Suite struct ErrorTests {
    static let v4 = Packets.ipv4(payloadByteCount: 20)  // 48 bytes

    struct OpenCase: Sendable, CustomTestStringConvertible {
        var name: String
        /// nil: the path does not exist.
        var contents: [UInt8]?
        var code: PcapError.Code
        var messageParts: [String]
        var testDescription: String { name }
    }

    static let openCases: [OpenCase] = [
        OpenCase(name: "missing file", contents: nil, code: .open, messageParts: ["No such file"]),
        OpenCase(
            name: "garbage",
            contents: Array("this is not a capture file at all".utf8),
            code: .corrupt,
            messageParts: ["not a readable pcap"]
        ),
        OpenCase(name: "empty file", contents: [], code: .corrupt, messageParts: ["not a readable pcap"]),
        OpenCase(
            name: "half a header",
            contents: Array(CaptureFiles.classic(linkType: 1).prefix(12)),
            code: .corrupt,
            messageParts: ["not a readable pcap"]
        ),
        OpenCase(
            name: "802.11 link type",
            contents: CaptureFiles.classic(linkType: 105),
            code: .unsupportedLinkType,
            messageParts: ["unsupported link type 105", "IEEE802_11"]
        ),
        OpenCase(
            name: "USB link type",
            contents: CaptureFiles.classic(linkType: 220),
            code: .unsupportedLinkType,
            messageParts: ["unsupported link type 220", "USB_LINUX_MMAPPED"]
        ),
    ]

    @Test(arguments: openCases)
    func openFailure(_ c: OpenCase) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = try c.contents.map { try directory.write($0, to: "bad.pcap") } ?? directory.path("missing.pcap")
        do {
            _ = try PcapReader(path: path)
            Issue.record("opened \(path)")
        } catch {
            #expect(error.code == c.code)
            #expect(error.path == path)
            #expect(error.packetIndex == nil)
            #expect(error.description.hasPrefix(path + ": "))
            for part in c.messageParts { #expect(error.description.contains(part), "\(error)") }
        }
    }

    @Test func directoryIsNotACapture() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        #expect(throws: PcapError.self) { try PcapReader(path: directory.url.path) }
        do { _ = try PcapReader(path: directory.url.path) } catch { #expect(error.code == .open) }
    }

    @Test func headerOnlyFileHasNoRecords() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let reader = try PcapReader(path: try directory.write(CaptureFiles.classic(linkType: 1), to: "empty.pcap"))
        #expect(reader.linkType == .ethernet)
        #expect(try reader.readNext { _ in 1 } == nil)
    }

    struct DamageCase: Sendable, CustomTestStringConvertible {
        var name: String
        /// Bytes kept of a file of three 48-byte IPv4 records (24 + 3 × (16 + 48) = 216 bytes).
        var keptByteCount: Int
        /// Replaces the captured length of record `corruptIndex` with a huge value.
        var corruptIndex: Int?
        var goodRecords: Int
        var code: PcapError.Code
        var testDescription: String { name }
    }

    static let damageCases: [DamageCase] = [
        DamageCase(name: "last record cut in half", keptByteCount: 216 - 24, goodRecords: 2, code: .truncated),
        DamageCase(name: "last record header cut", keptByteCount: 24 + 2 * 64 + 8, goodRecords: 2, code: .truncated),
        DamageCase(
            name: "second record cut after its header",
            keptByteCount: 24 + 64 + 16 + 1,
            goodRecords: 1,
            code: .truncated
        ),
        DamageCase(
            name: "second record length absurd",
            keptByteCount: 216,
            corruptIndex: 1,
            goodRecords: 1,
            code: .corrupt
        ),
    ]

    @Test(arguments: damageCases)
    func damagedFile(_ c: DamageCase) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let records = (0..<3).map { CaptureFiles.Record(seconds: UInt32($0), fraction: 0, data: Self.v4) }
        var file = CaptureFiles.classic(linkType: 101, records: records)
        #expect(file.count == 216)
        if let index = c.corruptIndex {
            let offset = 24 + 64 * index + 8
            file.replaceSubrange(offset..<offset + 4, with: Packets.littleEndian32(0x00FF_FFFF))
        }
        let path = try directory.write(Array(file.prefix(c.keptByteCount)), to: "damaged.pcap")
        let reader = try PcapReader(path: path)
        let (read, error) = readAll(reader)
        #expect(read.map(\.index) == Array(0..<c.goodRecords))
        #expect(read.allSatisfy { $0.networkBytes == Self.v4 })
        let failure = try #require(error)
        #expect(failure.code == c.code)
        #expect(failure.path == path)
        #expect(failure.packetIndex == c.goodRecords)
        #expect(failure.description.hasPrefix("\(path): packet index \(c.goodRecords): "), "\(failure)")
        // The file is unusable past this point: the same error again, no records.
        do {
            _ = try reader.readNext { _ in 0 }
            Issue.record("read past a damaged record")
        } catch {
            #expect(error.code == c.code)
            #expect(error.packetIndex == c.goodRecords)
        }
    }

    struct ShortCase: Sendable, CustomTestStringConvertible {
        var name: String
        var fileLinkType: UInt32
        var good: [UInt8]
        var short: [UInt8]
        var messageParts: [String]
        var testDescription: String { name }
    }

    static let shortCases: [ShortCase] = [
        ShortCase(
            name: "Ethernet of 10 bytes",
            fileLinkType: 1,
            good: Packets.ethernet([0x0800], v4),
            short: Array(Packets.macs.prefix(10)),
            messageParts: ["10 bytes", "Ethernet header (14 bytes)"]
        ),
        ShortCase(
            name: "Ethernet VLAN tag cut",
            fileLinkType: 1,
            good: Packets.ethernet([0x8100, 0x0800], v4),
            short: Packets.ethernet([0x8100], [0, 100]),
            messageParts: ["16 bytes", "VLAN tag (18 bytes)"]
        ),
        ShortCase(
            name: "Ethernet second VLAN tag cut",
            fileLinkType: 1,
            good: Packets.ethernet([0x0800], v4),
            short: Packets.ethernet([0x88A8, 0x8100], [0, 100, 8]),
            messageParts: ["VLAN tag (22 bytes)"]
        ),
        ShortCase(
            name: "SLL of 12 bytes",
            fileLinkType: 113,
            good: Packets.linuxSLL(0x0800, v4),
            short: [UInt8](repeating: 0, count: 12),
            messageParts: ["Linux SLL header (16 bytes)"]
        ),
        ShortCase(
            name: "SLL2 of 19 bytes",
            fileLinkType: 276,
            good: Packets.linuxSLL2(0x0800, v4),
            short: [UInt8](repeating: 0, count: 19),
            messageParts: ["Linux SLL2 header (20 bytes)"]
        ),
        ShortCase(
            name: "NULL of 3 bytes",
            fileLinkType: 0,
            good: Packets.littleEndian32(2) + v4,
            short: [2, 0, 0],
            messageParts: ["BSD loopback header (4 bytes)"]
        ),
        ShortCase(
            name: "LOOP of 0 bytes",
            fileLinkType: 108,
            good: Packets.bigEndian32(2) + v4,
            short: [],
            messageParts: ["0 bytes", "OpenBSD loopback header"]
        ),
    ]

    /// A short record is an error naming its index, and reading goes on after it.
    @Test(arguments: shortCases)
    func recordTooShort(_ c: ShortCase) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let frames = [c.good, c.good, c.short, c.good]
        let file = CaptureFiles.classic(
            linkType: c.fileLinkType,
            records: frames.enumerated().map { .init(seconds: UInt32($0.offset), fraction: 0, data: $0.element) }
        )
        let path = try directory.write(file, to: "short.pcap")
        let reader = try PcapReader(path: path)
        let (before, error) = readAll(reader)
        #expect(before.map(\.index) == [0, 1])
        let failure = try #require(error)
        #expect(failure.code == .recordTooShort)
        #expect(failure.packetIndex == 2)
        #expect(failure.description.hasPrefix("\(path): packet index 2: "))
        for part in c.messageParts { #expect(failure.description.contains(part), "\(failure)") }
        let (after, end) = readAll(reader)
        #expect(end == nil)
        #expect(after.map(\.index) == [3])
        #expect(after.first?.networkBytes == Self.v4)
    }

    @Test func writerCannotCreateFile() throws {
        let path = "/nonexistent-directory-\(UInt32.random(in: 0...UInt32.max))/out.pcap"
        do {
            _ = try PcapWriter(path: path)
            Issue.record("created \(path)")
        } catch {
            #expect(error.code == .open)
            #expect(error.description.hasPrefix(path + ": "))
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/dev/full"), "/dev/full is missing"))
    func writerReportsDiskFull() throws {
        let writer = try PcapWriter(path: "/dev/full", linkType: .raw)
        let packet = Packets.ipv4(payloadByteCount: 1000)
        for i in 0..<100 {  // more than one stdio buffer, so some fwrite fails too
            packet.withUnsafeBytes { writer.writeIPv4Packet($0, timestamp: Timestamp(seconds: Int64(i))) }
        }
        #expect(throws: PcapError.self) { try writer.flush() }
        do {
            try writer.close()
            Issue.record("close after a failed write succeeded")
        } catch {
            #expect(error.code == .write)
            #expect(error.description.hasPrefix("/dev/full: cannot write capture"), "\(error)")
        }
        try writer.close()  // already closed: nothing to report
    }
}

import Foundation
import IPIPCore
import Pcap
import Testing

/// `PcapReader(bytes:name:)` reads a capture held in memory exactly as the same bytes in a file,
/// and names the capture in its errors.
@Suite struct MemoryReaderTests {
    static let v4 = Packets.ipv4(payloadByteCount: 20)

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var contents: [UInt8]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "classic Ethernet, nanoseconds, a short record",
            contents: CaptureFiles.classic(
                linkType: 1, nanosecond: true,
                records: [
                    .init(seconds: 7, fraction: 999_999_999, data: Packets.ethernet([0x0800], v4)),
                    .init(seconds: 8, fraction: 1, data: [1, 2, 3]),
                    .init(seconds: 9, fraction: 2, data: Packets.ethernet([0x8100, 0x0800], v4)),
                ])),
        Case(
            name: "big-endian raw IPv4",
            contents: CaptureFiles.classic(
                linkType: 101, bigEndian: true, records: [.init(seconds: 1, fraction: 500, data: v4)])),
        Case(
            name: "pcapng Linux cooked",
            contents: CaptureFiles.pcapng(
                linkType: 113, records: [(1_000_000_123, Packets.linuxSLL(0x0800, v4))])),
        Case(
            name: "truncated in a record",
            contents: Array(
                CaptureFiles.classic(linkType: 101, records: [.init(seconds: 1, fraction: 0, data: v4)]).dropLast(5))),
    ]

    @Test(arguments: cases)
    func sameRecordsAsTheFile(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = try directory.write(c.contents, to: "capture.pcap")
        let fromFile = readAll(try PcapReader(path: path))
        let memory = try c.contents.withUnsafeBytes { try PcapReader(bytes: $0, name: path) }
        let fromMemory = readAll(memory)
        #expect(fromMemory.records == fromFile.records)
        #expect(fromMemory.error?.description == fromFile.error?.description)
        #expect(!fromFile.records.isEmpty || fromFile.error != nil)
    }

    @Test("the reader keeps its own copy of the bytes")
    func copiesTheBytes() throws {
        var bytes = CaptureFiles.classic(linkType: 101, records: [.init(seconds: 1, fraction: 0, data: Self.v4)])
        let reader = try bytes.withUnsafeBytes { try PcapReader(bytes: $0, name: "mem") }
        for i in bytes.indices { bytes[i] = 0 }
        let read = readAll(reader)
        #expect(read.error == nil)
        #expect(read.records.map(\.networkBytes) == [Self.v4])
    }

    @Test(
        "empty, foreign and unsupported captures in memory are errors naming them",
        arguments: [
            ([UInt8](), PcapError.Code.corrupt), (Array("not a capture".utf8), .corrupt),
            (CaptureFiles.classic(linkType: 105), .unsupportedLinkType),
        ])
    func openErrors(_ contents: [UInt8], _ code: PcapError.Code) {
        do {
            _ = try contents.withUnsafeBytes { try PcapReader(bytes: $0, name: "capture in memory") }
            Issue.record("opened")
        } catch let error as PcapError {
            #expect(error.code == code)
            #expect(error.path == "capture in memory")
            #expect(error.description.hasPrefix("capture in memory: "))
        } catch {
            Issue.record("not a PcapError: \(error)")
        }
    }
}

/// A refused in-memory capture gives its stream back: the `pcap` fuzz target ran out of memory
/// after 1.4 million inputs because every refused open leaked its fmemopen stream (4 KB).
@Suite struct MemoryReaderLeakTests {
    /// Resident bytes of this process (Linux: /proc/self/statm).
    static func residentBytes() throws -> Int {
        let fields = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        return Int(fields[1])! * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test("10,000 refused in-memory captures leave the resident size as it was (within 8 MB)")
    func refusedOpensDoNotLeak() throws {
        let garbage = Array("not a capture, but long enough to be read".utf8)
        func attempt() {
            _ = try? garbage.withUnsafeBytes { try PcapReader(bytes: $0, name: "garbage") }
        }
        for _ in 0..<200 { attempt() }  // warm up libpcap and the allocator
        let before = try Self.residentBytes()
        for _ in 0..<10_000 { attempt() }
        let after = try Self.residentBytes()
        // A leaked stream is about 4 KB: 40 MB for 10,000.
        #expect(after < before + 8 << 20, "resident size grew by \(after - before) bytes")
    }
}

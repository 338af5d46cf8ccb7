import IPIPCore
import IPIPTestSupport
import Pcap
import Testing

/// Captures the writer produces are readable by Wireshark's and tcpdump's tools, and pcapng
/// written by them is readable by the reader. Skipped (with the reason) where a tool is missing.
@Suite struct InteropTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var linkType: LinkType
        var testDescription: String { "\(linkType)" }
    }

    static let cases = LinkType.allCases.map(Case.init)
    /// tcpdump has no decoder for the private link type swift-ipip uses for virtio headers.
    static let tcpdumpCases = cases.filter { $0.linkType != .virtioNet }
    /// How tshark decodes it (see `LinkType.virtioNet`).
    static let userLinkType = ["-o", "uat:user_dlts:\"User 0 (DLT=147)\",\"ip\",\"10\",\"\",\"0\",\"\""]
    static let sources: [(UInt8, UInt8, UInt8, UInt8)] = [(10, 0, 0, 1), (192, 0, 2, 7), (203, 0, 113, 254)]
    static let expectedSources = ["10.0.0.1", "192.0.2.7", "203.0.113.254"]

    /// Writes one IPv4 packet per source address.
    static func writeCapture(_ path: String, linkType: LinkType) throws {
        let writer = try PcapWriter(path: path, linkType: linkType)
        for (i, source) in sources.enumerated() {
            Packets.ipv4(source: source).withUnsafeBytes {
                writer.writeIPv4Packet(
                    $0,
                    timestamp: Timestamp(seconds: 1_700_000_000 + Int64(i), nanoseconds: 250_000_500)
                )
            }
        }
        try writer.close()
    }

    @Test(.needsTshark, arguments: cases)
    func tsharkDecodesWriterOutput(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("out.pcap")
        try Self.writeCapture(path, linkType: c.linkType)
        let tshark = try #require(TestEnvironment.require(TestEnvironment.tshark, "tshark", package: "tshark"))
        let r = try Processes.run(
            tshark,
            ["-n", "-r", path] + Self.userLinkType + ["-T", "fields", "-e", "ip.src", "-e", "frame.time_epoch"])
        let (status, output) = (r.status, r.stdout)
        #expect(status == 0)
        let lines = output.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        #expect(lines.map { $0.first ?? "" } == Self.expectedSources, "tshark printed: \(output)")
        #expect(lines.map { $0.last ?? "" }.allSatisfy { $0.hasSuffix(".250000000") }, "tshark printed: \(output)")
    }

    @Test(
        .enabled(
            if: Processes.find("tcpdump") != nil || TestEnvironment.toolsRequired,
            "needs tcpdump (apt-get install tcpdump)"),
        arguments: tcpdumpCases)
    func tcpdumpDecodesWriterOutput(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("out.pcap")
        try Self.writeCapture(path, linkType: c.linkType)
        let tcpdump = try #require(TestEnvironment.require(Processes.find("tcpdump"), "tcpdump", package: "tcpdump"))
        let r = try Processes.run(tcpdump, ["-n", "-r", path])
        let (status, output) = (r.status, r.stdout)
        #expect(status == 0)
        let lines = output.split(separator: "\n")
        #expect(lines.count == 3, "tcpdump printed: \(output)")
        for (line, source) in zip(lines, Self.expectedSources) {
            #expect(line.contains("\(source).12345 > 192.0.2.99.53"), "tcpdump printed: \(line)")
        }
    }

    @Test(
        .enabled(
            if: Processes.find("editcap") != nil || TestEnvironment.toolsRequired,
            "needs editcap (apt-get install tshark)"),
        arguments: cases)
    func readsPcapngFromEditcap(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let pcap = directory.path("in.pcap")
        let pcapng = directory.path("in.pcapng")
        try Self.writeCapture(pcap, linkType: c.linkType)
        let editcap = try #require(TestEnvironment.require(Processes.find("editcap"), "editcap", package: "tshark"))
        try #require(try Processes.run(editcap, ["-F", "pcapng", pcap, pcapng]).status == 0)

        let original = readAll(try PcapReader(path: pcap))
        let converted = readAll(try PcapReader(path: pcapng))
        #expect(original.error == nil)
        #expect(converted.error == nil)
        #expect(converted.records.count == 3)
        #expect(converted.records == original.records)
        #expect(converted.records.map(\.timestamp.nanoseconds) == [250_000_000, 250_000_000, 250_000_000])
        #expect(converted.records.allSatisfy { $0.networkProtocol == .ipv4 })
    }
}

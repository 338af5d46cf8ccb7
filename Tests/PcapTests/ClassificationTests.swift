import IPIPCore
import Pcap
import Testing

/// Link-header stripping and network-protocol classification, from hand-built frames.
@Suite struct ClassificationTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        /// The on-disk LINKTYPE_* value of the file.
        var fileLinkType: UInt32
        var frame: [UInt8]
        var linkType: LinkType
        var networkProtocol: NetworkProtocol
        var headerByteCount: Int
        var testDescription: String { name }

        /// One row: name, file link type, frame, then what the reader must make of it.
        init(
            _ name: String, _ fileLinkType: UInt32, _ frame: [UInt8], _ linkType: LinkType,
            _ networkProtocol: NetworkProtocol, _ headerByteCount: Int
        ) {
            self.name = name
            self.fileLinkType = fileLinkType
            self.frame = frame
            self.linkType = linkType
            self.networkProtocol = networkProtocol
            self.headerByteCount = headerByteCount
        }
    }

    static let v4 = Packets.ipv4()
    static let v6 = Packets.ipv6()

    static let cases: [Case] = [
        // Ethernet, VLAN tags.
        Case("Ethernet IPv4", 1, Packets.ethernet([0x0800], v4), .ethernet, .ipv4, 14),
        Case("Ethernet IPv6", 1, Packets.ethernet([0x86DD], v6), .ethernet, .ipv6, 14),
        Case("Ethernet ARP", 1, Packets.ethernet([0x0806], Packets.arp), .ethernet, .arp, 14),
        Case("Ethernet 802.1Q IPv4", 1, Packets.ethernet([0x8100, 0x0800], v4), .ethernet, .ipv4, 18),
        Case("Ethernet 802.1ad+802.1Q IPv6", 1, Packets.ethernet([0x88A8, 0x8100, 0x86DD], v6), .ethernet, .ipv6, 22),
        Case(
            "Ethernet 802.1Q+802.1Q ARP", 1, Packets.ethernet([0x8100, 0x8100, 0x0806], Packets.arp), .ethernet, .arp,
            22),
        Case(
            "Ethernet three tags stop after two", 1, Packets.ethernet([0x8100, 0x8100, 0x8100, 0x0800], v4), .ethernet,
            .other(0x8100), 22),
        Case("Ethernet LLDP", 1, Packets.ethernet([0x88CC], [1, 2, 3]), .ethernet, .other(0x88CC), 14),
        Case(
            "Ethernet 802.3 length field", 1, Packets.ethernet([0x0026], [0x42, 0x42, 3]), .ethernet, .other(0x26), 14),
        // Linux cooked.
        Case("SLL IPv6", 113, Packets.linuxSLL(0x86DD, v6), .linuxSLL, .ipv6, 16),
        Case("SLL ARP", 113, Packets.linuxSLL(0x0806, Packets.arp), .linuxSLL, .arp, 16),
        Case("SLL 802.1Q IPv4", 113, Packets.linuxSLL(0x8100, [0, 100, 8, 0] + v4), .linuxSLL, .ipv4, 20),
        Case("SLL2 IPv4", 276, Packets.linuxSLL2(0x0800, v4), .linuxSLL2, .ipv4, 20),
        Case("SLL2 ARP", 276, Packets.linuxSLL2(0x0806, Packets.arp), .linuxSLL2, .arp, 20),
        // Raw IP: by version nibble, or by the file's promise.
        Case("raw (101) IPv4", 101, v4, .raw, .ipv4, 0),
        Case("raw (101) IPv6", 101, v6, .raw, .ipv6, 0),
        Case("raw (101) version 5", 101, [0x55, 0, 0, 0], .raw, .other(5), 0),
        Case("raw (101) empty record", 101, [], .raw, .other(0), 0),
        Case("raw IPv4 (228)", 228, v4, .raw, .ipv4, 0),
        Case("raw IPv6 (229)", 229, v6, .raw, .ipv6, 0),
        // Loopback: family 2 is IPv4; 24, 28, 30 IPv6; either byte order.
        Case("NULL little-endian 2", 0, Packets.littleEndian32(2) + v4, .bsdLoopback, .ipv4, 4),
        Case("NULL big-endian 2", 0, Packets.bigEndian32(2) + v4, .bsdLoopback, .ipv4, 4),
        Case("NULL little-endian 24", 0, Packets.littleEndian32(24) + v6, .bsdLoopback, .ipv6, 4),
        Case("NULL big-endian 28", 0, Packets.bigEndian32(28) + v6, .bsdLoopback, .ipv6, 4),
        Case("NULL little-endian 30", 0, Packets.littleEndian32(30) + v6, .bsdLoopback, .ipv6, 4),
        Case("NULL unknown family 7", 0, Packets.littleEndian32(7) + [1, 2], .bsdLoopback, .other(7), 4),
        Case("LOOP big-endian 2", 108, Packets.bigEndian32(2) + v4, .openBSDLoopback, .ipv4, 4),
        Case("LOOP big-endian 24", 108, Packets.bigEndian32(24) + v6, .openBSDLoopback, .ipv6, 4),
        Case("LOOP little-endian 2 accepted", 108, Packets.littleEndian32(2) + v4, .openBSDLoopback, .ipv4, 4),
    ]

    @Test(arguments: cases)
    func classify(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let file = CaptureFiles.classic(
            linkType: c.fileLinkType,
            records: [.init(seconds: 1, fraction: 2, data: c.frame)]
        )
        let reader = try PcapReader(path: try directory.write(file, to: "in.pcap"))
        #expect(reader.linkType == c.linkType)
        let (records, error) = readAll(reader)
        #expect(error == nil)
        try #require(records.count == 1)
        #expect(records[0].networkProtocol == c.networkProtocol)
        #expect(records[0].networkBytes == Array(c.frame.dropFirst(c.headerByteCount)))
        #expect(records[0].capturedBytes == c.frame)
    }

    struct FormatCase: Sendable, CustomTestStringConvertible {
        var name: String
        var file: [UInt8]
        var timestamps: [Timestamp]
        var testDescription: String { name }
    }

    static let formatCases: [FormatCase] = [
        FormatCase(
            name: "classic, nanosecond magic",
            file: CaptureFiles.classic(
                linkType: 101,
                nanosecond: true,
                records: [.init(seconds: 7, fraction: 123_456_789, data: v4), .init(seconds: 8, fraction: 1, data: v6)]
            ),
            timestamps: [Timestamp(seconds: 7, nanoseconds: 123_456_789), Timestamp(seconds: 8, nanoseconds: 1)]
        ),
        FormatCase(
            name: "classic, big-endian, microseconds",
            file: CaptureFiles.classic(
                linkType: 101,
                bigEndian: true,
                records: [.init(seconds: 7, fraction: 654_321, data: v4), .init(seconds: 9, fraction: 0, data: v6)]
            ),
            timestamps: [Timestamp(seconds: 7, nanoseconds: 654_321_000), Timestamp(seconds: 9)]
        ),
        FormatCase(
            name: "pcapng, nanosecond resolution",
            file: CaptureFiles.pcapng(
                linkType: 101,
                records: [(1_700_000_000_123_456_789, v4), (1_700_000_001_000_000_001, v6)]
            ),
            timestamps: [
                Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789),
                Timestamp(seconds: 1_700_000_001, nanoseconds: 1),
            ]
        ),
    ]

    /// Formats the writer never produces: nanosecond and big-endian pcap, pcapng.
    @Test(arguments: formatCases)
    func fileFormat(_ c: FormatCase) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let reader = try PcapReader(path: try directory.write(c.file, to: "in.cap"))
        #expect(reader.linkType == .raw)
        let (records, error) = readAll(reader)
        #expect(error == nil)
        #expect(records.map(\.timestamp) == c.timestamps)
        #expect(records.map(\.networkProtocol) == [.ipv4, .ipv6])
        #expect(records.map(\.networkBytes) == [Self.v4, Self.v6])
    }

    @Test func linkTypeValuesRoundTrip() {
        for linkType in LinkType.allCases {
            #expect(LinkType(dataLinkType: linkType.dataLinkType) == linkType, "\(linkType)")
        }
        #expect(LinkType(dataLinkType: 105) == nil)
        #expect(NetworkProtocol.other(0x88CC).description == "other(0x88CC)")
        #expect(NetworkProtocol(etherType: 0x86DD) == .ipv6)
    }
}

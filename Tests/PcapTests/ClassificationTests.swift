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
    }

    static let v4 = Packets.ipv4()
    static let v6 = Packets.ipv6()

    static let cases: [Case] = [
        // Ethernet, VLAN tags.
        Case(
            name: "Ethernet IPv4",
            fileLinkType: 1,
            frame: Packets.ethernet([0x0800], v4),
            linkType: .ethernet,
            networkProtocol: .ipv4,
            headerByteCount: 14
        ),
        Case(
            name: "Ethernet IPv6",
            fileLinkType: 1,
            frame: Packets.ethernet([0x86DD], v6),
            linkType: .ethernet,
            networkProtocol: .ipv6,
            headerByteCount: 14
        ),
        Case(
            name: "Ethernet ARP",
            fileLinkType: 1,
            frame: Packets.ethernet([0x0806], Packets.arp),
            linkType: .ethernet,
            networkProtocol: .arp,
            headerByteCount: 14
        ),
        Case(
            name: "Ethernet 802.1Q IPv4",
            fileLinkType: 1,
            frame: Packets.ethernet([0x8100, 0x0800], v4),
            linkType: .ethernet,
            networkProtocol: .ipv4,
            headerByteCount: 18
        ),
        Case(
            name: "Ethernet 802.1ad+802.1Q IPv6",
            fileLinkType: 1,
            frame: Packets.ethernet([0x88A8, 0x8100, 0x86DD], v6),
            linkType: .ethernet,
            networkProtocol: .ipv6,
            headerByteCount: 22
        ),
        Case(
            name: "Ethernet 802.1Q+802.1Q ARP",
            fileLinkType: 1,
            frame: Packets.ethernet([0x8100, 0x8100, 0x0806], Packets.arp),
            linkType: .ethernet,
            networkProtocol: .arp,
            headerByteCount: 22
        ),
        Case(
            name: "Ethernet three tags stop after two",
            fileLinkType: 1,
            frame: Packets.ethernet([0x8100, 0x8100, 0x8100, 0x0800], v4),
            linkType: .ethernet,
            networkProtocol: .other(0x8100),
            headerByteCount: 22
        ),
        Case(
            name: "Ethernet LLDP",
            fileLinkType: 1,
            frame: Packets.ethernet([0x88CC], [1, 2, 3]),
            linkType: .ethernet,
            networkProtocol: .other(0x88CC),
            headerByteCount: 14
        ),
        Case(
            name: "Ethernet 802.3 length field",
            fileLinkType: 1,
            frame: Packets.ethernet([0x0026], [0x42, 0x42, 3]),
            linkType: .ethernet,
            networkProtocol: .other(0x26),
            headerByteCount: 14
        ),
        // Linux cooked.
        Case(
            name: "SLL IPv6",
            fileLinkType: 113,
            frame: Packets.linuxSLL(0x86DD, v6),
            linkType: .linuxSLL,
            networkProtocol: .ipv6,
            headerByteCount: 16
        ),
        Case(
            name: "SLL ARP",
            fileLinkType: 113,
            frame: Packets.linuxSLL(0x0806, Packets.arp),
            linkType: .linuxSLL,
            networkProtocol: .arp,
            headerByteCount: 16
        ),
        Case(
            name: "SLL 802.1Q IPv4",
            fileLinkType: 113,
            frame: Packets.linuxSLL(0x8100, [0, 100, 8, 0] + v4),
            linkType: .linuxSLL,
            networkProtocol: .ipv4,
            headerByteCount: 20
        ),
        Case(
            name: "SLL2 IPv4",
            fileLinkType: 276,
            frame: Packets.linuxSLL2(0x0800, v4),
            linkType: .linuxSLL2,
            networkProtocol: .ipv4,
            headerByteCount: 20
        ),
        Case(
            name: "SLL2 ARP",
            fileLinkType: 276,
            frame: Packets.linuxSLL2(0x0806, Packets.arp),
            linkType: .linuxSLL2,
            networkProtocol: .arp,
            headerByteCount: 20
        ),
        // Raw IP: by version nibble, or by the file's promise.
        Case(
            name: "raw (101) IPv4",
            fileLinkType: 101,
            frame: v4,
            linkType: .raw,
            networkProtocol: .ipv4,
            headerByteCount: 0
        ),
        Case(
            name: "raw (101) IPv6",
            fileLinkType: 101,
            frame: v6,
            linkType: .raw,
            networkProtocol: .ipv6,
            headerByteCount: 0
        ),
        Case(
            name: "raw (101) version 5",
            fileLinkType: 101,
            frame: [0x55, 0, 0, 0],
            linkType: .raw,
            networkProtocol: .other(5),
            headerByteCount: 0
        ),
        Case(
            name: "raw (101) empty record",
            fileLinkType: 101,
            frame: [],
            linkType: .raw,
            networkProtocol: .other(0),
            headerByteCount: 0
        ),
        Case(
            name: "raw IPv4 (228)",
            fileLinkType: 228,
            frame: v4,
            linkType: .raw,
            networkProtocol: .ipv4,
            headerByteCount: 0
        ),
        Case(
            name: "raw IPv6 (229)",
            fileLinkType: 229,
            frame: v6,
            linkType: .raw,
            networkProtocol: .ipv6,
            headerByteCount: 0
        ),
        // Loopback: family 2 is IPv4; 24, 28, 30 IPv6; either byte order.
        Case(
            name: "NULL little-endian 2",
            fileLinkType: 0,
            frame: Packets.littleEndian32(2) + v4,
            linkType: .bsdLoopback,
            networkProtocol: .ipv4,
            headerByteCount: 4
        ),
        Case(
            name: "NULL big-endian 2",
            fileLinkType: 0,
            frame: Packets.bigEndian32(2) + v4,
            linkType: .bsdLoopback,
            networkProtocol: .ipv4,
            headerByteCount: 4
        ),
        Case(
            name: "NULL little-endian 24",
            fileLinkType: 0,
            frame: Packets.littleEndian32(24) + v6,
            linkType: .bsdLoopback,
            networkProtocol: .ipv6,
            headerByteCount: 4
        ),
        Case(
            name: "NULL big-endian 28",
            fileLinkType: 0,
            frame: Packets.bigEndian32(28) + v6,
            linkType: .bsdLoopback,
            networkProtocol: .ipv6,
            headerByteCount: 4
        ),
        Case(
            name: "NULL little-endian 30",
            fileLinkType: 0,
            frame: Packets.littleEndian32(30) + v6,
            linkType: .bsdLoopback,
            networkProtocol: .ipv6,
            headerByteCount: 4
        ),
        Case(
            name: "NULL unknown family 7",
            fileLinkType: 0,
            frame: Packets.littleEndian32(7) + [1, 2],
            linkType: .bsdLoopback,
            networkProtocol: .other(7),
            headerByteCount: 4
        ),
        Case(
            name: "LOOP big-endian 2",
            fileLinkType: 108,
            frame: Packets.bigEndian32(2) + v4,
            linkType: .openBSDLoopback,
            networkProtocol: .ipv4,
            headerByteCount: 4
        ),
        Case(
            name: "LOOP big-endian 24",
            fileLinkType: 108,
            frame: Packets.bigEndian32(24) + v6,
            linkType: .openBSDLoopback,
            networkProtocol: .ipv6,
            headerByteCount: 4
        ),
        Case(
            name: "LOOP little-endian 2 accepted",
            fileLinkType: 108,
            frame: Packets.littleEndian32(2) + v4,
            linkType: .openBSDLoopback,
            networkProtocol: .ipv4,
            headerByteCount: 4
        ),
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

import IPIPCore
import Pcap
import Testing

/// Writer → reader round trips over every link type the writer can synthesise.
@Suite struct RoundTripTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var linkType: LinkType
        var networkProtocol: NetworkProtocol
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "raw IPv4", linkType: .raw, networkProtocol: .ipv4),
        Case(name: "raw IPv6", linkType: .raw, networkProtocol: .ipv6),
        Case(name: "Ethernet IPv4", linkType: .ethernet, networkProtocol: .ipv4),
        Case(name: "Ethernet IPv6", linkType: .ethernet, networkProtocol: .ipv6),
        Case(name: "Ethernet ARP", linkType: .ethernet, networkProtocol: .arp),
        Case(name: "SLL IPv4", linkType: .linuxSLL, networkProtocol: .ipv4),
        Case(name: "SLL ARP", linkType: .linuxSLL, networkProtocol: .arp),
        Case(name: "SLL2 IPv4", linkType: .linuxSLL2, networkProtocol: .ipv4),
        Case(name: "SLL2 IPv6", linkType: .linuxSLL2, networkProtocol: .ipv6),
        Case(name: "BSD loopback IPv4", linkType: .bsdLoopback, networkProtocol: .ipv4),
        Case(name: "BSD loopback IPv6", linkType: .bsdLoopback, networkProtocol: .ipv6),
        Case(name: "OpenBSD loopback IPv4", linkType: .openBSDLoopback, networkProtocol: .ipv4),
        Case(name: "OpenBSD loopback IPv6", linkType: .openBSDLoopback, networkProtocol: .ipv6),
    ]

    /// Written with nanoseconds; read back rounded down to the microsecond.
    static let timestamps: [(written: Timestamp, read: Timestamp)] = [
        (
            Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789),
            Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_000)
        ),
        (
            Timestamp(seconds: 1_700_000_000, nanoseconds: 999_999_999),
            Timestamp(seconds: 1_700_000_000, nanoseconds: 999_999_000)
        ),
        (Timestamp(seconds: 1_700_000_001, nanoseconds: 0), Timestamp(seconds: 1_700_000_001, nanoseconds: 0)),
        (Timestamp(seconds: 0, nanoseconds: 999), Timestamp(seconds: 0, nanoseconds: 0)),
    ]

    static func packet(_ networkProtocol: NetworkProtocol, _ i: Int) -> [UInt8] {
        switch networkProtocol {
        case .ipv4: Packets.ipv4(source: (10, 0, 0, UInt8(i + 1)), payloadByteCount: 10 + i)
        case .ipv6: Packets.ipv6(payloadByteCount: i)
        default: Packets.arp
        }
    }

    @Test(arguments: cases)
    func roundTrip(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("out.pcap")
        let writer = try PcapWriter(path: path, linkType: c.linkType)
        for (i, time) in Self.timestamps.enumerated() {
            if c.networkProtocol == .ipv4 {
                Self.packet(.ipv4, i).withUnsafeBytes { writer.writeIPv4Packet($0, timestamp: time.written) }
            } else {
                writer.writePacket(
                    Self.packet(c.networkProtocol, i),
                    networkProtocol: c.networkProtocol,
                    timestamp: time.written
                )
            }
        }
        try writer.close()
        try writer.close()  // idempotent

        let reader = try PcapReader(path: path)
        #expect(reader.linkType == c.linkType)
        #expect(reader.snapshotLength == 262_144)
        let (records, error) = readAll(reader)
        #expect(error == nil)
        try #require(records.count == Self.timestamps.count)
        for (i, record) in records.enumerated() {
            let packet = Self.packet(c.networkProtocol, i)
            #expect(record.index == i)
            #expect(record.timestamp == Self.timestamps[i].read)
            #expect(record.networkProtocol == c.networkProtocol)
            #expect(record.networkBytes == packet)
            #expect(record.capturedLength == c.linkType.headerByteCount + packet.count)
            #expect(record.originalLength == record.capturedLength)
            #expect(Array(record.capturedBytes.suffix(packet.count)) == packet)
        }
        #expect(try reader.readNext { _ in 0 } == nil, "end of file stays the end")
        #expect(reader.nextIndex == Self.timestamps.count)
    }

    struct VerbatimCase: Sendable, CustomTestStringConvertible {
        var name: String
        var linkType: LinkType
        var frame: [UInt8]
        var networkProtocol: NetworkProtocol
        var headerByteCount: Int
        var testDescription: String { name }
    }

    /// `write(_:timestamp:)` stores bytes as given, link header and all.
    static let verbatimCases: [VerbatimCase] = [
        VerbatimCase(
            name: "Ethernet frame with a VLAN tag",
            linkType: .ethernet,
            frame: Packets.ethernet([0x8100, 0x0800], Packets.ipv4()),
            networkProtocol: .ipv4,
            headerByteCount: 18
        ),
        VerbatimCase(
            name: "SLL ARP",
            linkType: .linuxSLL,
            frame: Packets.linuxSLL(0x0806, Packets.arp),
            networkProtocol: .arp,
            headerByteCount: 16
        ),
        VerbatimCase(
            name: "BSD loopback written big-endian",
            linkType: .bsdLoopback,
            frame: Packets.bigEndian32(2) + Packets.ipv4(),
            networkProtocol: .ipv4,
            headerByteCount: 4
        ),
        VerbatimCase(
            name: "raw, empty record",
            linkType: .raw,
            frame: [],
            networkProtocol: .other(0),
            headerByteCount: 0
        ),
    ]

    @Test(arguments: verbatimCases)
    func verbatimWrite(_ c: VerbatimCase) throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("out.pcap")
        let writer = try PcapWriter(path: path, linkType: c.linkType)
        writer.write(c.frame, timestamp: Timestamp(seconds: 5, nanoseconds: 6_000))
        try writer.close()

        let (records, error) = readAll(try PcapReader(path: path))
        #expect(error == nil)
        try #require(records.count == 1)
        #expect(records[0].capturedBytes == c.frame)
        #expect(records[0].networkBytes == Array(c.frame.dropFirst(c.headerByteCount)))
        #expect(records[0].networkProtocol == c.networkProtocol)
        #expect(records[0].timestamp == Timestamp(seconds: 5, nanoseconds: 6_000))
    }

    @Test func snapshotLengthCutsRecordsAndKeepsTheOriginalLength() throws {
        let directory = try TemporaryDirectory()
        defer { directory.removeDirectory() }
        let path = directory.path("snap.pcap")
        let packet = Packets.ipv4(payloadByteCount: 72)  // 100 bytes
        let writer = try PcapWriter(path: path, linkType: .ethernet, snapshotLength: 64)
        packet.withUnsafeBytes { writer.writeIPv4Packet($0, timestamp: .zero) }
        try writer.flush()
        try writer.close()

        let reader = try PcapReader(path: path)
        #expect(reader.snapshotLength == 64)
        let (records, error) = readAll(reader)
        #expect(error == nil)
        try #require(records.count == 1)
        #expect(records[0].capturedLength == 64)
        #expect(records[0].originalLength == 14 + 100)
        #expect(records[0].networkBytes == Array(packet.prefix(50)))
    }
}

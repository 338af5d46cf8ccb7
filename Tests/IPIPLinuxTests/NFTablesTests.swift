import CIPIPLinux
import Glibc
import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPLinux

@Suite("NFTables")
struct NFTablesTests {
    @Test("the ruleset text")
    func rulesetText() throws {
        let text = try NFTables.ruleset(
            table: "ipipd", uplink: "eth0", nodeAddress: IPv4Address(10, 0, 0, 1),
            natPortRange: 32768...65535)
        #expect(
            text == """
                add table netdev ipipd
                delete table netdev ipipd
                table netdev ipipd {
                    chain ingress {
                        type filter hook ingress device "eth0" priority -500; policy accept;
                        ip daddr 10.0.0.1 ip protocol 4 drop
                        ip daddr 10.0.0.1 ip protocol tcp tcp dport 32768-65535 drop
                        ip daddr 10.0.0.1 ip protocol udp udp dport 32768-65535 drop
                        ip daddr 10.0.0.1 icmp type echo-reply icmp id 32768-65535 drop
                    }
                }

                """)
        let single = try NFTables.ruleset(table: "t", uplink: "e", nodeAddress: .any, natPortRange: 7...7)
        #expect(single.contains("udp dport 7 drop"))
    }

    struct NameCase: CustomTestStringConvertible, Sendable {
        var name: String
        var table: String
        var uplink: String
        var testDescription: String { name }
    }

    @Test(
        "names that cannot go into a ruleset are refused",
        arguments: [
            NameCase(name: "quote in the device", table: "ipipd", uplink: "eth0\" drop"),
            NameCase(name: "space in the table", table: "ip ipd", uplink: "eth0"),
            NameCase(name: "device longer than 15 bytes", table: "ipipd", uplink: "abcdefghijklmnop"),
            NameCase(name: "empty device", table: "ipipd", uplink: ""),
            NameCase(name: "newline in the table", table: "a\nflush ruleset", uplink: "eth0"),
        ])
    func invalidNames(_ row: NameCase) {
        #expect(throws: NFTablesError.self) {
            try NFTables.ruleset(table: row.table, uplink: row.uplink, nodeAddress: .any, natPortRange: 1...2)
        }
    }

    /// Collects the ICMP destination-unreachable messages that reach `fd` (a raw ICMP socket)
    /// within `milliseconds`: (code, destination port of the embedded UDP header or 0).
    func unreachables(on fd: Int32, milliseconds: Int32) -> [(code: UInt8, port: UInt16, embeddedProtocol: UInt8)] {
        var found: [(UInt8, UInt16, UInt8)] = []
        var remaining = milliseconds
        while remaining > 0, let bytes = receiveRaw(fd, timeoutMilliseconds: 50) ?? (remaining > 50 ? [] : nil) {
            remaining -= bytes.isEmpty ? 50 : 0
            guard let p = ParsedIPv4(bytes), p.proto == 1, p.bytes.count >= p.headerLength + 8 + 20 + 4 else {
                continue
            }
            let icmp = p.payload.startIndex
            guard p.bytes[icmp] == 3 else { continue }
            let inner = icmp + 8
            let innerHeader = Int(p.bytes[inner] & 0x0f) * 4
            let innerProtocol = p.bytes[inner + 9]
            let port =
                innerProtocol == 17
                ? UInt16(p.bytes[inner + innerHeader + 2]) << 8 | UInt16(p.bytes[inner + innerHeader + 3]) : 0
            found.append((p.bytes[icmp + 1], port, innerProtocol))
        }
        return found
    }

    @Test(
        "with the table, the host answers no NAT-port or IP-in-IP packet, and the capture still sees them",
        .needsRoot,
        .enabled(
            if: Processes.find("nft") != nil || TestEnvironment.toolsRequired, "needs nft (apt-get install nftables)"))
    func dropKeepsCapture() throws {
        let hosts = try TwoHosts(subnet: 253, tag: "nft")
        defer { hosts.delete() }
        let node = hosts.addressB
        let natPortRange: ClosedRange<UInt16> = 40000...40099
        let capture = try hosts.b.perform {
            try NFTables.apply(table: "ipipd", uplink: "vb", nodeAddress: node, natPortRange: natPortRange)
            // Applying again replaces the table atomically (no "already exists").
            try NFTables.apply(table: "ipipd", uplink: "vb", nodeAddress: node, natPortRange: natPortRange)
            #expect(try NFTables.exists(table: "ipipd"))
            #expect(try NFTables.list(table: "ipipd").contains("hook ingress"))
            return try UplinkCapture(
                interface: "vb", filter: CaptureFilter(nodeAddress: node, natPortRange: natPortRange))
        }
        let (sender, icmp, raw) = try hosts.a.perform {
            let icmp = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_ICMP))
            guard icmp >= 0 else { throw FixtureError(description: "ICMP socket: errno \(errno)") }
            return (try UDPSocket(), icmp, try RawIPv4Socket())
        }
        defer { close(icmp) }

        try sender.send([1], to: node, port: 40010)  // NAT port: dropped by nft
        try sender.send([2], to: node, port: 50000)  // outside: the host answers port unreachable
        var batch = PacketBatch(capacity: 1, maximumPacketByteCount: 256)
        let inner = udpPacket(from: IPv4Address(192, 168, 1, 1), 1, to: IPv4Address(192, 168, 2, 1), 2, payload: [3])
        batch.append(ipv4(source: hosts.addressA, destination: node, protocol: 4, payload: inner), side: .underlay)
        #expect(try raw.send(batch).sent == 1)  // no ipip module: the host would answer protocol unreachable

        let answers = unreachables(on: icmp, milliseconds: 500)
        #expect(answers.contains { $0.code == 3 && $0.port == 50000 }, "the host still answers outside the range")
        #expect(!answers.contains { $0.port == 40010 }, "no port unreachable for a NAT port")
        #expect(!answers.contains { $0.embeddedProtocol == 4 }, "no protocol unreachable for IP-in-IP")

        var rx = PacketBatch(capacity: 8, maximumPacketByteCount: 2048)
        _ = waitReadable(capture.fd, timeoutMilliseconds: 200)
        _ = try capture.receiveBatch(into: &rx, time: .zero)
        let captured = (0..<rx.count).compactMap { ParsedIPv4(rx.bytes($0)) }
        #expect(
            captured.contains { $0.proto == 17 && $0.destinationPort == 40010 }, "the capture sees the dropped datagram"
        )
        #expect(captured.contains { $0.proto == 4 }, "the capture sees the dropped IP-in-IP packet")
        #expect(!captured.contains { $0.proto == 17 && $0.destinationPort == 50000 })

        // Without the table the host answers the NAT port again: the table was what stopped it.
        try hosts.b.perform {
            try NFTables.remove(table: "ipipd")
            #expect(try !NFTables.exists(table: "ipipd"))
            try NFTables.remove(table: "ipipd")  // idempotent
        }
        // Wait out the ICMP rate limit's token refill before provoking another error.
        try sender.send([4], to: node, port: 40011)
        let after = unreachables(on: icmp, milliseconds: 1000)
        #expect(after.contains { $0.code == 3 && $0.port == 40011 })
    }
}

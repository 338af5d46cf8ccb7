import CIPIPLinux
import Glibc
import IPIPCore
import Testing

@testable import IPIPLinux

/// Parser and builder tests on byte sequences; no root needed. The fixtures were captured from
/// this kernel (6.18) with `ip route add ...`/`ip rule add ...` in a namespace and a dump through
/// NetlinkSocket, except the NLMSG_ERROR messages, which are written from linux/netlink.h.
struct NetlinkParserTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    static func p(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }
    static func a(_ s: String) -> IPv4Address { IPv4Address(s)! }

    struct RouteRow: CustomTestStringConvertible, Sendable {
        var name: String
        var hex: String
        var route: Route
        var testDescription: String { name }
    }

    static let routeRows: [RouteRow] = [
        RouteRow(
            name:
                "via gateway with RTA_METRICS mtu (ip route add 10.1.0.0/26 via 10.0.0.2 dev dummy0 proto 242 mtu 1380)",
            hex:
                "4800000018000200cc36105b13310000021a0000fef200011000000008000f00fe000000080001000a0100000c0008000800020064050000080005000a0000020800040003000000",
            route: Route(
                destination: p("10.1.0.0/26"), gateway: a("10.0.0.2"), outputInterface: 3, protocolNumber: 242,
                mtu: 1380)),
        RouteRow(
            name: "onlink, metric and prefsrc (... via 192.168.9.2 onlink src 10.0.0.1 metric 7)",
            hex:
                "4c00000018000200cc36105b13310000021a0000fef200011400000008000f00fe000000080001000a0200000800060007000000080007000a00000108000500c0a809020800040003000000",
            route: Route(
                destination: p("10.2.0.0/26"), gateway: a("192.168.9.2"), outputInterface: 3, protocolNumber: 242,
                onlink: true, source: a("10.0.0.1"), metric: 7)),
        RouteRow(
            name: "blackhole in main",
            hex: "2c00000018000200cc36105b13310000021a0000fef200060000000008000f00fe000000080001000a030000",
            route: Route(destination: p("10.3.0.0/26"), protocolNumber: 242, type: .blackhole)),
        RouteRow(
            name: "throw in table 498 (rtm_table 252, RTA_TABLE 498)",
            hex: "2c00000018000200cc36105b1331000002100000fcf200090000000008000f00f2010000080001000a030000",
            route: Route(destination: p("10.3.0.0/16"), table: 498, protocolNumber: 242, type: .throw)),
    ]

    @Test("captured RTM_NEWROUTE messages parse to the route", arguments: routeRows)
    func parseRoute(_ row: RouteRow) throws {
        let messages = try NetlinkParser.messages(in: Self.bytes(row.hex)[...])
        try #require(messages.count == 1)
        #expect(messages[0].header.type == NL.newRoute)
        #expect(messages[0].header.flags & NL.multi != 0)
        #expect(try Route(parsing: messages[0].payload) == row.route)
    }

    @Test("a built RTM_NEWROUTE parses back to the same route", arguments: routeRows)
    func routeRoundTrip(_ row: RouteRow) throws {
        let wire = row.route.message(NL.newRoute, flags: NL.create | NL.replace).bytes(sequence: 9)
        #expect(wire.count % 4 == 0)
        let m = try #require(try NetlinkParser.messages(in: wire[...]).first)
        #expect(
            m.header
                == NetlinkMessageHeader(
                    length: UInt32(wire.count), type: NL.newRoute,
                    flags: NL.request | NL.create | NL.replace, sequence: 9, portID: 0))
        #expect(try Route(parsing: m.payload) == row.route)
        let h = try #require(RouteMessageHeader(parsing: m.payload))
        #expect(h.scope == (row.route.type == .unicast && row.route.gateway == nil ? NL.scopeLink : NL.scopeUniverse))
    }

    @Test("a route straight onto a link gets scope link; deletes get scope nowhere and no metrics")
    func routeScopes() throws {
        let r = Route(destination: Self.p("10.9.0.0/24"), outputInterface: 4, protocolNumber: 242, mtu: 1400)
        let add = try #require(try NetlinkParser.messages(in: r.message(NL.newRoute).bytes(sequence: 1)[...]).first)
        #expect(RouteMessageHeader(parsing: add.payload)?.scope == NL.scopeLink)
        let del = try #require(try NetlinkParser.messages(in: r.message(NL.deleteRoute).bytes(sequence: 1)[...]).first)
        #expect(RouteMessageHeader(parsing: del.payload)?.scope == NL.scopeNowhere)
        let attributes = try NetlinkParser.attributes(in: del.payload.dropFirst(RouteMessageHeader.byteCount))
        #expect(!attributes.contains { $0.type == NL.rtaMetrics })
        #expect(try Route(parsing: del.payload)?.mtu == nil)
    }

    struct RuleRow: CustomTestStringConvertible, Sendable {
        var name: String
        var hex: String
        var rule: Rule
        var testDescription: String { name }
    }

    static let ruleRows: [RuleRow] = [
        RuleRow(
            name: "the kernel's local rule: priority 0 has no FRA_PRIORITY",
            hex:
                "3400000020000200cd36105b1331000002000000ff0000010000000008000f00ff00000008000e00ffffffff0500150002000000",
            rule: Rule(priority: 0, table: 255, protocolNumber: 2)),
        RuleRow(
            name: "ours: from 10.3.0.0/16 lookup 498 pref 498 proto 242",
            hex:
                "4400000020000200cd36105b1331000002001000fc0000010000000008000f00f201000008000e00ffffffff05001500f200000008000600f2010000080002000a030000",
            rule: Rule(priority: 498, source: p("10.3.0.0/16"), table: 498, protocolNumber: 242)),
        RuleRow(
            name: "main's rule: 32766 from all lookup main",
            hex:
                "3c00000020000200cd36105b1331000002000000fe0000010000000008000f00fe00000008000e00ffffffff050015000200000008000600fe7f0000",
            rule: Rule(priority: 32766, table: 254, protocolNumber: 2)),
    ]

    @Test("captured RTM_NEWRULE messages parse to the rule", arguments: ruleRows)
    func parseRule(_ row: RuleRow) throws {
        let m = try #require(try NetlinkParser.messages(in: Self.bytes(row.hex)[...]).first)
        #expect(m.header.type == NL.newRule)
        #expect(try Rule(parsing: m.payload) == row.rule)
        // And back.
        let wire = row.rule.message(NL.newRule).bytes(sequence: 1)
        let back = try #require(try NetlinkParser.messages(in: wire[...]).first)
        #expect(try Rule(parsing: back.payload) == row.rule)
    }

    @Test("a rule with a selector the model lacks (fwmark) parses to nil")
    func ruleWithFirewallMark() throws {
        var b = Rule(priority: 5, table: 7, protocolNumber: 242).message(NL.newRule)
        b.appendAttribute(type: UInt16(FRA_FWMARK), integer: UInt32(1))
        let m = try #require(try NetlinkParser.messages(in: b.bytes(sequence: 1)[...]).first)
        #expect(try Rule(parsing: m.payload) == nil)
    }

    @Test("captured RTM_NEWADDR messages (loopback, a veth) parse to index and prefix")
    func parseAddresses() throws {
        let lo =
            "4c00000014000200d036105b13310000020880fe01000000080001007f000001080002007f000001070003006c6f0000080008008000000014000600ffffffffffffffff4dc004004dc00400"
        let veth =
            "5000000014000200d036105b133100000218800003000000080001000a000001080002000a0000010b00030064756d6d79300000080008008000000014000600ffffffffffffffff4ec004004ec00400"
        let messages = try NetlinkParser.messages(in: Self.bytes(lo + veth)[...])
        #expect(messages.count == 2)
        #expect(
            try messages.map { try InterfaceAddress(parsing: $0.payload) } == [
                InterfaceAddress(index: 1, prefix: Self.p("127.0.0.1/8")),
                InterfaceAddress(index: 3, prefix: Self.p("10.0.0.1/24")),
            ])
    }

    struct ErrorRow: CustomTestStringConvertible, Sendable {
        var name: String
        var hex: String
        var answer: NetlinkErrorAnswer
        var testDescription: String { name }
    }

    static let errorRows: [ErrorRow] = [
        ErrorRow(
            name: "acknowledgement (error 0, NLM_F_CAPPED: only the request's header echoed)",
            hex: "24000000" + "0200" + "0001" + "09000000" + "00000000"
                + "00000000"
                + "1c000000" + "1800" + "0504" + "09000000" + "00000000",
            answer: NetlinkErrorAnswer(errno: 0, message: nil)),
        ErrorRow(
            name: "EEXIST with an extended-ack message (CAPPED | ACK_TLVS)",
            hex: "3c000000" + "0200" + "0003" + "09000000" + "00000000"
                + "efffffff"
                + "1c000000" + "1800" + "0506" + "09000000" + "00000000"
                + "16000100" + "46696c6520657869737473206865726521" + "00" + "0000",
            answer: NetlinkErrorAnswer(errno: 17, message: "File exists here!")),
        ErrorRow(
            name: "ENETUNREACH, uncapped: the whole request echoed before the TLVs",
            hex: "38000000" + "0200" + "0002" + "09000000" + "00000000"
                + "9bffffff"
                + "14000000" + "1800" + "0506" + "09000000" + "00000000" + "0a000000"
                + "0d000100" + "4e6f20726f75746500" + "000000",
            answer: NetlinkErrorAnswer(errno: 101, message: "No route")),
    ]

    @Test("NLMSG_ERROR payloads", arguments: errorRows)
    func parseError(_ row: ErrorRow) throws {
        let m = try #require(try NetlinkParser.messages(in: Self.bytes(row.hex)[...]).first)
        #expect(m.header.type == NL.error)
        #expect(try NetlinkErrorAnswer(parsing: m.payload, flags: m.header.flags) == row.answer)
    }

    struct MalformedRow: CustomTestStringConvertible, Sendable {
        var name: String
        var hex: String
        var testDescription: String { name }
    }

    static let malformedRows: [MalformedRow] = [
        MalformedRow(
            name: "message length beyond the datagram", hex: "40000000180002000100000000000000000000000000000000000000"),
        MalformedRow(name: "message length below the header", hex: "08000000180002000100000000000000"),
        MalformedRow(name: "trailing bytes after the last message", hex: "10000000030002000100000000000000aabbcc"),
    ]

    @Test("malformed datagrams are EPROTO errors, never traps", arguments: malformedRows)
    func malformed(_ row: MalformedRow) {
        do {
            _ = try NetlinkParser.messages(in: Self.bytes(row.hex)[...])
            Issue.record("no error")
        } catch {
            #expect(error.errno == EPROTO)
        }
    }

    @Test("malformed attributes: a length beyond the run, a length below 4")
    func malformedAttributes() {
        for hex in ["0c000100aabbccdd", "02000100aabbccdd"] {
            #expect(throws: NetlinkError.self) { try NetlinkParser.attributes(in: Self.bytes(hex)[...]) }
        }
        // A route whose RTA_METRICS nests garbage.
        var b = NetlinkMessageBuilder(type: NL.newRoute, flags: 0)
        RouteMessageHeader().encode(into: &b)
        b.appendAttribute(type: NL.rtaMetrics, payload: [0xFF, 0x00, 0x02, 0x00])
        let wire = b.bytes(sequence: 1)
        #expect(throws: NetlinkError.self) {
            let m = try NetlinkParser.messages(in: wire[...])[0]
            _ = try Route(parsing: m.payload)
        }
    }

    @Test("a captured RTM_NEWNEIGH payload parses to the entry; one without NDA_DST is skipped")
    func neighbour() throws {
        // 192.0.2.1 on ifindex 4, lladdr 02:fc:00:00:00:05, NUD_STALE (a dump on this kernel).
        let payload = Self.bytes(
            "02000000040000000400000108000100c00002010a00020002fc000000050000080004000400000014000300"
                + "fec20100b3c20100eab2010000000000")
        let entry = try #require(try NeighborEntry(parsing: payload[...]))
        #expect(entry.address == Self.a("192.0.2.1"))
        #expect(entry.interfaceIndex == 4)
        #expect(entry.linkAddress == MACAddress([0x02, 0xFC, 0, 0, 0, 5]))
        #expect(entry.state == 4)
        // The same header with no attributes: no destination, no entry.
        #expect(try NeighborEntry(parsing: payload.prefix(12)) == nil)
        // An IPv6 entry is not ours.
        var v6 = payload
        v6[0] = 10
        #expect(try NeighborEntry(parsing: v6[...]) == nil)
    }

    @Test("NetlinkDecoding: each message of a datagram by the socket's parser for its type")
    func decoding() throws {
        let route = Self.routeRows[0]
        var datagram = Self.bytes(route.hex)
        var done = NetlinkMessageBuilder(type: NL.done, flags: 0)
        done.append(Int32(0))
        datagram += done.bytes(sequence: 1)
        let described = try NetlinkDecoding.describe(datagram: datagram[...])
        #expect(described == ["route \(route.route)", "done 0"])
        // Cut inside the second message: the error the socket would throw.
        #expect(throws: NetlinkError.self) { try NetlinkDecoding.describe(datagram: datagram.dropLast(2)) }
    }

    @Test("arbitrary bytes never trap the parsers (seeded)")
    func fuzz() {
        var rng = SplitMix64(seed: 0x5EED_1234)
        func next() -> UInt64 { rng.next() }
        let seeds = Self.routeRows.map { Self.bytes($0.hex) } + Self.ruleRows.map { Self.bytes($0.hex) }
        for i in 0..<5000 {
            var b = seeds[i % seeds.count]
            for _ in 0..<(1 + Int(next() % 4)) { b[Int(next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: next()) }
            if next() % 3 == 0 { b.removeLast(Int(next() % UInt64(b.count))) }
            guard let messages = try? NetlinkParser.messages(in: b[...]) else { continue }
            for m in messages {
                _ = try? Route(parsing: m.payload)
                _ = try? Rule(parsing: m.payload)
                _ = try? InterfaceAddress(parsing: m.payload)
                _ = try? NetlinkLink(parsing: m.payload)
                _ = try? NetlinkErrorAnswer(parsing: m.payload, flags: m.header.flags)
            }
        }
    }

    @Test("builder: attributes are padded to 4 bytes, nested lengths cover their children")
    func builderAlignment() throws {
        var b = NetlinkMessageBuilder(type: NL.newRule, flags: 0)
        b.append(UInt8(1))
        b.appendAttribute(type: 21, integer: UInt8(242))
        b.appendNestedAttribute(type: NL.rtaMetrics) { $0.appendAttribute(type: NL.rtaxMTU, integer: UInt32(1400)) }
        b.appendAttribute(type: NL.iflaName, string: "tun0")
        let wire = b.bytes(sequence: 0x0102_0304)
        #expect(wire.count == 16 + 4 + 8 + 12 + 12)
        #expect(Array(wire[0..<4]) == [UInt8(wire.count), 0, 0, 0])
        #expect(Array(wire[8..<12]) == [4, 3, 2, 1])
        let attributes = try NetlinkParser.attributes(in: wire[20...])
        #expect(attributes.map(\.type) == [21, NL.rtaMetrics, NL.iflaName])
        #expect(attributes[0].integer(as: UInt8.self) == 242)
        #expect(try attributes[1].nested().first?.integer(as: UInt32.self) == 1400)
        #expect(attributes[2].string == "tun0")
        #expect(netlinkAlign(5) == 8 && netlinkAlign(8) == 8 && netlinkAlign(0) == 0)
    }

    @Test("NetlinkError text names the call, errno and detail")
    func errorText() {
        let e = NetlinkError(errno: 17, operation: "RTM_NEWROUTE", detail: "route 10.0.0.0/24")
        #expect(e.description == "RTM_NEWROUTE: File exists (errno 17): route 10.0.0.0/24")
        #expect(e.isAlreadyExists && !e.isNotFound)
        #expect(NetlinkError(errno: 3, operation: "x").isNotFound)
    }
}

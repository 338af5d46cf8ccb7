import CIPIPLinux
import Foundation
import Glibc
import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPLinux

/// NetlinkSocket against the real kernel, inside a throwaway network namespace (see
/// IPIPTestSupport's NetworkNamespace for how the socket gets there). `ip` builds fixtures and checks
/// independently what the socket reports.
@Suite("rtnetlink in a network namespace", .needsRoot)
struct NetlinkLiveTests {
    static func p(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }
    static func a(_ s: String) -> IPv4Address { IPv4Address(s)! }

    /// A namespace with veth `up0` (peer `up0p`) and veth `tn0` (peer `tn0p`), all up.
    static func fixture() throws -> (NetworkNamespace, NetlinkSocket, up: Int32, tun: Int32) {
        let ns = try NetworkNamespace("nl")
        for (name, peer) in [("up0", "up0p"), ("tn0", "tn0p")] {
            try ns.ip("link", "add", name, "type", "veth", "peer", "name", peer)
            try ns.ip("link", "set", peer, "up")
        }
        let nl = try ns.netlinkSocket()
        let up = try #require(try nl.linkIndex(name: "up0"))
        let tun = try #require(try nl.linkIndex(name: "tn0"))
        return (ns, nl, up, tun)
    }

    @Test("links: index, name, MTU, up/down; addresses: add twice, list, find the holder, delete twice")
    func linksAndAddresses() throws {
        let (ns, nl, up, _) = try Self.fixture()
        // Independent check of the index: `ip -o link show up0` starts with "<index>: up0@up0p:".
        let line = try ns.ip("-o", "link", "show", "up0")
        #expect(line.hasPrefix("\(up): up0@up0p:"))
        #expect(try nl.linkName(index: up) == "up0")
        #expect(try nl.linkIndex(name: "missing0") == nil)
        #expect(try nl.linkName(index: 9999) == nil)
        #expect(try nl.linkMTU(index: 9999) == nil)

        try nl.setLink(index: up, up: true, mtu: 1400)
        #expect(try nl.linkMTU(index: up) == 1400)
        #expect(try nl.link(index: up)?.isUp == true)
        let shown = try ns.ip("-o", "link", "show", "up0")
        #expect(shown.contains("mtu 1400") && shown.contains(",UP"))

        try nl.addAddress(Self.p("10.0.0.1/24"), index: up)
        try nl.addAddress(Self.p("10.0.0.1/24"), index: up)  // EEXIST is fine
        #expect(try nl.addresses(index: up) == [Self.p("10.0.0.1/24")])
        #expect(try ns.ip("-4", "-o", "addr", "show", "dev", "up0").contains("inet 10.0.0.1/24"))

        let holder = try #require(try nl.interfaceHolding(address: Self.a("10.0.0.1")))
        #expect(
            holder.index == up && holder.name == "up0" && holder.mtu == 1400 && holder.prefix == Self.p("10.0.0.1/24"))
        #expect(try nl.interfaceHolding(address: Self.a("10.0.0.9")) == nil)
        #expect(try nl.interfaceHolding(address: Self.a("127.0.0.1"))?.name == "lo")

        try nl.deleteAddress(Self.p("10.0.0.1/24"), index: up)
        try nl.deleteAddress(Self.p("10.0.0.1/24"), index: up)  // already gone is fine
        #expect(try nl.addresses(index: up).isEmpty)
        #expect(try ns.ip("-4", "-o", "addr", "show", "dev", "up0").isEmpty)

        try nl.setLink(index: up, up: false)
        #expect(try nl.link(index: up)?.isUp == false)
        #expect(throws: NetlinkError.self) { try nl.setLink(index: 9999, up: true) }
    }

    @Test("routes of every kind and a rule: add (twice), dump back, `ip` agrees, delete (twice)")
    func routesAndRules() throws {
        let (ns, nl, up, tun) = try Self.fixture()
        try nl.setLink(index: up, up: true)
        try nl.setLink(index: tun, up: true)
        try nl.addAddress(Self.p("10.0.0.1/24"), index: up)
        let proto: UInt8 = 242
        let routes: [(Route, String)] = [
            (
                Route(destination: Self.p("192.168.2.0/26"), outputInterface: tun, protocolNumber: proto, mtu: 1380),
                "192.168.2.0/26 dev tn0 proto 242 scope link mtu 1380"
            ),
            (
                Route(
                    destination: Self.p("192.168.1.0/26"), gateway: Self.a("10.0.0.2"), outputInterface: up,
                    protocolNumber: proto),
                "192.168.1.0/26 via 10.0.0.2 dev up0 proto 242"
            ),
            (
                Route(
                    destination: Self.p("192.168.5.0/26"), gateway: Self.a("172.31.9.2"), outputInterface: up,
                    protocolNumber: proto,
                    onlink: true),
                "192.168.5.0/26 via 172.31.9.2 dev up0 proto 242 onlink"
            ),
            (
                Route(
                    destination: Self.p("192.168.6.0/26"), gateway: Self.a("10.0.0.3"), outputInterface: up,
                    protocolNumber: proto,
                    source: Self.a("10.0.0.1"), metric: 7),
                "192.168.6.0/26 via 10.0.0.3 dev up0 proto 242 src 10.0.0.1 metric 7"
            ),
            (
                Route(destination: Self.p("192.168.0.0/26"), protocolNumber: proto, type: .blackhole),
                "blackhole 192.168.0.0/26 proto 242"
            ),
            (
                Route(destination: .all, outputInterface: tun, table: 498, protocolNumber: proto),
                "default dev tn0 table 498 proto 242 scope link"
            ),
            (
                Route(destination: Self.p("192.168.0.0/16"), table: 498, protocolNumber: proto, type: .throw),
                "throw 192.168.0.0/16 table 498 proto 242"
            ),
        ]
        for (r, _) in routes {
            try nl.add(r)
            try nl.add(r)  // NLM_F_REPLACE: idempotent
        }
        #expect(Set(try nl.routes(protocolNumber: proto)) == Set(routes.map(\.0)))
        #expect(
            Set(try nl.routes(table: 498, protocolNumber: proto)) == Set(routes.map(\.0).filter { $0.table == 498 }))
        #expect(try nl.routes(protocolNumber: 243).isEmpty)

        let shown = try ns.ip("-4", "route", "show", "table", "all", "proto", "242")
        // `ip` leaves out the protocol it filters on.
        let lines = shown.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(
            Set(lines) == Set(routes.map { $0.1.replacingOccurrences(of: " proto 242", with: "") }),
            "ip says:\n\(shown)")

        let rule = Rule(priority: 498, source: Self.p("192.168.0.0/16"), table: 498, protocolNumber: proto)
        try nl.add(rule)
        try nl.add(rule)  // EEXIST: fine, and no duplicate
        #expect(try nl.rules(protocolNumber: proto) == [rule])
        let ruleLines = try ns.ip("-4", "rule", "show").split(separator: "\n").filter { $0.contains("proto 242") }
        #expect(ruleLines == ["498:\tfrom 192.168.0.0/16 lookup 498 proto 242"])

        // A gateway that is not on-link without `onlink` is refused with the kernel's reason.
        do {
            try nl.add(
                Route(
                    destination: Self.p("192.168.7.0/26"), gateway: Self.a("172.31.9.2"), outputInterface: up,
                    protocolNumber: proto))
            Issue.record("the kernel accepted an unreachable gateway")
        } catch {
            #expect(error.operation == "RTM_NEWROUTE")
            #expect(error.detail.hasPrefix("route 192.168.7.0/26 via 172.31.9.2"))
            #expect(
                error.detail.count > "route 192.168.7.0/26 via 172.31.9.2 dev #\(up) proto 242".count,
                "no extended ack: \(error)")
        }

        for (r, _) in routes {
            try nl.delete(r)
            try nl.delete(r)  // ESRCH: fine
        }
        try nl.delete(rule)
        try nl.delete(rule)
        #expect(try nl.routes(protocolNumber: proto).isEmpty)
        #expect(try nl.rules(protocolNumber: proto).isEmpty)
        #expect(try ns.ip("-4", "route", "show", "table", "all", "proto", "242").isEmpty)
        #expect(!(try ns.ip("-4", "rule", "show")).contains("proto 242"))
    }

    @Test("a delete names our protocol: a route of another owner with the same destination survives it")
    func deleteIsOwnerSafe() throws {
        let (ns, nl, up, _) = try Self.fixture()
        try nl.setLink(index: up, up: true)
        try ns.ip("route", "add", "blackhole", "10.77.0.0/24", "proto", "static")
        try nl.delete(Route(destination: Self.p("10.77.0.0/24"), protocolNumber: 242, type: .blackhole))
        #expect(try ns.ip("-4", "route", "show", "10.77.0.0/24").contains("blackhole 10.77.0.0/24 proto static"))
        #expect(try nl.allRoutes().contains { $0.destination == Self.p("10.77.0.0/24") && $0.protocolNumber == 4 })
    }

    @Test("one socket shared by concurrent tasks: every exchange gets its own answers")
    func concurrentUse() async throws {
        let (_, nl, up, tun) = try Self.fixture()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<8 {
                group.addTask {
                    for j in 0..<20 {
                        #expect(try nl.linkName(index: i % 2 == 0 ? up : tun) == (i % 2 == 0 ? "up0" : "tn0"))
                        try nl.add(
                            Route(
                                destination: IPv4Prefix(address: IPv4Address(10, 50, UInt8(i), UInt8(j)), length: 32),
                                protocolNumber: 242, type: .blackhole))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try nl.routes(protocolNumber: 242).count == 160)
    }
}

import CIPIPLinux
import Foundation
import Glibc
import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPLinux

/// RouteReconciler against the real kernel in a network namespace: the desired state comes from
/// HostRoutes on a small CrossSubnet cluster with natOutgoing (every kind of route and a rule);
/// routes and rules of other owners are planted by hand with `ip` and must never change.
@Suite("RouteReconciler in a network namespace", .needsRoot)
struct RouteReconcilerTests {
    static func p(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }
    static func a(_ s: String) -> IPv4Address { IPv4Address(s)! }

    static let spec = ExampleCluster.spec(mode: .crossSubnet)

    /// The namespace: uplink `up0` holding 10.0.0.1/24, stand-in TUN `tn0`; routes and a rule of
    /// other owners, in our tables and outside them.
    struct Fixture {
        var ns: NetworkNamespace
        var nl: NetlinkSocket
        var reconciler: RouteReconciler
        var routes: Set<Route>
        var rules: Set<Rule>

        /// What `ip` shows of other owners' routes and rules: must never change.
        func foreignState() throws -> String {
            let routes = try ns.ip("-4", "route", "show", "table", "all").split(separator: "\n")
                .filter { !$0.contains("proto 242") || $0.contains("table 100") }
            let rules = try ns.ip("-4", "rule", "show").split(separator: "\n").filter { !$0.contains("proto 242") }
            return (routes + rules).joined(separator: "\n")
        }

        /// Our routes and rules as `ip` sees them (independent of NetlinkSocket's parser).
        func ourLines() throws -> (routes: [Substring], rules: [Substring]) {
            let routes =
                try ns.ip("-4", "route", "show", "table", "main", "proto", "242").split(separator: "\n")
                + ns.ip("-4", "route", "show", "table", "498", "proto", "242").split(separator: "\n")
            let rules = try ns.ip("-4", "rule", "show").split(separator: "\n").filter { $0.contains("proto 242") }
            return (routes, rules)
        }
    }

    static func fixture() throws -> Fixture {
        let ns = try NetworkNamespace("nl")
        for (name, peer) in [("up0", "up0p"), ("tn0", "tn0p")] {
            try ns.ip("link", "add", name, "type", "veth", "peer", "name", peer)
            try ns.ip("link", "set", peer, "up")
            try ns.ip("link", "set", name, "up")
        }
        try ns.ip("addr", "add", "10.0.0.1/24", "dev", "up0")
        // Other owners: in main, in our NAT table, a rule at our priority; and a route with our
        // protocol number in a table that is not ours.
        try ns.ip("route", "add", "10.9.0.0/24", "via", "10.0.0.254", "dev", "up0", "proto", "static")
        try ns.ip("route", "add", "10.8.0.0/24", "dev", "tn0", "table", "498", "proto", "boot")
        try ns.ip("rule", "add", "from", "10.7.0.0/16", "lookup", "498", "pref", "498")
        try ns.ip("route", "add", "10.4.0.0/24", "dev", "tn0", "table", "100", "proto", "242")

        let nl = try ns.netlinkSocket()
        let up = try #require(try nl.interfaceHolding(address: a("10.0.0.1")))
        #expect(up.name == "up0")
        let tun = try #require(try nl.linkIndex(name: "tn0"))
        let topology = try Topology.compile(spec)
        let desired = HostRoutes.desired(for: topology, tunnelInterface: tun, uplinkInterface: up.index)
        let reconciler = RouteReconciler(netlink: nl, tables: HostRoutes.tables())
        return Fixture(ns: ns, nl: nl, reconciler: reconciler, routes: desired.routes, rules: desired.rules)
    }

    @Test("converges, is idempotent, repairs deletions, changes and extras, removes everything, never touches others")
    func lifecycle() throws {
        let f = try Self.fixture()
        let foreign = try f.foreignState()
        // 2 tun, 2 native, 1 blackhole, NAT default + fail-closed blackhole default + throw; 1 rule
        #expect(f.routes.count == 8 && f.rules.count == 1)
        #expect(f.reconciler.needsSync)

        // Startup clean-up with nothing of ours: nothing to do.
        var report = f.reconciler.removeAll()
        #expect(report == ReconcileReport())

        // First sync: everything added.
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.succeeded, "\(report.errors)")
        #expect(report.added == 9 && report.replaced == 0 && report.removed == 0)
        #expect(!f.reconciler.needsSync)
        #expect(Set(try f.nl.routes(protocolNumber: 242).filter { $0.table != 100 }) == f.routes)
        #expect(Set(try f.nl.rules(protocolNumber: 242)) == f.rules)
        var lines = try f.ourLines()
        #expect(lines.routes.count == 8 && lines.rules.count == 1, "\(lines)")
        #expect(lines.routes.contains("192.168.2.0/26 dev tn0 scope link mtu 1480 "))
        #expect(lines.routes.contains("192.168.1.0/26 via 10.0.0.2 dev up0 onlink "))
        #expect(lines.routes.contains("blackhole 192.168.0.0/26 "))
        #expect(lines.routes.contains("throw 192.168.0.0/16 "))
        #expect(lines.routes.contains("blackhole default metric 4294967295 "), "\(lines)")
        #expect(lines.rules == ["498:\tfrom 192.168.0.0/16 lookup 498 proto 242"])
        #expect(try f.foreignState() == foreign)

        // Second sync: nothing to do.
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report == ReconcileReport())

        // Deleted behind our back: comes back.
        try f.ns.ip("route", "del", "192.168.2.0/26", "proto", "242")
        try f.ns.ip("rule", "del", "pref", "498", "from", "192.168.0.0/16", "proto", "242")
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.succeeded && report.added == 2 && report.changeCount == 2, "\(report)")
        #expect(try f.ourLines().routes.contains("192.168.2.0/26 dev tn0 scope link mtu 1480 "))

        // Changed behind our back (another MTU; another type): replaced in place.
        try f.ns.ip("route", "replace", "192.168.2.0/26", "dev", "tn0", "proto", "242", "mtu", "1000")
        try f.ns.ip("route", "replace", "blackhole", "192.168.1.0/26", "proto", "242")
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.succeeded && report.replaced == 2 && report.changeCount == 2, "\(report)")
        lines = try f.ourLines()
        #expect(lines.routes.contains("192.168.2.0/26 dev tn0 scope link mtu 1480 "))
        #expect(lines.routes.contains("192.168.1.0/26 via 10.0.0.2 dev up0 onlink "))

        // Extras of ours (a route in main, one in the NAT table, a rule): removed.
        try f.ns.ip("route", "add", "10.6.0.0/24", "dev", "tn0", "proto", "242")
        try f.ns.ip("route", "add", "10.6.1.0/24", "dev", "tn0", "table", "498", "proto", "242")
        try f.ns.ip("rule", "add", "from", "10.5.0.0/16", "lookup", "498", "pref", "600", "proto", "242")
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.succeeded && report.removed == 3 && report.changeCount == 3, "\(report)")
        #expect(try f.foreignState() == foreign)
        #expect(Set(try f.nl.routes(protocolNumber: 242).filter { $0.table != 100 }) == f.routes)

        // A smaller desired state (natOutgoing switched off): the NAT table and rule go.
        report = f.reconciler.reconcile(desired: f.routes.filter { $0.table == Route.mainTable }, rules: [])
        #expect(report.succeeded && report.removed == 4, "\(report)")
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.succeeded && report.added == 4, "\(report)")

        // Shutdown: nothing of ours is left; others' routes and rules, and our protocol in a table
        // that is not ours, are still there.
        report = f.reconciler.removeAll()
        #expect(report.succeeded && report.removed == 9, "\(report)")
        lines = try f.ourLines()
        #expect(lines.routes.isEmpty && lines.rules.isEmpty, "\(lines)")
        #expect(try f.nl.routes(protocolNumber: 242).map(\.table) == [100])
        #expect(try f.foreignState() == foreign)
        #expect(f.reconciler.removeAll() == ReconcileReport())
    }

    @Test(
        "a desired route whose key another owner holds is not installed; the error says who; it is installed once freed"
    )
    func conflictWithAnotherOwner() throws {
        let f = try Self.fixture()
        try f.ns.ip("route", "add", "192.168.2.0/26", "via", "10.0.0.254", "dev", "up0", "proto", "static")
        var report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.added == 8)
        #expect(report.errors.count == 1)
        #expect(report.errors.first?.errno == EEXIST)
        #expect(report.errors.first?.detail.contains("192.168.2.0/26 via 10.0.0.254") == true, "\(report.errors)")
        #expect(f.reconciler.needsSync)
        #expect(
            try f.ns.ip("-4", "route", "show", "192.168.2.0/26")
                == "192.168.2.0/26 via 10.0.0.254 dev up0 proto static \n")

        try f.ns.ip("route", "del", "192.168.2.0/26", "proto", "static")
        report = f.reconciler.reconcile(desired: f.routes, rules: f.rules)
        #expect(report.succeeded && report.added == 1, "\(report)")
        #expect(!f.reconciler.needsSync)
    }

    @Test("failures are collected per operation and the rest still applies")
    func errorsAreCollected() throws {
        let f = try Self.fixture()
        var routes = f.routes
        // An interface that does not exist, and a gateway that is not on-link: both refused.
        routes.insert(Route(destination: Self.p("10.60.0.0/24"), outputInterface: 9999, protocolNumber: 242))
        routes.insert(
            Route(
                destination: Self.p("10.61.0.0/24"), gateway: Self.a("172.31.0.1"), outputInterface: 1,
                protocolNumber: 242))
        let report = f.reconciler.reconcile(desired: routes, rules: f.rules)
        #expect(report.added == 9 && report.errors.count == 2, "\(report)")
        #expect(report.errors.allSatisfy { $0.operation == "RTM_NEWROUTE" })
        #expect(f.reconciler.needsSync)
        // Two desired routes with one key: neither is installed, the error says so.
        var clash = f.routes
        clash.insert(Route(destination: Self.p("192.168.0.0/26"), protocolNumber: 242, type: .unreachable))
        let second = f.reconciler.reconcile(desired: clash, rules: f.rules)
        #expect(second.errors.count == 1 && second.errors[0].errno == EINVAL, "\(second)")
        #expect(second.removed == 0, "the blackhole already installed is left alone while the clash lasts")
    }
}

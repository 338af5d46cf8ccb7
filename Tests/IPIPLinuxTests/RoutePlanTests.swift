import Glibc
import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPLinux

/// The reconciler's plan step as a table (desired and actual state in, changes out), and the
/// whole reconciler over `FakeRouting`: ownership, foreign routes, duplicates and order, without
/// root. `RouteReconcilerTests` runs the same reconciler against the kernel.
@Suite("RoutePlan: desired vs actual → changes")
struct RoutePlanTests {
    static let ours: UInt8 = RouteReconciler.defaultProtocolNumber
    static let nat: UInt32 = HostRoutes.defaultNATTable
    static let tables: Set<UInt32> = [Route.mainTable, nat]

    static func route(
        _ prefix: String, via gateway: String? = nil, dev: Int32 = 7, table: UInt32 = Route.mainTable,
        proto: UInt8 = ours, metric: UInt32 = 0
    ) -> Route {
        Route(
            destination: IPv4Prefix(prefix)!, gateway: gateway.map { IPv4Address($0)! }, outputInterface: dev,
            table: table, protocolNumber: proto, onlink: gateway != nil, metric: metric)
    }

    static func rule(_ from: String, priority: UInt32 = 498, proto: UInt8 = ours) -> Rule {
        Rule(priority: priority, source: IPv4Prefix(from)!, table: nat, protocolNumber: proto)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        var desiredRoutes: [Route] = []
        var desiredRules: [Rule] = []
        var actualRoutes: [Route] = []
        var actualRules: [Rule] = []
        /// The expected changes, in order, as `Change.description` lines.
        let changes: [String]
        /// The expected refusals: errno and a piece of the detail.
        var refusals: [(Int32, String)] = []
        var testDescription: String { name }
    }

    static let a = route("192.168.1.0/26", via: "10.0.0.2")
    static let b = route("192.168.2.0/26", via: "10.0.1.3")
    static let aMoved = route("192.168.1.0/26", via: "10.0.0.9")
    static let foreignA = route("192.168.1.0/26", via: "10.0.0.254", proto: 4)
    static let natRule = rule("192.168.0.0/16")

    static let cases: [Case] = [
        Case(
            name: "empty host: every route, then the rule",
            desiredRoutes: [b, a], desiredRules: [natRule],
            changes: ["add route \(a)", "add route \(b)", "add rule \(natRule)"]),
        Case(
            name: "already equal: nothing to do",
            desiredRoutes: [a, b], desiredRules: [natRule], actualRoutes: [b, a], actualRules: [natRule],
            changes: []),
        Case(
            name: "our route with another next hop is replaced in place",
            desiredRoutes: [aMoved, b], actualRoutes: [a, b], changes: ["replace route \(aMoved)"]),
        Case(
            name: "a key another owner holds is refused, naming the holder, and not touched",
            desiredRoutes: [a, b], actualRoutes: [foreignA],
            changes: ["add route \(b)"], refusals: [(EEXIST, "10.0.0.254")]),
        Case(
            name: "another owner's routes and rules elsewhere are left alone",
            desiredRoutes: [a],
            actualRoutes: [
                a, route("10.9.0.0/24", via: "10.0.0.254", proto: 4), route("10.4.0.0/24", table: 100),
                route("10.8.0.0/24", table: nat, proto: 3),
            ],
            actualRules: [rule("10.7.0.0/16", proto: 0)],
            changes: []),
        Case(
            name: "the same key desired twice: refused, and our route under it is kept",
            desiredRoutes: [a, aMoved, b], actualRoutes: [a],
            changes: ["add route \(b)"], refusals: [(EINVAL, "several desired routes for 192.168.1.0/26")]),
        Case(
            name: "order: routes added and replaced, rules added, rules removed, routes removed",
            desiredRoutes: [aMoved, route("192.168.3.0/26", via: "10.0.1.4")], desiredRules: [natRule],
            actualRoutes: [route("192.168.9.0/26", via: "10.0.0.7"), a], actualRules: [rule("10.1.0.0/16")],
            changes: [
                "replace route \(aMoved)", "add route \(route("192.168.3.0/26", via: "10.0.1.4"))",
                "add rule \(natRule)", "delete rule \(rule("10.1.0.0/16"))",
                "delete route \(route("192.168.9.0/26", via: "10.0.0.7"))",
            ]),
        Case(
            name: "two routes of ours under one key (ip route append) are replaced, not left doubled",
            desiredRoutes: [a], actualRoutes: [a, aMoved], changes: ["replace route \(a)"]),
        Case(
            name: "another metric is another key: both coexist",
            desiredRoutes: [route("192.168.1.0/26", via: "10.0.0.2", metric: 10)], actualRoutes: [foreignA],
            changes: ["add route \(route("192.168.1.0/26", via: "10.0.0.2", metric: 10))"]),
        Case(
            name: "desired routes and rules take our protocol number",
            desiredRoutes: [route("192.168.1.0/26", via: "10.0.0.2", proto: 4)],
            desiredRules: [rule("192.168.0.0/16", proto: 0)],
            actualRoutes: [a], actualRules: [natRule], changes: []),
        Case(
            name: "removing everything: rules first, then routes, only ours",
            actualRoutes: [a, foreignA, route("192.168.0.0/16", table: nat)],
            actualRules: [natRule, rule("10.7.0.0/16", proto: 0)],
            changes: [
                "delete rule \(natRule)", "delete route \(a)", "delete route \(route("192.168.0.0/16", table: nat))",
            ]),
    ]

    @Test("plans", arguments: cases)
    func plans(_ c: Case) {
        let plan = RoutePlan.make(
            desired: Set(c.desiredRoutes), rules: Set(c.desiredRules), actualRoutes: c.actualRoutes,
            actualRules: c.actualRules, protocolNumber: Self.ours, tables: Self.tables)
        #expect(plan.changes.map(\.description) == c.changes, "\(plan)")
        #expect(plan.refusals.count == c.refusals.count, "\(plan.refusals)")
        for (got, want) in zip(plan.refusals, c.refusals) {
            #expect(got.errno == want.0 && got.detail.contains(want.1), "\(got)")
        }
    }

    @Test("the reconciler over the fake: converges, is idempotent, repairs drift, removes only its own")
    func reconcilerOverFake() {
        let foreign = Self.route("10.9.0.0/24", via: "10.0.0.254", proto: 4)
        let fake = FakeRouting(routes: [foreign])
        let reconciler = RouteReconciler(netlink: fake, tables: Self.tables)
        #expect(reconciler.needsSync)

        let first = reconciler.reconcile(desired: [Self.a, Self.b], rules: [Self.natRule])
        #expect(
            first
                == {
                    var r = ReconcileReport()
                    r.added = 3
                    return r
                }(), "\(first)")
        #expect(!reconciler.needsSync)
        #expect(Set(fake.routes) == [foreign, Self.a, Self.b] && fake.rules == [Self.natRule])

        fake.clearOperations()
        let again = reconciler.reconcile(desired: [Self.a, Self.b], rules: [Self.natRule])
        #expect(again.changeCount == 0 && fake.changes.isEmpty, "\(fake.changes)")

        // Drift behind the reconciler's back: one route deleted, one changed, one extra of ours.
        fake.edit { routes, _ in
            routes.removeAll { $0 == Self.b }
            routes[routes.firstIndex(of: Self.a)!] = Self.aMoved
            routes.append(Self.route("192.168.7.0/26", via: "10.0.0.7"))
        }
        let repaired = reconciler.reconcile(desired: [Self.a, Self.b], rules: [Self.natRule])
        #expect((repaired.added, repaired.replaced, repaired.removed) == (1, 1, 1), "\(repaired)")
        #expect(Set(fake.routes) == [foreign, Self.a, Self.b])

        let removed = reconciler.removeAll()
        #expect(removed.removed == 3 && removed.succeeded, "\(removed)")
        #expect(fake.routes == [foreign] && fake.rules.isEmpty)
    }

    @Test("a failed change is reported, the others still apply, and the next pass retries it")
    func failuresAreRetried() {
        let fake = FakeRouting()
        fake.setFailure { op in
            if case .addRoute(let r) = op, r.destination == IPv4Prefix("192.168.1.0/26")! {
                return NetlinkError(errno: ENODEV, operation: "RTM_NEWROUTE", detail: "route \(r)")
            }
            return nil
        }
        let reconciler = RouteReconciler(netlink: fake, tables: Self.tables)
        let failed = reconciler.reconcile(desired: [Self.a, Self.b], rules: [Self.natRule])
        #expect(failed.added == 2 && failed.errors.map(\.errno) == [ENODEV], "\(failed)")
        #expect(reconciler.needsSync)

        fake.setFailure(nil)
        let retried = reconciler.reconcile(desired: [Self.a, Self.b], rules: [Self.natRule])
        #expect(retried.added == 1 && retried.succeeded, "\(retried)")
        #expect(!reconciler.needsSync)
    }

    @Test("a dump that fails changes nothing and says so")
    func dumpFailure() {
        let fake = FakeRouting(routes: [Self.a])
        fake.setFailure { $0 == .dumpRoutes ? NetlinkError(errno: ENOBUFS, operation: "RTM_GETROUTE") : nil }
        let reconciler = RouteReconciler(netlink: fake, tables: Self.tables)
        let report = reconciler.reconcile(desired: [], rules: [])
        #expect(report.changeCount == 0 && report.errors.map(\.errno) == [ENOBUFS])
        #expect(fake.routes == [Self.a] && fake.changes.isEmpty)
    }
}

// RouteReconciler: keeps the kernel's routes and policy rules of one owner equal to a desired set.
//
// Architecture (after Felix's route_table.go and its delta tracker, level-triggered): every call
// dumps what is really there, plans the difference to what is wanted (`RoutePlan`, a pure
// function of both states, table-tested without a kernel), and applies the plan through a
// `RouteNetlink`. Nothing is cached between calls, so a route deleted or changed behind our back
// is fixed by the next call, and a failed operation is simply retried by the next call
// (`needsSync` says one is due).
//
// Ownership: a route is ours when it carries our route protocol number and lies in one of our
// tables; a rule is ours when it carries our protocol number (FRA_PROTOCOL). Nothing else is ever
// changed or deleted: deletes name our protocol, so the kernel itself refuses to match another
// owner's route.
//
// Order of changes: routes are added or replaced first, then rules are added, then extra rules
// and finally extra routes are removed, so a rule never points at a table that is being emptied
// and traffic never sees a gap while a route is fixed (NLM_F_REPLACE changes it in place).
//
// Hazards:
// - the kernel keys a route on (table, destination, TOS, metric), not on its owner: replacing a
//   key that another owner holds would take that owner's route. A desired route whose key is held
//   by a route of another protocol is therefore not installed; the report carries an `EEXIST`
//   error naming the holder (use another `metric` to coexist);
// - several routes of ours with one key (only possible with `ip route append`) are not untangled:
//   the replace changes the first of them;
// - rules and routes the model cannot express (multipath routes, rules with fwmark or iif
//   selectors) are invisible here, so they are neither fixed nor removed.
import CIPIPLinux
import Glibc
import IPIPCore
import Synchronization

/// What one reconciliation did.
public struct ReconcileReport: Sendable, Equatable, CustomStringConvertible {
    /// Routes and rules that were missing and were added.
    public var added: Int = 0
    /// Routes of ours that differed from the desired ones and were replaced in place.
    public var replaced: Int = 0
    /// Routes and rules of ours that were not desired and were removed.
    public var removed: Int = 0
    /// Every operation that failed, in order; the others were still attempted.
    public var errors: [NetlinkError] = []

    /// Creates an empty report.
    public init() {}

    /// Routes and rules changed.
    public var changeCount: Int { added + replaced + removed }

    /// True when every operation succeeded (the kernel now holds exactly the desired state).
    public var succeeded: Bool { errors.isEmpty }

    /// `added A, replaced R, removed D, E errors`.
    public var description: String {
        "added \(added), replaced \(replaced), removed \(removed), \(errors.count) error\(errors.count == 1 ? "" : "s")"
    }
}

/// The changes that make one owner's routes and rules equal to a desired set: a pure function of
/// the desired and the actual state, so ownership, foreign routes, duplicates and the order of
/// changes are decided (and tested) without a kernel.
public struct RoutePlan: Sendable, Equatable, CustomStringConvertible {
    /// One change, in the order `changes` lists them.
    public enum Change: Sendable, Equatable, CustomStringConvertible {
        /// A desired route that is missing.
        case addRoute(Route)
        /// A desired route whose key holds a different route of ours: replaced in place.
        case replaceRoute(Route)
        /// A desired rule that is missing.
        case addRule(Rule)
        /// A rule of ours that is not desired.
        case deleteRule(Rule)
        /// A route of ours that is not desired.
        case deleteRoute(Route)

        public var description: String {
            switch self {
            case .addRoute(let r): "add route \(r)"
            case .replaceRoute(let r): "replace route \(r)"
            case .addRule(let r): "add rule \(r)"
            case .deleteRule(let r): "delete rule \(r)"
            case .deleteRoute(let r): "delete route \(r)"
            }
        }
    }

    /// The changes, in the order they must be applied: routes added or replaced, then rules
    /// added, then extra rules removed, then extra routes removed (each group ordered by table,
    /// destination and metric, or by rule priority).
    public var changes: [Change] = []
    /// Desired routes that are not installed, and why: a key desired twice (`EINVAL`), a key that
    /// a route of another owner holds (`EEXIST`, naming the holder).
    public var refusals: [NetlinkError] = []

    /// An empty plan.
    public init() {}

    /// True when nothing needs changing and nothing was refused.
    public var isEmpty: Bool { changes.isEmpty && refusals.isEmpty }

    /// One change per line, then the refusals.
    public var description: String {
        (changes.map(\.description) + refusals.map { "refused: \($0)" }).joined(separator: "\n")
    }

    /// Plans the changes.
    /// - Parameters:
    ///   - routes: The desired routes; their protocol number is set to `protocolNumber`.
    ///   - rules: The desired rules; their protocol number is set to `protocolNumber`.
    ///   - actualRoutes: Every route of the host (every table, every owner).
    ///   - actualRules: Every rule of the host (every owner).
    ///   - protocolNumber: Our route protocol number: what carries it (in `tables`) is ours.
    ///   - tables: Our tables; routes elsewhere are never touched.
    /// - Precondition: every desired route lies in one of `tables`.
    public static func make(
        desired routes: Set<Route>, rules: Set<Rule>, actualRoutes: [Route], actualRules: [Rule],
        protocolNumber: UInt8, tables: Set<UInt32>
    ) -> RoutePlan {
        var plan = RoutePlan()

        // Desired state, ours by construction, one route per kernel key.
        var wanted: [Route.Key: Route] = [:]
        var duplicated: Set<Route.Key> = []
        for var r in routes {
            precondition(tables.contains(r.table), "route \(r) lies outside the reconciler's tables \(tables.sorted())")
            r.protocolNumber = protocolNumber
            if wanted.updateValue(r, forKey: r.key) != nil { duplicated.insert(r.key) }
        }
        for key in duplicated.sorted(by: order) {
            wanted[key] = nil
            plan.refusals.append(
                NetlinkError(
                    errno: EINVAL, operation: "reconcile",
                    detail:
                        "several desired routes for \(key.destination) table \(key.table) metric \(key.metric): none installed"
                ))
        }
        let wantedRules = Set(
            rules.map { r -> Rule in
                var r = r
                r.protocolNumber = protocolNumber
                return r
            })

        // Actual state: ours, and the first route of another owner holding each key.
        var ours: [Route.Key: [Route]] = [:]
        var foreign: [Route.Key: Route] = [:]
        for r in actualRoutes where tables.contains(r.table) {
            if r.protocolNumber == protocolNumber {
                ours[r.key, default: []].append(r)
            } else if foreign[r.key] == nil {
                foreign[r.key] = r
            }
        }

        // 1. Missing routes added, different ones replaced (a key another owner holds: refused).
        for key in wanted.keys.sorted(by: order) {
            let route = wanted[key]!
            let existing = ours[key] ?? []
            if existing.count == 1 && existing[0] == route { continue }
            if let holder = foreign[key] {
                plan.refusals.append(
                    NetlinkError(
                        errno: EEXIST, operation: "reconcile",
                        detail: "route \(route) not installed: \(holder) holds its key"))
                continue
            }
            plan.changes.append(existing.isEmpty ? .addRoute(route) : .replaceRoute(route))
        }

        // 2. Missing rules added; 3. extra rules of ours removed.
        let present = Set(actualRules.filter { $0.protocolNumber == protocolNumber })
        for rule in wantedRules.subtracting(present).sorted(by: order) { plan.changes.append(.addRule(rule)) }
        for rule in present.subtracting(wantedRules).sorted(by: order) { plan.changes.append(.deleteRule(rule)) }

        // 4. Extra routes of ours removed (every route of ours under a key nobody wants).
        for key in ours.keys.sorted(by: order) where wanted[key] == nil && !duplicated.contains(key) {
            for route in ours[key]! { plan.changes.append(.deleteRoute(route)) }
        }
        return plan
    }

    // Deterministic order of changes (and so of errors): table, destination, metric.
    static func order(_ a: Route.Key, _ b: Route.Key) -> Bool {
        (a.table, a.destination.address.rawValue, a.destination.length, a.metric)
            < (b.table, b.destination.address.rawValue, b.destination.length, b.metric)
    }

    static func order(_ a: Rule, _ b: Rule) -> Bool {
        (
            a.priority, a.source?.address.rawValue ?? 0, a.source?.length ?? 0, a.destination?.address.rawValue ?? 0,
            a.destination?.length ?? 0, a.table
        )
            < (
                b.priority, b.source?.address.rawValue ?? 0, b.source?.length ?? 0,
                b.destination?.address.rawValue ?? 0,
                b.destination?.length ?? 0, b.table
            )
    }
}

/// Keeps the routes and policy rules that carry one route protocol number equal to a desired set.
///
/// Thread-safe: calls are serialised.
public final class RouteReconciler: Sendable {
    /// The route protocol number of swift-ipip: 242 (0xF2).
    ///
    /// Linux reserves 0–4 (unspec, redirect, kernel, boot, static) and names more in
    /// /etc/iproute2/rt_protos (8–18 for gated…keepalived, 42 babel, 99 openr, 186–192 for the
    /// FRR daemons, 12 for BIRD, which Calico uses); Felix tags its own routes 80. 242 is in none of
    /// these and lies in the range nobody registers, so a route with it is ours.
    public static let defaultProtocolNumber: UInt8 = 0xF2

    /// The routing tables the reconciler reads and changes (the kernel, or a fake in tests).
    public let netlink: any RouteNetlink
    /// The route protocol number that marks our routes and rules.
    public let protocolNumber: UInt8
    /// The tables whose routes of our protocol we own.
    public let tables: Set<UInt32>

    private let needsSyncState = Mutex(true)

    /// Whether the last call failed somewhere (or none has run yet): the next call is due soon.
    public var needsSync: Bool { needsSyncState.withLock { $0 } }

    /// Creates a reconciler.
    /// - Parameters:
    ///   - netlink: The routing tables: a NETLINK_ROUTE socket in the host's network namespace,
    ///     or a fake.
    ///   - protocolNumber: Our route protocol number (default 242).
    ///   - tables: Our tables (default: main and `HostRoutes.defaultNATTable`).
    public init(
        netlink: any RouteNetlink, protocolNumber: UInt8 = RouteReconciler.defaultProtocolNumber,
        tables: Set<UInt32> = [Route.mainTable, HostRoutes.defaultNATTable]
    ) {
        self.netlink = netlink
        self.protocolNumber = protocolNumber
        self.tables = tables
    }

    /// Makes our routes and rules equal to `routes` and `rules`: adds what is missing, replaces
    /// what differs, removes what is extra, and leaves everything of other owners alone.
    ///
    /// The protocol number of the desired routes and rules is set to ours.
    /// - Parameters:
    ///   - routes: The desired routes.
    ///   - rules: The desired rules.
    /// - Returns: The counts and every error (the plan's refusals first, then failed changes in
    ///   order); errors do not stop the other operations.
    /// - Precondition: every desired route lies in one of `tables`.
    public func reconcile(desired routes: Set<Route>, rules: Set<Rule>) -> ReconcileReport {
        needsSyncState.withLock { (needsSync: inout Bool) -> ReconcileReport in
            let report = sync(desiredRoutes: routes, desiredRules: rules)
            needsSync = !report.succeeded
            return report
        }
    }

    /// Removes every route (in our tables) and rule of our protocol: on shutdown, and at startup
    /// to clean up after a crash.
    /// - Returns: The counts and every error.
    public func removeAll() -> ReconcileReport {
        reconcile(desired: [], rules: [])
    }

    /// What `reconcile` would change now, without changing anything.
    /// - Throws: `NetlinkError` when the routes or rules cannot be read.
    public func plan(desired routes: Set<Route>, rules: Set<Rule>) throws(NetlinkError) -> RoutePlan {
        RoutePlan.make(
            desired: routes, rules: rules, actualRoutes: try netlink.allRoutes(),
            actualRules: try netlink.allRules(), protocolNumber: protocolNumber, tables: tables)
    }

    private func sync(desiredRoutes: Set<Route>, desiredRules: Set<Rule>) -> ReconcileReport {
        var report = ReconcileReport()
        let plan: RoutePlan
        do {
            plan = try self.plan(desired: desiredRoutes, rules: desiredRules)
        } catch {
            report.errors.append(error)
            return report
        }
        report.errors = plan.refusals
        apply(plan.changes, to: &report)
        return report
    }

    /// Applies changes in order; a failed one is recorded and the rest still run.
    func apply(_ changes: [RoutePlan.Change], to report: inout ReconcileReport) {
        for change in changes {
            do {
                switch change {
                case .addRoute(let r):
                    try netlink.add(r)
                    report.added += 1
                case .replaceRoute(let r):
                    try netlink.add(r)
                    report.replaced += 1
                case .addRule(let r):
                    try netlink.add(r)
                    report.added += 1
                case .deleteRule(let r):
                    try netlink.delete(r)
                    report.removed += 1
                case .deleteRoute(let r):
                    try netlink.delete(r)
                    report.removed += 1
                }
            } catch {
                report.errors.append(error)
            }
        }
    }
}

// RouteReconciler: keeps the kernel's routes and policy rules of one owner equal to a desired set.
//
// Architecture (after Felix's route_table.go and its delta tracker, level-triggered): every call
// dumps what is really there, compares it with what is wanted, and applies the difference. Nothing
// is cached between calls, so a route deleted or changed behind our back is fixed by the next
// call, and a failed operation is simply retried by the next call (`needsSync` says one is due).
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

    /// The socket the reconciler talks through.
    public let socket: NetlinkSocket
    /// The route protocol number that marks our routes and rules.
    public let protocolNumber: UInt8
    /// The tables whose routes of our protocol we own.
    public let tables: Set<UInt32>

    private let needsSyncState = Mutex(true)

    /// Whether the last call failed somewhere (or none has run yet): the next call is due soon.
    public var needsSync: Bool { needsSyncState.withLock { $0 } }

    /// Creates a reconciler.
    /// - Parameters:
    ///   - socket: A NETLINK_ROUTE socket in the host's network namespace.
    ///   - protocolNumber: Our route protocol number (default 242).
    ///   - tables: Our tables (default: main and `HostRoutes.defaultNATTable`).
    public init(socket: NetlinkSocket, protocolNumber: UInt8 = RouteReconciler.defaultProtocolNumber,
                tables: Set<UInt32> = [Route.mainTable, HostRoutes.defaultNATTable]) {
        self.socket = socket
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
    /// - Returns: The counts and every error; errors do not stop the other operations.
    /// - Precondition: every desired route lies in one of `tables`.
    public func reconcile(desired routes: Set<Route>, rules: Set<Rule>) -> ReconcileReport {
        needsSyncState.withLock { (needsSync: inout Bool) -> ReconcileReport in
            let report = apply(desiredRoutes: routes, desiredRules: rules)
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

    private func apply(desiredRoutes: Set<Route>, desiredRules: Set<Rule>) -> ReconcileReport {
        var report = ReconcileReport()

        // Desired state, ours by construction, one route per kernel key.
        var wanted: [Route.Key: Route] = [:]
        var duplicated: Set<Route.Key> = []
        for var r in desiredRoutes {
            precondition(tables.contains(r.table), "route \(r) lies outside the reconciler's tables \(tables.sorted())")
            r.protocolNumber = protocolNumber
            if wanted.updateValue(r, forKey: r.key) != nil { duplicated.insert(r.key) }
        }
        for key in duplicated.sorted(by: Self.order) {
            wanted[key] = nil
            report.errors.append(NetlinkError(errno: EINVAL, operation: "reconcile",
                                              detail: "several desired routes for \(key.destination) table \(key.table) metric \(key.metric): none installed"))
        }
        let wantedRules = Set(desiredRules.map { r -> Rule in
            var r = r
            r.protocolNumber = protocolNumber
            return r
        })

        // Actual state.
        let actualRoutes: [Route]
        let actualRules: [Rule]
        do {
            actualRoutes = try socket.allRoutes().filter { tables.contains($0.table) }
            actualRules = try socket.rules(protocolNumber: protocolNumber)
        } catch {
            report.errors.append(error)
            return report
        }
        var ours: [Route.Key: [Route]] = [:]
        var foreign: [Route.Key: Route] = [:]
        for r in actualRoutes {
            if r.protocolNumber == protocolNumber {
                ours[r.key, default: []].append(r)
            } else if foreign[r.key] == nil {
                foreign[r.key] = r
            }
        }

        // 1. Add missing routes, replace different ones.
        for key in wanted.keys.sorted(by: Self.order) {
            let route = wanted[key]!
            let existing = ours[key] ?? []
            if existing.count == 1 && existing[0] == route { continue }
            if let holder = foreign[key] {
                report.errors.append(NetlinkError(errno: EEXIST, operation: "reconcile",
                                                  detail: "route \(route) not installed: \(holder) holds its key"))
                continue
            }
            do {
                try socket.add(route)
                if existing.isEmpty { report.added += 1 } else { report.replaced += 1 }
            } catch {
                report.errors.append(error)
            }
        }

        // 2. Add missing rules.
        let present = Set(actualRules)
        for rule in wantedRules.subtracting(present).sorted(by: Self.order) {
            do {
                try socket.add(rule)
                report.added += 1
            } catch {
                report.errors.append(error)
            }
        }

        // 3. Remove extra rules.
        for rule in present.subtracting(wantedRules).sorted(by: Self.order) {
            do {
                try socket.delete(rule)
                report.removed += 1
            } catch {
                report.errors.append(error)
            }
        }

        // 4. Remove extra routes.
        for key in ours.keys.sorted(by: Self.order) where wanted[key] == nil && !duplicated.contains(key) {
            for route in ours[key]! {
                do {
                    try socket.delete(route)
                    report.removed += 1
                } catch {
                    report.errors.append(error)
                }
            }
        }
        return report
    }

    // Deterministic order of operations (and so of errors): table, destination, metric.
    private static func order(_ a: Route.Key, _ b: Route.Key) -> Bool {
        (a.table, a.destination.address.rawValue, a.destination.length, a.metric)
            < (b.table, b.destination.address.rawValue, b.destination.length, b.metric)
    }

    private static func order(_ a: Rule, _ b: Rule) -> Bool {
        (a.priority, a.source?.address.rawValue ?? 0, a.source?.length ?? 0, a.destination?.address.rawValue ?? 0,
         a.destination?.length ?? 0, a.table)
            < (b.priority, b.source?.address.rawValue ?? 0, b.source?.length ?? 0, b.destination?.address.rawValue ?? 0,
               b.destination?.length ?? 0, b.table)
    }
}

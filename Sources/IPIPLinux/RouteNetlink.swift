// RouteNetlink: the part of rtnetlink the route reconciler uses, as a protocol, so that the
// reconciler runs against the kernel (`NetlinkSocket`) or, in tests without root, against an
// in-memory table that models the kernel's rules (the test-support module's `FakeRouting`).
//
// Control plane only: the packet path never calls through it.
import IPIPCore

/// The routing tables and policy rules, as `RouteReconciler` reads and changes them.
///
/// The contract, which `NetlinkSocket` gets from the kernel and a fake must model:
/// - `add(route)` adds a route, or replaces in place the route with the same key (table,
///   destination, metric), whoever owns it (`NLM_F_CREATE|NLM_F_REPLACE`);
/// - `delete(route)` removes exactly that route (key, type, protocol, next hop); one that is not
///   there is fine;
/// - `add(rule)` accepts an identical rule that is already there; `delete(rule)` one that is not.
public protocol RouteNetlink: AnyObject, Sendable {
    /// Every IPv4 route of every table, whoever installed it.
    func allRoutes() throws(NetlinkError) -> [Route]
    /// Every IPv4 lookup rule, whoever installed it.
    func allRules() throws(NetlinkError) -> [Rule]
    /// Adds a route, or replaces the one with its key.
    func add(_ route: Route) throws(NetlinkError)
    /// Deletes exactly this route; absent is fine.
    func delete(_ route: Route) throws(NetlinkError)
    /// Adds a rule; an identical one already there is fine.
    func add(_ rule: Rule) throws(NetlinkError)
    /// Deletes the rule matching every field; absent is fine.
    func delete(_ rule: Rule) throws(NetlinkError)
}

extension RouteNetlink {
    /// The IPv4 routes installed with `protocolNumber`, in one table or all of them (filtered
    /// here, so routes of other owners are never reported).
    public func routes(table: UInt32? = nil, protocolNumber: UInt8) throws(NetlinkError) -> [Route] {
        try allRoutes().filter { $0.protocolNumber == protocolNumber && (table == nil || $0.table == table) }
    }

    /// The IPv4 lookup rules installed with `protocolNumber` (filtered here).
    public func rules(protocolNumber: UInt8) throws(NetlinkError) -> [Rule] {
        try allRules().filter { $0.protocolNumber == protocolNumber }
    }
}

extension NetlinkSocket: RouteNetlink {}

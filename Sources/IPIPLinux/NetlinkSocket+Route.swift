// Routes and policy rules over rtnetlink (RTM_*ROUTE, RTM_*RULE).
import CIPIPLinux
import Glibc
import IPIPCore

extension NetlinkSocket {
    /// Every IPv4 route of every table, whoever installed it (one `RTM_GETROUTE` dump).
    /// - Throws: `NetlinkError` when the dump fails.
    public func allRoutes() throws(NetlinkError) -> [Route] {
        var b = NetlinkMessageBuilder(type: NL.getRoute, flags: 0)
        RouteMessageHeader().encode(into: &b)
        var out: [Route] = []
        for m in try dump(b, detail: "IPv4 routes") where m.header.type == NL.newRoute {
            if let r = try Route(parsing: m.payload) { out.append(r) }
        }
        return out
    }

    /// Adds a route, or replaces the route with the same key (table, destination, metric) in place
    /// (`NLM_F_CREATE|NLM_F_REPLACE`).
    /// - Warning: the replaced route may belong to another owner; `RouteReconciler` checks first.
    /// - Throws: `NetlinkError` (for example `ENETUNREACH` for a gateway that is not on-link,
    ///   `ENODEV` for a missing interface).
    public func add(_ route: Route) throws(NetlinkError) {
        try request(route.message(NL.newRoute, flags: NL.create | NL.replace), detail: "route \(route)")
    }

    /// Deletes exactly this route (same key, type, protocol and next hop); a route that is not
    /// there is fine.
    /// - Throws: `NetlinkError` for failures other than `ESRCH`/`ENOENT`.
    public func delete(_ route: Route) throws(NetlinkError) {
        do {
            try request(route.message(NL.deleteRoute), detail: "route \(route)")
        } catch  where error.isNotFound {}
    }

    /// Every IPv4 policy rule that `Rule` models (lookup rules), whoever installed it.
    /// - Throws: `NetlinkError` when the dump fails.
    public func allRules() throws(NetlinkError) -> [Rule] {
        var b = NetlinkMessageBuilder(type: NL.getRule, flags: 0)
        RuleMessageHeader().encode(into: &b)
        var out: [Rule] = []
        for m in try dump(b, detail: "IPv4 rules") where m.header.type == NL.newRule {
            if let r = try Rule(parsing: m.payload) { out.append(r) }
        }
        return out
    }

    /// Adds a rule; an identical rule that is already there is fine (`NLM_F_EXCL` + `EEXIST`).
    /// - Throws: `NetlinkError` for failures other than `EEXIST`.
    public func add(_ rule: Rule) throws(NetlinkError) {
        do {
            try request(rule.message(NL.newRule, flags: NL.create | NL.exclusive), detail: "rule \(rule)")
        } catch  where error.isAlreadyExists {}
    }

    /// Deletes the rule matching every field (protocol included); a rule that is not there is fine.
    /// - Throws: `NetlinkError` for failures other than `ENOENT`/`ESRCH`.
    public func delete(_ rule: Rule) throws(NetlinkError) {
        do {
            try request(rule.message(NL.deleteRule), detail: "rule \(rule)")
        } catch  where error.isNotFound {}
    }
}

import IPIPCore
import IPIPLinux
import Synchronization

/// An in-memory routing table and rule list that keeps `RouteNetlink`'s contract the way the
/// kernel does, for control-plane tests without root:
/// - a route's key is (table, destination, metric); `add` replaces the first route holding the
///   key, whoever owns it, or appends;
/// - `delete(route)` removes the first route with the same key, type, protocol, gateway and
///   output interface (the fields an `RTM_DELROUTE` names), and absent is fine;
/// - rules are compared field by field; adding one already there and deleting one that is not
///   are fine.
///
/// `failure` lets a test make chosen operations fail the way the kernel would (for example
/// `ENODEV` for a vanished interface); every operation is recorded in `operations`.
public final class FakeRouting: RouteNetlink, @unchecked Sendable {
    /// One call, as recorded.
    public enum Operation: Sendable, Equatable, CustomStringConvertible {
        case dumpRoutes, dumpRules, addRoute(Route), deleteRoute(Route), addRule(Rule), deleteRule(Rule)

        public var description: String {
            switch self {
            case .dumpRoutes: "dump routes"
            case .dumpRules: "dump rules"
            case .addRoute(let r): "add route \(r)"
            case .deleteRoute(let r): "delete route \(r)"
            case .addRule(let r): "add rule \(r)"
            case .deleteRule(let r): "delete rule \(r)"
            }
        }

        /// True for calls that change the tables.
        public var isChange: Bool {
            switch self {
            case .dumpRoutes, .dumpRules: false
            default: true
            }
        }
    }

    struct State {
        var routes: [Route] = []
        var rules: [Rule] = []
        var operations: [Operation] = []
        var failure: (@Sendable (Operation) -> NetlinkError?)?
    }

    private let state = Mutex(State())

    /// Starts with these routes and rules (of any owner).
    public init(routes: [Route] = [], rules: [Rule] = []) {
        state.withLock {
            $0.routes = routes
            $0.rules = rules
        }
    }

    /// The routes now, in insertion order.
    public var routes: [Route] { state.withLock { $0.routes } }
    /// The rules now, in insertion order.
    public var rules: [Rule] { state.withLock { $0.rules } }
    /// Every call so far, in order.
    public var operations: [Operation] { state.withLock { $0.operations } }
    /// The calls that changed something (dumps left out).
    public var changes: [Operation] { operations.filter(\.isChange) }

    /// Makes the operations for which `decide` returns an error fail with it (nil: none fail).
    public func setFailure(_ decide: (@Sendable (Operation) -> NetlinkError?)?) {
        state.withLock { $0.failure = decide }
    }

    /// Forgets the recorded operations.
    public func clearOperations() { state.withLock { $0.operations.removeAll() } }

    /// Changes the tables behind the reconciler's back (an operator's `ip route`).
    public func edit(_ body: (inout [Route], inout [Rule]) -> Void) {
        state.withLock { body(&$0.routes, &$0.rules) }
    }

    public func allRoutes() throws(NetlinkError) -> [Route] {
        try perform(.dumpRoutes) { $0.routes }
    }

    public func allRules() throws(NetlinkError) -> [Rule] {
        try perform(.dumpRules) { $0.rules }
    }

    public func add(_ route: Route) throws(NetlinkError) {
        try perform(.addRoute(route)) { s in
            if let i = s.routes.firstIndex(where: { Self.sameKey($0, route) }) {
                s.routes[i] = route
            } else {
                s.routes.append(route)
            }
        }
    }

    public func delete(_ route: Route) throws(NetlinkError) {
        try perform(.deleteRoute(route)) { s in
            if let i = s.routes.firstIndex(where: {
                Self.sameKey($0, route) && $0.type == route.type && $0.protocolNumber == route.protocolNumber
                    && $0.gateway == route.gateway && $0.outputInterface == route.outputInterface
            }) {
                s.routes.remove(at: i)
            }
        }
    }

    public func add(_ rule: Rule) throws(NetlinkError) {
        try perform(.addRule(rule)) { s in
            if !s.rules.contains(rule) { s.rules.append(rule) }
        }
    }

    public func delete(_ rule: Rule) throws(NetlinkError) {
        try perform(.deleteRule(rule)) { s in
            if let i = s.rules.firstIndex(of: rule) { s.rules.remove(at: i) }
        }
    }

    static func sameKey(_ a: Route, _ b: Route) -> Bool {
        a.table == b.table && a.destination == b.destination && a.metric == b.metric
    }

    private func perform<T>(_ operation: Operation, _ body: (inout State) -> T) throws(NetlinkError) -> T {
        let result: Result<T, NetlinkError> = state.withLock { s in
            s.operations.append(operation)
            if let error = s.failure?(operation) { return .failure(error) }
            return .success(body(&s))
        }
        return try result.get()
    }
}

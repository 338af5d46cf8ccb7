import IPIPLinux
import Synchronization

/// Where the health endpoints listen, as `ipipd run` was told (docs/health.md).
public enum HealthEndpoint: Sendable, Equatable {
    /// As FelixConfiguration says (`healthEnabled`, `healthHost`, `healthPort`; Felix's defaults:
    /// off, localhost, 9099). The server starts once the resources are loaded.
    case fromFelixConfiguration
    /// `--health-address off`: no health server, whatever FelixConfiguration says.
    case off
    /// `--health-address HOST:PORT`: this address, whatever FelixConfiguration says; the server
    /// starts before the resources are read, so a slow or broken source is visible as not ready.
    case listen(host: String, port: UInt16)
}

/// The result of one programming step (the route and rule reconcile, the nftables table).
public struct HealthPass: Sendable, Equatable {
    /// When it ran (the health clock, seconds).
    public var at: Double
    /// What failed; empty when it succeeded.
    public var problems: [String]

    public init(at: Double, problems: [String] = []) {
        self.at = at
        self.problems = problems
    }
}

/// A reload attempt: refused (invalid resources, a changed node IP) or applied.
public struct HealthReload: Sendable, Equatable {
    public var at: Double
    /// Why it was refused; nil when it was applied.
    public var refusal: String?

    public init(at: Double, refusal: String? = nil) {
        self.at = at
        self.refusal = refusal
    }
}

/// What the control thread has reported: the facts the health judgement is made of.
public struct HealthFacts: Sendable, Equatable {
    /// A topology was loaded and compiled (set once, at the start; a refused reload keeps it).
    public var topologyLoaded = false
    /// A summary of the topology in use ("3 nodes, 1 pools"), for the body.
    public var topologyDescription = ""
    /// The last route and rule reconcile; nil before the first.
    public var routes: HealthPass?
    /// The last nftables pass; nil before the first.
    public var firewall: HealthPass?
    /// The packet workers were started (their heartbeats count from then on).
    public var workersStarted = false
    /// The last reload attempt; nil before the first.
    public var lastReload: HealthReload?
    /// Set when shutdown begins: not ready any more (Felix reports the same while it stops).
    public var stopping = false

    public init() {}
}

/// One line of the judgement: a component, whether it lets the daemon be live and ready, and
/// why (the text an operator reads in the probe's body).
public struct HealthCheck: Sendable, Equatable {
    public var name: String
    public var live: Bool
    public var ready: Bool
    public var detail: String

    public init(name: String, live: Bool, ready: Bool, detail: String) {
        self.name = name
        self.live = live
        self.ready = ready
        self.detail = detail
    }
}

/// The judgement at one moment: live when every check is live, ready when every check is ready
/// (a daemon that is not live is never ready).
public struct HealthReport: Sendable, Equatable {
    public var checks: [HealthCheck]

    public var live: Bool { checks.allSatisfy(\.live) }
    public var ready: Bool { live && checks.allSatisfy(\.ready) }

    /// The plain-text body of `/liveness` or `/readiness`: the verdict on the first line, then
    /// one line per check (component, liveness, readiness, detail), as Felix's health report
    /// lists its reporters.
    public func body(readiness: Bool) -> String {
        var out = readiness ? (ready ? "ready\n" : "not ready\n") : (live ? "live\n" : "not live\n")
        let width = max(9, checks.map(\.name.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
        out += pad("COMPONENT", width) + "  LIVENESS  READINESS  DETAIL\n"
        for c in checks {
            out +=
                pad(c.name, width) + "  " + pad(c.live ? "live" : "NOT LIVE", 8) + "  "
                + pad(c.ready ? "ready" : "NOT READY", 9) + "  " + c.detail + "\n"
        }
        return out
    }
}

/// The health judgement: a pure function of what the control thread reported, the packet
/// loops' heartbeats and the time, so that it is tested with a fake clock.
///
/// - topology: ready once loaded (never live-affecting);
/// - host programming: ready while the last route/rule reconcile and the last nftables pass
///   both succeeded; not ready before the first, and after a failed one until a pass succeeds
///   (the next resync retries); a failed pass never fails liveness (a restart does not clear a
///   foreign route or a missing nftables module);
/// - one check per packet worker: live and ready while its loop turned within `staleAfter`
///   seconds (an idle loop turns every 100 ms, so a stale one is stuck, not idle);
/// - reload: a refused reload keeps the previous topology programmed, so it stays live and ready
///   and says what was refused;
/// - stopping: not ready once shutdown began.
public enum HealthJudge {
    /// How long a packet loop may go without turning before it counts as stuck: 50 of the idle
    /// loop's 100 ms wake-ups (docs/health.md).
    public static let defaultStaleAfter: Double = 5

    public static func judge(
        _ facts: HealthFacts, heartbeats: [Double], now: Double, staleAfter: Double = defaultStaleAfter
    ) -> HealthReport {
        var checks: [HealthCheck] = []
        checks.append(
            HealthCheck(
                name: "topology", live: true, ready: facts.topologyLoaded,
                detail: facts.topologyLoaded ? "loaded: \(facts.topologyDescription)" : "not loaded yet"))
        checks.append(programming(facts, now: now))
        if !facts.workersStarted {
            checks.append(HealthCheck(name: "packet loops", live: true, ready: false, detail: "not started yet"))
        } else {
            for (w, beat) in heartbeats.enumerated() {
                let name = "worker \(w)"
                guard beat > 0 else {
                    // Started, but its thread has not run its first iteration yet.
                    checks.append(HealthCheck(name: name, live: true, ready: false, detail: "not turning yet"))
                    continue
                }
                let age = max(0, now - beat)
                let fresh = age <= staleAfter
                checks.append(
                    HealthCheck(
                        name: name, live: fresh, ready: fresh,
                        detail: fresh
                            ? "turned \(seconds(age)) ago"
                            : "worker \(w) has not turned for \(seconds(age, decimals: 2)) (stuck: the limit is \(seconds(staleAfter)))"
                    ))
            }
        }
        if let r = facts.lastReload {
            let detail =
                r.refusal.map { "last reload refused \(seconds(now - r.at)) ago, the previous topology stays: \($0)" }
                ?? "last reload applied \(seconds(now - r.at)) ago"
            checks.append(HealthCheck(name: "reload", live: true, ready: true, detail: detail))
        }
        if facts.stopping {
            checks.append(HealthCheck(name: "shutdown", live: true, ready: false, detail: "stopping"))
        }
        return HealthReport(checks: checks)
    }

    static func programming(_ facts: HealthFacts, now: Double) -> HealthCheck {
        let name = "host programming"
        guard let routes = facts.routes, let firewall = facts.firewall else {
            return HealthCheck(
                name: name, live: true, ready: false, detail: "routes, rules and nftables not programmed yet")
        }
        let problems = routes.problems + firewall.problems
        if problems.isEmpty {
            let at = max(routes.at, firewall.at)
            return HealthCheck(
                name: name, live: true, ready: true,
                detail: "routes, rules and nftables programmed (last pass \(seconds(now - at)) ago)")
        }
        let shown = problems.prefix(3).joined(separator: "; ") + (problems.count > 3 ? "; …" : "")
        let failedAt = [routes, firewall].filter { !$0.problems.isEmpty }.map(\.at).max() ?? now
        return HealthCheck(
            name: name, live: true, ready: false,
            detail: "last pass failed \(seconds(now - failedAt)) ago: \(shown)")
    }

    /// "3.2 s" (one decimal, or `decimals`; two below a tenth).
    static func seconds(_ s: Double, decimals: Int = 1) -> String {
        let v = max(0, s)
        let scale = v < 0.1 || decimals >= 2 ? 100.0 : 10.0
        let r = (v * scale).rounded() / scale
        return "\(r) s"
    }
}

/// The daemon's health state, shared between the control thread (which reports), the health
/// server and the metrics server (which judge). Judging reads the reported facts under a short
/// lock and the packet loops' heartbeats through relaxed atomic loads: it never waits for a
/// packet loop or for the control thread's work.
public final class HealthMonitor: Sendable {
    let facts = Mutex(HealthFacts())
    let heartbeatSource = Mutex<(@Sendable () -> [Double])?>(nil)
    /// Seconds without a turn after which a packet loop counts as stuck.
    public let staleAfter: Double

    public init(staleAfter: Double = HealthJudge.defaultStaleAfter) {
        self.staleAfter = staleAfter
    }

    /// Changes the reported facts.
    public func update(_ body: (inout HealthFacts) -> Void) {
        facts.withLock { body(&$0) }
    }

    /// The facts reported so far.
    public var current: HealthFacts { facts.withLock { $0 } }

    /// Where the packet loops' heartbeats are read from (once they run): each worker's last
    /// turn in seconds of the monotonic clock, 0 before its first.
    public func attach(heartbeats: @escaping @Sendable () -> [Double]) {
        heartbeatSource.withLock { $0 = heartbeats }
    }

    /// The heartbeats now (empty before `attach`).
    public func heartbeats() -> [Double] {
        let source = heartbeatSource.withLock { $0 }
        return source?() ?? []
    }

    /// The judgement at `now` (seconds on the clock the heartbeats use).
    public func report(now: Double) -> HealthReport {
        HealthJudge.judge(current, heartbeats: heartbeats(), now: now, staleAfter: staleAfter)
    }

    /// The health families for `/metrics`: the judgement, each worker's heartbeat age (so that
    /// "a loop not turning" can be alerted on without the probes), and whether the last reload
    /// was refused.
    public func prometheusText(now: Double) -> String {
        let facts = current
        let beats = heartbeats()
        let report = HealthJudge.judge(facts, heartbeats: beats, now: now, staleAfter: staleAfter)
        var out = ""
        out += "# HELP ipipd_health_live 1 while /liveness would answer 200.\n# TYPE ipipd_health_live gauge\n"
        out += "ipipd_health_live \(report.live ? 1 : 0)\n"
        out += "# HELP ipipd_health_ready 1 while /readiness would answer 200.\n# TYPE ipipd_health_ready gauge\n"
        out += "ipipd_health_ready \(report.ready ? 1 : 0)\n"
        out +=
            "# HELP ipipd_worker_heartbeat_age_seconds Seconds since each packet loop last turned (it turns at least every 0.1 s).\n"
            + "# TYPE ipipd_worker_heartbeat_age_seconds gauge\n"
        if facts.workersStarted {
            for (w, beat) in beats.enumerated() where beat > 0 {
                out += "ipipd_worker_heartbeat_age_seconds{worker=\"\(w)\"} \(max(0, now - beat))\n"
            }
        }
        out +=
            "# HELP ipipd_topology_last_reload_refused 1 while the last reload was refused (the previous topology stays).\n"
            + "# TYPE ipipd_topology_last_reload_refused gauge\n"
        out += "ipipd_topology_last_reload_refused \(facts.lastReload?.refusal != nil ? 1 : 0)\n"
        return out
    }
}

/// `GET` (and `HEAD`) `/liveness` and `/readiness`, Felix's paths: 200 or 503 with the
/// judgement as plain text. One thread, one connection at a time, a 2-second I/O timeout per
/// client, like the metrics server (the sockets are IPIPLinux's `TCPListener`); a probe is
/// answered from the health state alone, so a stuck packet loop or a busy control thread never
/// delays the answer.
public final class HealthServer: @unchecked Sendable {
    let listener: TCPListener
    let monitor: HealthMonitor
    let clock: @Sendable () -> Double
    let stopped = Atomic<Bool>(false)
    /// The port bound (the kernel's pick when asked for 0).
    public var port: UInt16 { listener.port }

    /// Binds and listens.
    /// - Throws: `DaemonError` naming the address that could not be served.
    public init(
        host: String, port: UInt16, monitor: HealthMonitor,
        clock: @escaping @Sendable () -> Double = { MonotonicClock.seconds() }
    ) throws {
        do {
            listener = try TCPListener(host: host, port: port)
        } catch {
            throw DaemonError("health: cannot listen on \(host):\(port): \(error)")
        }
        self.monitor = monitor
        self.clock = clock
    }

    /// Serves until `stop()`; run it on its own thread.
    public func serve() {
        while !stopped.load(ordering: .relaxed) {
            guard let c = listener.accept(timeoutMilliseconds: 200) else { continue }
            c.setTimeouts(seconds: 2)
            let request = c.read(until: [13, 10, 13, 10], limit: 16384)
            c.write(Array(Self.response(to: request, report: { monitor.report(now: clock()) }).utf8))
        }
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }

    /// The whole HTTP response to a request's bytes (`report` is asked only for a probe path).
    static func response(to request: [UInt8], report: () -> HealthReport) -> String {
        let line = String(decoding: request.prefix(while: { $0 != 13 && $0 != 10 }), as: UTF8.self)
        let parts = line.split(separator: " ")
        func reply(_ status: String, _ body: String, head: Bool = false) -> String {
            "HTTP/1.0 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + (head ? "" : body)
        }
        guard parts.count >= 2 else { return reply("400 Bad Request", "malformed request line\n") }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/liveness" || path == "/readiness" else {
            return reply("404 Not Found", "health endpoints: /liveness and /readiness\n")
        }
        let head = parts[0] == "HEAD"
        guard head || parts[0] == "GET" else {
            return reply("405 Method Not Allowed", "only GET and HEAD are served here\n")
        }
        let r = report()
        let readiness = path == "/readiness"
        let ok = readiness ? r.ready : r.live
        return reply(ok ? "200 OK" : "503 Service Unavailable", r.body(readiness: readiness), head: head)
    }
}

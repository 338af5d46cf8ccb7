import Foundation
import IPIPCore
import IPIPLinux
import IPIPResources
import IPIPTestSupport
import Testing

@testable import IPIPDataplane

/// The health judgement on a fake clock: every check, each way it fails, and the text it gives.
@Suite("Health judgement (fake clock)")
struct HealthJudgeTests {
    /// Facts of a daemon that has loaded, programmed and started `workers` loops at t = 100.
    static func running() -> HealthFacts {
        var f = HealthFacts()
        f.topologyLoaded = true
        f.topologyDescription = "3 nodes, 1 pools, tunnel MTU 1480"
        f.routes = HealthPass(at: 100)
        f.firewall = HealthPass(at: 100)
        f.workersStarted = true
        return f
    }

    @Test("nothing loaded yet: live, not ready, and the body says what is missing")
    func beforeLoad() {
        let r = HealthJudge.judge(HealthFacts(), heartbeats: [], now: 10)
        #expect(r.live && !r.ready)
        let body = r.body(readiness: true)
        #expect(body.hasPrefix("not ready\n"))
        #expect(body.contains("topology") && body.contains("not loaded yet"))
        #expect(body.contains("routes, rules and nftables not programmed yet"))
        #expect(body.contains("packet loops") && body.contains("not started yet"))
        #expect(r.body(readiness: false).hasPrefix("live\n"))
    }

    @Test("loaded but not programmed: not ready until both the routes and the nftables pass ran")
    func loadedNotProgrammed() {
        var f = Self.running()
        f.firewall = nil
        #expect(!HealthJudge.judge(f, heartbeats: [100], now: 100.5).ready)
        f.firewall = HealthPass(at: 100)
        f.routes = nil
        #expect(!HealthJudge.judge(f, heartbeats: [100], now: 100.5).ready)
    }

    @Test("programmed, loops turning: live and ready")
    func ready() {
        let r = HealthJudge.judge(Self.running(), heartbeats: [100.4, 100.45], now: 100.5)
        #expect(r.live && r.ready)
        #expect(r.checks.map(\.name) == ["topology", "host programming", "worker 0", "worker 1"])
        #expect(r.checks[2].detail == "turned 0.1 s ago")
        #expect(r.checks[3].detail == "turned 0.05 s ago")
        #expect(r.body(readiness: true).hasPrefix("ready\n"))
    }

    @Test("a loop that has not turned for longer than the limit fails liveness and readiness, and is named")
    func stuckLoop() {
        let f = Self.running()
        let limit = HealthJudge.defaultStaleAfter
        // At the limit it still counts as turning; past it, it is stuck.
        #expect(HealthJudge.judge(f, heartbeats: [200, 200 - limit], now: 200).live)
        let r = HealthJudge.judge(f, heartbeats: [200, 196.77 - limit], now: 200)
        #expect(!r.live && !r.ready)
        let stuck = r.checks.first { !$0.live }
        #expect(stuck?.name == "worker 1")
        #expect(stuck?.detail == "worker 1 has not turned for 8.23 s (stuck: the limit is 5.0 s)")
        #expect(r.body(readiness: false).hasPrefix("not live\n"))
        #expect(r.body(readiness: false).contains("worker 1 has not turned for 8.23 s"))
        // The limit is the monitor's.
        #expect(HealthJudge.judge(f, heartbeats: [190], now: 200, staleAfter: 20).live)
    }

    @Test("a started worker whose thread has not turned yet is not ready but not dead")
    func notTurnedYet() {
        let r = HealthJudge.judge(Self.running(), heartbeats: [0], now: 100)
        #expect(r.live && !r.ready)
        #expect(r.checks.last?.detail == "not turning yet")
    }

    @Test("a failed programming pass: live, not ready, naming what failed, until a pass succeeds")
    func failedPass() {
        var f = Self.running()
        f.firewall = HealthPass(at: 110, problems: ["nftables table ipipd: no such file"])
        let r = HealthJudge.judge(f, heartbeats: [111], now: 111)
        #expect(r.live && !r.ready)
        #expect(
            r.checks[1].detail
                == "last pass failed 1.0 s ago: nftables table ipipd: no such file")
        f.firewall = HealthPass(at: 120)
        #expect(HealthJudge.judge(f, heartbeats: [120], now: 120).ready)
    }

    @Test("a refused reload stays live and ready and says what was refused; an applied one clears it")
    func refusedReload() {
        var f = Self.running()
        f.lastReload = HealthReload(at: 130, refusal: "t.yaml:6:9: IPPool(p) spec.cidr: invalid CIDR")
        let r = HealthJudge.judge(f, heartbeats: [131], now: 132)
        #expect(r.live && r.ready)
        #expect(
            r.checks.last?.detail
                == "last reload refused 2.0 s ago, the previous topology stays: t.yaml:6:9: IPPool(p) spec.cidr: invalid CIDR"
        )
        f.lastReload = HealthReload(at: 140)
        #expect(
            HealthJudge.judge(f, heartbeats: [140], now: 141).checks.last?.detail == "last reload applied 1.0 s ago")
    }

    @Test("stopping: not ready any more, still live")
    func stopping() {
        var f = Self.running()
        f.stopping = true
        let r = HealthJudge.judge(f, heartbeats: [100], now: 100)
        #expect(r.live && !r.ready)
    }

    @Test("the monitor's metrics: verdicts, each worker's heartbeat age, the refused reload")
    func metrics() {
        let m = HealthMonitor()
        #expect(m.prometheusText(now: 5).contains("ipipd_health_ready 0\n"))
        m.update { $0 = Self.running() }
        m.attach(heartbeats: { [100, 93] })
        m.update { $0.lastReload = HealthReload(at: 99, refusal: "bad") }
        let text = m.prometheusText(now: 100.5)
        #expect(text.contains("ipipd_health_live 0\n"), "worker 1 is 7.5 s old: \(text)")
        #expect(text.contains("ipipd_health_ready 0\n"))
        #expect(text.contains("ipipd_worker_heartbeat_age_seconds{worker=\"0\"} 0.5\n"))
        #expect(text.contains("ipipd_worker_heartbeat_age_seconds{worker=\"1\"} 7.5\n"))
        #expect(text.contains("ipipd_topology_last_reload_refused 1\n"))
    }
}

/// The HTTP side: paths, methods, status codes and bodies.
@Suite("Health server responses")
struct HealthServerTests {
    static func request(_ line: String) -> [UInt8] { Array("\(line)\r\nHost: x\r\n\r\n".utf8) }

    static let notReady = HealthJudge.judge(HealthFacts(), heartbeats: [], now: 1)
    static let ready = HealthJudge.judge(HealthJudgeTests.running(), heartbeats: [100], now: 100)

    @Test("GET /readiness and /liveness: 200 or 503 with the judgement as the body")
    func probes() {
        let r503 = HealthServer.response(to: Self.request("GET /readiness HTTP/1.1"), report: { Self.notReady })
        #expect(r503.hasPrefix("HTTP/1.0 503 Service Unavailable\r\n"))
        #expect(r503.hasSuffix(Self.notReady.body(readiness: true)))
        let live = HealthServer.response(to: Self.request("GET /liveness HTTP/1.1"), report: { Self.notReady })
        #expect(live.hasPrefix("HTTP/1.0 200 OK\r\n") && live.contains("\r\n\r\nlive\n"))
        let ok = HealthServer.response(to: Self.request("GET /readiness?verbose HTTP/1.0"), report: { Self.ready })
        #expect(ok.hasPrefix("HTTP/1.0 200 OK\r\n") && ok.contains("\r\n\r\nready\n"))
    }

    @Test("HEAD: the status and headers, no body")
    func head() {
        let r = HealthServer.response(to: Self.request("HEAD /readiness HTTP/1.1"), report: { Self.notReady })
        #expect(r.hasPrefix("HTTP/1.0 503"))
        #expect(r.hasSuffix("\r\n\r\n"))
        #expect(r.contains("Content-Length: \(Self.notReady.body(readiness: true).utf8.count)\r\n"))
    }

    @Test("other paths, other methods and garbage are refused without judging")
    func refusals() {
        let never: () -> HealthReport = {
            Issue.record("judged for a request that is not a probe")
            return Self.ready
        }
        #expect(HealthServer.response(to: Self.request("GET / HTTP/1.1"), report: never).hasPrefix("HTTP/1.0 404"))
        #expect(
            HealthServer.response(to: Self.request("GET /metrics HTTP/1.1"), report: never).hasPrefix("HTTP/1.0 404"))
        #expect(
            HealthServer.response(to: Self.request("POST /readiness HTTP/1.1"), report: never).hasPrefix(
                "HTTP/1.0 405"))
        #expect(HealthServer.response(to: Array("\r\n\r\n".utf8), report: never).hasPrefix("HTTP/1.0 400"))
        #expect(HealthServer.response(to: [], report: never).hasPrefix("HTTP/1.0 400"))
    }

    @Test("a bound server answers over TCP")
    func overTCP() throws {
        let monitor = HealthMonitor()
        let server = try HealthServer(host: "127.0.0.1", port: 0, monitor: monitor, clock: { 1 })
        let thread = Thread { server.serve() }
        thread.start()
        defer { server.stop() }
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = server.port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        try #require(r == 0)
        let req = Self.request("GET /readiness HTTP/1.0")
        _ = req.withUnsafeBytes { send(s, $0.baseAddress, $0.count, 0) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(s, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.0 503") && text.contains("not loaded yet"), "\(text)")
    }

    @Test("a port that is taken is an error naming the address")
    func portTaken() throws {
        let first = try HealthServer(host: "127.0.0.1", port: 0, monitor: HealthMonitor())
        #expect {
            _ = try HealthServer(host: "127.0.0.1", port: first.port, monitor: HealthMonitor())
        } throws: { error in
            "\(error)".contains("health: cannot listen on 127.0.0.1:\(first.port)")
        }
    }
}

/// The daemon's reports on a fake host: what the probes would say at each step of a run.
@Suite("Health through a daemon run on a fake host (no root)")
struct DaemonHealthTests {
    /// A daemon for node-a over the example cluster (plus `extra` manifests) in a temporary directory.
    static func makeDaemon(
        extra: String = "", script: [FakeHost.Step]
    ) throws -> (daemon: Daemon, host: FakeHost, file: URL, example: String, log: RecordingLogHandler.Store) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ipipd-health-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("cluster.yaml")
        let example = try ExampleCluster.manifests() + extra
        try example.write(to: file, atomically: true, encoding: .utf8)
        let host = FakeHost(uplinkAddress: IPv4Address("10.0.0.1")!, script: script)
        var options = DaemonOptions(node: "node-a")
        options.metricsPort = 0
        let (logger, log) = RecordingLogHandler.logger()
        let daemon = Daemon(options: options, source: ManifestSource(paths: [dir.path]), logger: logger, host: host)
        return (daemon, host, file, example, log)
    }

    @Test("not ready before the first programming, ready once programmed and turning, not ready while stopping")
    func start() throws {
        var run: (daemon: Daemon, host: FakeHost, file: URL, example: String, log: RecordingLogHandler.Store)!
        var atFirstFirewall: HealthReport?
        var whileRunning: HealthReport?
        run = try Self.makeDaemon(script: [
            { h in
                whileRunning = run.daemon.health.report(now: h.now())
                return [.terminate]
            }
        ])
        run.host.beforeFirewall = {
            if atFirstFirewall == nil { atFirstFirewall = run.daemon.health.report(now: run.host.now()) }
        }
        #expect(try run.daemon.run() == 0)
        let first = try #require(atFirstFirewall)
        #expect(first.live && !first.ready)
        #expect(first.checks.first { $0.name == "topology" }?.ready == true, "loaded before programming")
        #expect(first.checks.first { $0.name == "host programming" }?.ready == false)
        let running = try #require(whileRunning)
        #expect(running.ready, "\(running.body(readiness: true))")
        #expect(running.checks.map(\.name).contains("worker 0"))
        #expect(run.daemon.health.current.stopping)
        #expect(!run.daemon.health.report(now: run.host.now()).ready)
    }

    @Test("a refused reload keeps the daemon ready; the body names the error; an applied reload clears it")
    func refusedReload() throws {
        var run: (daemon: Daemon, host: FakeHost, file: URL, example: String, log: RecordingLogHandler.Store)!
        var afterRefusal: HealthReport?
        var afterFix: HealthReport?
        run = try Self.makeDaemon(script: [
            { _ in
                try? run.example.replacingOccurrences(of: "cidr: 192.168.0.0/16", with: "cidr: 192.168.0.0/33")
                    .write(to: run.file, atomically: true, encoding: .utf8)
                return [.hangup]
            },
            { h in
                afterRefusal = run.daemon.health.report(now: h.now())
                try? run.example.write(to: run.file, atomically: true, encoding: .utf8)
                return [.hangup]
            },
            { h in
                afterFix = run.daemon.health.report(now: h.now())
                return [.terminate]
            },
        ])
        #expect(try run.daemon.run() == 0)
        let refused = try #require(afterRefusal)
        #expect(refused.live && refused.ready)
        let body = refused.body(readiness: true)
        #expect(body.contains("last reload refused") && body.contains("192.168.0.0/33"), "\(body)")
        #expect(run.daemon.health.prometheusText(now: 0).contains("ipipd_topology_last_reload_refused 0\n"))
        #expect(try #require(afterFix).checks.last?.detail.hasPrefix("last reload applied") == true)
    }

    @Test("an nftables pass that fails makes the daemon not ready until the next resync succeeds")
    func failedFirewall() throws {
        var run: (daemon: Daemon, host: FakeHost, file: URL, example: String, log: RecordingLogHandler.Store)!
        var failing: HealthReport?
        var repaired: HealthReport?
        run = try Self.makeDaemon(script: [
            { h in
                h.firewallError = FakeHostError("nft: Operation not supported")
                h.advance(seconds: 10)
                return []
            },
            { h in
                failing = run.daemon.health.report(now: h.now())
                h.firewallError = nil
                h.advance(seconds: 10)
                return []
            },
            { h in
                repaired = run.daemon.health.report(now: h.now())
                return [.terminate]
            },
        ])
        #expect(try run.daemon.run() == 0)
        let f = try #require(failing)
        #expect(f.live && !f.ready)
        #expect(f.body(readiness: true).contains("nftables table ipipd: nft: Operation not supported"))
        #expect(try #require(repaired).ready)
    }

    @Test("a stale heartbeat fails liveness with the worker named")
    func staleHeartbeat() throws {
        var run: (daemon: Daemon, host: FakeHost, file: URL, example: String, log: RecordingLogHandler.Store)!
        var stuck: HealthReport?
        run = try Self.makeDaemon(script: [
            { h in
                h.datapath?.heartbeatValues = [h.now() - 12]
                stuck = run.daemon.health.report(now: h.now())
                return [.terminate]
            }
        ])
        #expect(try run.daemon.run() == 0)
        let r = try #require(stuck)
        #expect(!r.live && !r.ready)
        #expect(r.body(readiness: false).contains("worker 0 has not turned for 12.0 s"))
    }

    @Test("a reload that changes the health settings applies the rest and says the settings need a restart")
    func healthSettingsChange() throws {
        var run: (daemon: Daemon, host: FakeHost, file: URL, example: String, log: RecordingLogHandler.Store)!
        run = try Self.makeDaemon(script: [
            { _ in
                let felix =
                    "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\n"
                    + "spec:\n  healthEnabled: true\n  healthPort: 9199\n"
                try? (run.example + felix).write(to: run.file, atomically: true, encoding: .utf8)
                return [.hangup]
            },
            { _ in [.terminate] },
        ])
        #expect(try run.daemon.run() == 0)
        #expect(run.daemon.controlCounters.topologyReloads == 1)
        #expect(run.log.contains("FelixConfiguration health settings changed"), "\(run.log.messages)")
        #expect(run.log.contains("restart ipipd to apply them"))
    }

    @Test("debugSimulateDataplaneHangAfter asks worker 0 to hang and says so at warning level")
    func simulatedHang() throws {
        let felix = """
            ---
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata:
              name: node.node-a
            spec:
              debugSimulateDataplaneHangAfter: 3s

            """
        let run = try Self.makeDaemon(
            extra: felix,
            script: [
                { h in
                    h.advance(seconds: 5)
                    return []
                }, { _ in [.terminate] },
            ])
        #expect(try run.daemon.run() == 0)
        let hangs = run.host.datapath?.hangs ?? []
        #expect(hangs.count == 1 && hangs.first?.worker == 0 && hangs.first?.after == 3)
        #expect(run.log.contains("debugSimulateDataplaneHangAfter 3.0 s: worker 0's packet loop will hang"))
        #expect(run.log.contains("simulating a dataplane hang: worker 0's packet loop is blocked now"))
    }
}

/// The packet loop's side: the heartbeat moves while it turns; a simulated hang blocks it until
/// `stop()`, with the heartbeat frozen.
@Suite("Packet loop heartbeat")
struct HeartbeatTests {
    /// Polls until `condition` holds (no time limit: the test runner's timeout is the limit).
    func eventually(_ condition: () -> Bool) {
        while !condition() { usleep(2000) }
    }

    @Test("the heartbeat advances while idle; a simulated hang freezes it until stop()")
    func heartbeatAndHang() throws {
        let io = FakeDatapath()
        let loop = PacketLoop(io: io, engine: Engine(topology: try exampleTopology(mode: "Always")))
        let before = loop.heartbeat.load(ordering: .relaxed)
        #expect(before == 0)
        let thread = Thread { loop.run() }
        thread.start()
        eventually { loop.heartbeat.load(ordering: .relaxed) > 0 }
        let first = loop.heartbeat.load(ordering: .relaxed)
        eventually { loop.heartbeat.load(ordering: .relaxed) > first }

        loop.simulateHang(atNanoseconds: 0)
        eventually { loop.hanging.load(ordering: .relaxed) }
        let frozen = loop.heartbeat.load(ordering: .relaxed)
        // A packet waiting does not move it: the loop is blocked, not turning.
        io.lock.withLock { io.tunQueue.append(examplePacket(to: "192.168.1.20")) }
        usleep(300_000)
        let later = loop.heartbeat.load(ordering: .relaxed)
        #expect(later == frozen)
        #expect(io.lock.withLock { io.underlaySent.isEmpty })
        loop.stop()
        eventually { thread.isFinished }
        let stillHanging = loop.hanging.load(ordering: .relaxed)
        #expect(!stillHanging)
    }
}

/// The catalogue the deploy/ check uses is the rendered output itself.
@Suite("Metrics catalogue")
struct MetricsCatalogTests {
    @Test("every family the daemon can export is in the catalogue, conditional ones included")
    func families() {
        let all = MetricsCatalog.allFamilies
        #expect(Set(all).count == all.count, "each family once")
        for name in [
            "ipipd_packets_total", "ipipd_drops_total", "ipipd_nat_ports_in_use", "ipipd_nat_ports_available",
            "ipipd_io_drops_total", "ipipd_uplink_io_info", "ipipd_worker_drops_total",
            "ipipd_worker_heartbeat_age_seconds", "ipipd_health_ready", "ipipd_topology_last_reload_refused",
            "ipipd_peer_packets_total", "ipipd_peer_bytes_total",
        ] {
            #expect(all.contains(name), "\(name) missing from \(all)")
        }
        // Every sample line belongs to a family the catalogue lists.
        let text = MetricsCatalog.exampleExposition()
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let name = String(line.prefix { $0 != "{" && $0 != " " })
            #expect(all.contains(name), "sample \(line) has no family")
        }
    }
}

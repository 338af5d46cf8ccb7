import Foundation
import IPIPCore
import IPIPLinux
import IPIPResources
import IPIPTestSupport
import Testing

@testable import IPIPDataplane

/// `Daemon.run()` in-process on a `FakeHost`: start, reload on SIGHUP and on a changed file, a
/// refused reload, resync repairing drift, worker failure, and cleanup on the way out, without
/// root. The root-only e2e suite runs the same daemon on real hosts in namespaces.
@Suite("Daemon lifecycle on a fake host (no root)")
struct DaemonLifecycleTests {
    static let ours = RouteReconciler.defaultProtocolNumber

    /// A fourth node and its block, appended to the example cluster.
    static let nodeD = """
        ---
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata:
          name: node-d
        spec:
          bgp:
            ipv4Address: 10.0.0.4/24
            ipv4IPIPTunnelAddr: 192.168.3.1
        ---
        apiVersion: projectcalico.org/v3
        kind: BlockAffinity
        metadata:
          name: node-d-192-168-3-0-26
        spec:
          state: confirmed
          node: node-d
          cidr: 192.168.3.0/26

        """

    /// A directory holding the example cluster as `cluster.yaml`, removed at the end.
    final class Manifests {
        let directory: URL
        let file: URL
        let example: String

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "ipipd-lifecycle-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            file = directory.appendingPathComponent("cluster.yaml")
            example = try ExampleCluster.manifests()
            try write(example)
        }

        deinit { try? FileManager.default.removeItem(at: directory) }

        func write(_ text: String) throws { try text.write(to: file, atomically: true, encoding: .utf8) }
    }

    struct Run {
        let manifests: Manifests
        let host: FakeHost
        let daemon: Daemon
        let log: RecordingLogHandler.Store
        let foreign: Route
    }

    /// A daemon for node-a on a fake host that already has a route of another owner.
    static func makeRun(workers: Int = 1, routing: FakeRouting? = nil, script: [FakeHost.Step]) throws -> Run {
        let manifests = try Manifests()
        let foreign = Route(
            destination: IPv4Prefix("10.9.0.0/24")!, gateway: IPv4Address("10.0.0.254"), outputInterface: 2,
            protocolNumber: 4, onlink: true)
        let fake = routing ?? FakeRouting()
        fake.edit { routes, _ in routes.append(foreign) }
        let host = FakeHost(uplinkAddress: IPv4Address("10.0.0.1")!, routing: fake, script: script)
        var options = DaemonOptions(node: "node-a")
        options.metricsPort = 0
        options.workers = workers
        let (logger, log) = RecordingLogHandler.logger()
        let daemon = Daemon(
            options: options, source: ManifestSource(paths: [manifests.directory.path]), logger: logger, host: host)
        return Run(manifests: manifests, host: host, daemon: daemon, log: log, foreign: foreign)
    }

    /// Our routes on the host, by destination.
    static func ourDestinations(_ host: FakeHost) -> Set<String> {
        Set(host.fakeRouting.routes.filter { $0.protocolNumber == ours }.map { "\($0.destination)" })
    }

    @Test("start programs TUN, sysctls, nftables, routes and rules; SIGTERM removes all of it and exits 0")
    func startAndStop() throws {
        var seenRunning = false
        let run = try Self.makeRun(script: [
            { h in
                seenRunning = true
                #expect(
                    h.tunnel?.mtu == 1480 && h.tunnel?.address == IPv4Address("192.168.0.1"),
                    "\(String(describing: h.tunnel))")
                #expect(h.sysctls["net.ipv4.ip_forward"] == "1")
                #expect(h.sysctls["net.ipv4.conf.ipip0.rp_filter"] == "0")
                #expect(
                    h.sysctls["net.ipv4.conf.all.rp_filter"] == "2",
                    "strict rp_filter on all would override the TUN's 0")
                #expect(
                    h.firewall["ipipd"]
                        == FakeHost.FirewallTable(
                            uplink: "eth0", nodeAddress: IPv4Address("10.0.0.1")!,
                            natPortRange: NATTable.defaultPortRange))
                let ours = Self.ourDestinations(h)
                #expect(ours.isSuperset(of: ["192.168.1.0/26", "192.168.2.0/26"]), "\(ours)")
                #expect(h.fakeRouting.rules.contains { $0.protocolNumber == Self.ours }, "natOutgoing needs its rule")
                #expect(h.datapath?.engines?.count == 1)
                return [.terminate]
            }
        ])
        let status = try run.daemon.run()
        #expect(status == 0)
        #expect(seenRunning)
        #expect(run.host.fakeRouting.routes == [run.foreign], "only the other owner's route is left")
        #expect(run.host.fakeRouting.rules.isEmpty)
        #expect(run.host.firewall.isEmpty)
        #expect(run.host.datapath?.stopped == true)
        #expect(run.host.datapath?.closed == true)
        #expect(run.log.contains("running: TUN ipip0, uplink eth0"))
        #expect(run.log.contains("stopping (SIGTERM)"))
    }

    /// What a kill -9 leaves: a stale route and rule, and the natOutgoing rule and fail-closed
    /// blackhole the new run wants too (the routes through the old TUN went with it).
    static func crashLeftovers() -> (
        routing: FakeRouting, stale: Route, staleRule: Rule, natRule: Rule, failClosed: Route
    ) {
        let stale = Route(
            destination: IPv4Prefix("192.168.77.0/26")!, gateway: IPv4Address("10.0.0.77"), outputInterface: 2,
            protocolNumber: ours, onlink: true)
        let staleRule = Rule(priority: 498, source: IPv4Prefix("10.77.0.0/16")!, table: 498, protocolNumber: ours)
        let natRule = Rule(priority: 498, source: IPv4Prefix("192.168.0.0/16")!, table: 498, protocolNumber: ours)
        let failClosed = Route(
            destination: .all, table: 498, protocolNumber: ours, type: .blackhole, metric: HostRoutes.failClosedMetric)
        let routing = FakeRouting(routes: [stale, failClosed], rules: [staleRule, natRule])
        return (routing, stale, staleRule, natRule, failClosed)
    }

    @Test("leftovers of a crashed run are replaced by the first reconcile, the fail-closed ones never removed")
    func leftoversReplaced() throws {
        let l = Self.crashLeftovers()
        let run = try Self.makeRun(
            routing: l.routing,
            script: [
                { h in
                    #expect(!h.fakeRouting.routes.contains(l.stale))
                    #expect(!h.fakeRouting.rules.contains(l.staleRule))
                    #expect(h.fakeRouting.rules.contains(l.natRule))
                    #expect(h.fakeRouting.routes.contains(l.failClosed))
                    // Kept in force through the start: never deleted, never a gap.
                    #expect(!h.fakeRouting.operations.contains(.deleteRule(l.natRule)))
                    #expect(!h.fakeRouting.operations.contains(.deleteRoute(l.failClosed)))
                    #expect(
                        h.firewallOperations == ["apply ipipd"], "the old table is replaced atomically, not removed")
                    return [.interrupt]
                }
            ])
        #expect(try run.daemon.run() == 0)
        #expect(run.log.contains("found 4 routes and rules left by a previous run"), "\(run.log.messages)")
        #expect(run.log.contains("stopping (SIGINT)"))
    }

    @Test("a start that fails before routes are programmed removes the leftovers and the nftables table")
    func failedStartCleansUp() throws {
        let l = Self.crashLeftovers()
        let run = try Self.makeRun(routing: l.routing, script: [])
        run.host.datapathError = FakeHostError("no TUN here")
        #expect(throws: FakeHostError.self) { try run.daemon.run() }
        #expect(run.host.fakeRouting.routes == [run.foreign], "only the other owner's route is left")
        #expect(run.host.fakeRouting.rules.isEmpty)
        #expect(run.host.firewallOperations == ["remove ipipd"])
        #expect(run.log.contains("start failed: removed 4 routes and rules"), "\(run.log.messages)")
    }

    @Test("SIGHUP reloads a changed manifest; a changed file alone reloads too")
    func reloads() throws {
        var run: Run!
        run = try Self.makeRun(script: [
            { _ in
                try? run.manifests.write(run.manifests.example + Self.nodeD)
                return [.hangup]
            },
            { h in
                #expect(h.datapath?.published.count == 1)
                #expect(h.datapath?.topology?.nodes.count == 4)
                #expect(Self.ourDestinations(h).contains("192.168.3.0/26"))
                #expect(run.daemon.controlCounters.topologyReloads == 1)
                try? run.manifests.write(run.manifests.example)  // no signal: the watch sees it
                return []
            },
            { h in
                #expect(h.datapath?.published.count == 2)
                #expect(!Self.ourDestinations(h).contains("192.168.3.0/26"))
                return [.terminate]
            },
        ])
        #expect(try run.daemon.run() == 0)
        #expect(run.daemon.controlCounters.topologyReloads == 2)
        #expect(run.log.contains("SIGHUP: reloading manifests"))
        #expect(run.log.contains("changed: reloading"))
    }

    @Test("a change written while a SIGHUP reload runs is reloaded by the next poll, not lost")
    func changeDuringReload() throws {
        var run: Run!
        run = try Self.makeRun(script: [
            { h in
                try? run.manifests.write(run.manifests.example + Self.nodeD)
                // In the middle of the reload this SIGHUP starts, node-d goes again.
                h.datapath?.onPublish = { _ in
                    h.datapath?.onPublish = nil
                    try? run.manifests.write(run.manifests.example)
                }
                return [.hangup]
            },
            { _ in [] },
            { h in
                #expect(h.datapath?.published.count == 2, "the change during the reload was missed")
                #expect(h.datapath?.topology?.nodes.count == 3)
                #expect(!Self.ourDestinations(h).contains("192.168.3.0/26"))
                return [.terminate]
            },
        ])
        #expect(try run.daemon.run() == 0)
        #expect(run.log.contains("changed: reloading"), "\(run.log.messages)")
    }

    /// Prefixes `topology` forwards natively that the host still routes into the TUN: packets
    /// the engine would hand back to the kernel, which sends them into the TUN again.
    static func loops(_ topology: Topology, _ h: FakeHost) -> [String] {
        guard let tun = h.datapath?.tunIndex else { return [] }
        return topology.table.entries.compactMap { prefix, value in
            let r = topology.routes[Int(value)]
            guard r.kind == .remote, !r.encapsulate else { return nil }
            let intoTUN = h.fakeRouting.routes.contains {
                $0.destination == prefix && $0.table == Route.mainTable && $0.outputInterface == tun
            }
            return intoTUN ? "\(prefix)" : nil
        }
    }

    @Test(
        "Always -> CrossSubnet and back: the engine never forwards natively what the kernel still routes into the TUN")
    func modeSwitchWithoutLoop() throws {
        var run: Run!
        var seen: [(nodes: Int, loops: [String])] = []
        let crossSubnet = {
            run.manifests.example.replacingOccurrences(of: "ipipMode: Always", with: "ipipMode: CrossSubnet")
        }
        run = try Self.makeRun(script: [
            { h in
                h.datapath?.onPublish = { t in seen.append((t.nodes.count, Self.loops(t, h))) }
                try? run.manifests.write(crossSubnet())
                return [.hangup]
            },
            { h in
                // node-b shares node-a's subnet: its block and tunnel address now go natively.
                #expect(Self.loops(h.datapath!.topology!, h).isEmpty)
                let b = h.fakeRouting.routes.first { $0.destination == IPv4Prefix("192.168.1.0/26")! }
                #expect(
                    b?.gateway == IPv4Address("10.0.0.2"), "node-b's block is routed natively: \(String(describing: b))"
                )
                try? run.manifests.write(run.manifests.example)
                return [.hangup]
            },
            { _ in [.terminate] },
        ])
        #expect(try run.daemon.run() == 0)
        #expect(seen.count == 3, "a bridge topology, then CrossSubnet; back to Always needs none: \(seen)")
        #expect(seen.allSatisfy { $0.loops.isEmpty }, "published while the kernel still routes into the TUN: \(seen)")
    }

    @Test("a reload that fails validation, or moves the node IP, is refused and the previous topology stays")
    func refusedReloads() throws {
        var run: Run!
        var before: Set<String> = []
        run = try Self.makeRun(script: [
            { h in
                before = Self.ourDestinations(h)
                try? run.manifests.write(
                    run.manifests.example.replacingOccurrences(of: "cidr: 192.168.0.0/16", with: "cidr: 192.168.0.0/33")
                )
                return [.hangup]
            },
            { h in
                #expect(h.datapath?.published.isEmpty == true)
                #expect(Self.ourDestinations(h) == before)
                #expect(run.log.contains("reload refused, the previous topology stays"), "\(run.log.messages)")
                try? run.manifests.write(
                    run.manifests.example.replacingOccurrences(of: "10.0.0.1/24", with: "10.0.0.11/24"))
                return [.hangup]
            },
            { h in
                #expect(h.datapath?.published.isEmpty == true)
                #expect(h.firewall["ipipd"]?.nodeAddress == IPv4Address("10.0.0.1"))
                #expect(run.log.contains("restart ipipd to apply it"), "\(run.log.messages)")
                return [.terminate]
            },
        ])
        #expect(try run.daemon.run() == 0)
        #expect(run.daemon.controlCounters.topologyReloadErrors == 2)
        #expect(run.daemon.controlCounters.topologyReloads == 0)
    }

    @Test("drift behind the daemon's back is repaired at the next resync, not before")
    func resyncRepairs() throws {
        var run: Run!
        var desired: [Route] = []
        run = try Self.makeRun(script: [
            { h in
                desired = h.fakeRouting.routes.filter { $0.protocolNumber == Self.ours }
                h.fakeRouting.edit { routes, _ in routes.removeAll { $0.destination == IPv4Prefix("192.168.1.0/26")! } }
                h.sysctls["net.ipv4.ip_forward"] = "0"
                h.dropFirewall(table: "ipipd")
                return []
            },
            { h in
                #expect(!Self.ourDestinations(h).contains("192.168.1.0/26"), "repaired before the resync was due")
                h.advance(seconds: 10)
                return []
            },
            { h in
                #expect(Set(h.fakeRouting.routes.filter { $0.protocolNumber == Self.ours }) == Set(desired))
                #expect(h.sysctls["net.ipv4.ip_forward"] == "1")
                #expect(h.firewall["ipipd"] != nil)
                return [.terminate]
            },
        ])
        #expect(try run.daemon.run() == 0)
        #expect(run.daemon.controlCounters.reconciles >= 2)
    }

    @Test("a failed packet worker ends the run with status 1, and the host is still cleaned up")
    func workerFailure() throws {
        let run = try Self.makeRun(script: [
            { h in
                h.datapath?.failure = "TUN read: EBADFD"
                return []
            }
        ])
        #expect(try run.daemon.run() == 1)
        #expect(run.host.fakeRouting.routes == [run.foreign])
        #expect(run.host.firewall.isEmpty)
        #expect(run.log.contains("packet loop failed: TUN read: EBADFD"))
        #expect(run.host.datapath?.closed == true)
    }

    @Test("a datapath that cannot open fails the start and leaves nothing programmed")
    func startFailure() throws {
        let run = try Self.makeRun(script: [])
        run.host.datapathError = FakeHostError("open /dev/net/tun: no such device")
        #expect(throws: FakeHostError.self) { try run.daemon.run() }
        #expect(run.host.fakeRouting.routes == [run.foreign])
        #expect(run.host.firewall.isEmpty)
        #expect(run.host.tunnel == nil)
    }

    @Test("--workers 2: one engine per worker, each with its NAT share")
    func twoWorkers() throws {
        let run = try Self.makeRun(
            workers: 2,
            script: [
                { h in
                    let engines = h.datapath?.engines ?? []
                    #expect(
                        engines.map(\.configuration.worker) == [
                            WorkerShare(index: 0, count: 2), WorkerShare(index: 1, count: 2),
                        ])
                    #expect(
                        engines.count == 2 && engines[0].topology !== engines[1].topology,
                        "each worker has its own replica")
                    return [.terminate]
                }
            ])
        #expect(try run.daemon.run() == 0)
        #expect(run.log.contains("2 packet workers, NAT ports split"))
    }
}

import IPIPCore

/// Every metric family `/metrics` can carry, taken from the code that renders it, so that what
/// names metrics elsewhere (the Grafana dashboard and the Prometheus rules under deploy/, checked
/// by scripts/check-deploy) is checked against the daemon itself rather than a hand-kept list.
///
/// Several families appear only in some states (per-worker families with two or more workers,
/// device drop causes once one happened, the uplink method once chosen): the example exposition
/// is a snapshot in which every one of them is present.
public enum MetricsCatalog {
    /// A `/metrics` page as the daemon would render it with every family present: two workers
    /// with counters, drops, a peer with traffic, NAT state, device counters and drops, the uplink
    /// method, and the
    /// health families with turning loops and a refused reload.
    public static func exampleExposition() -> String {
        var workers: [MetricsSnapshot] = []
        for w in 0..<2 {
            var s = MetricsSnapshot()
            var counters = exampleEngine(worker: w).counterSnapshot
            for r in DropReason.allCases { counters.drops[r] = 1 }
            s.counters = counters
            s.natSessions = 1
            s.natMappings = 1
            s.natPortsInRange = 100
            s.ioDrops = ["handoff_full": 1, "uplink_capture_overrun": 1]
            s.ioCounters = ["handoff_sent": 1, "tun_super_packet_reads": 1]
            // A peer with traffic (the per-peer families appear once one has some).
            s.peers = [
                PeerCounters(
                    name: "peer", address: IPv4Address(10, 0, 0, 2), egressPackets: 1, egressBytes: 1,
                    ingressPackets: 1, ingressBytes: 1)
            ]
            workers.append(s)
        }
        var total = MetricsSnapshot.combining(workers)
        total.uplinkIO = "xdp"
        total.routesProgrammed = 1
        total.rulesProgrammed = 1
        total.reconciles = 1
        total.reconcileErrors = 1
        total.topologyReloads = 1
        total.topologyReloadErrors = 1
        let health = HealthMonitor()
        health.update {
            $0.topologyLoaded = true
            $0.workersStarted = true
            $0.lastReload = HealthReload(at: 99, refusal: "example")
        }
        health.attach(heartbeats: { [99, 99] })
        return total.prometheusText() + health.prometheusText(now: 100)
    }

    /// The family names of an exposition (its `# TYPE` lines), in order.
    public static func families(in exposition: String) -> [String] {
        exposition.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count >= 3, parts[0] == "#", parts[1] == "TYPE" else { return nil }
            return String(parts[2])
        }
    }

    /// Every family the daemon can export.
    public static var allFamilies: [String] { families(in: exampleExposition()) }

    static func exampleEngine(worker: Int) -> Engine {
        let spec = TopologySpec(
            localNodeName: "example",
            pools: [TopologySpec.Pool(name: "pool", prefix: IPv4Prefix("192.168.0.0/16")!, ipipMode: .always)],
            nodes: [TopologySpec.Node(name: "example", address: IPv4Prefix("10.0.0.1/24")!)])
        // The spec is fixed and valid; compiling it cannot fail.
        let topology = try! Topology.compile(spec)
        var c = EngineConfiguration()
        c.worker = WorkerShare(index: worker, count: 2)
        return Engine(topology: topology, configuration: c)
    }
}

import Foundation
import IPIPCore
import IPIPLinux
import IPIPResources
import Logging
import Synchronization

/// What `ipipd run` is told.
public struct DaemonOptions: Sendable {
    public var node: String
    /// The uplink; nil = the interface that holds the node IP.
    public var uplink: String?
    /// How encapsulated packets leave on the uplink; nil chooses the fastest that works
    /// (`UplinkIOMethod`: xdp, then packet, then raw).
    public var uplinkIO: UplinkIOMethod?
    /// Open the TUN with virtio headers and TSO/USO (super-packets both ways).
    public var tunOffloads = true
    /// Frames of the uplink capture's TPACKET_V2 receive ring; 0 (the default) receives with
    /// `recvmmsg`, which measured cheaper (docs/decisions.md, "Offloads (super-packets)", uplink receive).
    public var captureRingFrames = 0
    /// Seconds between next-hop refreshes for the frame-writing transmit paths.
    public var nextHopSeconds: Double = 1
    /// The TUN device's name (never `tunl0`: the kernel's ipip module owns it).
    public var tunName: String = "ipip0"
    /// Underlay MTU; nil = the uplink's MTU.
    public var underlayMTU: Int?
    public var metricsHost: String = "127.0.0.1"
    /// 0 disables the metrics server.
    public var metricsPort: UInt16 = 9091
    /// Seconds between reconcile passes (routes, rules, nftables, sysctls).
    public var resyncSeconds: Double = 10
    /// Seconds between checks of the resource source for changes (a check is cheap: a stat of the
    /// manifests, one SQLite read, or, for etcd, a look at what its watch has seen), so that a
    /// change is programmed well within a second.
    public var watchSeconds: Double = 0.2
    public var batchSize: Int = 64
    /// Packet workers: threads with an engine, a TUN queue, a capture socket and a transmit path
    /// each (docs/decisions.md, "Workers").
    public var workers = 1
    /// After a batch, poll without sleeping for this long before blocking again (0 = never).
    public var spinMicroseconds = 0
    public var engine: EngineConfiguration = EngineConfiguration()
    public var nftTable: String = "ipipd"
    /// Where `/liveness` and `/readiness` are served (`--health-address`; by default as
    /// FelixConfiguration says: docs/health.md).
    public var health: HealthEndpoint = .fromFelixConfiguration
    /// The flight recorder's memory (`--record-buffer`), split over the workers and both sides;
    /// 0 (the default) turns it off (docs/flight-recorder.md).
    public var recordBufferBytes = 0
    /// Where SIGUSR2 writes a recording: a new directory `<node>-<UTC time>` inside this one.
    public var recordDirectory = "/var/lib/ipipd/recordings"
    /// The control socket (`ipipctl node status`, `monitor`, `node record`); nil: none.
    public var controlSocket: String?
    /// Events each packet worker's monitor ring holds (about 150 bytes each).
    public var monitorEvents = 4096
    /// `ipipd run`'s control socket unless told otherwise (`--control-socket`, `IPIPD_SOCKET`).
    public static let defaultControlSocket = "/run/ipipd/ipipd.sock"

    public init(node: String) { self.node = node }
}

/// `ipipd run`: the live dataplane on one host (docs/decisions.md, "Live mode").
///
/// Threads: the packet workers (`PacketWorkers`: one `PacketLoop` over a `LinuxDatapath` each,
/// `--workers`), the metrics server, and the control thread (this one), which owns every host
/// change and the reload logic:
/// 1. clean up leftovers of a previous run (routes and rules of our protocol, our nftables table);
/// 2. load and compile the topology; find the uplink from the node IP; create the TUN;
/// 3. program the host: TUN address, MTU and link up, sysctls, nftables, routes and rules;
/// 4. start the packet workers and the metrics server;
/// 5. loop: SIGHUP or a changed source → reload (compile, atomic swap into the packet workers,
///    re-program); every `resyncSeconds` → reconcile again (a route deleted by hand comes back);
///    SIGUSR1 → a one-line summary; SIGUSR2 → a flight recording (`--record-buffer`);
///    SIGTERM/SIGINT → stop;
/// 6. on the way out remove everything it added and print the summary line.
///
/// Everything it does to the host goes through a `DaemonHost` (`LinuxHost` in production), so the
/// whole control loop also runs in tests against in-memory fakes.
///
/// Hazards: a reload that fails validation keeps the previous topology (and says why); changing
/// the node's IP or the uplink needs a restart (the capture and the TUN's address are bound to
/// them) and is refused with an error in the log.
public final class Daemon {
    let options: DaemonOptions
    let source: ResourceSource
    let logger: Logger
    let host: any DaemonHost
    let reconciler: RouteReconciler
    let stats = ControlStats()
    /// What `/liveness`, `/readiness` and the health metrics judge (docs/health.md).
    public let health = HealthMonitor()
    /// The health settings the start applied (control thread): the server's address and the
    /// debug hang are bound at the start, so a reload that changes them says it needs a restart.
    var appliedHealthSettings: FelixHealthSettings?
    /// The flight recorder, when `recordBufferBytes` > 0.
    public let recorder: FlightRecorder?
    /// The resources of the topology in force (the last load that was applied), for recordings.
    let liveResources = Mutex<ResourceSet?>(nil)
    /// The underlay MTU in use (the uplink's unless `--underlay-mtu`), for recordings.
    let liveUnderlayMTU = Mutex<Int>(1500)
    /// What `ipipctl node status` reads besides the counters (control thread writes).
    let observed = Mutex<ObservedState>(ObservedState())
    /// Writes the flight recorder's capture into a directory (`ipipctl node record --out DIR`,
    /// an absolute path) and returns what to tell the operator; nil while there is no recorder.
    public let recordHandler = Mutex<(@Sendable (String) throws -> String)?>(nil)

    /// A daemon on `host`.
    public init(options: DaemonOptions, source: ResourceSource, logger: Logger, host: any DaemonHost) {
        self.options = options
        self.source = source
        self.logger = logger
        self.host = host
        reconciler = RouteReconciler(netlink: host.routing)
        recorder =
            options.recordBufferBytes > 0
            ? FlightRecorder(
                totalBytes: options.recordBufferBytes, workers: max(1, options.workers), batchSize: options.batchSize)
            : nil
    }

    /// A daemon on this Linux host.
    public convenience init(options: DaemonOptions, source: ResourceSource, logger: Logger) throws {
        self.init(options: options, source: source, logger: logger, host: try LinuxHost(logger: logger))
    }

    /// Blocks SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 in the calling thread and in every thread it
    /// creates afterwards. Call it first thing in `main`, before any thread exists: the daemon then
    /// takes them synchronously, and no thread can be killed mid-change.
    public static func blockControlSignals() { ControlSignals.block() }

    /// Runs until SIGTERM or SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        // The health server starts before anything else when its address is given on the
        // command line: probes then see "not ready" through the whole start, slow source included.
        var healthServer: HealthServer?
        if case .listen(let host, let port) = options.health {
            healthServer = startHealth(host: host, port: port, source: "--health-address")
        }
        defer { healthServer?.stop() }
        // 0. The control socket first: a second ipipd for this node (its socket answers) stops
        // here, before it touches the first one's routes.
        let control = try options.controlSocket.map { try ControlSocket(path: $0) }
        var server: ControlServer?
        defer {
            if let server { server.stop() } else { control?.close() }
        }
        // 1. Leftovers of a crashed run (routes, rules, our nftables table) stay in force until
        // the first reconcile and firewall pass below replace them: removing them first would
        // open a window in which pool traffic leaves untranslated (past the natOutgoing table's
        // fail-closed blackhole, HostRoutes) and the host stack answers SNAT ports with RSTs. If
        // the start fails before that pass, they are removed then.
        let leftovers = (try? reconciler.plan(desired: [], rules: []).changes.count) ?? 0
        if leftovers > 0 {
            logger.notice(
                "found \(leftovers) routes and rules left by a previous run: the first reconcile replaces them")
        }
        var programmed = false
        defer {
            if !programmed {
                let removed = reconciler.removeAll()
                try? host.removeFirewall(table: options.nftTable)
                if removed.removed > 0 { logger.notice("start failed: removed \(removed.removed) routes and rules") }
            }
        }

        // 2. Topology and devices.
        let loaded = try Self.loadSpec(source: source, options: options)
        liveResources.withLock { $0 = loaded.set }
        var spec = loaded.spec
        let nodePrefix = loaded.node
        appliedHealthSettings = loaded.health
        if options.health == .fromFelixConfiguration, loaded.health.enabled {
            healthServer = startHealth(
                host: loaded.health.bindAddress, port: UInt16(loaded.health.port), source: "FelixConfiguration")
        }
        let uplink = try host.findUplink(name: options.uplink, nodeAddress: nodePrefix.address)
        if options.underlayMTU == nil { spec.underlayMTU = uplink.mtu }
        liveUnderlayMTU.withLock { $0 = spec.underlayMTU }
        var topology = try Topology.compile(spec)
        for w in topology.warnings { logger.warning("\(w)") }
        health.update {
            $0.topologyLoaded = true
            $0.topologyDescription = Self.healthDescription(topology)
        }
        logger.info(
            "node \(options.node) \(topology.localAddress) on \(uplink.name) (MTU \(uplink.mtu)), tunnel MTU \(topology.tunnelMTU), \(topology.nodes.count) nodes, \(topology.pools.count) pools"
        )

        let workerCount = max(1, options.workers)
        let datapath = try host.openDatapath(
            DatapathRequest(
                uplink: uplink, topology: topology, workers: workerCount,
                options: options, recorder: recorder))
        // The devices close on every way out, after the shutdown below has removed the routes
        // (while the TUN still exists, so each route of ours is found and counted).
        defer { datapath.close() }
        if let offloads = datapath.tunOffloadDescription {
            logger.info("TUN \(datapath.tunName): virtio headers, offloads \(offloads)")
        }
        try configureTUN(index: datapath.tunIndex, topology: topology)
        configureSysctls(tunName: datapath.tunName)
        // Receive aggregation (GRO, LRO) on the uplink stays as the host has it: the capture takes
        // super-packets whole (docs/decisions.md, "Offloads").
        applyFirewall(uplink: uplink.name, topology: topology)
        reconcileRoutes(topology: topology, tunIndex: datapath.tunIndex, uplinkIndex: uplink.index)
        programmed = true

        // 4. Packet workers and metrics.
        datapath.refreshNextHops(topology: topology)
        var lastNextHops = host.now()
        let engines = (0..<workerCount).map { w in
            Engine(
                topology: w == 0 ? topology : topology.replica(),
                configuration: Self.engineConfiguration(options.engine, worker: w, of: workerCount))
        }
        datapath.start(engines: engines)
        health.attach(heartbeats: { datapath.heartbeats() })
        health.update { $0.workersStarted = true }
        var hangDeadline: Double?
        if let after = loaded.health.simulateDataplaneHangAfter {
            logger.warning(
                "debugSimulateDataplaneHangAfter \(after) s: worker 0's packet loop will hang (block, without moving packets) \(after) s from now, to test the health checks; never set this in production"
            )
            datapath.simulateHang(worker: 0, afterSeconds: after)
            hangDeadline = host.now() + after
        }
        if workerCount > 1 {
            logger.info(
                "\(workerCount) packet workers, NAT ports split: \(Self.natSliceDescription(topology.natPortRange, workers: workerCount))"
            )
        }
        let metrics = startMetrics(datapath)
        if let recorder {
            logger.info(
                "flight recorder: \(recorder.totalBytes) bytes, \(recorder.bytesPerSide) per side of each of \(workerCount) workers; SIGUSR2 writes a recording into \(options.recordDirectory)"
            )
            // `ipipctl node record --out DIR` writes one from the control socket's thread
            // (`writeRecording` reads only what is shared under locks and the loops' rings).
            nonisolated(unsafe) let daemon = self
            recordHandler.withLock { $0 = { directory in try daemon.writeRecording(to: directory) } }
        }
        observed.withLock {
            $0.topology = topology
            $0.generation = 1
            $0.changedAt = Date()
            $0.uplink = uplink
            $0.tunName = datapath.tunName
            $0.tunOffloads = datapath.tunOffloadDescription
            $0.transmit = datapath.uplinkIO
            $0.receive =
                "AF_PACKET with virtio headers (GRO/TSO super-packets taken whole), "
                + (options.captureRingFrames > 0 ? "TPACKET_V2 ring" : "recvmmsg")
                + "; ethtool settings left as the host has them"
            $0.workers = workerCount
        }
        if let control { server = startControl(control, datapath: datapath) }

        // 5. The control loop. The signals were blocked in every thread (`blockControlSignals`),
        // so they queue up here instead of interrupting anyone.
        logger.notice(
            "running: TUN \(datapath.tunName), uplink \(uplink.name), resync every \(options.resyncSeconds) s")

        var token = source.changeToken()
        var lastResync = host.now()
        var stop = false
        while !stop {
            for s in host.waitForSignals(seconds: options.watchSeconds) {
                switch s {
                case .terminate, .interrupt:
                    logger.notice("stopping (\(s))")
                    stop = true
                case .hangup:
                    logger.notice("SIGHUP: reloading \(source.description)")
                    // The token is taken before the load: a change written while this reload
                    // reads the source makes the next poll reload again (taken after, it would
                    // be mistaken for what was loaded, and that change missed until the next).
                    token = source.changeToken()
                    reload(&topology, datapath: datapath, uplink: uplink)
                    datapath.refreshNextHops(topology: topology)
                    lastNextHops = host.now()
                case .user1:
                    logger.notice("\(self.summary(datapath, fresh: true))")
                case .user2:
                    let directory = Self.recordingDirectory(in: options.recordDirectory, node: options.node, at: Date())
                    do {
                        let line = try writeRecording(to: directory)
                        logger.notice("SIGUSR2: \(line)")
                    } catch {
                        logger.error("SIGUSR2: \(error)")
                    }
                }
            }
            if stop { break }
            if let deadline = hangDeadline, host.now() >= deadline {
                hangDeadline = nil
                logger.warning(
                    "simulating a dataplane hang: worker 0's packet loop is blocked now (debugSimulateDataplaneHangAfter)"
                )
            }
            if let failure = datapath.failure {
                logger.critical("packet loop failed: \(failure)")
                break
            }
            let now = source.changeToken()
            if now != token {
                token = now
                logger.notice("\(source.description) changed: reloading")
                reload(&topology, datapath: datapath, uplink: uplink)
                datapath.refreshNextHops(topology: topology)
                lastNextHops = host.now()
            }
            if host.now() - lastNextHops >= options.nextHopSeconds {
                datapath.refreshNextHops(topology: topology)
                lastNextHops = host.now()
            }
            if host.now() - lastResync >= options.resyncSeconds {
                lastResync = host.now()
                applyFirewall(uplink: uplink.name, topology: topology)
                configureSysctls(tunName: datapath.tunName)
                reconcileRoutes(topology: topology, tunIndex: datapath.tunIndex, uplinkIndex: uplink.index)
            }
        }

        // 6. Shutdown.
        health.update { $0.stopping = true }
        let failure = datapath.failure
        datapath.stop()
        let line = summary(datapath, fresh: false)
        metrics?.stop()
        let removed = reconciler.removeAll()
        do { try host.removeFirewall(table: options.nftTable) } catch { logger.error("nftables: \(error)") }
        logger.notice("removed \(removed.removed) routes and rules, nftables table \(options.nftTable); \(line)")
        print("ipipd: " + line)
        return failure == nil ? 0 : 1
    }

    /// The first half of step 2, shared with `check`: every resource loaded from the source and
    /// turned into the compiler's input as this node sees it, with the node's underlay prefix.
    static func loadSpec(
        source: ResourceSource, options: DaemonOptions
    ) throws -> (spec: TopologySpec, node: IPv4Prefix, health: FelixHealthSettings, set: ResourceSet) {
        let set = try source.load()
        let spec = ClusterLoader.spec(from: set, node: options.node, underlayMTU: options.underlayMTU ?? 1500)
        guard let nodePrefix = spec.nodes.first(where: { $0.name == options.node })?.address else {
            throw DaemonError(
                "node '\(options.node)' is not defined or has no spec.bgp.ipv4Address in \(source.description)")
        }
        return (spec, nodePrefix, ClusterLoader.healthSettings(from: set, node: options.node), set)
    }

    /// `ipipd run --check`: what `run` does before it touches the host (open the source, load and
    /// validate every resource, compile the topology for this node, with `underlayMTU` or 1500 in
    /// place of the uplink's MTU), then nothing else. Needs no root; throws what `run` would.
    public static func check(source: ResourceSource, options: DaemonOptions) throws -> Topology {
        try Topology.compile(loadSpec(source: source, options: options).spec)
    }

    /// The metrics server on its own thread, unless disabled (port 0) or it cannot bind.
    func startMetrics(_ datapath: any DaemonDatapath) -> MetricsServer? {
        guard options.metricsPort != 0 else { return nil }
        do {
            let server = try MetricsServer(host: options.metricsHost, port: options.metricsPort) { [stats, health] in
                var s = datapath.snapshot(fresh: false)
                let control = stats.value.withLock { $0 }
                s.routesProgrammed = control.routesProgrammed
                s.rulesProgrammed = control.rulesProgrammed
                s.reconciles = control.reconciles
                s.reconcileErrors = control.reconcileErrors
                s.topologyReloads = control.topologyReloads
                s.topologyReloadErrors = control.topologyReloadErrors
                return s.prometheusText() + health.prometheusText(now: MonotonicClock.seconds())
            }
            let t = Thread { server.serve() }
            t.name = "ipipd-metrics"
            t.start()
            logger.info("metrics on http://\(options.metricsHost):\(server.port)/metrics")
            return server
        } catch {
            logger.error("metrics disabled: \(error)")
            return nil
        }
    }

    /// The health server on its own thread; nil (logged) when it cannot bind: the daemon runs on
    /// without it, as without metrics, and the probes that cannot connect say so.
    func startHealth(host: String, port: UInt16, source: String) -> HealthServer? {
        do {
            let server = try HealthServer(host: host, port: port, monitor: health)
            let t = Thread { server.serve() }
            t.name = "ipipd-health"
            t.start()
            logger.info("health (\(source)) on http://\(host):\(server.port)/liveness and /readiness")
            return server
        } catch {
            logger.error("health endpoints disabled: \(error)")
            return nil
        }
    }

    /// The topology in a few words, for the health body.
    static func healthDescription(_ t: Topology) -> String {
        "\(t.nodes.count) nodes, \(t.pools.count) pools, tunnel MTU \(t.tunnelMTU)"
    }

    /// Worker `w` of `n`: its NAT share, and its part of the ICMP error budget (the node as a
    /// whole keeps the configured rate and burst).
    static func engineConfiguration(_ base: EngineConfiguration, worker w: Int, of n: Int) -> EngineConfiguration {
        var c = base
        c.worker = WorkerShare(index: w, count: n)
        if n > 1 {
            c.icmpRatePerSecond = max(1, base.icmpRatePerSecond / n)
            c.icmpBurst = max(1, base.icmpBurst / n)
        }
        return c
    }

    static func natSliceDescription(_ range: ClosedRange<UInt16>, workers: Int) -> String {
        (0..<workers).map { w in
            WorkerShare.natSlice(of: range, worker: w, workers: workers).map { "\($0.lowerBound)-\($0.upperBound)" }
                ?? "none"
        }.joined(separator: ", ")
    }

    /// The counters the control thread and the metrics thread share.
    public var controlCounters: MetricsSnapshot { stats.value.withLock { $0 } }

    func summary(_ datapath: any DaemonDatapath, fresh: Bool) -> String {
        var s = datapath.snapshot(fresh: fresh)
        s.routesProgrammed = stats.value.withLock { $0.routesProgrammed }
        return s.summaryLine()
    }

    /// Whether a prefix that `previous` encapsulates is routed natively by `next`.
    static func leavesTunnel(from previous: Topology, to next: Topology) -> Bool {
        var nextEncapsulates: [IPv4Prefix: Bool] = [:]
        for (prefix, value) in next.table.entries {
            let r = next.routes[Int(value)]
            if r.kind == .remote { nextEncapsulates[prefix] = r.encapsulate }
        }
        return previous.table.entries.contains { prefix, value in
            let r = previous.routes[Int(value)]
            return r.kind == .remote && r.encapsulate && nextEncapsulates[prefix] == false
        }
    }

    func configureTUN(index: Int32, topology: Topology) throws {
        try host.configureTunnel(
            index: index, mtu: topology.tunnelMTU,
            address: topology.nodes[topology.localNodeIndex].tunnelAddress)
    }

    /// Forwarding on; reverse-path filtering off on the TUN (replies to translated flows enter it
    /// from addresses routed via the uplink) and loose at most for `all` (the effective value is
    /// the maximum of `all` and the device's).
    func configureSysctls(tunName: String) {
        let wanted = [("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.\(tunName).rp_filter", "0")]
        for (name, value) in wanted where host.readSysctl(name) != value {
            do {
                try host.writeSysctl(name, value)
                logger.info("sysctl \(name) = \(value)")
            } catch {
                logger.error("sysctl \(name): \(error)")
                stats.value.withLock { $0.reconcileErrors += 1 }
            }
        }
        if host.readSysctl("net.ipv4.conf.all.rp_filter") == "1" {
            do {
                try host.writeSysctl("net.ipv4.conf.all.rp_filter", "2")
                logger.info("sysctl net.ipv4.conf.all.rp_filter = 2 (was strict, which would override the TUN's 0)")
            } catch {
                logger.error("sysctl net.ipv4.conf.all.rp_filter: \(error)")
            }
        }
    }

    func applyFirewall(uplink: String, topology: Topology) {
        do {
            try host.applyFirewall(
                table: options.nftTable, uplink: uplink, nodeAddress: topology.localAddress,
                natPortRange: topology.natPortRange)
            let at = host.now()
            health.update { $0.firewall = HealthPass(at: at) }
        } catch {
            logger.error("nftables: \(error)")
            stats.value.withLock { $0.reconcileErrors += 1 }
            let at = host.now()
            health.update {
                $0.firewall = HealthPass(at: at, problems: ["nftables table \(options.nftTable): \(error)"])
            }
        }
    }

    func reconcileRoutes(topology: Topology, tunIndex: Int32, uplinkIndex: Int32) {
        let desired = HostRoutes.desired(for: topology, tunnelInterface: tunIndex, uplinkInterface: uplinkIndex)
        let report = reconciler.reconcile(desired: desired.routes, rules: desired.rules)
        for e in report.errors { logger.error("reconcile: \(e)") }
        if report.changeCount > 0 {
            logger.info(
                "routes and rules: \(report.added) added, \(report.replaced) replaced, \(report.removed) removed")
        }
        let at = host.now()
        health.update { $0.routes = HealthPass(at: at, problems: report.errors.map { "\($0)" }) }
        stats.value.withLock {
            $0.reconciles += 1
            $0.reconcileErrors += UInt64(report.errors.count)
            $0.routesProgrammed = desired.routes.count
            $0.rulesProgrammed = desired.rules.count
        }
    }

    func reload(_ topology: inout Topology, datapath: any DaemonDatapath, uplink: HostUplink) {
        let started = host.now()
        do {
            let set = try source.load()
            var spec = ClusterLoader.spec(from: set, node: options.node, underlayMTU: options.underlayMTU ?? uplink.mtu)
            spec.underlayMTU = options.underlayMTU ?? uplink.mtu
            let next = try Topology.compile(spec)
            guard next.localAddress == topology.localAddress else {
                throw DaemonError(
                    "the node IP changed from \(topology.localAddress) to \(next.localAddress): restart ipipd to apply it"
                )
            }
            for w in next.warnings { logger.warning("\(w)") }
            let healthSettings = ClusterLoader.healthSettings(from: set, node: options.node)
            if let applied = appliedHealthSettings, healthSettings != applied {
                logger.warning(
                    "FelixConfiguration health settings changed (healthEnabled, healthHost, healthPort, debugSimulateDataplaneHangAfter): restart ipipd to apply them"
                )
                appliedHealthSettings = healthSettings
            }
            if Self.leavesTunnel(from: topology, to: next) {
                // A prefix the engine encapsulated goes native (Always -> CrossSubnet, say). The
                // kernel routes it into the TUN until the reconcile below: an engine already on
                // the new topology would hand those packets back to the kernel unencapsulated,
                // which routes them into the TUN again, a loop that lasts as long as the reload.
                // So a bridge topology that encapsulates every IP-in-IP pool runs until the
                // kernel's routes have moved, and the new one after. (Native -> encapsulated
                // needs no bridge: until its route moves into the TUN the kernel sends it
                // natively itself.)
                var bridge = spec
                for i in bridge.pools.indices where !bridge.pools[i].vxlanEnabled { bridge.pools[i].ipipMode = .always }
                let transitional = try Topology.compile(bridge)
                try datapath.publish(transitional, previous: topology)
                reconcileRoutes(topology: next, tunIndex: datapath.tunIndex, uplinkIndex: uplink.index)
                try datapath.publish(next, previous: transitional)
            } else {
                try datapath.publish(next, previous: topology)
            }
            topology = next
            liveResources.withLock { $0 = set }
            observed.withLock {
                $0.topology = next
                $0.generation += 1
                $0.changedAt = Date()
            }
            try configureTUN(index: datapath.tunIndex, topology: next)
            applyFirewall(uplink: uplink.name, topology: next)
            reconcileRoutes(topology: next, tunIndex: datapath.tunIndex, uplinkIndex: uplink.index)
            stats.value.withLock { $0.topologyReloads += 1 }
            let at = host.now()
            health.update {
                $0.lastReload = HealthReload(at: at)
                $0.topologyDescription = Self.healthDescription(next)
            }
            // How long the reload took (read, compile, swap, TUN, nftables, routes): the packet
            // loops run the previous topology until the swap, the kernel its routes until the end.
            let milliseconds = Int(((host.now() - started) * 1000).rounded())
            logger.notice(
                "topology reloaded in \(milliseconds) ms: \(next.nodes.count) nodes, \(next.pools.count) pools, tunnel MTU \(next.tunnelMTU)"
            )
        } catch {
            stats.value.withLock { $0.topologyReloadErrors += 1 }
            let at = host.now()
            health.update { $0.lastReload = HealthReload(at: at, refusal: "\(error)") }
            observed.withLock {
                $0.lastReloadError = "\(error)"
                $0.lastReloadErrorAt = Date()
            }
            logger.error("reload refused, the previous topology stays: \(error)")
        }
    }
}

extension Daemon {
    /// Writes a flight recording of the last `--record-buffer` bytes of traffic into `directory`
    /// (created; it must not exist or be empty): `tun.pcapng`, `underlay.pcapng` and
    /// `cluster.yaml` (docs/flight-recorder.md), and returns a one-line summary. Any thread may
    /// call it while the daemon runs (the control socket does; SIGUSR2 does on the control thread).
    /// - Throws: `DaemonError` when the recorder is off, the daemon is not running its workers,
    ///   or a file cannot be written (then no file is left under a final name).
    public func writeRecording(to directory: String) throws -> String {
        guard let recorder else {
            throw DaemonError("the flight recorder is off: start ipipd run with --record-buffer SIZE (e.g. 64MiB)")
        }
        guard let set = liveResources.withLock({ $0 }) else {
            throw DaemonError("no topology is loaded yet: nothing to record")
        }
        let manifests = Self.manifestsYAML(set)
        let n = recorder.loops.count
        return try recorder.write(
            to: directory,
            context: FlightRecorder.Context(
                node: options.node, manifests: manifests, natSecret: options.engine.natSeed,
                underlayMTU: liveUnderlayMTU.withLock { $0 },
                configurations: (0..<n).map { Self.engineConfiguration(options.engine, worker: $0, of: n) }))
    }

    /// The resources as a YAML stream, one document per resource, in the loader's kind order.
    static func manifestsYAML(_ set: ResourceSet) -> String {
        let resources: [Resource] =
            set.pools.map { .ipPool($0) } + set.nodes.map { .node($0) }
            + set.blockAffinities.map { .blockAffinity($0) } + set.felixConfigurations.map { .felixConfiguration($0) }
        return resources.map { "---\n" + ResourceEncoder.yaml($0) }.joined()
    }

    /// SIGUSR2's directory: `<parent>/<node>-<UTC time to the millisecond>`, e.g.
    /// `/var/lib/ipipd/recordings/node-a-20261204T181500.123Z`.
    public static func recordingDirectory(in parent: String, node: String, at date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        let base = parent.hasSuffix("/") ? String(parent.dropLast()) : parent
        return "\(base)/\(node)-\(f.string(from: date))"
    }
}

/// The control thread's counters, shared with the metrics thread.
final class ControlStats: Sendable {
    let value = Mutex<MetricsSnapshot>(MetricsSnapshot())
}

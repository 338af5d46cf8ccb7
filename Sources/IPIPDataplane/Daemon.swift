#if canImport(Glibc)
import Glibc
#endif
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
/// 4. start the packet loop and the metrics server;
/// 5. loop: SIGHUP or a changed source → reload (compile, atomic swap into the packet loop,
///    re-program); every `resyncSeconds` → reconcile again (a route deleted by hand comes back);
///    SIGUSR1 → a one-line summary; SIGTERM/SIGINT → stop;
/// 6. on the way out remove everything it added and print the summary line.
///
/// Hazards: a reload that fails validation keeps the previous topology (and says why); changing
/// the node's IP or the uplink needs a restart (the capture and the TUN's address are bound to
/// them) and is refused with an error in the log.
public final class Daemon {
    let options: DaemonOptions
    let source: ResourceSource
    let logger: Logger
    let netlink: NetlinkSocket
    let reconciler: RouteReconciler
    let stats = ControlStats()

    public init(options: DaemonOptions, source: ResourceSource, logger: Logger) throws {
        self.options = options
        self.source = source
        self.logger = logger
        netlink = try NetlinkSocket()
        reconciler = RouteReconciler(socket: netlink)
    }

    enum Signal: Int32 { case terminate, interrupt, hangup, user1 }

    static let controlSignals: [(Int32, Signal)] = [(SIGTERM, .terminate), (SIGINT, .interrupt), (SIGHUP, .hangup),
                                                      (SIGUSR1, .user1)]

    static func controlSignalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for (n, _) in controlSignals { sigaddset(&set, n) }
        return set
    }

    /// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread and in every thread it
    /// creates afterwards. Call it first thing in `main`, before any thread exists: the daemon then
    /// takes them synchronously with `sigtimedwait`, and no thread can be killed mid-change.
    public static func blockControlSignals() {
        var set = controlSignalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits up to `seconds` for a control signal; returns the ones that arrived.
    static func waitForSignals(seconds: Double) -> [Signal] {
        var set = controlSignalSet()
        var timeout = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var got: [Signal] = []
        var info = siginfo_t()
        var n = sigtimedwait(&set, &info, &timeout)
        while n > 0 {
            if let s = controlSignals.first(where: { $0.0 == n })?.1 { got.append(s) }
            var zero = timespec(tv_sec: 0, tv_nsec: 0)
            n = sigtimedwait(&set, &info, &zero)
        }
        return got
    }

    /// Runs until SIGTERM or SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        // 1. Leftovers of a crashed run.
        let leftovers = reconciler.removeAll()
        if leftovers.removed > 0 { logger.notice("removed \(leftovers.removed) routes and rules left by a previous run") }
        try? NFTables.remove(table: options.nftTable)

        // 2. Topology and devices.
        let set = try source.load()
        var spec = ClusterLoader.spec(from: set, node: options.node, underlayMTU: options.underlayMTU ?? 1500)
        guard let nodePrefix = spec.nodes.first(where: { $0.name == options.node })?.address else {
            throw DaemonError("node '\(options.node)' is not defined or has no spec.bgp.ipv4Address in \(source.description)")
        }
        let uplink = try findUplink(nodeAddress: nodePrefix.address)
        if options.underlayMTU == nil { spec.underlayMTU = uplink.mtu }
        var topology = try Topology.compile(spec)
        for w in topology.warnings { logger.warning("\(w)") }
        logger.info("node \(options.node) \(topology.localAddress) on \(uplink.name) (MTU \(uplink.mtu)), tunnel MTU \(topology.tunnelMTU), \(topology.nodes.count) nodes, \(topology.pools.count) pools")

        let workerCount = max(1, options.workers)
        let tun = try TUNDevice(name: options.tunName, offloads: options.tunOffloads, multiQueue: workerCount > 1)
        defer { tun.close() }
        // One TUN queue per worker; the kernel keeps each flow on one queue.
        var tunQueues = [tun]
        defer { for q in tunQueues.dropFirst() { q.close() } }
        for _ in 1..<workerCount { tunQueues.append(try tun.attachQueue()) }
        if tun.hasVirtioHeaders {
            logger.info("TUN \(tun.name): virtio headers, offloads \(tun.offloadDescription)")
        }
        guard let tunIndex = try netlink.linkIndex(name: tun.name) else { throw DaemonError("TUN \(tun.name) vanished") }
        try configureTUN(index: tunIndex, topology: topology)
        configureSysctls(tunName: tun.name)

        // Receive aggregation (GRO, LRO) on the uplink stays as the host has it: the capture takes
        // super-packets whole (docs/decisions.md, "Offloads").

        var raws: [RawIPv4Socket] = []
        defer { for r in raws { r.close() } }
        for _ in 0..<workerCount { raws.append(try RawIPv4Socket(maximumBatchSize: 256)) }
        let hardware = try? UplinkCapture.hardwareAddress(interface: uplink.name)
        let isEthernet = hardware?.isEthernet ?? false
        // One capture socket per worker, in one PACKET_FANOUT group: the kernel deals the
        // uplink's flows out over them by a symmetric hash.
        let fanout: UInt16? = workerCount > 1 ? UInt16(truncatingIfNeeded: getpid()) : nil
        var captures: [UplinkCapture] = []
        defer { for c in captures { c.close() } }
        for _ in 0..<workerCount {
            captures.append(try openCapture(uplink: uplink, ethernet: isEthernet, topology: topology, fanoutGroup: fanout))
        }
        applyNFTables(uplink: uplink.name, topology: topology)
        reconcileRoutes(topology: topology, tunIndex: tunIndex, uplinkIndex: uplink.index)

        // 4. Packet workers and metrics.
        var datapaths: [LinuxDatapath] = []
        for w in 0..<workerCount {
            let transmit = try openTransmitPath(uplink: uplink, ethernet: isEthernet, queue: w)
            let datapath = try LinuxDatapath(tun: tunQueues[w], capture: captures[w], raw: raws[w], xdp: transmit.xdp,
                                             packet: transmit.packet, uplinkMAC: hardware?.address ?? .zero,
                                             underlayMTU: uplink.mtu)
            datapaths.append(datapath)
            let receive = captures[w].ringFrameCount > 0 ? "a TPACKET_V2 ring of \(captures[w].ringFrameCount) frames" : "recvmmsg"
            let who = workerCount > 1 ? "worker \(w): " : ""
            logger.notice("\(who)uplink \(uplink.name): transmit \(datapath.method) (\(transmit.reason)); receive AF_PACKET with virtio headers, \(receive)\(fanout == nil ? "" : " (fanout group \(fanout!))")")
        }
        let uplinkIO = Array(Set(datapaths.map(\.method.rawValue))).sorted().joined(separator: "+")
        var nextHops = NextHopMonitor(datapaths: datapaths, uplinkIndex: uplink.index, netlink: netlink, logger: logger)
        nextHops.refresh(topology: topology)
        let engines = (0..<workerCount).map { w in
            Engine(topology: w == 0 ? topology : topology.replica(), configuration: Self.engineConfiguration(options.engine, worker: w, of: workerCount))
        }
        let loop = PacketWorkers(ios: datapaths, engines: engines, batchSize: options.batchSize,
                                 spinMicroseconds: options.spinMicroseconds)
        loop.start()
        if workerCount > 1 { logger.info("\(workerCount) packet workers, NAT ports split: \(Self.natSliceDescription(topology.natPortRange, workers: workerCount))") }
        var metrics: MetricsServer?
        if options.metricsPort != 0 {
            do {
                let server = try MetricsServer(host: options.metricsHost, port: options.metricsPort) { [stats] in
                    var s = loop.latestSnapshot()
                    s.uplinkIO = uplinkIO
                    let control = stats.value.withLock { $0 }
                    s.routesProgrammed = control.routesProgrammed
                    s.rulesProgrammed = control.rulesProgrammed
                    s.reconciles = control.reconciles
                    s.reconcileErrors = control.reconcileErrors
                    s.topologyReloads = control.topologyReloads
                    s.topologyReloadErrors = control.topologyReloadErrors
                    return s.prometheusText()
                }
                metrics = server
                let t = Thread { server.serve() }
                t.name = "ipipd-metrics"
                t.start()
                logger.info("metrics on http://\(options.metricsHost):\(server.port)/metrics")
            } catch {
                logger.error("metrics disabled: \(error)")
            }
        }

        // 5. The control loop. The signals were blocked in every thread (`blockControlSignals`),
        // so they queue up for `sigtimedwait` here instead of interrupting anyone.
        logger.notice("running: TUN \(tun.name), uplink \(uplink.name), resync every \(options.resyncSeconds) s")

        var token = source.changeToken()
        var lastResync = Date()
        var stop = false
        while !stop {
            for s in Self.waitForSignals(seconds: options.watchSeconds) {
                switch s {
                case .terminate, .interrupt:
                    logger.notice("stopping (\(s == .terminate ? "SIGTERM" : "SIGINT"))")
                    stop = true
                case .hangup:
                    logger.notice("SIGHUP: reloading \(source.description)")
                    reload(&topology, loop: loop, captures: captures, tunIndex: tunIndex, uplink: uplink)
                    nextHops.refresh(topology: topology)
                    token = source.changeToken()
                case .user1:
                    loop.refreshSnapshot()
                    usleep(20_000)
                    logger.notice("\(self.summary(loop))")
                }
            }
            if stop { break }
            if let failure = loop.failure {
                logger.critical("packet loop failed: \(failure)")
                break
            }
            let now = source.changeToken()
            if now != token {
                token = now
                logger.notice("\(source.description) changed: reloading")
                reload(&topology, loop: loop, captures: captures, tunIndex: tunIndex, uplink: uplink)
                nextHops.refresh(topology: topology)
            }
            nextHops.refreshIfDue(topology: topology, every: options.nextHopSeconds)
            if Date().timeIntervalSince(lastResync) >= options.resyncSeconds {
                lastResync = Date()
                applyNFTables(uplink: uplink.name, topology: topology)
                configureSysctls(tunName: tun.name)
                reconcileRoutes(topology: topology, tunIndex: tunIndex, uplinkIndex: uplink.index)
            }
        }

        // 6. Shutdown.
        loop.stop()
        metrics?.stop()
        let removed = reconciler.removeAll()
        do { try NFTables.remove(table: options.nftTable) } catch { logger.error("nftables: \(error)") }
        logger.notice("removed \(removed.removed) routes and rules, nftables table \(options.nftTable); \(self.summary(loop))")
        print("ipipd: " + summary(loop))
        return loop.failure == nil ? 0 : 1
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
            WorkerShare.natSlice(of: range, worker: w, workers: workers).map { "\($0.lowerBound)-\($0.upperBound)" } ?? "none"
        }.joined(separator: ", ")
    }

    /// The capture's receive buffer: the kernel queues frames there while the packet loop is busy
    /// elsewhere (a TUN write, a transmit); at a few Gbit/s the 208 KiB default overflows within
    /// a millisecond and TCP sees losses (measured: 17,538 overruns in a 5 s iperf3 run).
    /// 16 MiB holds ~5,000 MTU-sized frames (the kernel counts each skb's truesize, ~3 KiB).
    static let captureReceiveBufferByteCount = 16 << 20

    func summary(_ loop: PacketWorkers<LinuxDatapath>) -> String {
        var s = loop.latestSnapshot()
        s.routesProgrammed = stats.value.withLock { $0.routesProgrammed }
        return s.summaryLine()
    }

    struct Uplink {
        var index: Int32
        var name: String
        var mtu: Int
    }

    func findUplink(nodeAddress: IPv4Address) throws -> Uplink {
        if let name = options.uplink {
            guard let link = try netlink.link(name: name) else { throw DaemonError("uplink \(name) does not exist") }
            return Uplink(index: link.index, name: link.name, mtu: link.mtu)
        }
        guard let held = try netlink.interfaceHolding(address: nodeAddress) else {
            throw DaemonError("no interface holds the node IP \(nodeAddress); give --uplink")
        }
        return Uplink(index: held.index, name: held.name, mtu: held.mtu)
    }

    /// The uplink capture, with a receive ring unless asked not to or the kernel refuses one.
    func openCapture(uplink: Uplink, ethernet: Bool, topology: Topology, fanoutGroup: UInt16?) throws -> UplinkCapture {
        let filter = CaptureFilter(nodeAddress: topology.localAddress, natPortRange: topology.natPortRange)
        func open(ring: Int) throws -> UplinkCapture {
            try UplinkCapture(interfaceIndex: uplink.index, filter: filter, maximumBatchSize: options.batchSize,
                              receiveBufferByteCount: Self.captureReceiveBufferByteCount,
                              linkHeaderLength: ethernet ? 14 : 0, ringFrameCount: ring, fanoutGroup: fanoutGroup)
        }
        guard options.captureRingFrames > 0 else { return try open(ring: 0) }
        do {
            return try open(ring: options.captureRingFrames)
        } catch {
            logger.warning("uplink \(uplink.name): no receive ring (\(error)); receiving with recvmmsg")
            return try open(ring: 0)
        }
    }

    /// Opens worker `queue`'s transmit path for encapsulated packets: the one asked for, or (nil)
    /// the fastest that opens here: AF_XDP (on the uplink's TX queue `queue`: one socket per
    /// queue), then AF_PACKET, then only the raw socket. Frame-writing paths need an Ethernet
    /// uplink. An explicit choice that cannot open is an error.
    func openTransmitPath(uplink: Uplink, ethernet: Bool, queue: Int) throws
        -> (xdp: XDPTransmitSocket?, packet: PacketTransmitSocket?, reason: String)
    {
        let wanted = options.uplinkIO
        if wanted == .raw { return (nil, nil, "as asked") }
        guard ethernet else {
            if let wanted { throw DaemonError("--uplink-io \(wanted) needs an Ethernet uplink; \(uplink.name) is not one") }
            return (nil, nil, "\(uplink.name) has no Ethernet header: frames cannot be written")
        }
        var failures: [String] = []
        if wanted == nil || wanted == .xdp {
            // Frames hold the link header and one underlay packet: 2 KiB up to an MTU of 2034.
            let frame = uplink.mtu + 14 <= 2048 ? 2048 : 4096
            if uplink.mtu + 14 > 4096 {
                failures.append("xdp: MTU \(uplink.mtu) does not fit a 4 KiB AF_XDP frame")
            } else {
                do {
                    let x = try XDPTransmitSocket(interfaceIndex: uplink.index, queue: UInt32(queue), frameSize: frame)
                    return (x, nil, wanted == nil ? "fastest available" + (x.largeBudget ? "" : ", 32 frames per sendto") : "as asked")
                } catch {
                    if wanted == .xdp {
                        throw queue == 0 ? error : DaemonError("--uplink-io xdp: worker \(queue) needs TX queue \(queue) of \(uplink.name): \(error)")
                    }
                    failures.append("xdp queue \(queue): \(error)")
                }
            }
        }
        do {
            let p = try PacketTransmitSocket(interfaceIndex: uplink.index)
            return (nil, p, wanted == nil ? "AF_XDP unavailable: " + failures.joined(separator: "; ") : "as asked")
        } catch {
            if wanted == .packet { throw error }
            failures.append("packet: \(error)")
        }
        return (nil, nil, failures.joined(separator: "; "))
    }

    func configureTUN(index: Int32, topology: Topology) throws {
        try netlink.setLink(index: index, up: true, mtu: topology.tunnelMTU)
        if let t = topology.nodes[topology.localNodeIndex].tunnelAddress {
            try netlink.addAddress(IPv4Prefix(address: t, length: 32), index: index)
        }
    }

    /// Forwarding on; reverse-path filtering off on the TUN (replies to translated flows enter it
    /// from addresses routed via the uplink) and loose at most for `all` (the effective value is
    /// the maximum of `all` and the device's).
    func configureSysctls(tunName: String) {
        let wanted = [("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.\(tunName).rp_filter", "0")]
        for (name, value) in wanted where Sysctl.read(name) != value {
            do {
                try Sysctl.write(name, value)
                logger.info("sysctl \(name) = \(value)")
            } catch {
                logger.error("sysctl \(name): \(error)")
                stats.value.withLock { $0.reconcileErrors += 1 }
            }
        }
        if Sysctl.read("net.ipv4.conf.all.rp_filter") == "1" {
            do {
                try Sysctl.write("net.ipv4.conf.all.rp_filter", "2")
                logger.info("sysctl net.ipv4.conf.all.rp_filter = 2 (was strict, which would override the TUN's 0)")
            } catch {
                logger.error("sysctl net.ipv4.conf.all.rp_filter: \(error)")
            }
        }
    }

    func applyNFTables(uplink: String, topology: Topology) {
        do {
            try NFTables.apply(table: options.nftTable, uplink: uplink, nodeAddress: topology.localAddress,
                               natPortRange: topology.natPortRange)
        } catch {
            logger.error("nftables: \(error)")
            stats.value.withLock { $0.reconcileErrors += 1 }
        }
    }

    func reconcileRoutes(topology: Topology, tunIndex: Int32, uplinkIndex: Int32) {
        let desired = HostRoutes.desired(for: topology, tunnelInterface: tunIndex, uplinkInterface: uplinkIndex)
        let report = reconciler.reconcile(desired: desired.routes, rules: desired.rules)
        for e in report.errors { logger.error("reconcile: \(e)") }
        if report.changeCount > 0 {
            logger.info("routes and rules: \(report.added) added, \(report.replaced) replaced, \(report.removed) removed")
        }
        stats.value.withLock {
            $0.reconciles += 1
            $0.reconcileErrors += UInt64(report.errors.count)
            $0.routesProgrammed = desired.routes.count
            $0.rulesProgrammed = desired.rules.count
        }
    }

    func reload(_ topology: inout Topology, loop: PacketWorkers<LinuxDatapath>, captures: [UplinkCapture], tunIndex: Int32,
                uplink: Uplink) {
        do {
            let set = try source.load()
            var spec = ClusterLoader.spec(from: set, node: options.node, underlayMTU: options.underlayMTU ?? uplink.mtu)
            spec.underlayMTU = options.underlayMTU ?? uplink.mtu
            let next = try Topology.compile(spec)
            guard next.localAddress == topology.localAddress else {
                throw DaemonError("the node IP changed from \(topology.localAddress) to \(next.localAddress): restart ipipd to apply it")
            }
            for w in next.warnings { logger.warning("\(w)") }
            loop.publish(next)
            if next.natPortRange != topology.natPortRange {
                for c in captures { try c.setFilter(CaptureFilter(nodeAddress: next.localAddress, natPortRange: next.natPortRange)) }
            }
            topology = next
            try configureTUN(index: tunIndex, topology: next)
            applyNFTables(uplink: uplink.name, topology: next)
            reconcileRoutes(topology: next, tunIndex: tunIndex, uplinkIndex: uplink.index)
            stats.value.withLock { $0.topologyReloads += 1 }
            logger.notice("topology reloaded: \(next.nodes.count) nodes, \(next.pools.count) pools, tunnel MTU \(next.tunnelMTU)")
        } catch {
            stats.value.withLock { $0.topologyReloadErrors += 1 }
            logger.error("reload refused, the previous topology stays: \(error)")
        }
    }
}

/// The control thread's counters, shared with the metrics thread.
final class ControlStats: Sendable {
    let value = Mutex<MetricsSnapshot>(MetricsSnapshot())
}

/// Keeps the datapath's next-hop table current (control thread): every `every` seconds, and
/// right after a topology change, the peers' routes and neighbour entries are read again; a table
/// that differs from the last one is published to the packet loop and the change logged.
struct NextHopMonitor {
    let datapaths: [LinuxDatapath]
    let uplinkIndex: Int32
    let netlink: NetlinkSocket
    let logger: Logger
    var last: NextHopTable?
    var lastRefresh = Date.distantPast

    init(datapaths: [LinuxDatapath], uplinkIndex: Int32, netlink: NetlinkSocket, logger: Logger) {
        self.datapaths = datapaths
        self.uplinkIndex = uplinkIndex
        self.netlink = netlink
        self.logger = logger
    }

    mutating func refreshIfDue(topology: Topology, every seconds: Double) {
        if Date().timeIntervalSince(lastRefresh) >= seconds { refresh(topology: topology) }
    }

    mutating func refresh(topology: Topology) {
        lastRefresh = Date()
        let fast = datapaths.filter { $0.method != .raw }
        guard let first = fast.first else { return }
        let peers = topology.nodes.enumerated().compactMap { i, n in i == topology.localNodeIndex ? nil : n.address }
        let table: NextHopTable
        do {
            table = try NextHopTable.resolve(peers: peers, interfaceIndex: uplinkIndex, netlink: netlink)
        } catch {
            logger.error("next hops: \(error)")
            return
        }
        if let last, last.entries == table.entries, last.unresolved == table.unresolved { return }
        let resolved = table.entries.map { "\($0.peer) via \($0.nextHop) \($0.linkAddress)" }
        logger.info("next hops (\(first.method)): \(table.entries.count) resolved\(resolved.isEmpty ? "" : ": " + resolved.prefix(8).joined(separator: ", ")), \(table.unresolved.count) through the kernel until resolved")
        // A table of its own for each worker's transmit path: one shared object would have its
        // reference count written from every worker's core.
        for (i, d) in fast.enumerated() {
            d.publish(nextHops: i == 0 ? table : NextHopTable(entries: table.entries, unresolved: table.unresolved))
        }
        last = table
    }
}

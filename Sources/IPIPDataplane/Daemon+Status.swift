import Foundation
import IPIPControl
import IPIPCore

/// What the control thread records for `ipipctl node status` beyond the counters: the topology
/// in force, its generation and when it came, the last refused reload, and the devices.
struct ObservedState: Sendable {
    var startedAt = Date()
    var topology: Topology?
    /// 1 at start, +1 per topology swapped in by a reload.
    var generation = 0
    var changedAt = Date()
    var lastReloadError: String?
    var lastReloadErrorAt: Date?
    var uplink: HostUplink?
    var tunName = ""
    var tunOffloads: String?
    var transmit = ""
    var receive = ""
    var workers = 1
}

extension Daemon {
    /// The status the `status` command answers: fresh counters (the loops publish a snapshot on
    /// request), the control thread's view of the topology and reloads.
    func nodeStatus(datapath: any DaemonDatapath) throws -> NodeStatus {
        let o = observed.withLock { $0 }
        guard o.topology != nil, o.uplink != nil else { throw DaemonError("ipipd is still starting") }
        let snapshot = datapath.snapshot(fresh: true)
        let control = stats.value.withLock { $0 }
        return Self.nodeStatus(observed: o, snapshot: snapshot, control: control, pid: Int(getpid()))
    }

    /// The status as a pure function of what the daemon knows (so that it is tested without a
    /// host). Peers, their blocks and how they are reached come from the compiled routing
    /// table, so they say what this node applies (CrossSubnet decided per peer, Never, VXLAN
    /// pools not routed), not what the manifests say in general.
    static func nodeStatus(
        observed o: ObservedState, snapshot: MetricsSnapshot, control: MetricsSnapshot, pid: Int
    )
        -> NodeStatus
    {
        let t = o.topology!
        let uplink = o.uplink!
        let specNodes = Dictionary(t.spec.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var blocks = [[String]](repeating: [], count: t.nodes.count)
        var modes = [Set<String>](repeating: [], count: t.nodes.count)
        var poolPeers = [(encapsulated: Set<Int>, native: Set<Int>)](repeating: ([], []), count: t.pools.count)
        for (prefix, value) in t.table.entries {
            let r = t.routes[Int(value)]
            let n = Int(r.nodeIndex)
            guard n >= 0, n < t.nodes.count, r.kind != .poolWithoutRoute else { continue }
            let isTunnelAddress = prefix.length == 32 && t.nodes[n].tunnelAddress == prefix.address
            if !isTunnelAddress { blocks[n].append(prefix.description) }
            guard n != t.localNodeIndex, !isTunnelAddress else { continue }
            switch r.kind {
            case .remote:
                modes[n].insert(r.encapsulate ? "ipip" : "native")
                if r.poolIndex >= 0 {
                    if r.encapsulate {
                        poolPeers[Int(r.poolIndex)].encapsulated.insert(n)
                    } else {
                        poolPeers[Int(r.poolIndex)].native.insert(n)
                    }
                }
            case .remoteWithoutAddress: modes[n].insert("unreachable")
            case .vxlanPool: modes[n].insert("vxlan")
            case .local, .poolWithoutRoute: break
            }
        }
        let counters = Dictionary(
            snapshot.peers.map { ($0.address, $0) },
            uniquingKeysWith: { a, b in
                var s = a
                s.add(b)
                return s
            })
        var peers: [NodeStatus.Peer] = []
        for (i, n) in t.nodes.enumerated() where i != t.localNodeIndex {
            let c = n.address.flatMap { counters[$0] }
            var route = modes[i].isEmpty ? "none" : modes[i].sorted().joined(separator: "+")
            if n.routeLoopsThroughTunnel { route = "dropped (its address routes through the tunnel)" }
            peers.append(
                NodeStatus.Peer(
                    name: n.name, nodeIP: specNodes[n.name]?.address?.description ?? n.address?.description ?? "none",
                    tunnelAddress: n.tunnelAddress?.description, blocks: blocks[i], route: route, pathMTU: c?.pathMTU,
                    egress: .init(packets: c?.egressPackets ?? 0, bytes: c?.egressBytes ?? 0),
                    ingress: .init(packets: c?.ingressPackets ?? 0, bytes: c?.ingressBytes ?? 0)))
        }
        let pools = t.pools.enumerated().map { i, p in
            NodeStatus.Pool(
                name: p.name, cidr: p.prefix.network.description, ipipMode: p.ipipMode.rawValue, vxlan: p.vxlanEnabled,
                natOutgoing: p.natOutgoing, disabled: p.disabled,
                encapsulatedPeers: poolPeers[i].encapsulated.sorted().map { t.nodes[$0].name },
                nativePeers: poolPeers[i].native.sorted().map { t.nodes[$0].name })
        }
        let local = t.nodes[t.localNodeIndex]
        return NodeStatus(
            node: local.name,
            nodeIP: specNodes[local.name]?.address?.description ?? t.localAddress.description,
            pid: pid, startedAt: rfc3339(o.startedAt), workers: o.workers,
            uplink: .init(name: uplink.name, mtu: uplink.mtu, transmit: o.transmit, receive: o.receive),
            tunnel: .init(
                name: o.tunName, mtu: t.tunnelMTU, address: local.tunnelAddress?.description,
                offloads: o.tunOffloads ?? "none (one plain packet per read and write)"),
            topology: .init(
                generation: o.generation, changedAt: rfc3339(o.changedAt), reloads: control.topologyReloads,
                reloadErrors: control.topologyReloadErrors, lastReloadError: o.lastReloadError,
                lastReloadErrorAt: o.lastReloadErrorAt.map(rfc3339), warnings: t.warnings),
            pools: pools, peers: peers,
            nat: .init(
                portRange: "\(t.natPortRange.lowerBound)-\(t.natPortRange.upperBound)",
                portsAvailable: snapshot.natPortsInRange, portsInUse: snapshot.natMappings,
                sessions: snapshot.natSessions))
    }

    static func rfc3339(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    /// The control socket's server over this daemon: `status` and `record` (the latter through
    /// `recordHandler`); `monitor` is the server's own.
    func startControl(_ socket: ControlSocket, datapath: any DaemonDatapath) -> ControlServer {
        // The node IP never changes while ipipd runs (a reload that would change it is refused).
        let local = observed.withLock { $0.topology?.localAddress ?? .any }
        let commands: [String: ControlServer.Command] = [
            "status": { [self] _ in
                let status = try self.nodeStatus(datapath: datapath)
                let data = try JSONEncoder().encode(status)
                return try JSONSerialization.jsonObject(with: data)
            },
            "record": { [self] request in
                guard let out = request["out"] as? String, out.hasPrefix("/") else {
                    throw DaemonError("record: 'out' must be an absolute directory path")
                }
                guard let handler = self.recordHandler.withLock({ $0 }) else {
                    throw DaemonError("the flight recorder is off (start ipipd with --record-buffer SIZE)")
                }
                return try handler(out)
            },
        ]
        let server = ControlServer(
            socket: socket, node: options.node, rings: datapath.monitorRings, commands: commands,
            localAddress: local)
        server.start()
        logger.info("control socket \(socket.path) (ipipctl node status, monitor, node record)")
        return server
    }
}

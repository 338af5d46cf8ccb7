// HostRoutes: the routes and rules a host needs for a compiled topology, as Felix
// programs them for IP-in-IP pools (docs/decisions.md, "Live mode"). Pure: no system calls, unit-tested without root.
import IPIPCore

/// Computes the host's desired routes and policy rules from a compiled `Topology`.
///
/// For each entry of the topology's routing table (`topology.table.entries`):
/// - a remote block or tunnel address that the engine encapsulates (`.remote`, `encapsulate`)
///   → `<dst> dev <tun> scope link mtu <tunnelMTU>`: the engine reads it from the TUN and wraps
///   it (Felix writes `via <node IP> dev tunl0 onlink` because the kernel's tunl0 needs the outer
///   destination as gateway; our engine finds it itself);
/// - a remote block routed natively (CrossSubnet within the subnet, Never, or outside every pool)
///   → `<dst> via <node IP> dev <uplink> onlink`. `onlink` lets the route exist even when the
///   uplink holds no connected prefix covering the node IP (a /32 on cloud VMs): native routing
///   needs the nodes to be L2-adjacent anyway (Felix's CrossSubnet rule), so the kernel should just ARP;
/// - a local block → `blackhole <dst>`, as Felix does, so traffic to addresses of our blocks that
///   no workload holds is dropped here instead of leaking to the default route (the workloads'
///   own /32 routes are more specific). The local tunnel address gets no route: it is an address
///   of the TUN device;
/// - pool entries without a block, blocks of nodes without an address and VXLAN pools get no
///   route (the kernel routes them as it would without us).
///
/// natOutgoing (Felix's masquerade rule, the engine's SNAT): when some pool has `natOutgoing` (disabled
/// pools count, as for the engine), table `natTable` holds `default dev <tun>` plus a `throw`
/// route for every pool and for every block outside the pools, and one rule per such pool
/// `from <pool> lookup <natTable>` at priority `natRulePriority`. Traffic from a pool to a
/// non-pool destination thus enters the TUN, where the engine translates it; the throw routes
/// send pool-to-pool traffic back to the following rules (main). Local destinations are handled
/// before: the local table's rule has priority 0. The table also holds `blackhole default` at
/// metric `failClosedMetric`, behind the TUN's route: while the TUN exists it is never taken;
/// when the TUN is gone without ipipd's clean-up (kill -9, a crash) the routes through it go with
/// it but the rules and this route stay, so pool traffic to the outside is dropped until ipipd
/// runs again instead of leaving untranslated by main's default route.
public enum HostRoutes {
    /// The natOutgoing routing table: 498 (0x1F2, our protocol number 0xF2 in a table id). Tables
    /// 253–255 are the kernel's default/main/local; ids below 256 are the ones people pick for
    /// hand-made tables, so a larger id avoids them.
    public static let defaultNATTable: UInt32 = 0x1F2
    /// The priority of the natOutgoing rules: 498 (0x1F2): after the local table's rule (0),
    /// before main's (32766), so pool traffic is steered before the main table's default route.
    public static let natRulePriority: UInt32 = 0x1F2
    /// The metric of the natOutgoing table's fail-closed `blackhole default`: the largest, so the
    /// TUN's default route (metric 0) always wins while it exists.
    public static let failClosedMetric = UInt32.max

    /// The desired routes and rules for `topology`.
    /// - Parameters:
    ///   - topology: The compiled topology.
    ///   - tunnelInterface: The TUN device's index.
    ///   - uplinkInterface: The uplink's index (the link holding the node IP).
    ///   - natTable: The natOutgoing table id.
    ///   - protocolNumber: Our route protocol number.
    /// - Returns: The routes (main and `natTable`) and the rules.
    public static func desired(
        for topology: Topology, tunnelInterface: Int32, uplinkInterface: Int32,
        natTable: UInt32 = defaultNATTable,
        protocolNumber: UInt8 = RouteReconciler.defaultProtocolNumber
    )
        -> (routes: Set<Route>, rules: Set<Rule>)
    {
        var routes: Set<Route> = []
        var rules: Set<Rule> = []
        let localNode = topology.nodes[topology.localNodeIndex]
        let entries = topology.table.entries

        for (prefix, value) in entries {
            let r = topology.routes[Int(value)]
            switch r.kind {
            case .remote:
                if r.encapsulate {
                    routes.insert(
                        Route(
                            destination: prefix, outputInterface: tunnelInterface, protocolNumber: protocolNumber,
                            mtu: UInt32(topology.tunnelMTU)))
                } else if let gateway = topology.nodes[Int(r.nodeIndex)].address {
                    routes.insert(
                        Route(
                            destination: prefix, gateway: gateway, outputInterface: uplinkInterface,
                            protocolNumber: protocolNumber, onlink: true))
                }
            case .local:
                if let t = localNode.tunnelAddress, prefix == IPv4Prefix(address: t, length: 32) { continue }
                routes.insert(Route(destination: prefix, protocolNumber: protocolNumber, type: .blackhole))
            case .poolWithoutRoute, .remoteWithoutAddress, .vxlanPool:
                continue
            }
        }

        let natPools = topology.pools.filter(\.natOutgoing)
        if !natPools.isEmpty {
            routes.insert(
                Route(
                    destination: .all, outputInterface: tunnelInterface, table: natTable,
                    protocolNumber: protocolNumber))
            routes.insert(
                Route(
                    destination: .all, table: natTable, protocolNumber: protocolNumber, type: .blackhole,
                    metric: failClosedMetric))
            let pools = Set(topology.pools.map(\.prefix.network))
            // Whether a pool contains `prefix`: one of its at most 33 enclosing networks is a pool
            // (a scan of every pool per entry was quadratic: 100,000 pools, 100,000 entries).
            func inPool(_ prefix: IPv4Prefix) -> Bool {
                (0...prefix.length).contains { pools.contains(IPv4Prefix(address: prefix.address, length: $0).network) }
            }
            var throwPrefixes = pools
            for (prefix, _) in entries where !inPool(prefix) {
                throwPrefixes.insert(prefix.network)
            }
            for p in throwPrefixes {
                routes.insert(Route(destination: p, table: natTable, protocolNumber: protocolNumber, type: .throw))
            }
            for p in natPools {
                rules.insert(
                    Rule(priority: natRulePriority, source: p.prefix, table: natTable, protocolNumber: protocolNumber))
            }
        }
        return (routes, rules)
    }

    /// The tables `desired` writes to, for `RouteReconciler.init(tables:)`.
    /// - Parameter natTable: The natOutgoing table id.
    public static func tables(natTable: UInt32 = defaultNATTable) -> Set<UInt32> {
        [Route.mainTable, natTable]
    }
}

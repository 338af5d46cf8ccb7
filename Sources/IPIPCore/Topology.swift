/// When a pool's traffic between nodes is wrapped in IP-in-IP (Calico `ipipMode`).
public enum EncapsulationMode: String, Sendable, CaseIterable {
    /// Always encapsulate traffic to remote blocks of the pool.
    case always = "Always"
    /// Encapsulate only when the remote node is outside the local node's subnet.
    case crossSubnet = "CrossSubnet"
    /// Never encapsulate: route natively via the remote node IP.
    case never = "Never"
}

/// Everything the topology compiler needs, in plain values (the resources module fills it from
/// Calico resources; tests fill it by hand).
public struct TopologySpec: Sendable {
    /// An IPv4 pool.
    public struct Pool: Sendable {
        public var name: String
        public var prefix: IPv4Prefix
        public var ipipMode: EncapsulationMode
        /// VXLAN enabled (`vxlanMode` ≠ Never): stored but not routed by this dataplane.
        public var vxlanEnabled: Bool
        public var natOutgoing: Bool
        public var disabled: Bool
        public init(
            name: String, prefix: IPv4Prefix, ipipMode: EncapsulationMode, vxlanEnabled: Bool = false,
            natOutgoing: Bool = false, disabled: Bool = false
        ) {
            self.name = name
            self.prefix = prefix
            self.ipipMode = ipipMode
            self.vxlanEnabled = vxlanEnabled
            self.natOutgoing = natOutgoing
            self.disabled = disabled
        }
    }

    /// A node (Calico `Node`).
    public struct Node: Sendable {
        public var name: String
        /// `spec.bgp.ipv4Address`: the node IP with the prefix length of its subnet (host bits kept).
        public var address: IPv4Prefix?
        /// `spec.bgp.ipv4IPIPTunnelAddr`.
        public var tunnelAddress: IPv4Address?
        public init(name: String, address: IPv4Prefix?, tunnelAddress: IPv4Address? = nil) {
            self.name = name
            self.address = address
            self.tunnelAddress = tunnelAddress
        }
    }

    /// A workload block and the node it is affine to (Calico `BlockAffinity`).
    public struct Block: Sendable {
        public var prefix: IPv4Prefix
        public var node: String
        public init(prefix: IPv4Prefix, node: String) {
            self.prefix = prefix
            self.node = node
        }
    }

    /// The name of the node this dataplane runs on.
    public var localNodeName: String
    public var pools: [Pool]
    public var nodes: [Node]
    public var blocks: [Block]
    /// FelixConfiguration `ipipMTU`; nil means underlay MTU − 20.
    public var ipipMTU: Int?
    /// The MTU of the underlay (uplink) device.
    public var underlayMTU: Int
    /// FelixConfiguration `externalNodesCIDRList` (IPv4 entries): extra allowed IP-in-IP senders.
    public var externalNodes: [IPv4Prefix]
    /// FelixConfiguration `natPortRange`; nil means `NATTable.defaultPortRange`.
    public var natPortRange: ClosedRange<UInt16>?

    public init(
        localNodeName: String, pools: [Pool] = [], nodes: [Node] = [], blocks: [Block] = [],
        ipipMTU: Int? = nil, underlayMTU: Int = 1500, externalNodes: [IPv4Prefix] = [],
        natPortRange: ClosedRange<UInt16>? = nil
    ) {
        self.localNodeName = localNodeName
        self.pools = pools
        self.nodes = nodes
        self.blocks = blocks
        self.ipipMTU = ipipMTU
        self.underlayMTU = underlayMTU
        self.externalNodes = externalNodes
        self.natPortRange = natPortRange
    }
}

/// A problem that makes a topology impossible to compile.
public struct TopologyError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The compiled, immutable view of the cluster from one node: what the engine consults per packet.
///
/// Built once per configuration change by `Topology.compile(_:)` and swapped in whole; the engine
/// only reads it. Per-packet work is one trie lookup plus array reads by index.
///
/// Routing table (one LPM trie), most specific entry wins:
/// - each pool CIDR → `.poolWithoutRoute` (in a pool, but no block is known for the address);
/// - each block → `.remote(node, encapsulate)` or `.local`;
/// - each node's tunnel address /32 → `.remote` / `.local` likewise;
/// - addresses in no pool and no block → no entry: outside the cluster.
public final class Topology: Sendable {
    /// One entry of the routing table.
    public struct Route: Sendable, Equatable {
        public enum Kind: UInt8, Sendable {
            /// Inside a pool, but no block (or tunnel address) covers the address.
            case poolWithoutRoute
            /// A block or tunnel address of this node.
            case local
            /// A block or tunnel address of another node.
            case remote
            /// A block of a node that has no IPv4 address: unreachable.
            case remoteWithoutAddress
            /// In a pool with VXLAN enabled: not routed by this dataplane.
            case vxlanPool
        }
        public var kind: Kind
        /// Index into `nodes` for `.remote` / `.remoteWithoutAddress`, else -1.
        public var nodeIndex: Int32
        /// Index into `pools` of the pool containing the entry, or -1 when it lies in no pool.
        public var poolIndex: Int32
        /// Whether traffic to this entry is wrapped in IP-in-IP (per pool mode and subnet check).
        public var encapsulate: Bool
    }

    /// A node as the engine sees it.
    public struct CompiledNode: Sendable {
        public var name: String
        /// The node IP (host bits of the configured prefix kept: it is the node's address).
        public var address: IPv4Address?
        /// The node's subnet (the configured prefix, masked).
        public var subnet: IPv4Prefix?
        public var tunnelAddress: IPv4Address?
        /// ENC-20: the node's own IP falls in an encapsulated route, so tunnelling to it would loop.
        public var routeLoopsThroughTunnel: Bool
        /// The outer header for packets to this node, precomputed.
        public var outerTemplate: OuterHeaderTemplate?
    }

    /// Who may send us IP-in-IP: every other node's IP (/32, value = its index in `nodes`) and
    /// FelixConfiguration `externalNodesCIDRList` (value `Topology.externalPeer`), as Calico's
    /// `cali40all-hosts-net` set (Felix).
    public let peers: IPv4PrefixTrie
    /// The `peers` value of an external-nodes CIDR.
    public static let externalPeer = UInt32.max

    /// The LPM table; values index `routes`.
    public let table: IPv4PrefixTrie
    /// Route entries referenced by `table`.
    public let routes: [Route]
    /// Every node, local included.
    public let nodes: [CompiledNode]
    /// Index of the local node in `nodes`.
    public let localNodeIndex: Int
    /// The pools, as given.
    public let pools: [TopologySpec.Pool]
    /// Whether any pool has natOutgoing (disabled pools count, as for SNAT itself).
    public let hasNATOutgoing: Bool
    /// This node's IP: outer source of every encapsulated packet.
    public let localAddress: IPv4Address
    /// This node's subnet for the CrossSubnet check (nil when unknown ⇒ always encapsulate).
    public let localSubnet: IPv4Prefix?
    /// The source of ICMP errors the engine generates: the tunnel address, else the node IP.
    public let icmpSourceAddress: IPv4Address
    /// Largest inner packet that is encapsulated whole.
    public let tunnelMTU: Int
    /// External ports (and ICMP identifiers) SNAT hands out.
    public var natPortRange: ClosedRange<UInt16> { spec.natPortRange ?? NATTable.defaultPortRange }
    /// Non-fatal findings worth one log line each (VXLAN pools, blocks outside pools, ...).
    public let warnings: [String]
    /// The spec this was compiled from.
    public let spec: TopologySpec

    /// The minimum IPv4 MTU (RFC 791): the floor for the tunnel MTU.
    public static let minimumMTU = 68
    /// The outer header size.
    public static let encapsulationOverhead = 20

    init(
        peers: IPv4PrefixTrie, table: IPv4PrefixTrie, routes: [Route], nodes: [CompiledNode], localNodeIndex: Int,
        pools: [TopologySpec.Pool], localAddress: IPv4Address, localSubnet: IPv4Prefix?,
        icmpSourceAddress: IPv4Address, tunnelMTU: Int, warnings: [String], spec: TopologySpec
    ) {
        self.peers = peers
        self.table = table
        self.routes = routes
        self.nodes = nodes
        self.localNodeIndex = localNodeIndex
        self.pools = pools
        hasNATOutgoing = pools.contains { $0.natOutgoing }
        self.localAddress = localAddress
        self.localSubnet = localSubnet
        self.icmpSourceAddress = icmpSourceAddress
        self.tunnelMTU = tunnelMTU
        self.warnings = warnings
        self.spec = spec
    }

    /// The same topology in storage of its own (tables, routes, nodes and their names freshly
    /// allocated), for a second packet worker: two workers reading one `Topology` write the same
    /// reference counts from two cores on every batch (measured in `ipipd bench --workers 2`:
    /// retain and release of the shared object were a quarter of the profile). The spec and the
    /// warnings, which only the control plane reads, stay shared.
    public func replica() -> Topology {
        Topology(
            peers: peers.replica(), table: table.replica(), routes: routes.withOwnStorage(),
            nodes: nodes.map { n in
                var c = n
                c.name = String(decoding: Array(n.name.utf8), as: UTF8.self)
                return c
            },
            localNodeIndex: localNodeIndex, pools: pools.withOwnStorage(), localAddress: localAddress,
            localSubnet: localSubnet, icmpSourceAddress: icmpSourceAddress, tunnelMTU: tunnelMTU,
            warnings: warnings, spec: spec)
    }

    /// Looks up the route for `address` (longest prefix match), nil when outside every pool and block.
    @inlinable
    public func route(for address: IPv4Address) -> Route? {
        guard let i = table.lookup(address) else { return nil }
        return routes[Int(i)]
    }

    /// Whether `address` may send us IP-in-IP (a known node or an external-nodes CIDR).
    @inlinable
    public func isKnownPeer(_ address: IPv4Address) -> Bool { peers.lookup(address) != nil }

    /// Compiles a spec.
    /// - Throws: `TopologyError` when the local node is unknown or has no IPv4 address, or the MTU
    ///   is out of range.
    public static func compile(_ spec: TopologySpec) throws(TopologyError) -> Topology {
        var warnings: [String] = []
        guard let localIndex = spec.nodes.firstIndex(where: { $0.name == spec.localNodeName }) else {
            throw TopologyError("node '\(spec.localNodeName)' is not defined (no Node resource with that name)")
        }
        guard let localPrefix = spec.nodes[localIndex].address else {
            throw TopologyError(
                "node '\(spec.localNodeName)' has no spec.bgp.ipv4Address: it cannot be a tunnel endpoint")
        }
        let localAddress = localPrefix.address
        // A /32 carries no subnet information: every peer counts as cross-subnet, which is what
        // Calico does too (nodes created before Calico v2.1).
        let localSubnet: IPv4Prefix? = localPrefix.network

        let mtu = spec.ipipMTU ?? (spec.underlayMTU - encapsulationOverhead)
        guard mtu >= minimumMTU, mtu <= PacketBatch.maximumPacketByteCount - encapsulationOverhead else {
            throw TopologyError(
                "tunnel MTU \(mtu) is out of range \(minimumMTU)…\(PacketBatch.maximumPacketByteCount - encapsulationOverhead)"
            )
        }
        if let r = spec.natPortRange, r.lowerBound == 0 {
            throw TopologyError("natPortRange \(r.lowerBound):\(r.upperBound) includes port 0")
        }
        if let i = spec.ipipMTU, i > spec.underlayMTU - encapsulationOverhead {
            warnings.append(
                "ipipMTU \(i) is larger than the underlay MTU \(spec.underlayMTU) − 20: DF packets near that size will be dropped on the path"
            )
        }

        // Nodes.
        var nodeIndexByName: [String: Int] = [:]
        var nodes: [CompiledNode] = []
        for n in spec.nodes {
            if nodeIndexByName[n.name] != nil {
                warnings.append("node '\(n.name)' is defined twice; the first definition is used")
                continue
            }
            nodeIndexByName[n.name] = nodes.count
            nodes.append(
                CompiledNode(
                    name: n.name, address: n.address?.address, subnet: n.address?.network,
                    tunnelAddress: n.tunnelAddress, routeLoopsThroughTunnel: false, outerTemplate: nil))
        }
        let localNodeIndex = nodeIndexByName[spec.localNodeName]!

        // Pools (only enabled-or-disabled IPv4 pools reach here).
        let pools = spec.pools
        var poolTable = IPv4PrefixTrie()
        for (i, p) in pools.enumerated() {
            poolTable.insert(p.prefix, value: UInt32(i))
            if p.vxlanEnabled {
                warnings.append(
                    "pool '\(p.name)' (\(p.prefix.network)) has VXLAN enabled: stored, but not routed by this dataplane"
                )
            }
        }
        func pool(containing prefix: IPv4Prefix) -> Int? {
            guard let m = poolTable.longestMatch(prefix.address) else { return nil }
            return m.prefix.contains(prefix) ? Int(m.value) : nil
        }

        var routes: [Route] = []
        var table = IPv4PrefixTrie()
        func add(_ prefix: IPv4Prefix, _ route: Route) {
            let key = prefix.network
            if let existing = table[exactly: key] {
                let r = routes[Int(existing)]
                if r.kind != .poolWithoutRoute && r != route {
                    warnings.append("\(key) is claimed more than once; the first claim is used")
                    return
                }
            }
            table.insert(key, value: UInt32(routes.count))
            routes.append(route)
        }
        for (i, p) in pools.enumerated() {
            add(
                p.prefix,
                Route(
                    kind: p.vxlanEnabled ? .vxlanPool : .poolWithoutRoute, nodeIndex: -1,
                    poolIndex: Int32(i), encapsulate: false))
        }

        func remoteRoute(node nodeIndex: Int, prefix: IPv4Prefix) -> Route {
            let poolIndex = pool(containing: prefix)
            let p = poolIndex.map { pools[$0] }
            if let p, p.vxlanEnabled {
                return Route(
                    kind: .vxlanPool, nodeIndex: Int32(nodeIndex), poolIndex: Int32(poolIndex!), encapsulate: false)
            }
            if nodeIndex == localNodeIndex {
                return Route(
                    kind: .local, nodeIndex: Int32(nodeIndex), poolIndex: Int32(poolIndex ?? -1), encapsulate: false)
            }
            guard let address = nodes[nodeIndex].address else {
                return Route(
                    kind: .remoteWithoutAddress, nodeIndex: Int32(nodeIndex), poolIndex: Int32(poolIndex ?? -1),
                    encapsulate: false)
            }
            let encapsulate: Bool
            switch p?.ipipMode {
            case .always: encapsulate = true
            case .crossSubnet: encapsulate = !(localSubnet?.contains(address) ?? false)
            case .never: encapsulate = false
            case nil:
                // Outside every pool: Calico's BIRD filter accepts such routes without a tunnel.
                encapsulate = false
            }
            return Route(
                kind: .remote, nodeIndex: Int32(nodeIndex), poolIndex: Int32(poolIndex ?? -1), encapsulate: encapsulate)
        }

        for b in spec.blocks {
            guard let n = nodeIndexByName[b.node] else {
                warnings.append("block \(b.prefix.network) is affine to unknown node '\(b.node)': not routed")
                continue
            }
            if pool(containing: b.prefix) == nil {
                warnings.append("block \(b.prefix.network) of node '\(b.node)' lies in no pool: routed natively")
            }
            add(b.prefix, remoteRoute(node: n, prefix: b.prefix))
        }
        for (i, n) in nodes.enumerated() {
            guard let t = n.tunnelAddress else { continue }
            var r = remoteRoute(node: i, prefix: IPv4Prefix(address: t, length: 32))
            // A tunnel address exists to be reached through the tunnel: Calico allocates it only
            // from IPIP pools, and Felix routes it via tunl0 whatever the subnet.
            if r.kind == .remote && r.poolIndex < 0 { r.encapsulate = true }
            add(IPv4Prefix(address: t, length: 32), r)
        }

        // ENC-20 and the outer header templates.
        for i in nodes.indices where i != localNodeIndex {
            guard let a = nodes[i].address else { continue }
            if let r = table.lookup(a).map({ routes[Int($0)] }), r.kind == .remote, r.encapsulate {
                nodes[i].routeLoopsThroughTunnel = true
                warnings.append(
                    "node '\(nodes[i].name)' has address \(a) inside an encapsulated route: tunnelling to it would loop, its traffic is dropped"
                )
            }
            nodes[i].outerTemplate = OuterHeaderTemplate(source: localAddress, destination: a)
        }

        var peers = IPv4PrefixTrie()
        for p in spec.externalNodes { peers.insert(p, value: externalPeer) }
        for (i, n) in nodes.enumerated() where i != localNodeIndex {
            if let a = n.address { peers.insert(IPv4Prefix(address: a, length: 32), value: UInt32(i)) }
        }

        return Topology(
            peers: peers, table: table, routes: routes, nodes: nodes, localNodeIndex: localNodeIndex, pools: pools,
            localAddress: localAddress, localSubnet: localSubnet,
            icmpSourceAddress: spec.nodes[localIndex].tunnelAddress ?? localAddress,
            tunnelMTU: mtu, warnings: warnings, spec: spec)
    }
}

/// The outer IPv4 header for one peer, precomputed so the per-packet work is a copy plus three
/// patched fields (TOS, total length, identification) and their checksum (vpp `ipip44_fixup`).
public struct OuterHeaderTemplate: Sendable {
    /// Outer source (this node).
    public let source: IPv4Address
    /// Outer destination (the peer).
    public let destination: IPv4Address
    /// The ones' complement sum of the constant words (version/IHL, flags, protocol, addresses)
    /// with TTL = 0; the TTL, TOS, length and ID are added per packet.
    public let constantSum: UInt32

    public init(source: IPv4Address, destination: IPv4Address) {
        self.source = source
        self.destination = destination
        var s: UInt32 = 0x4500 &+ UInt32(IPv4Header.dontFragmentFlag) &+ UInt32(IPProtocolNumber.ipInIP)
        s &+= source.rawValue >> 16
        s &+= source.rawValue & 0xFFFF
        s &+= destination.rawValue >> 16
        s &+= destination.rawValue & 0xFFFF
        constantSum = s
    }
}

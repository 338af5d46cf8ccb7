import IPIPCore

/// The fixed topologies the fuzz program chooses from (4 bits: pool mode, external nodes, small MTU).
///
/// All are seen from node-a (10.0.0.1/24, tunnel 192.168.0.1) of the README's example cluster:
/// node-b 10.0.0.2/24 (same subnet), node-c 10.0.1.3/24 (other subnet), one pool 192.168.0.0/16.
/// Variant bits:
/// - 0…1: pool mode: 0 Always, 1 CrossSubnet, 2 Never, 3 Always plus the odd corners (a VXLAN pool,
///   a node without an address, node-e whose address is its own encapsulated tunnel /32 (ENC-20), a
///   block outside every pool);
/// - 2: `externalNodesCIDRList` = 203.0.113.0/24;
/// - 3: `ipipMTU` 576 (else the underlay's 1500 − 20), so fragmentation and ICMP paths trigger early;
///   with the odd corners, the minimum 68 instead (many tiny fragments, `output_full`).
public enum FuzzTopologies {
    /// Number of variants (the low 4 bits of a selector).
    public static let count = 16

    /// The spec of variant `v & 0x0F`.
    public static func spec(_ v: UInt8) -> TopologySpec {
        let v = v & 0x0F
        let mode: EncapsulationMode = [.always, .crossSubnet, .never, .always][Int(v & 3)]
        let rich = v & 3 == 3
        var spec = TopologySpec(
            localNodeName: "node-a",
            pools: [.init(name: "ippool-ipip-1", prefix: p("192.168.0.0/16"), ipipMode: mode, natOutgoing: true)],
            nodes: [
                .init(name: "node-a", address: p("10.0.0.1/24"), tunnelAddress: a("192.168.0.1")),
                .init(name: "node-b", address: p("10.0.0.2/24"), tunnelAddress: a("192.168.1.1")),
                .init(name: "node-c", address: p("10.0.1.3/24"), tunnelAddress: a("192.168.2.1")),
            ],
            blocks: [
                .init(prefix: p("192.168.0.0/26"), node: "node-a"),
                .init(prefix: p("192.168.1.0/26"), node: "node-b"),
                .init(prefix: p("192.168.2.0/26"), node: "node-c"),
            ])
        if rich {
            spec.pools.append(.init(name: "vxlan", prefix: p("172.16.0.0/16"), ipipMode: .never, vxlanEnabled: true))
            spec.nodes.append(.init(name: "node-d", address: nil))
            // node-e's tunnel address is its node IP: the /32 route to it is encapsulated, so
            // tunnelling to node-e would loop (ENC-20, peer_route_through_tunnel).
            spec.nodes.append(.init(name: "node-e", address: p("192.168.4.5/24"), tunnelAddress: a("192.168.4.5")))
            spec.blocks.append(.init(prefix: p("172.16.0.0/26"), node: "node-b"))
            spec.blocks.append(.init(prefix: p("192.168.3.0/26"), node: "node-d"))
            spec.blocks.append(.init(prefix: p("192.168.4.0/26"), node: "node-b"))
            spec.blocks.append(.init(prefix: p("10.99.0.0/26"), node: "node-c"))
        }
        if v & 4 != 0 { spec.externalNodes = [p("203.0.113.0/24")] }
        if v & 8 != 0 { spec.ipipMTU = rich ? Topology.minimumMTU : 576 }
        return spec
    }

    /// Every variant, compiled once.
    public static let compiled: [Topology] = (0..<UInt8(count)).map { v in
        do {
            return try Topology.compile(spec(v))
        } catch {
            preconditionFailure("fuzz topology \(v) does not compile: \(error)")
        }
    }

    /// Addresses worth aiming at, indexed by a nibble of the program (see `FuzzProgram`).
    public static let interestingAddresses: [IPv4Address] = [
        a("10.0.0.1"),  // 0 this node
        a("10.0.0.2"),  // 1 node-b (same subnet)
        a("10.0.1.3"),  // 2 node-c (other subnet)
        a("192.168.0.10"),  // 3 local workload
        a("192.168.1.20"),  // 4 node-b workload
        a("192.168.2.30"),  // 5 node-c workload
        a("192.168.0.1"),  // 6 local tunnel address
        a("192.168.1.1"),  // 7 node-b tunnel address
        a("192.168.2.1"),  // 8 node-c tunnel address
        a("203.0.113.10"),  // 9 outside the cluster; an external node in variants with bit 2
        a("192.168.3.7"),  // 10 node-d's block (rich), else pool without a block
        a("192.168.4.5"),  // 11 node-e's address and tunnel /32 (rich: ENC-20 loop)
        a("172.16.0.9"),  // 12 VXLAN pool (rich)
        a("10.99.0.5"),  // 13 block outside every pool (rich)
        a("192.168.200.1"),  // 14 pool, no block
        a("224.0.0.5"),  // 15 martian
    ]

    /// Outer sources for underlay packets, indexed by 3 bits.
    public static let outerSources: [IPv4Address] = [
        a("10.0.0.2"), a("10.0.1.3"), a("203.0.113.10"), a("10.0.0.1"),
        a("10.0.0.99"), a("192.168.1.20"), a("10.0.0.2"), a("192.168.4.5"),
    ]

    static func a(_ s: String) -> IPv4Address { IPv4Address(s)! }
    static func p(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }
}

import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPResources

@Suite("From resources to a topology")
struct ClusterLoaderTests {
    static let base = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: p4}
        spec: {cidr: 192.168.0.0/16, natOutgoing: true}
        ---
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: p6}
        spec: {cidr: "fd00:10::/64"}
        ---
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: vx}
        spec: {cidr: 172.16.0.0/16, vxlanMode: Always}
        ---
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata: {name: node-a}
        spec: {bgp: {ipv4Address: 10.0.0.1/24, ipv4IPIPTunnelAddr: 192.168.0.1}}
        ---
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata: {name: node-b}
        spec: {bgp: {ipv4Address: 10.0.0.2/24}}
        ---
        apiVersion: projectcalico.org/v3
        kind: BlockAffinity
        metadata: {name: b1}
        spec: {state: confirmed, node: node-b, cidr: 192.168.1.0/26}
        ---
        apiVersion: projectcalico.org/v3
        kind: BlockAffinity
        metadata: {name: b2}
        spec: {state: pending, node: node-b, cidr: 192.168.2.0/26}
        ---
        apiVersion: projectcalico.org/v3
        kind: BlockAffinity
        metadata: {name: b3}
        spec: {state: confirmed, node: node-b, cidr: 192.168.3.0/26, deleted: "true"}
        ---
        apiVersion: projectcalico.org/v3
        kind: FelixConfiguration
        metadata: {name: default}
        spec: {ipipMTU: 1400, natPortRange: "40000:40999", externalNodesList: ["172.31.0.0/16", "fd00::/8"]}
        ---
        apiVersion: projectcalico.org/v3
        kind: FelixConfiguration
        metadata: {name: node.node-a}
        spec: {ipipMTU: 1300}
        """

    @Test("IPv4 pools only; defaults applied; confirmed, live blocks only; Felix default then node.<name>")
    func spec() throws {
        let set = try ResourceLoader.load(text: Self.base, file: "cluster.yaml")
        let s = ClusterLoader.spec(from: set, node: "node-a", underlayMTU: 1500)
        #expect(s.pools.map(\.name) == ["p4", "vx"])
        #expect(s.pools[0].ipipMode == .always)  // the project's default for IPv4 pools
        #expect(s.pools[1].vxlanEnabled && s.pools[1].ipipMode == .never)
        #expect(s.blocks.map(\.prefix.description) == ["192.168.1.0/26"])
        #expect(s.ipipMTU == 1300)
        #expect(s.natPortRange == 40000...40999)
        #expect(s.externalNodes == [IPv4Prefix("172.31.0.0/16")!])
        let t = try Topology.compile(s)
        #expect(t.tunnelMTU == 1300 && t.natPortRange == 40000...40999)
        // For another node only the default FelixConfiguration applies.
        #expect(ClusterLoader.spec(from: set, node: "node-b", underlayMTU: 1500).ipipMTU == 1400)
    }

    @Test("examples/cluster.yaml is the test-support ExampleCluster, field for field, in every mode")
    func exampleClusterAgrees() throws {
        for (text, mode) in [("Always", EncapsulationMode.always), ("CrossSubnet", .crossSubnet), ("Never", .never)] {
            let set = try ResourceLoader.load(text: try ExampleCluster.manifests(mode: text), file: "cluster.yaml")
            for node in ["node-a", "node-b", "node-c"] {
                let loaded = ClusterLoader.spec(from: set, node: node, underlayMTU: 1500)
                #expect("\(loaded)" == "\(ExampleCluster.spec(mode: mode, local: node))")
            }
        }
    }

    @Test("bad manifests: every problem named with file:line:column, nothing compiled")
    func errors() {
        let bad = Self.base.replacingOccurrences(of: "cidr: 192.168.0.0/16", with: "cidr: 192.168.0.1/16")
            .replacingOccurrences(of: "state: pending", with: "state: maybe")
        #expect {
            _ = try ResourceLoader.load(text: bad, file: "cluster.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.contains("cluster.yaml:4:") && text.contains("not strictly masked")
                && text.contains("cluster.yaml:") && text.contains("maybe")
        }
    }
}

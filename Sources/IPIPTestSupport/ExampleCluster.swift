import Foundation
import IPIPCore

/// The README's example cluster, the one every test, script and demo uses: Calico's v3.5
/// IP-in-IP pool `192.168.0.0/16` (natOutgoing) over three nodes, node-a 10.0.0.1/24 and node-b
/// 10.0.0.2/24 on one subnet, node-c 10.0.1.3/24 on another, one /26 block each.
///
/// Its manifests are examples/cluster.yaml (scripts and replays read that file); `spec` is the
/// same cluster as the topology compiler's input, and a test checks that the two agree.
public enum ExampleCluster {
    /// The repository's root directory.
    public static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// examples/cluster.yaml.
    public static let manifestsURL = repositoryRoot.appendingPathComponent("examples/cluster.yaml")

    /// The manifests' text, with the pool's `ipipMode` set to `mode` ("Always", "CrossSubnet",
    /// "Never").
    public static func manifests(mode: String = "Always") throws -> String {
        try String(contentsOf: manifestsURL, encoding: .utf8).replacingOccurrences(
            of: "ipipMode: Always", with: "ipipMode: \(mode)")
    }

    /// The cluster as the topology compiler's input, seen from `local`.
    public static func spec(
        mode: EncapsulationMode = .always, natOutgoing: Bool = true, local: String = "node-a"
    ) -> TopologySpec {
        func p(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }
        func a(_ s: String) -> IPv4Address { IPv4Address(s)! }
        return TopologySpec(
            localNodeName: local,
            pools: [
                .init(name: "ippool-ipip-1", prefix: p("192.168.0.0/16"), ipipMode: mode, natOutgoing: natOutgoing)
            ],
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
    }
}

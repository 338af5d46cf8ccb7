import Foundation
import Testing
import Yams

@testable import IPIPControl

/// `ipipctl node status`'s three renderings of one known status.
@Suite("Node status: table, JSON and YAML of a known status")
struct NodeStatusTests {
    static let known = NodeStatus(
        node: "node-a", nodeIP: "10.0.0.1/24", pid: 4242, startedAt: "2026-12-04T18:00:00.000Z", workers: 1,
        uplink: .init(name: "eth0", mtu: 1500, transmit: "xdp", receive: "AF_PACKET with virtio headers, recvmmsg"),
        tunnel: .init(name: "ipip0", mtu: 1480, address: "192.168.0.1", offloads: "virtio headers, offloads TSO4"),
        topology: .init(
            generation: 3, changedAt: "2026-12-04T18:01:00.000Z", reloads: 2, reloadErrors: 1,
            lastReloadError: "cluster.yaml:4:3: spec.cidr: invalid CIDR", lastReloadErrorAt: "2026-12-04T18:02:00.000Z",
            warnings: []),
        pools: [
            .init(
                name: "ippool-ipip-1", cidr: "192.168.0.0/16", ipipMode: "CrossSubnet", vxlan: false, natOutgoing: true,
                disabled: false, encapsulatedPeers: ["node-c"], nativePeers: ["node-b"])
        ],
        peers: [
            .init(
                name: "node-b", nodeIP: "10.0.0.2/24", tunnelAddress: "192.168.1.1", blocks: ["192.168.1.0/26"],
                route: "native", pathMTU: nil, egress: .init(), ingress: .init()),
            .init(
                name: "node-c", nodeIP: "10.0.1.3/24", tunnelAddress: nil, blocks: ["192.168.2.0/26"], route: "ipip",
                pathMTU: 1400, egress: .init(packets: 3, bytes: 252), ingress: .init(packets: 3, bytes: 312)),
        ],
        nat: .init(portRange: "32768-65535", portsAvailable: 32768, portsInUse: 1, sessions: 2))

    @Test("JSON: calicoctl's shape (camelCase, two-space indents), and it decodes back to the same status")
    func json() throws {
        let text = try Self.known.rendered(.json)
        #expect(text.hasPrefix("{\n  \"nat\" : {\n"))
        #expect(text.contains("\"encapsulatedPeers\" : [\n        \"node-c\"\n      ]"))
        #expect(text.contains("\"pathMTU\" : 1400"))
        let back = try JSONDecoder().decode(NodeStatus.self, from: Data(text.utf8))
        #expect(back == Self.known)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let peers = try #require(object["peers"] as? [[String: Any]])
        #expect((peers[1]["egress"] as? [String: Any])?["packets"] as? Int == 3)
    }

    @Test("YAML: the same fields, and it decodes back")
    func yaml() throws {
        let text = try Self.known.rendered(.yaml)
        #expect(text.contains("node: node-a\n"))
        #expect(text.contains("ipipMode: CrossSubnet\n"))
        #expect(text.contains("lastReloadError: 'cluster.yaml:4:3: spec.cidr: invalid CIDR'\n"))
        #expect(try YAMLDecoder().decode(NodeStatus.self, from: text) == Self.known)
    }

    @Test("table: the sentence, the node fields, the pools with who encapsulates, the peers with their counters")
    func table() throws {
        let text = try Self.known.rendered(.table)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines[0] == "ipipd is running on node-a (pid 4242, 1 worker, since 2026-12-04T18:00:00.000Z).")
        let expected = [
            "| node              | node-a 10.0.0.1/24" + String(repeating: " ", count: 50) + "|",
            "| last reload error | 2026-12-04T18:02:00.000Z: cluster.yaml:4:3: spec.cidr: invalid CIDR |",
            "| NAT               | ports 32768-65535 (32768 per protocol), 1 in use, 2 sessions        |",
            "IPv4 pools",
            "| ippool-ipip-1 | 192.168.0.0/16 | CrossSubnet | yes          | node-c          | node-b    |",
            "| node-b | 10.0.0.2/24 | 192.168.1.0/26 | native | -        | 0           | 0            | 0"
                + "            | 0             |",
            "| node-c | 10.0.1.3/24 | 192.168.2.0/26 | ipip   | 1400     | 3           | 252          | 3"
                + "            | 312           |",
        ]
        for row in expected { #expect(lines.contains(row), "\(row)") }
        // Every table line of a grid has the same width as its rule.
        for block in text.components(separatedBy: "\n\n") where block.contains("+-") {
            let rows = block.split(separator: "\n").filter { $0.hasPrefix("+") || $0.hasPrefix("|") }
            #expect(Set(rows.map(\.count)).count == 1, "ragged table:\n\(block)")
        }
    }
}

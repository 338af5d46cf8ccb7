import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPResources

/// The recorded engine state of a flight recording's cluster.yaml: written, split off the
/// manifests at its marker, read back equal; bad values named by file, line and field.
@Suite struct RecordedEngineStateTests {
    static let state = RecordedEngineState(
        node: "node-a", worker: 0, workers: 1, windowStart: 1_764_000_000_123_456_789, natSecret: 0xDEAD_BEEF_0123,
        state: EngineState(
            pathMTUs: [.init(peer: IPv4Address("10.0.1.3")!, mtu: 1300, expires: 1_764_000_600_000_000_000)],
            icmp: EngineScalarState(icmpTokens: 49_000_000_000, icmpLastRefill: .min, nextIdentification: 9),
            natSessions: [
                NATSessionState(
                    proto: .udp, internalAddress: IPv4Address("192.168.0.10")!, internalPort: 40000,
                    externalPort: 61000, remoteAddress: IPv4Address("198.51.100.10")!, remotePort: 5400,
                    lastActivity: 1_764_000_000_000_000_001),
                NATSessionState(
                    proto: .tcp, internalAddress: IPv4Address("192.168.0.10")!, internalPort: 40001,
                    externalPort: 61001, remoteAddress: IPv4Address("198.51.100.10")!, remotePort: 80,
                    tcpState: .established, lastActivity: 1_764_000_000_500_000_000),
            ]),
        underlayMTU: 1450, natTimeouts: NATTimeouts(udp: 30), icmpRatePerSecond: 500, icmpBurst: 25)

    static var manifests: String {
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 192.168.0.0/16}\n"
    }

    @Test func roundTripThroughTheClusterYAML() throws {
        var second = Self.state
        second.worker = 1
        second.workers = 2
        var first = Self.state
        first.workers = 2
        let text = Self.manifests + first.yaml(first: true) + second.yaml(first: false)
        let directory = TempDir()
        let path = directory.write("cluster.yaml", text)
        let loaded = try #require(try ClusterLoader.recording(path: path))
        #expect(loaded.set.pools.map(\.metadata.name) == ["p"])
        #expect(loaded.states == [first, second])
        // Ordinary manifests are not a recording.
        #expect(try ClusterLoader.recording(path: directory.write("plain.yaml", Self.manifests)) == nil)
    }

    @Test func badValuesAreNamedByLineAndField() throws {
        var text = Self.manifests + Self.state.yaml(first: true)
        text = text.replacingOccurrences(of: "remote: \"198.51.100.10:5400\"", with: "remote: \"198.51.100.10\"")
        text = text.replacingOccurrences(of: "mtu: 1300", with: "mtu: lots")
        text = text.replacingOccurrences(of: "workers: 1", with: "workers: 1\n  color: blue")
        let path = TempDir().write("cluster.yaml", text)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        func line(of needle: String) -> Int { (lines.firstIndex { $0.contains(needle) } ?? -1) + 1 }
        #expect {
            _ = try ClusterLoader.recording(path: path)
        } throws: { error in
            let s = "\(error)"
            return s.contains(
                "\(path):\(line(of: "198.51.100.10\"")):")
                && s.contains(
                    "RecordedEngineState(node-a-worker-0) spec.natSessions[0].remote: '198.51.100.10' is not ADDRESS:PORT"
                )
                && s.contains("\(path):\(line(of: "mtu: lots")):")
                && s.contains("spec.pathMTUs[0].mtu: 'lots' is not an integer")
                && s.contains("spec.color: unknown field")
        }
    }

    @Test func theManifestsPartKeepsItsErrorsAndLines() throws {
        let text =
            Self.manifests.replacingOccurrences(of: "192.168.0.0/16", with: "192.168.0.0/99")
            + Self.state.yaml(first: true)
        let path = TempDir().write("cluster.yaml", text)
        #expect {
            _ = try ClusterLoader.recording(path: path)
        } throws: { error in
            "\(error)".contains("\(path):4:") && "\(error)".contains("spec.cidr")
        }
    }

    @Test func aMarkerWithNothingAfterItIsAnError() throws {
        let path = TempDir().write("cluster.yaml", Self.manifests + RecordedEngineState.marker + "\n")
        #expect {
            _ = try ClusterLoader.recording(path: path)
        } throws: { error in
            "\(error)".contains("no RecordedEngineState document after the recorder's marker line")
        }
    }
}

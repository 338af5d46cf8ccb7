import Foundation
import IPIPCore
import IPIPDatastore
import IPIPLinux
import IPIPResources
import IPIPTestSupport
import Testing

@testable import IPIPDataplane

/// `Daemon.run()` on a `FakeHost` with its resources in a real etcd (`DatastoreSource` over
/// `EtcdDatastore`, the watch included): what a value that is not Calico's JSON does to a running
/// daemon.
@Suite("Daemon over a real etcd: a watched value turned to garbage", .serialized, .needsEtcd)
struct DaemonEtcdTests {
    /// Waits until the store's change token differs from `token` (the watch saw a write).
    static func waitForChange(_ store: EtcdDatastore, from token: String?) -> String? {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let now = store.changeToken()
            if now != token { return now }
            usleep(20_000)
        }
        return nil
    }

    static func nodeB(_ address: String) -> [UInt8] {
        Array(
            #"{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"node-b"},"spec":{"bgp":{"ipv4Address":"\#(address)","ipv4IPIPTunnelAddr":"192.168.1.1"}}}"#
                .utf8)
    }

    @Test(
        "garbage in a watched key: the reload is refused, named and counted, the topology stays; a later good write is applied",
        arguments: [
            ("invalid JSON", Array(#"{"kind":"Node","apiVersion":"#.utf8)),
            ("binary", [0x00, 0xFF, 0xFE, 0x7B, 0x0A, 0x80]),
            (
                "the wrong kind",
                Array(
                    #"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"node-b"},"spec":{"cidr":"10.5.0.0/16"}}"#
                        .utf8)
            ),
        ])
    func garbage(_ what: String, _ value: [UInt8]) throws {
        guard let server = try EtcdServer.start() else { return }
        defer { server.stop() }
        let store = try server.freshStore()
        defer { store.stopWatching() }
        for resource in try ResourceDecoder.decode(ExampleCluster.manifests(), file: "cluster.yaml") {
            try store.create(resource)
        }
        let writer = EtcdClient(endpoints: [server.endpoint])
        let key = ResourceKind.node.etcdKey(name: "node-b")
        var before: [Route] = []
        var token: String?
        var problems: [String] = []
        let (logger, log) = RecordingLogHandler.logger()
        var daemon: Daemon!
        let host = FakeHost(
            uplinkAddress: IPv4Address("10.0.0.1")!,
            script: [
                { h in
                    before = h.fakeRouting.routes
                    token = store.changeToken()
                    do { _ = try writer.put(key, value) } catch { problems.append("put: \(error)") }
                    token = Self.waitForChange(store, from: token)
                    if token == nil { problems.append("the watch did not see the garbage") }
                    return []
                },
                { h in
                    #expect(h.datapath?.published.isEmpty == true, "\(what): nothing published")
                    #expect(h.fakeRouting.routes == before, "\(what): the routes stay")
                    #expect(daemon.controlCounters.topologyReloadErrors == 1)
                    #expect(log.contains("reload refused, the previous topology stays"), "\(log.messages)")
                    #expect(log.contains(key), "\(what): the error names the key: \(log.messages)")
                    do { _ = try writer.put(key, Self.nodeB("10.0.0.12/24")) } catch {
                        problems.append("put: \(error)")
                    }
                    if Self.waitForChange(store, from: token) == nil { problems.append("the watch missed the repair") }
                    return []
                },
                { h in
                    #expect(h.datapath?.published.count == 1, "\(what): the good write is applied")
                    let b = h.datapath?.topology?.nodes.first { $0.name == "node-b" }
                    #expect(b?.address == IPv4Address("10.0.0.12"))
                    return [.terminate]
                },
            ])
        var options = DaemonOptions(node: "node-a")
        options.metricsPort = 0
        daemon = Daemon(options: options, source: DatastoreSource(store: store), logger: logger, host: host)
        #expect(try daemon.run() == 0)
        #expect(problems.isEmpty, "\(problems)")
        #expect(daemon.controlCounters.topologyReloads == 1)
        #expect(daemon.controlCounters.topologyReloadErrors == 1)
    }
}

import Foundation
import IPIPEtcdWire
import Testing

/// The etcd JSON gateway's replies decoded without a server (the live side is in EtcdTests).
@Suite struct EtcdWireTests {
    static func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    @Test("range key-values: base64 keys and values, revisions as strings or numbers")
    func keyValues() throws {
        let reply = try #require(
            EtcdWire.object(
                Array(
                    """
                    {"header":{"revision":"42"},"kvs":[
                     {"key":"\(Self.b64("/calico/a"))","value":"\(Self.b64("{}"))","create_revision":"5","mod_revision":7},
                     {"key":"\(Self.b64("/calico/b"))"}]}
                    """.utf8)))
        #expect(EtcdWire.headerRevision(reply) == 42)
        let kvs = try EtcdWire.keyValues(reply["kvs"])
        #expect(
            kvs == [
                EtcdKeyValue(key: "/calico/a", value: Array("{}".utf8), createRevision: 5, modRevision: 7),
                EtcdKeyValue(key: "/calico/b", value: [], createRevision: 0, modRevision: 0),
            ])
        #expect(throws: EtcdWireError.self) { try EtcdWire.keyValues([["value": "e30="]]) }
        #expect(try EtcdWire.keyValues(nil).isEmpty)
    }

    @Test("transaction replies: the guard and the ranges read")
    func transaction() throws {
        let reply: [String: Any] = [
            "succeeded": true,
            "responses": [["response_put": [:]], ["response_range": ["kvs": [["key": Self.b64("k")]]]]],
        ]
        let (succeeded, reads) = try EtcdWire.transaction(reply)
        #expect(succeeded)
        #expect(reads.map { $0.map(\.key) } == [["k"]])
        #expect(try EtcdWire.transaction([:]).succeeded == false)
    }

    @Test("watch messages: created, changes, compaction, errors; blank lines and garbage are nothing")
    func watch() {
        func message(_ s: String) -> EtcdWatchMessage? { EtcdWire.watchMessage(Array(s.utf8)) }
        #expect(
            message(#"{"result":{"header":{"revision":"9"},"created":true}}"#)
                == .changes(created: true, revision: 9, events: []))
        #expect(
            message(
                #"{"result":{"header":{"revision":"10"},"events":[{"kv":{"key":"\#(Self.b64("/k"))","mod_revision":"10"}},{"type":"DELETE","kv":{"key":"\#(Self.b64("/j"))"}},{"kv":{}}]}}"#
            )
                == .changes(
                    created: false, revision: 10,
                    events: [
                        EtcdEvent(key: "/k", isDelete: false, modRevision: 10),
                        EtcdEvent(key: "/j", isDelete: true, modRevision: 0),
                    ]))
        #expect(message(#"{"result":{"compact_revision":"4"}}"#) == .compacted(revision: 4))
        #expect(message(#"{"error":{"message":"gone"}}"#) == .failure("etcd watch: gone"))
        #expect(message(" \r") == nil)
        #expect(message("[1,2]") == nil)
        #expect(message(#"{"other":1}"#) == nil)
    }

    @Test("IPAM values: affinity state and deletion, block owner, a block given up")
    func ipam() throws {
        #expect(EtcdWire.affinityState(Array(#"{"state":"pending","deleted":"true"}"#.utf8)) == ("pending", true))
        #expect(EtcdWire.affinityState(Array(#"{"deleted":true}"#.utf8)) == ("confirmed", true))
        #expect(EtcdWire.affinityState(Array("not json".utf8)) == ("confirmed", false))
        #expect(EtcdWire.blockAffinity(Array(#"{"affinity":"host:node-a"}"#.utf8)) == "host:node-a")
        #expect(EtcdWire.blockWithoutAffinity(Array(#"{"affinity":"host:a","allocations":[null,null]}"#.utf8)) == nil)
        let kept = try #require(
            EtcdWire.blockWithoutAffinity(Array(#"{"affinity":"host:a","allocations":[null,0]}"#.utf8)))
        let object = try #require(EtcdWire.object(kept))
        #expect(object["affinity"] is NSNull)
        #expect((object["allocations"] as? [Any])?.count == 2)
    }
}

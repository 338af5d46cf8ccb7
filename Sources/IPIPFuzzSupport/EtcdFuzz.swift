import Foundation
import IPIPEtcdWire
import IPIPResources

/// The `etcd` target: byte 0 picks what the rest is, as etcd's JSON gateway would deliver it:
/// - 0: a reply body to `range` or `txn`: the object, its revision, its key-values (and those
///   a transaction read), then every key-value's value decoded as the key says (below);
/// - 1: a watch stream: split into lines as the watch does, each line a watch message;
/// - 2: a stored value: a key, a NUL byte, the value; decoded as `EtcdDatastore` decodes what
///   it reads: an IPAM block-affinity key's value as affinity state, an IPAM block's as a block,
///   anything else as a stored Calico resource (JSON, unknown fields skipped);
/// - other: an error reply's message.
///
/// Invariants: no trap; a stored resource that decodes encodes back (as `EtcdDatastore` writes
/// it) to a value that decodes to the same encoding.
enum EtcdFuzz {
    static func run(_ input: UnsafeRawBufferPointer) -> [FuzzFinding] {
        guard let selector = input.first else { return [] }
        let body = [UInt8](input.dropFirst())
        switch selector {
        case 0:
            guard let reply = EtcdWire.object(body) else { return [] }
            _ = EtcdWire.headerRevision(reply)
            _ = EtcdWire.int64(reply["deleted"])
            var kvs = (try? EtcdWire.keyValues(reply["kvs"])) ?? []
            kvs += ((try? EtcdWire.transaction(reply))?.reads ?? []).joined()
            return kvs.flatMap { stored(key: $0.key, value: $0.value) }
        case 1:
            for line in body.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                _ = EtcdWire.watchMessage(Array(line))
            }
            return []
        case 2:
            let key = body.prefix { $0 != 0 }
            let value = body.dropFirst(key.count + 1)
            return stored(key: String(decoding: key, as: UTF8.self), value: Array(value))
        default:
            _ = EtcdWire.errorMessage(EtcdWire.object(body), body: body)
            return []
        }
    }

    static func stored(key: String, value: [UInt8]) -> [FuzzFinding] {
        if key.hasPrefix("/calico/ipam/v2/host/") {
            _ = EtcdWire.affinityState(value)
            return []
        }
        if key.hasPrefix("/calico/ipam/v2/assignment/") {
            _ = EtcdWire.blockAffinity(value)
            if let unowned = EtcdWire.blockWithoutAffinity(value), EtcdWire.object(unowned) == nil {
                return [FuzzFinding(kind: "etcd-block", message: "a block without affinity is not JSON")]
            }
            return []
        }
        let text = String(decoding: value, as: UTF8.self)
        guard let resource = try? ResourceDecoder.decodeStored(text, file: key) else { return [] }
        let encoded = ResourceEncoder.json(ResourceEncoder.value(resource, includeResourceVersion: false), indent: nil)
        do {
            let again = try ResourceDecoder.decodeStored(encoded, file: key)
            let reencoded = ResourceEncoder.json(
                ResourceEncoder.value(again, includeResourceVersion: false), indent: nil)
            if reencoded != encoded {
                return [
                    FuzzFinding(
                        kind: "etcd-roundtrip",
                        message: "stored value changed after a decode:\n\(encoded)\n\(reencoded)")
                ]
            }
            return []
        } catch {
            return [
                FuzzFinding(
                    kind: "etcd-roundtrip",
                    message: "the stored form of a decoded value is refused: \(error)\n\(encoded)")
            ]
        }
    }
}

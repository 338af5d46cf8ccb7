import Foundation

// What etcd's JSON gateway (grpc-gateway over the v3 API) sends back, decoded: reply objects,
// base64 key-values, revisions, watch stream messages, and the IPAM values Calico stores as JSON.
// Pure functions of bytes, apart from the transport (IPIPDatastore's EtcdClient), so the `etcd`
// fuzz target can drive them without a server and without linking the HTTP stack.

/// A key and its value, as `range` returns them.
public struct EtcdKeyValue: Hashable, Sendable {
    /// The key.
    public var key: String
    /// The value (UTF-8 bytes as stored).
    public var value: [UInt8]
    /// The revision of the key's creation.
    public var createRevision: Int64
    /// The revision of the key's last modification (Calico's resourceVersion).
    public var modRevision: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
    }

    /// The value as text.
    public var text: String { String(decoding: value, as: UTF8.self) }
}

/// One change seen by a watch.
public struct EtcdEvent: Sendable, Equatable {
    /// The key that changed.
    public var key: String
    /// True for a delete, false for a put.
    public var isDelete: Bool
    /// The revision of the change.
    public var modRevision: Int64

    public init(key: String, isDelete: Bool, modRevision: Int64) {
        self.key = key
        self.isDelete = isDelete
        self.modRevision = modRevision
    }
}

/// A reply etcd sent that does not have the shape the v3 API gives it.
public struct EtcdWireError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One message of a watch stream (one JSON object per line).
public enum EtcdWatchMessage: Sendable, Equatable {
    /// etcd ended the watch with an error.
    case failure(String)
    /// The watch's start revision was compacted away; everything must be read again.
    case compacted(revision: Int64)
    /// The watch was created (`created`) and/or keys changed, as of `revision`.
    case changes(created: Bool, revision: Int64, events: [EtcdEvent])
}

public enum EtcdWire {
    /// The JSON object of a reply body, or nil when the body is not a JSON object.
    public static func object(_ bytes: [UInt8]) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
    }

    /// What an error reply says: its `message` or `error` field, else the start of the body.
    public static func errorMessage(_ parsed: [String: Any]?, body: [UInt8]) -> String {
        (parsed?["message"] as? String) ?? (parsed?["error"] as? String)
            ?? String(decoding: body.prefix(300), as: UTF8.self)
    }

    /// A JSON object as compact bytes, keys sorted.
    public static func json(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }

    /// An int64 field: the gateway writes them as strings; numbers are taken too. Anything else
    /// is 0, as an absent field is.
    public static func int64(_ any: Any?) -> Int64 {
        if let s = any as? String { return Int64(s) ?? 0 }
        if let n = any as? NSNumber { return n.int64Value }
        return 0
    }

    /// `header.revision` of a reply, 0 when absent.
    public static func headerRevision(_ reply: [String: Any]) -> Int64 {
        int64((reply["header"] as? [String: Any])?["revision"])
    }

    /// The `kvs` of a range reply (or of a transaction's `response_range`).
    /// - Throws: `EtcdWireError` for a key-value without a base64 key.
    public static func keyValues(_ any: Any?) throws(EtcdWireError) -> [EtcdKeyValue] {
        var result: [EtcdKeyValue] = []
        for case let kv as [String: Any] in any as? [Any] ?? [] {
            guard let keyText = kv["key"] as? String, let key = Data(base64Encoded: keyText) else {
                throw EtcdWireError("etcd: a key-value without a key")
            }
            let value = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            result.append(
                EtcdKeyValue(
                    key: String(decoding: key, as: UTF8.self), value: Array(value),
                    createRevision: int64(kv["create_revision"]), modRevision: int64(kv["mod_revision"])))
        }
        return result
    }

    /// A transaction reply: whether the guard held, and the key-values of each `request_range`
    /// of the branch that ran, in order.
    /// - Throws: `EtcdWireError` for a key-value without a base64 key.
    public static func transaction(
        _ reply: [String: Any]
    ) throws(EtcdWireError) -> (
        succeeded: Bool, reads: [[EtcdKeyValue]]
    ) {
        let succeeded = reply["succeeded"] as? Bool ?? false
        var reads: [[EtcdKeyValue]] = []
        for case let response as [String: Any] in reply["responses"] as? [Any] ?? [] {
            if let range = response["response_range"] as? [String: Any] {
                reads.append(try keyValues(range["kvs"]))
            }
        }
        return (succeeded, reads)
    }

    /// One line of a watch stream; nil for a blank line, a line that is not a JSON object, and
    /// a message without a result.
    public static func watchMessage(_ line: [UInt8]) -> EtcdWatchMessage? {
        guard !line.allSatisfy({ $0 == 32 || $0 == 13 }), let message = object(line) else { return nil }
        if let error = message["error"] as? [String: Any] {
            return .failure("etcd watch: \(error["message"] as? String ?? "\(error)")")
        }
        guard let result = message["result"] as? [String: Any] else { return nil }
        let compacted = int64(result["compact_revision"])
        if compacted > 0 { return .compacted(revision: compacted) }
        var events: [EtcdEvent] = []
        for case let event as [String: Any] in result["events"] as? [Any] ?? [] {
            guard let kv = event["kv"] as? [String: Any], let keyText = kv["key"] as? String,
                let key = Data(base64Encoded: keyText)
            else { continue }
            events.append(
                EtcdEvent(
                    key: String(decoding: key, as: UTF8.self), isDelete: (event["type"] as? String) == "DELETE",
                    modRevision: int64(kv["mod_revision"])))
        }
        return .changes(created: result["created"] as? Bool == true, revision: headerRevision(result), events: events)
    }

    // MARK: IPAM values

    /// A block-affinity value (`{"state":"confirmed","deleted":"true"}`): its state (confirmed
    /// when absent or not a string) and whether it is marked deleted (a bool or the string
    /// `"true"`). A value that is not a JSON object reads as confirmed, not deleted.
    public static func affinityState(_ value: [UInt8]) -> (state: String, deleted: Bool) {
        let object = object(value) ?? [:]
        let state = object["state"] as? String ?? "confirmed"
        let deleted: Bool =
            switch object["deleted"] {
            case let flag as Bool: flag
            case let text as String: text == "true"
            default: false
            }
        return (state, deleted)
    }

    /// An IPAM block's `affinity` (`host:<node>`), if any.
    public static func blockAffinity(_ value: [UInt8]) -> String? {
        object(value)?["affinity"] as? String
    }

    /// nil when no ordinal of the block is allocated (it can be deleted); otherwise the block with
    /// `affinity` set to null, its allocations kept.
    public static func blockWithoutAffinity(_ value: [UInt8]) -> [UInt8]? {
        guard var object = object(value) else { return nil }
        let allocations = object["allocations"] as? [Any] ?? []
        if allocations.allSatisfy({ $0 is NSNull }) { return nil }
        object["affinity"] = NSNull()
        return json(object)
    }
}

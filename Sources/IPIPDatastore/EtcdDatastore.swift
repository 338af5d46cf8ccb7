import Foundation
import IPIPCore
import IPIPEtcdWire
import IPIPResources
import Synchronization

/// The cluster datastore: etcd v3 with Calico's key layout and JSON values
/// (libcalico-go's etcdv3 key layout), so that it reads what a real Calico cluster (datastore type
/// `etcdv3`) wrote and Calico reads what it writes.
///
/// | Resource | Key | Value |
/// |---|---|---|
/// | IPPool, Node, FelixConfiguration | `/calico/resources/v3/projectcalico.org/<plural>/<name>` | the v3 object without `resourceVersion` |
/// | BlockAffinity | `/calico/ipam/v2/host/<node>/ipv4/block/<a.b.c.d-26>` | `{"state":"confirmed"}` |
/// | (the block itself, written with a claim) | `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-26>` | Calico's AllocationBlock, every ordinal free |
///
/// - resourceVersion is the key's mod revision; create, update and delete are etcd transactions
///   guarded on the key's absence or its mod revision, so concurrent writers cannot lose updates.
/// - A BlockAffinity's name is Calico's (`<node>-<cidr with . and / as ->`); it is not stored (the
///   key holds node and CIDR). Claiming one creates the affinity key and the IPAM block key in one
///   transaction that requires both to be absent: a block can be claimed once, as with Calico's IPAM.
///   Releasing deletes the affinity and the block when no address in it is allocated; a block with
///   allocations (a Calico workload still uses it) keeps them and loses only its affinity.
/// - Stored objects are decoded leniently (unknown fields skipped, as Go's `json.Unmarshal` does), so
///   objects a newer Calico wrote still load.
/// - `changeToken()` follows one etcd watch on `/calico/`, filtered to the keys above: the daemon
///   learns of a change as soon as etcd reports it, without polling etcd.
public final class EtcdDatastore: Datastore, @unchecked Sendable {
    /// The client.
    public let client: EtcdClient

    /// The prefix of Calico's v3 resources.
    public static let resourcePrefix = "/calico/resources/v3/projectcalico.org/"
    /// The prefix of block-affinity keys.
    public static let affinityPrefix = "/calico/ipam/v2/host/"
    /// The prefix of IPAM block keys.
    public static let blockPrefix = "/calico/ipam/v2/assignment/"

    /// Opens a store on `endpoints` (`http://host:port`). Nothing is contacted until the first call.
    /// - Parameter watchRetryDelay: How long the watch waits before it reconnects after etcd went away.
    public init(endpoints: [String], watchRetryDelay: Double = 1) {
        client = EtcdClient(endpoints: endpoints)
        changes = ChangeWatcher(client: client, retryDelay: watchRetryDelay)
    }

    /// Opens a store with TLS material (for `https://` endpoints) and/or etcd user credentials.
    public init(
        endpoints: [String], tls: EtcdClient.TLSFiles?, credentials: EtcdClient.Credentials? = nil,
        watchRetryDelay: Double = 1
    ) throws(DatastoreError) {
        client = try EtcdClient(endpoints: endpoints, tls: tls, credentials: credentials)
        changes = ChangeWatcher(client: client, retryDelay: watchRetryDelay)
    }

    deinit { changes.stop() }

    public var description: String { "etcd " + client.endpoints.joined(separator: ",") }

    // MARK: Keys

    /// The key of a resource other than a BlockAffinity.
    public static func key(_ kind: ResourceKind, name: String) -> String { kind.etcdKey(name: name) }

    /// `a.b.c.d/26` → `a.b.c.d-26`, as Calico writes CIDRs into keys.
    static func keySegment(cidr: String) -> String { cidr.replacingOccurrences(of: "/", with: "-") }

    /// The block-affinity key of `node` for `cidr`.
    public static func affinityKey(node: String, cidr: IPPrefix) -> String {
        "\(affinityPrefix)\(node)/\(cidr.ipv4 != nil ? "ipv4" : "ipv6")/block/\(keySegment(cidr: cidr.description))"
    }

    /// The IPAM block key of `cidr`.
    public static func blockKey(cidr: IPPrefix) -> String {
        "\(blockPrefix)\(cidr.ipv4 != nil ? "ipv4" : "ipv6")/block/\(keySegment(cidr: cidr.description))"
    }

    /// Node and CIDR of a block-affinity key (`/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`).
    static func parseAffinityKey(_ key: String) -> (node: String, cidr: String)? {
        guard key.hasPrefix(affinityPrefix) else { return nil }
        let parts = key.dropFirst(affinityPrefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, !parts[0].isEmpty, parts[1] == "ipv4" || parts[1] == "ipv6", parts[2] == "block",
            let dash = parts[3].lastIndex(of: "-")
        else { return nil }
        let segment = parts[3]
        let cidr = String(segment[..<dash]) + "/" + String(segment[segment.index(after: dash)...])
        return (String(parts[0]), cidr)
    }

    // MARK: Reads

    public func fetch(_ kind: ResourceKind, name: String) throws(DatastoreError) -> Resource {
        if kind == .blockAffinity {
            guard let found = try fetchAll(.blockAffinity).first(where: { $0.name == name }) else {
                throw .doesNotExist(kind: kind.rawValue, name: name)
            }
            return found
        }
        let key = Self.key(kind, name: name)
        guard let kv = try client.range(key).kvs.first else { throw .doesNotExist(kind: kind.rawValue, name: name) }
        return try decode(kind, kv)
    }

    public func fetchAll(_ kind: ResourceKind) throws(DatastoreError) -> [Resource] {
        try fetchAll(kind, revision: nil).resources
    }

    public func fetchAll(
        _ kind: ResourceKind, skipped: (DatastoreError) -> Void
    ) throws(DatastoreError) -> [Resource] {
        try fetchAll(kind, revision: nil, skipped: skipped).resources
    }

    /// Strict: the first value that does not decode is the error.
    private func fetchAll(
        _ kind: ResourceKind, revision: Int64?
    ) throws(DatastoreError)
        -> (revision: Int64, resources: [Resource])
    {
        var first: DatastoreError?
        let result = try fetchAll(kind, revision: revision) { error in if first == nil { first = error } }
        if let first { throw first }
        return result
    }

    private func fetchAll(
        _ kind: ResourceKind, revision: Int64?, skipped: (DatastoreError) -> Void
    ) throws(DatastoreError)
        -> (revision: Int64, resources: [Resource])
    {
        let prefix = kind == .blockAffinity ? Self.affinityPrefix : Self.resourcePrefix + kind.plural + "/"
        let (seen, kvs) = try client.range(prefix, prefix: true, revision: revision)
        var resources: [Resource] = []
        for kv in kvs {
            if kind == .blockAffinity {
                guard Self.parseAffinityKey(kv.key) != nil else { continue }
            } else if kv.key.dropFirst(prefix.count).contains("/") {
                continue
            }
            do {
                resources.append(try decode(kind, kv))
            } catch {
                skipped(error)
            }
        }
        return (seen, resources.sorted { $0.name < $1.name })
    }

    /// Every object at one revision (a consistent snapshot, as Calico's syncer starts from). The
    /// first snapshot also fixes where the change watch starts: right after it, so that nothing
    /// written between this read and the watch's start is missed.
    public func resourceSet() throws(DatastoreError) -> ResourceSet {
        var set = ResourceSet()
        let (revision, pools) = try fetchAll(.ipPool, revision: nil)
        changes.noteSnapshot(revision)
        for case .ipPool(let r) in pools { set.pools.append(r) }
        for case .node(let r) in try fetchAll(.node, revision: revision).resources { set.nodes.append(r) }
        for case .blockAffinity(let r) in try fetchAll(.blockAffinity, revision: revision).resources {
            set.blockAffinities.append(r)
        }
        for case .felixConfiguration(let r) in try fetchAll(.felixConfiguration, revision: revision).resources {
            set.felixConfigurations.append(r)
        }
        return set
    }

    public func revision() throws(DatastoreError) -> Int64 { try client.currentRevision() }

    // MARK: Writes

    public func insert(_ resource: Resource) throws(DatastoreError) -> Resource {
        if case .blockAffinity(let affinity) = resource { return try claim(affinity) }
        let kind = ResourceKind(of: resource)
        let key = Self.key(kind, name: resource.name)
        let result = try client.txn([.absent(key)], success: [.put(key, Self.encode(resource))])
        guard result.succeeded else { throw .alreadyExists(kind: kind.rawValue, name: resource.name) }
        var stored = resource
        stored.metadata.resourceVersion = String(result.revision)
        return stored
    }

    public func replace(_ resource: Resource, ifRevision expected: String?) throws(DatastoreError) -> Resource {
        let kind = ResourceKind(of: resource)
        let key: String
        let value: [UInt8]
        if case .blockAffinity(let affinity) = resource {
            key = Self.affinityKey(node: affinity.spec.node, cidr: affinity.spec.prefix)
            value = Self.affinityValue(affinity)
        } else {
            key = Self.key(kind, name: resource.name)
            value = Self.encode(resource)
        }
        let guardOn = try revisionGuard(key: key, expected: expected, kind: kind, name: resource.name)
        let result = try client.txn([guardOn], success: [.put(key, value)], failure: [.get(key)])
        guard result.succeeded else {
            if result.reads.first?.isEmpty ?? true { throw .doesNotExist(kind: kind.rawValue, name: resource.name) }
            throw .updateConflict(kind: kind.rawValue, name: resource.name)
        }
        var stored = resource
        stored.metadata.resourceVersion = String(result.revision)
        return stored
    }

    public func remove(
        _ kind: ResourceKind, name: String, ifRevision expected: String?
    ) throws(DatastoreError)
        -> Resource
    {
        if kind == .blockAffinity { return try release(name: name, ifRevision: expected) }
        let key = Self.key(kind, name: name)
        // The object is read and decoded first, and the delete is guarded on that read: a value
        // that does not decode makes the delete fail whole, instead of deleting and then failing.
        guard let current = try client.range(key).kvs.first else {
            throw .doesNotExist(kind: kind.rawValue, name: name)
        }
        let old = try decode(kind, current)
        if let expected, expected != String(current.modRevision) {
            throw .updateConflict(kind: kind.rawValue, name: name)
        }
        let result = try client.txn(
            [.modRevision(key, current.modRevision)], success: [.delete(key)], failure: [.get(key)])
        guard result.succeeded else {
            if result.reads.first?.isEmpty ?? true { throw .doesNotExist(kind: kind.rawValue, name: name) }
            throw .updateConflict(kind: kind.rawValue, name: name)
        }
        return old
    }

    /// The guard of an update or delete: the given mod revision, or (with none) the key's current
    /// one, so that the write still fails cleanly if the key vanishes in between.
    private func revisionGuard(
        key: String, expected: String?, kind: ResourceKind, name: String
    ) throws(DatastoreError)
        -> EtcdClient.Compare
    {
        if let expected {
            guard let revision = Int64(expected) else { throw .updateConflict(kind: kind.rawValue, name: name) }
            return .modRevision(key, revision)
        }
        guard let current = try client.range(key).kvs.first else {
            throw .doesNotExist(kind: kind.rawValue, name: name)
        }
        return .modRevision(key, current.modRevision)
    }

    // MARK: IPAM keys

    /// Creates the affinity key and the block key together; both must be absent.
    private func claim(_ affinity: BlockAffinity) throws(DatastoreError) -> Resource {
        let affinityKey = Self.affinityKey(node: affinity.spec.node, cidr: affinity.spec.prefix)
        let blockKey = Self.blockKey(cidr: affinity.spec.prefix)
        let result = try client.txn(
            [.absent(affinityKey), .absent(blockKey)],
            success: [.put(affinityKey, Self.affinityValue(affinity)), .put(blockKey, Self.emptyBlock(affinity))],
            failure: [.get(affinityKey), .get(blockKey)])
        if !result.succeeded {
            if !(result.reads.first?.isEmpty ?? true) {
                throw .alreadyExists(kind: ResourceKind.blockAffinity.rawValue, name: affinity.metadata.name)
            }
            // The block exists without our affinity key. If it is already ours (a claim Calico left
            // half done), add the affinity; otherwise the block belongs to someone else.
            let block = result.reads.count > 1 ? result.reads[1].first : nil
            let owner = block.flatMap { Self.blockAffinity($0.value) }
            guard let block, owner == "host:\(affinity.spec.node)" else {
                throw .blockTaken(cidr: affinity.spec.cidr, owner: owner)
            }
            let retry = try client.txn(
                [.absent(affinityKey), .modRevision(blockKey, block.modRevision)],
                success: [.put(affinityKey, Self.affinityValue(affinity))])
            guard retry.succeeded else { throw .alreadyExists(kind: "BlockAffinity", name: affinity.metadata.name) }
            return stamped(.blockAffinity(affinity), retry.revision)
        }
        return stamped(.blockAffinity(affinity), result.revision)
    }

    /// Deletes an affinity key and, when its block is ours and empty, the block.
    private func release(name: String, ifRevision expected: String?) throws(DatastoreError) -> Resource {
        guard case .blockAffinity(let affinity) = try fetch(.blockAffinity, name: name) else {
            throw .doesNotExist(kind: "BlockAffinity", name: name)
        }
        let affinityKey = Self.affinityKey(node: affinity.spec.node, cidr: affinity.spec.prefix)
        let blockKey = Self.blockKey(cidr: affinity.spec.prefix)
        let current = affinity.metadata.resourceVersion.flatMap { Int64($0) } ?? 0
        let revision: Int64
        if let expected {
            guard let given = Int64(expected) else { throw .updateConflict(kind: "BlockAffinity", name: name) }
            revision = given
        } else {
            revision = current
        }
        for _ in 0..<5 {
            let block = try client.range(blockKey).kvs.first
            var compare: [EtcdClient.Compare] = [.modRevision(affinityKey, revision)]
            var success: [EtcdClient.Operation] = [.delete(affinityKey)]
            if let block {
                compare.append(.modRevision(blockKey, block.modRevision))
                if Self.blockAffinity(block.value) == "host:\(affinity.spec.node)" {
                    if let unowned = Self.blockWithoutAffinity(block.value) {
                        success.append(.put(blockKey, unowned))
                    } else {
                        success.append(.delete(blockKey))
                    }
                }
            } else {
                compare.append(.absent(blockKey))
            }
            let result = try client.txn(compare, success: success, failure: [.get(affinityKey)])
            if result.succeeded { return .blockAffinity(affinity) }
            guard let now = result.reads.first?.first else { throw .doesNotExist(kind: "BlockAffinity", name: name) }
            if now.modRevision != revision { throw .updateConflict(kind: "BlockAffinity", name: name) }
            // Only the block changed under us (an allocation): read it again.
        }
        throw .storage("etcd: could not release BlockAffinity(\(name)): its block keeps changing")
    }

    /// `{"state":"confirmed"}` (and `"deleted":"true"` only for an affinity being deleted).
    static func affinityValue(_ affinity: BlockAffinity) -> [UInt8] {
        var text = "{\"state\":\"\(affinity.spec.state.rawValue)\""
        if affinity.spec.deleted { text += ",\"deleted\":\"true\"" }
        return Array((text + "}").utf8)
    }

    /// Calico's AllocationBlock for a new claim: affine to the node, every ordinal unallocated.
    static func emptyBlock(_ affinity: BlockAffinity) -> [UInt8] {
        let prefix = affinity.spec.prefix
        let hostBits = prefix.ipv4 != nil ? 32 - prefix.length : 128 - prefix.length
        let count = 1 << Int(hostBits)
        var text = "{\"cidr\":\"\(prefix.description)\",\"affinity\":\"host:\(affinity.spec.node)\","
        text += "\"strictAffinity\":false,\"allocations\":["
        text += Array(repeating: "null", count: count).joined(separator: ",")
        text += "],\"unallocated\":["
        text += (0..<count).map(String.init).joined(separator: ",")
        text += "],\"attributes\":[]}"
        return Array(text.utf8)
    }

    /// The block's `affinity` (`host:<node>`), if any.
    static func blockAffinity(_ value: [UInt8]) -> String? { EtcdWire.blockAffinity(value) }

    /// nil when no ordinal of the block is allocated (it can be deleted); otherwise the block with
    /// `affinity` set to null, its allocations kept.
    static func blockWithoutAffinity(_ value: [UInt8]) -> [UInt8]? { EtcdWire.blockWithoutAffinity(value) }

    // MARK: Values

    static func encode(_ resource: Resource) -> [UInt8] {
        Array(ResourceEncoder.json(ResourceEncoder.value(resource, includeResourceVersion: false), indent: nil).utf8)
    }

    private func stamped(_ resource: Resource, _ revision: Int64) -> Resource {
        var stored = resource
        stored.metadata.resourceVersion = String(revision)
        return stored
    }

    /// One stored value as a resource, or an error naming the store and the key: a value that is
    /// not Calico's JSON for the key's kind, or whose name is not the key's.
    private func decode(_ kind: ResourceKind, _ kv: EtcdClient.KeyValue) throws(DatastoreError) -> Resource {
        let resource: Resource
        if kind == .blockAffinity {
            guard let (node, cidr) = Self.parseAffinityKey(kv.key) else {
                throw .storage("\(description): key \(kv.key) is not a block-affinity key")
            }
            // An empty value is an affinity an old Calico wrote (before states): confirmed, as
            // libcalico-go reads it. Anything else must be a JSON object.
            let object: [String: Any]
            if kv.value.isEmpty {
                object = [:]
            } else if let parsed = (try? JSONSerialization.jsonObject(with: Data(kv.value))) as? [String: Any] {
                object = parsed
            } else {
                throw .storage("\(description): key \(kv.key) is not a block affinity: \(Self.excerpt(kv.value))")
            }
            guard let state = object["state"].map({ $0 as? String }) ?? "confirmed" else {
                throw .storage("\(description): key \(kv.key): state is not a string: \(Self.excerpt(kv.value))")
            }
            let deleted: Bool =
                switch object["deleted"] {
                case let flag as Bool: flag
                case let text as String: text == "true"
                default: false
                }
            resource = try IPAM.affinityResource(
                node: node, cidr: cidr, state: state, deleted: deleted,
                source: "\(description)\(kv.key)")
        } else {
            do {
                resource = try ResourceDecoder.decodeStored(kv.text, file: "\(description)\(kv.key)")
            } catch {
                throw .storage("\(description): stored \(kind.rawValue) at \(kv.key) is not valid: \(error)")
            }
            guard ResourceKind(of: resource) == kind else {
                throw .storage("\(description): key \(kv.key) holds a \(resource.kind), not a \(kind.rawValue)")
            }
            let name = kv.key.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? ""
            guard resource.name == name else {
                throw .storage(
                    "\(description): key \(kv.key) holds \(kind.rawValue)(\(resource.name)), not \(kind.rawValue)(\(name))"
                )
            }
        }
        return stamped(resource, kv.modRevision)
    }

    /// The start of a value for an error message, printable.
    static func excerpt(_ value: [UInt8]) -> String {
        let text = String(decoding: value.prefix(60), as: UTF8.self).unicodeScalars.map { scalar in
            scalar.properties.generalCategory == .control ? "?" : String(scalar)
        }.joined()
        return "'" + text + (value.count > 60 ? "…' (\(value.count) bytes)" : "'")
    }

    // MARK: Watch

    private let changes: ChangeWatcher

    /// Whether an etcd key holds something the dataplane reads.
    static func isRelevant(_ key: String) -> Bool {
        if key.hasPrefix(affinityPrefix) { return parseAffinityKey(key) != nil }
        guard key.hasPrefix(resourcePrefix) else { return false }
        let rest = key.dropFirst(resourcePrefix.count)
        return ResourceKind.allCases.contains { $0 != .blockAffinity && rest.hasPrefix($0.plural + "/") }
    }

    /// Changes whenever a relevant key changes, as reported by a watch that starts on the first
    /// call (from the revision after the first `resourceSet()`, else from the current one). Changes
    /// made while the watch is down are reported when it resumes (it continues from the next
    /// revision it has not seen); after a compaction the token changes anyway (everything is read
    /// again).
    public func changeToken() -> String? { changes.token() }

    /// Whether the watch stream is established right now (for tests and diagnostics).
    public var isWatching: Bool { changes.isHealthy }

    /// Ends the watch (it also ends when the store is released).
    public func stopWatching() { changes.stop() }
}

/// One watch on `/calico/`, on its own thread, resumed from the next revision after a broken
/// stream and restarted (with everything reloaded) after a compaction.
private final class ChangeWatcher: @unchecked Sendable {
    private struct State {
        var handle: EtcdClient.Watch?
        var running = false
        var healthy = false
        /// Bumped when the watch had to start over (compaction): everything may have changed.
        var generation = 0
        /// The revision of the last relevant change seen.
        var lastChange: Int64 = 0
        /// The next revision to watch from; 0 = from the current revision.
        var next: Int64 = 0
    }

    let client: EtcdClient
    let retryDelay: Double
    private let state = Mutex(State())

    init(client: EtcdClient, retryDelay: Double) {
        self.client = client
        self.retryDelay = retryDelay
    }

    /// Fixes the watch's start after a snapshot at `revision`, unless the watch already knows
    /// where it is (first start, or a restart after a compaction, takes it).
    func noteSnapshot(_ revision: Int64) {
        state.withLock { state in
            if state.next == 0 { state.next = revision + 1 }
        }
    }

    var isHealthy: Bool { state.withLock { $0.healthy } }

    func token() -> String? {
        let (generation, lastChange): (Int, Int64) = state.withLock { state in
            if !state.running {
                state.running = true
                let handle = EtcdClient.Watch()
                state.handle = handle
                let thread = Thread { self.loop(handle) }
                thread.name = "ipipd-etcd-watch"
                thread.start()
            }
            return (state.generation, state.lastChange)
        }
        return "w\(generation):\(lastChange)"
    }

    func stop() { state.withLock { $0.handle?.cancel() } }

    private func loop(_ handle: EtcdClient.Watch) {
        while !handle.isCancelled {
            var start = state.withLock { $0.next }
            if start == 0 {
                guard let now = try? client.currentRevision() else {
                    Thread.sleep(forTimeInterval: retryDelay)
                    continue
                }
                start = now + 1
                state.withLock { $0.next = start }
            }
            do {
                try client.watch(prefix: "/calico/", from: start, handle: handle) { report in
                    self.state.withLock { state in
                        switch report {
                        case .created:
                            state.healthy = true
                        case .events(let events, _):
                            for event in events {
                                state.next = max(state.next, event.modRevision + 1)
                                if EtcdDatastore.isRelevant(event.key) {
                                    state.lastChange = max(state.lastChange, event.modRevision)
                                }
                            }
                        case .compacted:
                            state.generation += 1
                            state.next = 0
                            state.healthy = false
                            handle.restart()
                        }
                    }
                }
            } catch {
                state.withLock { $0.healthy = false }
                if handle.isCancelled { break }
                if state.withLock({ $0.next }) != 0 { Thread.sleep(forTimeInterval: retryDelay) }
            }
        }
        state.withLock {
            $0.healthy = false
            $0.running = false
        }
    }
}

extension DatastoreError {
    /// The IPAM block of `cidr` exists and is affine to another node (or to none).
    static func blockTaken(cidr: String, owner: String?) -> DatastoreError {
        .alreadyExists(kind: "IPAMBlock", name: cidr + (owner.map { " (affinity \($0))" } ?? " (no affinity)"))
    }
}

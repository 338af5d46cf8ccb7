import Foundation
import IPIPCore
import IPIPResources

/// The resource kinds a datastore holds, with calicoctl's names and aliases.
public enum ResourceKind: String, CaseIterable, Hashable, Sendable {
    /// `IPPool`.
    case ipPool = "IPPool"
    /// `Node`.
    case node = "Node"
    /// `BlockAffinity`.
    case blockAffinity = "BlockAffinity"
    /// `FelixConfiguration`.
    case felixConfiguration = "FelixConfiguration"

    /// The kind of a resource.
    public init(of resource: Resource) {
        switch resource {
        case .ipPool: self = .ipPool
        case .node: self = .node
        case .blockAffinity: self = .blockAffinity
        case .felixConfiguration: self = .felixConfiguration
        }
    }

    /// A kind as typed on the command line: the kind or one of its aliases, in any case
    /// (`ippool`, `ippools`, `ipp`, `ipps`, `pool`, `pools`; `node`, `nodes`, `no`, `nos`; ...).
    public init?(argument: String) {
        let lowered = argument.lowercased()
        guard let kind = Self.allCases.first(where: { $0.aliases.contains(lowered) }) else { return nil }
        self = kind
    }

    /// Lower-case names accepted for the kind (calicoctl's aliases for IPPool and Node).
    public var aliases: [String] {
        switch self {
        case .ipPool: ["ippool", "ippools", "ipp", "ipps", "pool", "pools"]
        case .node: ["node", "nodes", "no", "nos"]
        case .blockAffinity: ["blockaffinity", "blockaffinities", "blockaff", "blockaffs", "ba", "bas"]
        case .felixConfiguration:
            ["felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs", "fc", "fcs"]
        }
    }

    /// The plural used in Calico's etcd keys (`/calico/resources/v3/projectcalico.org/<plural>/<name>`).
    public var plural: String {
        switch self {
        case .ipPool: "ippools"
        case .node: "nodes"
        case .blockAffinity: "blockaffinities"
        case .felixConfiguration: "felixconfigurations"
        }
    }

    /// The etcd v3 key of a resource in Calico's layout (libcalico-go's etcdv3 key layout). Block affinities
    /// live under the IPAM keys in a real Calico etcd datastore; an etcd store must map them there.
    public func etcdKey(name: String) -> String { "/calico/resources/v3/projectcalico.org/\(plural)/\(name)" }
}

/// What can go wrong in a datastore operation. The descriptions are Calico's
/// (`lib/errors/errors.go`), so calicoctl's messages come out unchanged.
public enum DatastoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Create of a resource that exists.
    case alreadyExists(kind: String, name: String)
    /// Update, delete or get of a resource that does not exist.
    case doesNotExist(kind: String, name: String)
    /// Update or delete with a resourceVersion that is no longer current.
    case updateConflict(kind: String, name: String)
    /// A Calico validation error, already rendered (`error with field ...`).
    case validation(String)
    /// A write to a read-only datastore.
    case readOnly(String)
    /// A datastore type that is not available.
    case notSupported(String)
    /// The storage itself failed (I/O, corruption, locking).
    case storage(String)

    public var description: String {
        switch self {
        case .alreadyExists(let kind, let name): "resource already exists: \(kind)(\(name))"
        case .doesNotExist(let kind, let name): "resource does not exist: \(kind)(\(name)) with error: <nil>"
        case .updateConflict(let kind, let name): "update conflict: \(kind)(\(name))"
        case .validation(let message): message
        case .readOnly(let message): message
        case .notSupported(let message): message
        case .storage(let message): message
        }
    }

    /// `error with field <name> = '<value>' (<reason>)`, as libcalico-go renders one field.
    static func field(_ name: String, _ value: String, _ reason: String) -> DatastoreError {
        .validation("error with field \(name) = '\(value)' (\(reason))")
    }
}

/// Where Calico resources are kept. Implementations provide the key-level primitives, shaped like
/// etcd's (create-if-absent, update-if-revision, delete-if-revision, a store-wide revision); the
/// Calico client rules (`create`, `update`, `apply`, `delete`: uid and creationTimestamp, overlap on
/// create, immutable CIDR and blockSize, the pool-delete side effect) are written once, in the
/// extension below, on top of them.
///
/// Implementations: `SQLiteDatastore` (embedded, the default), `EtcdDatastore` (etcd v3 in
/// Calico's key layout, resourceVersion = the key's mod revision), `ManifestDatastore` (read-only).
public protocol Datastore: AnyObject {
    /// A human-readable name for logs and errors (`sqlite /var/lib/ipipd/datastore.sqlite`).
    var description: String { get }
    /// The object, with `metadata.resourceVersion` set. Throws `doesNotExist`.
    func fetch(_ kind: ResourceKind, name: String) throws(DatastoreError) -> Resource
    /// Every object of a kind, sorted by name, each with its resourceVersion. A stored value that
    /// does not decode is an error naming the store and the key (nothing is left out silently).
    func fetchAll(_ kind: ResourceKind) throws(DatastoreError) -> [Resource]
    /// Every object of a kind that decodes, sorted by name: each stored value that does not is left
    /// out and handed to `skipped` with an error naming the store and the key (libcalico-go's List
    /// skips values it cannot parse; docs/decisions.md, "Datastore: etcd"). The default is the
    /// strict `fetchAll`.
    func fetchAll(
        _ kind: ResourceKind, skipped: (DatastoreError) -> Void
    ) throws(DatastoreError) -> [Resource]
    /// Stores a new object (metadata as given, resourceVersion ignored). Throws `alreadyExists`.
    func insert(_ resource: Resource) throws(DatastoreError) -> Resource
    /// Replaces an object when its current resourceVersion is `revision` (any when nil). Throws
    /// `doesNotExist` or `updateConflict`.
    func replace(_ resource: Resource, ifRevision revision: String?) throws(DatastoreError) -> Resource
    /// Removes an object when its current resourceVersion is `revision` (any when nil); returns it
    /// as it was. Throws `doesNotExist` or `updateConflict`.
    func remove(_ kind: ResourceKind, name: String, ifRevision revision: String?) throws(DatastoreError) -> Resource
    /// A number that changes on every write (the store's revision).
    func revision() throws(DatastoreError) -> Int64
    /// Every object, as the dataplane reads them (a store may read them as one snapshot).
    func resourceSet() throws(DatastoreError) -> ResourceSet
    /// Something that changes when the objects may have changed, cheap enough to poll several times
    /// a second; nil when the store cannot tell. The default is `revision()`.
    func changeToken() -> String?
    /// Runs the `count` steps of one command in order (`step(0)`, `step(1)`, ...), stopping at the
    /// first that throws, and returns how many were stored and the error that stopped them. What
    /// the steps before the failing one wrote is stored; what the failing one wrote is not
    /// (calicoctl's "Partial success"). The default runs every step on its own, each primitive
    /// write its own transaction; `SQLiteDatastore` runs them all in one transaction, each step
    /// in a savepoint, which it rolls back when the step fails.
    func runSteps(_ count: Int, _ step: (Int) throws(DatastoreError) -> Void) -> (stored: Int, failure: DatastoreError?)
    /// The first pool by name, other than one named like `pool`, whose CIDR overlaps `pool`'s:
    /// the check of Calico's pool create. The default lists every pool (as libcalico-go does);
    /// a store may answer from an index it keeps during `runSteps`.
    func firstOverlappingPool(with pool: IPPool) throws(DatastoreError) -> IPPool?
}

extension Datastore {
    /// `get`: one object, or `doesNotExist`.
    public func get(_ kind: ResourceKind, name: String) throws(DatastoreError) -> Resource {
        try fetch(kind, name: name)
    }

    /// `list`: every object of a kind, sorted by name.
    public func list(_ kind: ResourceKind) throws(DatastoreError) -> [Resource] { try fetchAll(kind) }

    /// `list` as calicoctl's get shows it: the objects that decode, and an error for each that does not.
    public func list(
        _ kind: ResourceKind, skipped: (DatastoreError) -> Void
    ) throws(DatastoreError) -> [Resource] {
        try fetchAll(kind, skipped: skipped)
    }

    public func fetchAll(
        _ kind: ResourceKind, skipped: (DatastoreError) -> Void
    ) throws(DatastoreError) -> [Resource] {
        try fetchAll(kind)
    }

    /// The strict `fetchAll` over the lenient one: the first value left out is the error.
    func strictly(
        _ lenient: ((DatastoreError) -> Void) throws(DatastoreError) -> [Resource]
    ) throws(DatastoreError)
        -> [Resource]
    {
        var first: DatastoreError?
        let resources = try lenient { error in if first == nil { first = error } }
        if let first { throw first }
        return resources
    }

    public func changeToken() -> String? { (try? revision()).map { String($0) } }

    public func runSteps(
        _ count: Int, _ step: (Int) throws(DatastoreError) -> Void
    ) -> (stored: Int, failure: DatastoreError?) {
        for i in 0..<count {
            do {
                try step(i)
            } catch {
                return (i, error)
            }
        }
        return (count, nil)
    }

    public func firstOverlappingPool(with pool: IPPool) throws(DatastoreError) -> IPPool? {
        for case .ipPool(let other) in try fetchAll(.ipPool)
        where other.metadata.name != pool.metadata.name && other.spec.prefix.overlaps(pool.spec.prefix) {
            return other
        }
        return nil
    }

    /// Every object, as the dataplane reads them, kind by kind.
    public func resourceSet() throws(DatastoreError) -> ResourceSet {
        var set = ResourceSet()
        for resource in try fetchAll(.ipPool) { if case .ipPool(let r) = resource { set.pools.append(r) } }
        for resource in try fetchAll(.node) { if case .node(let r) = resource { set.nodes.append(r) } }
        for resource in try fetchAll(.blockAffinity) {
            if case .blockAffinity(let r) = resource { set.blockAffinities.append(r) }
        }
        for resource in try fetchAll(.felixConfiguration) {
            if case .felixConfiguration(let r) = resource { set.felixConfigurations.append(r) }
        }
        return set
    }

    /// Calico's Create: the resourceVersion must not be set; `uid` and `creationTimestamp` are
    /// set here (any written in the manifest are dropped, as calicoctl does); a new pool must not
    /// overlap another. Throws `alreadyExists` when the name is taken.
    @discardableResult
    public func create(_ resource: Resource) throws(DatastoreError) -> Resource {
        if let version = resource.metadata.resourceVersion, !version.isEmpty {
            throw .field("Metadata.ResourceVersion", version, "field must not be set for a Create request")
        }
        if case .ipPool(let pool) = resource {
            if let other = try firstOverlappingPool(with: pool) {
                throw .field(
                    "IPPool.Spec.CIDR", pool.spec.cidr,
                    "IPPool(\(pool.metadata.name)) CIDR overlaps with IPPool(\(other.metadata.name)) CIDR \(other.spec.cidr)"
                )
            }
        }
        var stored = resource
        stored.metadata.resourceVersion = nil
        stored.metadata.uid = UUID().uuidString.lowercased()
        stored.metadata.creationTimestamp = Self.timestamp()
        return try insert(stored)
    }

    /// Calico's Update: replaces the spec, labels and annotations of an existing object, keeping
    /// its uid and creationTimestamp. With a resourceVersion it succeeds only if that is still
    /// current (`updateConflict` otherwise); without one it updates the current object, retrying
    /// up to 5 times if another writer gets in between (calicoctl's loop). CIDR and blockSize of a
    /// pool cannot change.
    @discardableResult
    public func update(_ resource: Resource) throws(DatastoreError) -> Resource {
        let kind = ResourceKind(of: resource)
        let given = resource.metadata.resourceVersion.flatMap { $0.isEmpty ? nil : $0 }
        var attempt = 0
        while true {
            attempt += 1
            let current = try fetch(kind, name: resource.name)
            try Self.checkImmutable(current: current, new: resource)
            var stored = resource
            stored.metadata.uid = current.metadata.uid
            stored.metadata.creationTimestamp = current.metadata.creationTimestamp
            stored.metadata.resourceVersion = nil
            do {
                return try replace(stored, ifRevision: given ?? current.metadata.resourceVersion)
            } catch .updateConflict where given == nil && attempt < 5 {
                continue
            }
        }
    }

    /// calicoctl's apply: create; when the object exists, update it (with the resourceVersion of
    /// the manifest, if it has one).
    @discardableResult
    public func apply(_ resource: Resource) throws(DatastoreError) -> Resource {
        if resource.metadata.resourceVersion?.isEmpty ?? true {
            do {
                return try create(resource)
            } catch .alreadyExists {
                // fall through to update
            }
        } else {
            do {
                _ = try fetch(ResourceKind(of: resource), name: resource.name)
            } catch .doesNotExist {
                var fresh = resource
                fresh.metadata.resourceVersion = nil
                return try create(fresh)
            }
        }
        return try update(resource)
    }

    /// Calico's Delete. For an IPPool, as libcalico-go does: the pool is first updated to
    /// `disabled: true` (so watchers stop using it), then after `poolDisableGrace` its block
    /// affinities are released, then the pool is deleted.
    @discardableResult
    public func delete(
        _ kind: ResourceKind, name: String, resourceVersion: String? = nil,
        poolDisableGrace: Duration = .milliseconds(500)
    ) throws(DatastoreError) -> Resource {
        let given = resourceVersion.flatMap { $0.isEmpty ? nil : $0 }
        guard kind == .ipPool else { return try remove(kind, name: name, ifRevision: given) }
        let current = try fetch(.ipPool, name: name)
        if let given, current.metadata.resourceVersion != given {
            throw .updateConflict(kind: kind.rawValue, name: name)
        }
        guard case .ipPool(var pool) = current else { return try remove(kind, name: name, ifRevision: given) }
        var revision = current.metadata.resourceVersion
        if !pool.spec.disabled {
            pool.spec.disabled = true
            revision = try replace(.ipPool(pool), ifRevision: revision).metadata.resourceVersion
            if poolDisableGrace > .zero { Self.sleep(poolDisableGrace) }
        }
        for case .blockAffinity(let affinity) in try fetchAll(.blockAffinity)
        where pool.spec.prefix.overlaps(affinity.spec.prefix) {
            do {
                _ = try remove(.blockAffinity, name: affinity.metadata.name, ifRevision: nil)
            } catch .doesNotExist {
                continue
            }
        }
        var removed = try remove(.ipPool, name: name, ifRevision: revision)
        removed.metadata.resourceVersion = revision
        return removed
    }

    private static func checkImmutable(current: Resource, new: Resource) throws(DatastoreError) {
        guard case .ipPool(let old) = current, case .ipPool(let pool) = new else { return }
        if old.spec.prefix != pool.spec.prefix {
            throw .field("IPPool.Spec.CIDR", pool.spec.cidr, "IPPool CIDR cannot be modified")
        }
        if old.spec.blockSize != pool.spec.blockSize {
            throw .field("IPPool.Spec.BlockSize", String(pool.spec.blockSize), "IPPool BlockSize cannot be modified")
        }
    }

    /// RFC 3339 UTC with second precision, as Kubernetes writes `creationTimestamp`
    /// (`2026-12-04T03:53:21Z`; fractions of a second dropped). From `gmtime_r`: a new
    /// `ISO8601DateFormatter` per object was a third of the CPU time of `ipipctl apply` on SQLite.
    public static func timestamp(_ date: Date = Date()) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var t = tm()
        gmtime_r(&seconds, &t)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let year = String(t.tm_year + 1900)
        return String(repeating: "0", count: max(0, 4 - year.count)) + year + "-" + two(t.tm_mon + 1) + "-"
            + two(t.tm_mday) + "T" + two(t.tm_hour) + ":" + two(t.tm_min) + ":" + two(t.tm_sec) + "Z"
    }

    private static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

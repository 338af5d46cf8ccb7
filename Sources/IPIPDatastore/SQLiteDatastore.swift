import Foundation
import GRDB
import IPIPResources

/// The embedded datastore: one SQLite file (through GRDB), safe for several `ipipctl` processes
/// and a running `ipipd` at once.
///
/// - WAL journal: readers never block the writer and see only committed data.
/// - Every write is one `BEGIN IMMEDIATE` transaction (so two writers queue instead of failing on
///   a lock upgrade), with a busy timeout during which a writer waits for the other. The steps of
///   one command (`runSteps`: every resource of `ipipctl apply -f`) share one such transaction,
///   each in a savepoint: one commit (one fsync) per command instead of one per resource.
/// - `synchronous = FULL`: a committed write survives a crash of the process (kill -9) and of the
///   machine; an interrupted one leaves nothing behind.
/// - Layout, the same shape as Calico's etcd: table `resources` (kind, name, revision, value)
///   where `value` is the object's JSON as Calico stores it in etcd (no resourceVersion) and
///   `revision` is the store revision of the object's last write; table `store` holds the store
///   revision, bumped by every write. An object's resourceVersion is its revision, as etcd's mod
///   revision is in Calico.
public final class SQLiteDatastore: Datastore, @unchecked Sendable {
    /// The database file.
    public let path: String
    private let queue: DatabaseQueue
    /// The open transaction of `runSteps`, which every primitive uses while it runs (GRDB's queue
    /// is not reentrant). Only the thread running `runSteps` sets it.
    private var current: Database?
    /// During `runSteps`: the stored pools by name and their CIDRs indexed, built on first use and
    /// kept up to date by this store's own writes (nothing else can write inside the transaction).
    private var pools: (byName: [String: IPPool], index: PrefixOverlapIndex<String>)?

    /// The schema version this code writes.
    static let schemaVersion = 1

    /// Opens (creating if needed, with its directory) the store at `path`.
    /// - Parameter busyTimeout: How long a write waits for another process's write to finish.
    public init(path: String, busyTimeout: TimeInterval = 30) throws(DatastoreError) {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        do {
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            var configuration = Configuration()
            configuration.busyMode = .timeout(busyTimeout)
            configuration.journalMode = .wal
            configuration.label = "ipipd-datastore"
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try queue.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                try db.inTransaction(.immediate) {
                    try db.execute(
                        sql: """
                            CREATE TABLE IF NOT EXISTS store (
                                id INTEGER PRIMARY KEY CHECK (id = 1),
                                revision INTEGER NOT NULL,
                                schema INTEGER NOT NULL
                            );
                            CREATE TABLE IF NOT EXISTS resources (
                                kind TEXT NOT NULL,
                                name TEXT NOT NULL,
                                revision INTEGER NOT NULL,
                                value TEXT NOT NULL,
                                PRIMARY KEY (kind, name)
                            ) WITHOUT ROWID;
                            INSERT OR IGNORE INTO store (id, revision, schema) VALUES (1, 0, \(Self.schemaVersion));
                            """)
                    return .commit
                }
            }
            let schema = try queue.read { db in try Int.fetchOne(db, sql: "SELECT schema FROM store WHERE id = 1") }
            guard schema == Self.schemaVersion else {
                throw DatastoreError.storage(
                    "datastore \(path) has schema \(schema.map(String.init) ?? "none"); this ipipd reads schema \(Self.schemaVersion)"
                )
            }
        } catch let error as DatastoreError {
            throw error
        } catch {
            throw .storage("cannot open datastore \(path): \(Self.describe(error))")
        }
    }

    public var description: String { "sqlite \(path)" }

    /// The default location: `/var/lib/ipipd/datastore.sqlite` as root, otherwise
    /// `$XDG_DATA_HOME/ipipd/datastore.sqlite` or `~/.local/share/ipipd/datastore.sqlite`.
    public static func defaultPath(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        isRoot: Bool = geteuid() == 0
    ) -> String {
        if isRoot { return "/var/lib/ipipd/datastore.sqlite" }
        if let data = environment["XDG_DATA_HOME"], data.hasPrefix("/") { return data + "/ipipd/datastore.sqlite" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.local/share/ipipd/datastore.sqlite"
    }

    // MARK: Primitives

    public func fetch(_ kind: ResourceKind, name: String) throws(DatastoreError) -> Resource {
        let row = try read { db in
            try Row.fetchOne(
                db, sql: "SELECT revision, value FROM resources WHERE kind = ? AND name = ?",
                arguments: [kind.rawValue, name])
        }
        guard let row else { throw .doesNotExist(kind: kind.rawValue, name: name) }
        return try decode(kind: kind, name: name, row: row)
    }

    public func fetchAll(_ kind: ResourceKind) throws(DatastoreError) -> [Resource] {
        try strictly { skipped throws(DatastoreError) in try fetchAll(kind, skipped: skipped) }
    }

    public func fetchAll(
        _ kind: ResourceKind, skipped: (DatastoreError) -> Void
    ) throws(DatastoreError) -> [Resource] {
        let rows = try read { db in
            try Row.fetchAll(
                db, sql: "SELECT name, revision, value FROM resources WHERE kind = ? ORDER BY name",
                arguments: [kind.rawValue])
        }
        var resources: [Resource] = []
        for row in rows {
            do {
                let name = try column(row, "name", as: String.self, kind: kind, name: "?")
                resources.append(try decode(kind: kind, name: name, row: row))
            } catch {
                skipped(error)
            }
        }
        return resources
    }

    public func insert(_ resource: Resource) throws(DatastoreError) -> Resource {
        let kind = ResourceKind(of: resource)
        let value = Self.encode(resource)
        let revision: Int64? = try write { db in
            if try Bool.fetchOne(
                db, sql: "SELECT 1 FROM resources WHERE kind = ? AND name = ?",
                arguments: [kind.rawValue, resource.name]) != nil
            {
                return nil
            }
            let revision = try Self.bump(db)
            try db.execute(
                sql: "INSERT INTO resources (kind, name, revision, value) VALUES (?, ?, ?, ?)",
                arguments: [kind.rawValue, resource.name, revision, value])
            return revision
        }
        guard let revision else { throw .alreadyExists(kind: kind.rawValue, name: resource.name) }
        var stored = resource
        stored.metadata.resourceVersion = String(revision)
        noteWritten(stored)
        return stored
    }

    public func replace(_ resource: Resource, ifRevision expected: String?) throws(DatastoreError) -> Resource {
        let kind = ResourceKind(of: resource)
        let value = Self.encode(resource)
        let outcome: Result<Int64, DatastoreError> = try write { db in
            guard
                let current = try Int64.fetchOne(
                    db, sql: "SELECT revision FROM resources WHERE kind = ? AND name = ?",
                    arguments: [kind.rawValue, resource.name])
            else { return .failure(.doesNotExist(kind: kind.rawValue, name: resource.name)) }
            if let expected, expected != String(current) {
                return .failure(.updateConflict(kind: kind.rawValue, name: resource.name))
            }
            let revision = try Self.bump(db)
            try db.execute(
                sql: "UPDATE resources SET revision = ?, value = ? WHERE kind = ? AND name = ?",
                arguments: [revision, value, kind.rawValue, resource.name])
            return .success(revision)
        }
        var stored = resource
        stored.metadata.resourceVersion = String(try outcome.get())
        noteWritten(stored)
        return stored
    }

    public func remove(
        _ kind: ResourceKind, name: String, ifRevision expected: String?
    ) throws(DatastoreError)
        -> Resource
    {
        // The object is decoded before it is deleted, in the same transaction: one that no longer
        // decodes makes the delete fail whole, instead of deleting and then reporting an error.
        let outcome: Result<Resource, DatastoreError> = try write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT revision, value FROM resources WHERE kind = ? AND name = ?",
                    arguments: [kind.rawValue, name])
            else { return .failure(.doesNotExist(kind: kind.rawValue, name: name)) }
            let resource: Resource
            do throws(DatastoreError) {
                resource = try self.decode(kind: kind, name: name, row: row)
            } catch {
                return .failure(error)
            }
            if let expected, expected != resource.metadata.resourceVersion {
                return .failure(.updateConflict(kind: kind.rawValue, name: name))
            }
            _ = try Self.bump(db)
            try db.execute(sql: "DELETE FROM resources WHERE kind = ? AND name = ?", arguments: [kind.rawValue, name])
            return .success(resource)
        }
        let resource = try outcome.get()
        if kind == .ipPool { noteRemoved(pool: name) }
        return resource
    }

    public func revision() throws(DatastoreError) -> Int64 {
        try read { db in try Int64.fetchOne(db, sql: "SELECT revision FROM store WHERE id = 1") ?? 0 }
    }

    /// SQLite's `PRAGMA integrity_check` result (`ok` for a sound file).
    public func integrityCheck() throws(DatastoreError) -> String {
        try read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: "\n") }
    }

    // MARK: Steps

    public func runSteps(
        _ count: Int, _ step: (Int) throws(DatastoreError) -> Void
    ) -> (stored: Int, failure: DatastoreError?) {
        guard current == nil else {
            // Nested: the outer call's transaction holds these steps too.
            for i in 0..<count {
                do { try step(i) } catch { return (i, error) }
            }
            return (count, nil)
        }
        var stored = 0
        var failure: DatastoreError?
        do {
            try queue.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    current = db
                    defer {
                        current = nil
                        pools = nil
                    }
                    for i in 0..<count {
                        do {
                            try db.inSavepoint {
                                try step(i)
                                return .commit
                            }
                        } catch let error as DatastoreError {
                            failure = error
                            break
                        }
                        stored += 1
                    }
                    // A failed statement can end the transaction itself (SQLITE_FULL, IOERR):
                    // then nothing of it is stored, and nothing may be reported as stored.
                    guard db.isInsideTransaction else {
                        throw failure ?? .storage("datastore \(path): the transaction was rolled back")
                    }
                    return .commit
                }
            }
        } catch {
            return (0, Self.storageError(error, path: path))
        }
        return (stored, failure)
    }

    public func firstOverlappingPool(with pool: IPPool) throws(DatastoreError) -> IPPool? {
        guard current != nil else {
            for case .ipPool(let other) in try fetchAll(.ipPool)
            where other.metadata.name != pool.metadata.name && other.spec.prefix.overlaps(pool.spec.prefix) {
                return other
            }
            return nil
        }
        if pools == nil {
            var byName: [String: IPPool] = [:]
            var index = PrefixOverlapIndex<String>()
            for case .ipPool(let p) in try fetchAll(.ipPool) {
                byName[p.metadata.name] = p
                index.insert(p.spec.prefix, key: p.metadata.name)
            }
            pools = (byName, index)
        }
        guard let name = pools!.index.firstOverlapping(pool.spec.prefix, excluding: pool.metadata.name) else {
            return nil
        }
        return pools!.byName[name]
    }

    private func noteWritten(_ resource: Resource) {
        guard pools != nil, case .ipPool(let pool) = resource else { return }
        noteRemoved(pool: pool.metadata.name)
        pools!.byName[pool.metadata.name] = pool
        pools!.index.insert(pool.spec.prefix, key: pool.metadata.name)
    }

    private func noteRemoved(pool name: String) {
        guard pools != nil, let old = pools!.byName.removeValue(forKey: name) else { return }
        pools!.index.remove(old.spec.prefix, key: name)
    }

    // MARK: Helpers

    private static func bump(_ db: Database) throws -> Int64 {
        try db.execute(sql: "UPDATE store SET revision = revision + 1 WHERE id = 1")
        return try Int64.fetchOne(db, sql: "SELECT revision FROM store WHERE id = 1") ?? 0
    }

    private static func encode(_ resource: Resource) -> String {
        ResourceEncoder.json(ResourceEncoder.value(resource, includeResourceVersion: false), indent: nil)
    }

    /// One column of a stored row, decoded with an error instead of a trap: a corrupted store
    /// must never crash a process.
    private func column<T: DatabaseValueConvertible>(
        _ row: Row, _ column: String, as type: T.Type, kind: ResourceKind, name: String
    ) throws(DatastoreError) -> T {
        do {
            return try row.decode(T.self, forColumn: column)
        } catch {
            throw .storage("datastore \(path): stored \(kind.rawValue)(\(name)) is unreadable: \(Self.describe(error))")
        }
    }

    private func decode(kind: ResourceKind, name: String, row: Row) throws(DatastoreError) -> Resource {
        try decode(
            kind: kind, name: name, revision: column(row, "revision", as: Int64.self, kind: kind, name: name),
            value: column(row, "value", as: String.self, kind: kind, name: name))
    }

    private func decode(
        kind: ResourceKind, name: String, revision: Int64, value: String
    ) throws(DatastoreError)
        -> Resource
    {
        let resources: [Resource]
        do {
            resources = try ResourceDecoder.decode(value, file: "\(path)#\(kind.plural)/\(name)")
        } catch {
            throw .storage("datastore \(path): stored \(kind.rawValue)(\(name)) is not valid: \(error)")
        }
        guard resources.count == 1, var resource = resources.first, ResourceKind(of: resource) == kind,
            resource.name == name
        else {
            throw .storage(
                "datastore \(path): stored \(kind.rawValue)(\(name)) is not one \(kind.rawValue) named \(name)")
        }
        resource.metadata.resourceVersion = String(revision)
        return resource
    }

    /// A read, inside the transaction of `runSteps` when one is open.
    private func read<T>(_ body: (Database) throws -> T) throws(DatastoreError) -> T {
        try run {
            if let current { return try body(current) }
            return try queue.read { db in try body(db) }
        }
    }

    /// One immediate transaction, or a part of the one `runSteps` has open.
    private func write<T>(_ body: (Database) throws -> T) throws(DatastoreError) -> T {
        try run {
            if let current { return try body(current) }
            return try queue.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        }
    }

    private func run<T>(_ body: () throws -> T) throws(DatastoreError) -> T {
        do {
            return try body()
        } catch {
            throw Self.storageError(error, path: path)
        }
    }

    private static func storageError(_ error: any Error, path: String) -> DatastoreError {
        if let error = error as? DatastoreError { return error }
        return .storage("datastore \(path): \(describe(error))")
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError { return error.message ?? "\(error)" }
        return "\(error)"
    }
}

import IPIPDatastore
import IPIPResources

/// A datastore as the daemon's resource source: `load()` reads every object, `changeToken()` is
/// the store's (SQLite: its revision, one indexed read; etcd: fed by a watch, no request at all).
public final class DatastoreSource: ResourceSource {
    /// The store.
    public let store: any Datastore

    /// Wraps an open store.
    public init(store: any Datastore) { self.store = store }

    /// Opens the store `--datastore` (or `IPIPD_DATASTORE`) names.
    public convenience init(option: String?) throws {
        try self.init(store: DatastoreLocation.resolve(option: option).open())
    }

    public var description: String { "datastore " + store.description }

    public func load() throws -> ResourceSet { try store.resourceSet() }

    public func changeToken() -> String? { store.changeToken() }
}

import Foundation

/// Which datastore to use: `--datastore` for `ipipctl` and `ipipd`, else the `IPIPD_DATASTORE`
/// environment variable, else calicoctl's own variables (`DATASTORE_TYPE=etcdv3` with
/// `ETCD_ENDPOINTS`), else the embedded SQLite file at its default path.
///
/// Forms: `sqlite` (default path), `sqlite:PATH`, `manifests:PATH[,PATH...]` (read-only; files or
/// directories), `etcd:URL[,URL...]` (etcd v3; `etcd` alone takes `ETCD_ENDPOINTS`, else
/// `http://127.0.0.1:2379`, etcd's default).
public enum DatastoreLocation: Hashable, Sendable, CustomStringConvertible {
    /// The embedded SQLite store at a path.
    case sqlite(path: String)
    /// Read-only manifests.
    case manifests(paths: [String])
    /// etcd v3 endpoints (Calico's key layout).
    case etcd(endpoints: [String])

    /// etcd's default client URL.
    public static let defaultEtcdEndpoint = "http://127.0.0.1:2379"

    /// The environment variable read when no `--datastore` is given.
    public static let environmentVariable = "IPIPD_DATASTORE"

    /// Parses one `--datastore` value.
    public static func parse(
        _ text: String, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        throws(DatastoreError) -> DatastoreLocation
    {
        let (type, rest): (Substring, Substring?) = {
            guard let colon = text.firstIndex(of: ":") else { return (Substring(text), nil) }
            return (text[..<colon], text[text.index(after: colon)...])
        }()
        let items = (rest ?? "").split(separator: ",").map { String($0) }.filter { !$0.isEmpty }
        switch type.lowercased() {
        case "sqlite":
            guard let rest, !rest.isEmpty else {
                return .sqlite(path: SQLiteDatastore.defaultPath(environment: environment))
            }
            return .sqlite(path: String(rest))
        case "manifests":
            guard !items.isEmpty else {
                throw .notSupported("datastore 'manifests' needs a path: manifests:PATH[,PATH...]")
            }
            return .manifests(paths: items)
        case "etcd", "etcdv3":
            var endpoints = items
            if endpoints.isEmpty {
                endpoints = (environment["ETCD_ENDPOINTS"] ?? "").split(separator: ",")
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            if endpoints.isEmpty { endpoints = [defaultEtcdEndpoint] }
            for endpoint in endpoints where !(endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://")) {
                throw .notSupported("etcd endpoint '\(endpoint)' must be a URL: http://HOST:PORT or https://HOST:PORT")
            }
            return .etcd(endpoints: endpoints)
        default:
            throw .notSupported(
                "unknown datastore '\(text)': expected sqlite[:PATH], manifests:PATH[,PATH...] or etcd:URL")
        }
    }

    /// The location chosen by an option (when given), else by `IPIPD_DATASTORE`, else the default.
    public static func resolve(
        option: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        throws(DatastoreError) -> DatastoreLocation
    {
        if let option, !option.isEmpty { return try parse(option, environment: environment) }
        if let value = environment[environmentVariable], !value.isEmpty {
            return try parse(value, environment: environment)
        }
        if let type = environment["DATASTORE_TYPE"], type == "etcdv3" {
            return try parse("etcd", environment: environment)
        }
        return .sqlite(path: SQLiteDatastore.defaultPath(environment: environment))
    }

    /// Opens the store. An etcd store takes its TLS files and credentials from calicoctl's
    /// variables (`ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_USERNAME`,
    /// `ETCD_PASSWORD`).
    public func open(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(DatastoreError)
        -> any Datastore
    {
        switch self {
        case .sqlite(let path): return try SQLiteDatastore(path: path)
        case .manifests(let paths): return ManifestDatastore(paths: paths)
        case .etcd(let endpoints):
            return try EtcdDatastore(
                endpoints: endpoints, tls: EtcdClient.TLSFiles.from(environment: environment),
                credentials: EtcdClient.Credentials.from(environment: environment))
        }
    }

    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .manifests(let paths): "manifests:" + paths.joined(separator: ",")
        case .etcd(let endpoints): "etcd:" + endpoints.joined(separator: ",")
        }
    }
}

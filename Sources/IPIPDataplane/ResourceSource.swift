import IPIPResources

#if canImport(Glibc)
import Glibc
#endif

/// Where the live daemon gets its Calico resources from. Today: manifest files; the datastore
/// `DatastoreSource` puts SQLite and etcd behind the same protocol.
public protocol ResourceSource: AnyObject {
    /// A human-readable name for logs ("manifests /etc/ipipd/cluster.yaml").
    var description: String { get }
    /// Loads and validates every resource. Throws with every problem (file:line:column) when the
    /// source holds invalid resources; the caller keeps the previous topology then.
    func load() throws -> ResourceSet
    /// Something that changes when the resources may have changed (cheap to compute); nil when
    /// the source cannot tell. The daemon polls it to reload on change.
    func changeToken() -> String?
}

/// Manifest files or directories (the same paths `ipipd replay --manifests` takes).
public final class ManifestSource: ResourceSource {
    public let paths: [String]

    public init(paths: [String]) { self.paths = paths }

    public var description: String { "manifests " + paths.joined(separator: ", ") }

    public func load() throws -> ResourceSet { try ClusterLoader.resources(paths: paths) }

    /// The modification times and sizes of the paths and, for directories, of the manifest files
    /// directly inside them.
    public func changeToken() -> String? {
        var parts: [String] = []
        for path in paths {
            parts.append(Self.stamp(path))
            guard let dir = opendir(path) else { continue }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name.hasSuffix(".yaml") || name.hasSuffix(".yml") || name.hasSuffix(".json") { names.append(name) }
            }
            closedir(dir)
            for name in names.sorted() { parts.append(name + "=" + Self.stamp(path + "/" + name)) }
        }
        return parts.joined(separator: ";")
    }

    static func stamp(_ path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return "absent" }
        return "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec):\(st.st_size):\(st.st_ino)"
    }
}

import Foundation
import IPIPResources

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
        let files = FileManager.default
        for path in paths {
            parts.append(Self.stamp(path))
            var isDirectory: ObjCBool = false
            guard files.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
                let names = try? files.contentsOfDirectory(atPath: path)
            else { continue }
            for name in names.sorted()
            where name.hasSuffix(".yaml") || name.hasSuffix(".yml") || name.hasSuffix(".json") {
                parts.append(name + "=" + Self.stamp(path + "/" + name))
            }
        }
        return parts.joined(separator: ";")
    }

    /// Modification time, size and inode of what `path` names, symbolic links followed (a
    /// Kubernetes ConfigMap volume swaps a link to a new directory on every change).
    static func stamp(_ path: String) -> String {
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard let a = try? FileManager.default.attributesOfItem(atPath: target),
            let modified = a[.modificationDate] as? Date
        else { return "absent" }
        let size = (a[.size] as? NSNumber)?.uint64Value ?? 0
        let inode = (a[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
        return "\(modified.timeIntervalSince1970.bitPattern):\(size):\(inode)"
    }
}

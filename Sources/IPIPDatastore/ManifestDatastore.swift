import Foundation
import IPIPResources

/// A read-only datastore over manifest files or directories (what `ipipd replay` and the tests
/// use). Every read loads and validates the paths again (all or nothing, as `ResourceLoader`);
/// every write fails with a clear error. The revision is a hash of the files' modification times
/// and sizes, so it changes when a file does.
public final class ManifestDatastore: Datastore, @unchecked Sendable {
    /// The manifest files or directories.
    public let paths: [String]

    /// A store over `paths`.
    public init(paths: [String]) { self.paths = paths }

    public var description: String { "manifests " + paths.joined(separator: ",") }

    private func load() throws(DatastoreError) -> ResourceSet {
        do {
            return try ResourceLoader.load(paths: paths)
        } catch {
            throw .storage("\(error)")
        }
    }

    private func readOnly(_ verb: String) -> DatastoreError {
        .readOnly(
            "the manifests datastore (\(paths.joined(separator: ","))) is read-only: cannot \(verb); "
                + "use --datastore sqlite:PATH to store resources")
    }

    public func fetch(_ kind: ResourceKind, name: String) throws(DatastoreError) -> Resource {
        guard let resource = try fetchAll(kind).first(where: { $0.name == name }) else {
            throw .doesNotExist(kind: kind.rawValue, name: name)
        }
        return resource
    }

    public func fetchAll(_ kind: ResourceKind) throws(DatastoreError) -> [Resource] {
        let set = try load()
        let resources: [Resource] =
            switch kind {
            case .ipPool: set.pools.map(Resource.ipPool)
            case .node: set.nodes.map(Resource.node)
            case .blockAffinity: set.blockAffinities.map(Resource.blockAffinity)
            case .felixConfiguration: set.felixConfigurations.map(Resource.felixConfiguration)
            }
        return resources.sorted { $0.name < $1.name }
    }

    public func insert(_ resource: Resource) throws(DatastoreError) -> Resource { throw readOnly("create") }

    public func replace(_ resource: Resource, ifRevision revision: String?) throws(DatastoreError) -> Resource {
        throw readOnly("update")
    }

    public func remove(
        _ kind: ResourceKind, name: String, ifRevision revision: String?
    ) throws(DatastoreError)
        -> Resource
    {
        throw readOnly("delete")
    }

    public func revision() throws(DatastoreError) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in stamps().utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return Int64(bitPattern: hash & 0x7FFF_FFFF_FFFF_FFFF)
    }

    /// Modification time, size and inode of every path and of the manifests in directories.
    func stamps() -> String {
        var parts: [String] = []
        for path in paths {
            parts.append(Self.stamp(path))
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { continue }
            for name in names.sorted()
            where name.hasSuffix(".yaml") || name.hasSuffix(".yml") || name.hasSuffix(".json") {
                parts.append(name + "=" + Self.stamp(path + "/" + name))
            }
        }
        return parts.joined(separator: ";")
    }

    private static func stamp(_ path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return "absent" }
        return "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec):\(st.st_size):\(st.st_ino)"
    }
}

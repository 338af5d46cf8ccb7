import Foundation

/// Every resource of a load, by kind, in declaration order.
public struct ResourceSet: Hashable, Sendable {
    /// IP pools.
    public var pools: [IPPool]
    /// Nodes.
    public var nodes: [Node]
    /// Block affinities.
    public var blockAffinities: [BlockAffinity]
    /// Felix configurations (`default` and `node.<name>`).
    public var felixConfigurations: [FelixConfiguration]

    /// Creates a set.
    public init(
        pools: [IPPool] = [], nodes: [Node] = [], blockAffinities: [BlockAffinity] = [],
        felixConfigurations: [FelixConfiguration] = []
    ) {
        self.pools = pools
        self.nodes = nodes
        self.blockAffinities = blockAffinities
        self.felixConfigurations = felixConfigurations
    }

    /// Sorts resources into a set.
    init(_ resources: [Resource]) {
        self.init()
        for resource in resources {
            switch resource {
            case .ipPool(let pool): pools.append(pool)
            case .node(let node): nodes.append(node)
            case .blockAffinity(let affinity): blockAffinities.append(affinity)
            case .felixConfiguration(let configuration): felixConfigurations.append(configuration)
            }
        }
    }
}

/// Loads manifests from files, directories or text, decodes and validates them, then checks the
/// set as a whole. All or nothing: when anything is wrong, nothing is returned and every problem is
/// reported.
///
/// Set-level rules: names are unique per kind, and pool CIDRs do not overlap. Calico checks overlap
/// when a pool is created, so the first pool declared wins and the later one is reported, at its
/// `spec.cidr`, with Calico's message.
public enum ResourceLoader {
    /// Loads every path: a file is read as one manifest stream; a directory contributes every
    /// `*.yaml`, `*.yml` and `*.json` directly inside it (not recursively), sorted by name.
    /// - Throws: `ResourceErrors` with every problem in every file (unreadable paths included).
    public static func load(paths: [String]) throws(ResourceErrors) -> ResourceSet {
        var errors: [ResourceError] = []
        var resources: [Resource] = []
        for path in paths {
            for file in expand(path, errors: &errors) {
                guard let data = FileManager.default.contents(atPath: file) else {
                    errors.append(fileError(file, "cannot read file"))
                    continue
                }
                guard let text = String(data: data, encoding: .utf8) else {
                    errors.append(fileError(file, "file is not valid UTF-8"))
                    continue
                }
                resources += ResourceDecoder.decode(text, file: file, errors: &errors)
            }
        }
        return try finish(resources, errors: errors)
    }

    /// Loads manifests from text (standard input, tests).
    /// - Parameters:
    ///   - text: YAML or JSON.
    ///   - file: The name used in locations and errors.
    /// - Throws: `ResourceErrors` with every problem found.
    public static func load(text: String, file: String) throws(ResourceErrors) -> ResourceSet {
        var errors: [ResourceError] = []
        let resources = ResourceDecoder.decode(text, file: file, errors: &errors)
        return try finish(resources, errors: errors)
    }

    private static let manifestExtensions: Set<String> = ["yaml", "yml", "json"]

    private static func expand(_ path: String, errors: inout [ResourceError]) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            errors.append(fileError(path, "no such file or directory"))
            return []
        }
        guard isDirectory.boolValue else { return [path] }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else {
            errors.append(fileError(path, "cannot list directory"))
            return []
        }
        let directory = URL(fileURLWithPath: path)
        return names.sorted().compactMap { name in
            let url = directory.appendingPathComponent(name)
            var isSubdirectory: ObjCBool = false
            guard manifestExtensions.contains(url.pathExtension.lowercased()),
                FileManager.default.fileExists(atPath: url.path, isDirectory: &isSubdirectory),
                !isSubdirectory.boolValue
            else { return nil }
            return path.hasSuffix("/") ? path + name : path + "/" + name
        }
    }

    private static func fileError(_ file: String, _ message: String) -> ResourceError {
        ResourceError(file: file, line: 1, column: 1, kind: nil, name: nil, field: "", message: message)
    }

    private static func finish(
        _ resources: [Resource], errors: [ResourceError]
    ) throws(ResourceErrors)
        -> ResourceSet
    {
        var errors = errors
        let set = ResourceSet(resources)
        errors += duplicateNames(set.pools.map { ($0.metadata.name, $0.location) }, kind: "IPPool")
        errors += duplicateNames(set.nodes.map { ($0.metadata.name, $0.location) }, kind: "Node")
        errors += duplicateNames(set.blockAffinities.map { ($0.metadata.name, $0.location) }, kind: "BlockAffinity")
        errors += duplicateNames(
            set.felixConfigurations.map { ($0.metadata.name, $0.location) },
            kind: "FelixConfiguration")
        errors += overlappingPools(set.pools)
        guard errors.isEmpty else { throw ResourceErrors(errors) }
        return set
    }

    private static func duplicateNames(
        _ objects: [(name: String, location: SourceLocation)], kind: String
    )
        -> [ResourceError]
    {
        var first: [String: SourceLocation] = [:]
        var errors: [ResourceError] = []
        for (name, location) in objects {
            if let earlier = first[name] {
                errors.append(
                    ResourceError(
                        file: location.file, line: location.line, column: location.column,
                        kind: kind, name: name, field: "metadata.name",
                        message: "duplicate \(kind) name '\(name)' (first declared at \(earlier))"))
            } else {
                first[name] = location
            }
        }
        return errors
    }

    /// Pools whose CIDR overlaps an earlier pool's, reported at the later pool's `spec.cidr`.
    /// Pools sharing a name are reported as duplicates instead (Calico skips same-name pools here).
    /// The earliest accepted pool that overlaps is named, as a scan of the accepted pools in order
    /// would find it; the index makes that O(log) per pool instead of a scan.
    private static func overlappingPools(_ pools: [IPPool]) -> [ResourceError] {
        var accepted: [IPPool] = []
        var acceptedNames: Set<String> = []
        var index = PrefixOverlapIndex<Int>()
        var errors: [ResourceError] = []
        for pool in pools {
            if acceptedNames.contains(pool.metadata.name) { continue }
            if let earliest = index.firstOverlapping(pool.spec.prefix) {
                let other = accepted[earliest]
                let position = pool.cidrLocation
                errors.append(
                    ResourceError(
                        file: position.file, line: position.line, column: position.column, kind: "IPPool",
                        name: pool.metadata.name, field: "spec.cidr",
                        message: CalicoMessage.overlap(
                            new: pool.metadata.name, other: other.metadata.name,
                            otherCIDR: other.spec.cidr)))
            } else {
                index.insert(pool.spec.prefix, key: accepted.count)
                acceptedNames.insert(pool.metadata.name)
                accepted.append(pool)
            }
        }
        return errors
    }
}

extension ResourceLoader {
    /// Standard input, read to its end (`-f -`, `--manifests -`), as UTF-8 (invalid bytes replaced;
    /// the decoder reports them at their line).
    public static func readStandardInput() -> String {
        String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
    }
}

import Foundation
import IPIPResources

/// What a command printed and how it ended; `ipipctl` writes it out and exits with `exitCode`.
public struct CtlOutput: Hashable, Sendable {
    /// Standard output.
    public var stdout: String
    /// Standard error.
    public var stderr: String
    /// 0 on success, 1 on any failure (calicoctl's codes).
    public var exitCode: Int32

    /// Creates an output.
    public init(stdout: String = "", stderr: String = "", exitCode: Int32 = 0) {
        self.stdout = stdout
        self.stderr = stderr
        self.exitCode = exitCode
    }

    static func failure(_ message: String) -> CtlOutput { CtlOutput(stderr: message + "\n", exitCode: 1) }
}

/// Manifest text given with `-f`: a file's contents or standard input.
public struct ManifestInput: Hashable, Sendable {
    /// The text.
    public var text: String
    /// The name used in errors (`file:line:column`): the path, or `<stdin>`.
    public var file: String

    /// Input from text.
    public init(text: String, file: String) {
        self.text = text
        self.file = file
    }

    /// Reads `-f PATH`; `-` reads standard input to its end.
    public static func read(_ path: String) throws(DatastoreError) -> ManifestInput {
        if path == "-" { return ManifestInput(text: ResourceLoader.readStandardInput(), file: "<stdin>") }
        guard let data = FileManager.default.contents(atPath: path) else {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            throw .storage(
                "open \(path): "
                    + (!exists
                        ? "no such file or directory"
                        : isDirectory.boolValue ? "is a directory" : "permission denied"))
        }
        return ManifestInput(text: String(decoding: data, as: UTF8.self), file: path)
    }
}

/// calicoctl's `create`, `apply`, `replace`, `delete` and `get` over a `Datastore`, with its
/// messages and exit codes (calicoctl release-v3.5 `commands/{apply,create,replace,delete,get}.go`,
/// calicoctl's behaviour). `ipipctl` is a thin argument parser over these functions; tests call
/// them directly.
///
/// Success messages go to standard output, failures to standard error (as current calicoctl does);
/// every failure exits 1.
public enum CalicoCtl {
    /// A write verb.
    public enum Verb: String, CaseIterable, Sendable {
        /// Create; fails when the resource exists (unless `--skip-exists`).
        case create
        /// Create or update.
        case apply
        /// Update; fails when the resource does not exist.
        case replace
        /// Delete; fails when the resource does not exist (unless `--skip-not-exists`).
        case delete

        /// `created`, `applied`, `replaced`, `deleted`.
        public var past: String {
            switch self {
            case .create: "created"
            case .apply: "applied"
            case .replace: "replaced"
            case .delete: "deleted"
            }
        }
    }

    /// Options of the write verbs.
    public struct Options: Hashable, Sendable {
        /// `create --skip-exists`: an existing resource counts as created.
        public var skipExists = false
        /// `delete --skip-not-exists`: a missing resource counts as deleted.
        public var skipNotExists = false
        /// Pause between disabling a pool and deleting it (Calico: 500 ms).
        public var poolDisableGrace: Duration = .milliseconds(500)

        /// Default options.
        public init(
            skipExists: Bool = false, skipNotExists: Bool = false,
            poolDisableGrace: Duration = .milliseconds(500)
        ) {
            self.skipExists = skipExists
            self.skipNotExists = skipNotExists
            self.poolDisableGrace = poolDisableGrace
        }
    }

    // MARK: Write verbs

    /// `VERB -f FILE`: every document of the input, in order, stopping at the first error.
    public static func execute(
        _ verb: Verb, input: ManifestInput, store: () throws(DatastoreError) -> any Datastore,
        options: Options = Options()
    ) -> CtlOutput {
        let resources: [Resource]
        do {
            resources = try ResourceDecoder.decode(input.text, file: input.file)
        } catch {
            return .failure("Failed to execute command: \(error)")
        }
        return execute(verb, resources: resources, store: store, options: options)
    }

    /// `delete KIND NAME`.
    public static func delete(
        kind: String, name: String, store: () throws(DatastoreError) -> any Datastore,
        options: Options = Options()
    ) -> CtlOutput {
        guard let kind = ResourceKind(argument: kind) else {
            return .failure("Failed to execute command: resource type '\(kind)' is not supported")
        }
        let target = Target(kind: kind, name: name, resourceVersion: nil)
        return run(.delete, targets: [target], store: store) {
            (store: any Datastore, target: Target) throws(DatastoreError) in
            do throws(DatastoreError) {
                try store.delete(target.kind, name: target.name, poolDisableGrace: options.poolDisableGrace)
            } catch .doesNotExist where options.skipNotExists {
                return
            }
        }
    }

    /// The resources a write verb acts on.
    public static func execute(
        _ verb: Verb, resources: [Resource], store: () throws(DatastoreError) -> any Datastore,
        options: Options = Options()
    ) -> CtlOutput {
        let targets = resources.map {
            Target(
                kind: ResourceKind(of: $0), name: $0.name, resourceVersion: $0.metadata.resourceVersion, resource: $0)
        }
        return run(verb, targets: targets, store: store) {
            (store: any Datastore, target: Target) throws(DatastoreError) in
            guard let resource = target.resource else { return }
            switch verb {
            case .create:
                do throws(DatastoreError) {
                    try store.create(resource)
                } catch .alreadyExists where options.skipExists {
                    return
                }
            case .apply:
                try store.apply(resource)
            case .replace:
                try store.update(resource)
            case .delete:
                do throws(DatastoreError) {
                    try store.delete(
                        target.kind, name: target.name, resourceVersion: target.resourceVersion,
                        poolDisableGrace: options.poolDisableGrace)
                } catch .doesNotExist where options.skipNotExists {
                    return
                }
            }
        }
    }

    struct Target {
        var kind: ResourceKind
        var name: String
        var resourceVersion: String?
        var resource: Resource?
    }

    /// calicoctl's `executeConfigCommand` and the result messages of the verb commands.
    private static func run(
        _ verb: Verb, targets: [Target], store open: () throws(DatastoreError) -> any Datastore,
        _ action: (any Datastore, Target) throws(DatastoreError) -> Void
    ) -> CtlOutput {
        guard !targets.isEmpty else { return .failure("No resources specified in file") }
        let kinds = Set(targets.map(\.kind))
        let singleKind = kinds.count == 1 ? targets[0].kind.rawValue : nil
        var handled = 0
        var failure: DatastoreError?
        do {
            let store = try open()
            // Runs of resources go to the store as one unit (`runSteps`: one transaction on
            // SQLite). A pool delete goes on its own: its first write (the pool disabled) must
            // be committed, and seen by every watcher, before the grace and the deletes that
            // follow it (docs/decisions.md, "One transaction per command").
            var start = 0
            while start < targets.count, failure == nil {
                if verb == .delete, targets[start].kind == .ipPool {
                    try action(store, targets[start])
                    handled += 1
                    start += 1
                    continue
                }
                var end = start
                while end < targets.count, !(verb == .delete && targets[end].kind == .ipPool) { end += 1 }
                let run = store.runSteps(end - start) { (i: Int) throws(DatastoreError) in
                    try action(store, targets[start + i])
                }
                handled += run.stored
                failure = run.failure
                start = end
            }
        } catch {
            failure = error
        }
        let past = verb.past
        guard let failure else {
            let what = singleKind.map { "'\($0)' resource(s)" } ?? "resource(s)"
            return CtlOutput(stdout: "Successfully \(past) \(handled) \(what)\n")
        }
        if handled == 0 {
            if targets.count == 1 {
                return .failure("Failed to \(verb.rawValue) '\(targets[0].kind.rawValue)' resource: \(failure)")
            }
            if let singleKind {
                return .failure("Failed to \(verb.rawValue) any '\(singleKind)' resources: \(failure)")
            }
            return .failure("Failed to \(verb.rawValue) any resources: \(failure)")
        }
        let what = singleKind.map { "'\($0)' resources" } ?? "resources"
        return .failure(
            "Partial success: \(past) the first \(handled) out of \(targets.count) \(what):\nHit error: \(failure)")
    }

    // MARK: get

    /// An output format of `get -o`.
    public enum OutputFormat: String, CaseIterable, Sendable {
        /// Table with the short columns (the default).
        case ps
        /// Table with every column.
        case wide
        /// YAML, keys sorted.
        case yaml
        /// JSON, Calico's field order.
        case json

        /// Parses `-o` (`yml` is `yaml`).
        public init?(argument: String) {
            switch argument.lowercased() {
            case "ps": self = .ps
            case "wide": self = .wide
            case "yaml", "yml": self = .yaml
            case "json": self = .json
            default: return nil
            }
        }
    }

    /// `get KIND [NAME] -o FORMAT`.
    public static func get(
        kind: String, name: String?, output: String, store: () throws(DatastoreError) -> any Datastore
    )
        -> CtlOutput
    {
        guard let kind = ResourceKind(argument: kind) else {
            return .failure("Failed to execute command: resource type '\(kind)' is not supported")
        }
        guard let format = OutputFormat(argument: output) else {
            return .failure("Failed to execute command: unrecognized output format '\(output)'")
        }
        do {
            let store = try open(store)
            if let name {
                let resource = try store.get(kind, name: name)
                return CtlOutput(stdout: render([resource], kind: kind, format: format, listVersion: nil))
            }
            // Values that do not decode are left out, as calicoctl's list does, and named on
            // standard error (calicoctl says nothing) so that the operator can repair them.
            var skipped: [DatastoreError] = []
            let resources = try store.list(kind) { skipped.append($0) }
            return CtlOutput(
                stdout: render(
                    resources, kind: kind, format: format,
                    listVersion: String(try store.revision())),
                stderr: skipped.map { "Skipped an unreadable \(kind.rawValue): \($0)\n" }.joined())
        } catch {
            return .failure("Failed to get resources: \(error)")
        }
    }

    /// `get -f FILE -o FORMAT`: the stored objects the manifest names.
    public static func get(
        input: ManifestInput, output: String, store: () throws(DatastoreError) -> any Datastore
    )
        -> CtlOutput
    {
        guard let format = OutputFormat(argument: output) else {
            return .failure("Failed to execute command: unrecognized output format '\(output)'")
        }
        let wanted: [Resource]
        do {
            wanted = try ResourceDecoder.decode(input.text, file: input.file)
        } catch {
            return .failure("Failed to execute command: \(error)")
        }
        guard !wanted.isEmpty else { return .failure("No resources specified in file") }
        do {
            let store = try open(store)
            var found: [Resource] = []
            for resource in wanted { found.append(try store.get(ResourceKind(of: resource), name: resource.name)) }
            switch format {
            case .yaml where found.count > 1:
                return CtlOutput(stdout: ResourceEncoder.yaml(.list(found.map { ResourceEncoder.value($0) })))
            case .json where found.count > 1:
                return CtlOutput(stdout: ResourceEncoder.json(.list(found.map { ResourceEncoder.value($0) })) + "\n")
            case .ps, .wide:
                // One table per kind, in first-seen order.
                var seen: [ResourceKind] = []
                for resource in found where !seen.contains(ResourceKind(of: resource)) {
                    seen.append(ResourceKind(of: resource))
                }
                let text = seen.map { kind in
                    render(found.filter { ResourceKind(of: $0) == kind }, kind: kind, format: format, listVersion: nil)
                }.joined()
                return CtlOutput(stdout: text)
            default:
                return CtlOutput(
                    stdout: render(found, kind: ResourceKind(of: found[0]), format: format, listVersion: nil))
            }
        } catch {
            return .failure("Failed to get resources: \(error)")
        }
    }

    private static func open(
        _ store: () throws(DatastoreError) -> any Datastore
    ) throws(DatastoreError)
        -> any Datastore
    {
        try store()
    }

    /// A named get (`listVersion` nil, one object) prints the bare object; a list prints a
    /// `<Kind>List` with the store revision as its resourceVersion.
    static func render(
        _ resources: [Resource], kind: ResourceKind, format: OutputFormat, listVersion: String?
    )
        -> String
    {
        switch format {
        case .ps, .wide:
            return table(resources, kind: kind, wide: format == .wide)
        case .yaml:
            if listVersion == nil, resources.count == 1 { return ResourceEncoder.yaml(resources[0]) }
            return ResourceEncoder.yaml(
                ResourceEncoder.list(
                    kind: kind.rawValue, items: resources,
                    resourceVersion: listVersion))
        case .json:
            if listVersion == nil, resources.count == 1 { return ResourceEncoder.json(resources[0]) }
            return ResourceEncoder.json(
                ResourceEncoder.list(
                    kind: kind.rawValue, items: resources,
                    resourceVersion: listVersion)) + "\n"
        }
    }

    // MARK: Tables

    /// The header of a kind's table.
    public static func headers(_ kind: ResourceKind, wide: Bool) -> [String] {
        switch (kind, wide) {
        case (.ipPool, false): ["NAME", "CIDR", "SELECTOR"]
        case (.ipPool, true):
            [
                "NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR",
                "ASSIGNMENTMODE",
            ]
        case (.node, false): ["NAME"]
        case (.node, true): ["NAME", "ASN", "IPV4", "IPV6"]
        case (.blockAffinity, false): ["NAME", "NODE", "CIDR", "STATE"]
        case (.blockAffinity, true): ["NAME", "NODE", "CIDR", "STATE", "TYPE", "DELETED"]
        case (.felixConfiguration, _): ["NAME"]
        }
    }

    /// The default global AS number Calico uses when a node has none of its own.
    public static let defaultASNumber: UInt32 = 64512

    static func row(_ resource: Resource, wide: Bool) -> [String] {
        switch resource {
        case .ipPool(let p):
            guard wide else { return [p.metadata.name, p.spec.cidr, p.spec.nodeSelector] }
            return [
                p.metadata.name, p.spec.cidr, String(p.spec.natOutgoing), p.spec.ipipMode.rawValue,
                p.spec.vxlanMode.rawValue, String(p.spec.disabled), String(p.spec.disableBGPExport),
                p.spec.nodeSelector, p.spec.assignmentMode.rawValue,
            ]
        case .node(let n):
            guard wide else { return [n.metadata.name] }
            let asn = n.spec.bgp?.asNumber.map { String($0) } ?? "(\(defaultASNumber))"
            return [n.metadata.name, asn, n.spec.bgp?.ipv4Address?.description ?? "", n.spec.bgp?.ipv6Address ?? ""]
        case .blockAffinity(let b):
            let short = [b.metadata.name, b.spec.node, b.spec.cidr, b.spec.state.rawValue]
            return wide ? short + [b.spec.type ?? "", String(b.spec.deleted)] : short
        case .felixConfiguration(let f):
            return [f.metadata.name]
        }
    }

    /// calicoctl's table: Go's tabwriter with minimum width 5, padding 3, space padding, every cell
    /// tab-terminated (so every cell, the last included, is padded), then an empty line.
    static func table(_ resources: [Resource], kind: ResourceKind, wide: Bool) -> String {
        tabulate([headers(kind, wide: wide)] + resources.map { row($0, wide: wide) }) + "\n"
    }

    /// Go `tabwriter.NewWriter(w, 5, 1, 3, ' ', 0)` over lines whose cells all end with a tab.
    public static func tabulate(_ rows: [[String]], minWidth: Int = 5, padding: Int = 3) -> String {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: minWidth, count: columns)
        for row in rows {
            for (index, cell) in row.enumerated() {
                widths[index] = max(widths[index], cell.unicodeScalars.count + padding)
            }
        }
        var out = ""
        for row in rows {
            for (index, cell) in row.enumerated() {
                out += cell + String(repeating: " ", count: widths[index] - cell.unicodeScalars.count)
            }
            out += "\n"
        }
        return out
    }
}

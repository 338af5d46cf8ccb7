import Yams

/// A 1-based line and column (Yams' `Mark` cannot be created outside Yams).
struct Position: Hashable {
    var line: Int
    var column: Int

    static let start = Position(line: 1, column: 1)

    init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    init?(_ mark: Mark?) {
        guard let mark else { return nil }
        self.init(line: mark.line, column: mark.column)
    }
}

/// Reads one object (or one document) out of a composed YAML tree, field by field, recording where
/// every field sits and collecting every problem instead of stopping at the first.
///
/// Paths are written the way errors show them: `spec.allowedUses[1]`. `mark(for:)` falls back from a
/// missing path to its closest recorded ancestor, so a missing required key is reported at the
/// mapping that lacks it and, failing that, at the object's start.
struct ObjectReader {
    let file: String
    /// Kind and name used as the subject of errors.
    var kind: String?
    var name: String?
    /// Where the object starts.
    let origin: Position
    private(set) var marks: [String: Position] = [:]
    private(set) var keyMarks: [String: Position] = [:]
    private(set) var errors: [ResourceError] = []
    /// Skip keys outside the allowed set instead of reporting them (objects read back from a
    /// datastore that a newer Calico wrote); false for manifests.
    var ignoresUnknownFields = false

    init(file: String, kind: String?, origin: Position) {
        self.file = file
        self.kind = kind
        self.origin = origin
    }

    // MARK: Errors

    /// Records a problem at an explicit position.
    mutating func fail(_ path: String, _ message: String, at mark: Mark?) {
        fail(path, message, at: Position(mark))
    }

    /// Records a problem at an explicit position.
    mutating func fail(_ path: String, _ message: String, at mark: Position?) {
        let mark = mark ?? self.mark(for: path)
        errors.append(
            ResourceError(
                file: file, line: mark.line, column: mark.column, kind: kind, name: name,
                field: path, message: message))
    }

    /// Records a problem at the position recorded for `path` (or its closest ancestor).
    mutating func fail(_ path: String, _ message: String) {
        fail(path, message, at: mark(for: path))
    }

    /// Records a problem at the key of `path` (where the key is written), or where `path` is.
    mutating func failAtKey(_ path: String, _ message: String) {
        fail(path, message, at: keyMarks[path] ?? mark(for: path))
    }

    /// The position of `path`, or of its closest recorded ancestor, or of the object.
    func mark(for path: String) -> Position {
        var path = Substring(path)
        while !path.isEmpty {
            if let mark = marks[String(path)] { return mark }
            guard let cut = path.lastIndex(where: { $0 == "." || $0 == "[" }) else { break }
            path = path[..<cut]
        }
        return origin
    }

    // MARK: Structure

    /// The keys of a mapping, each with its value node. Records the mapping at `path` and every
    /// value at `path.key`; reports a non-mapping, non-string keys and keys outside `allowed`.
    /// Returns nil when `node` is not a mapping.
    mutating func mapping(_ node: Yams.Node, _ path: String, allowed: Set<String>?) -> [String: Yams.Node]? {
        record(node, path)
        guard case .mapping(let mapping) = node else {
            fail(path, "expected a mapping, found \(describe(node))", at: node.mark)
            return nil
        }
        var fields: [String: Yams.Node] = [:]
        for (keyNode, value) in mapping {
            guard case .scalar(let key) = keyNode else {
                fail(path, "mapping keys must be strings, found \(describe(keyNode))", at: keyNode.mark)
                continue
            }
            let childPath = Self.join(path, key.string)
            if let allowed, !allowed.contains(key.string) {
                if ignoresUnknownFields { continue }
                fail(childPath, "unknown field \"\(key.string)\"", at: keyNode.mark)
                continue
            }
            record(value, childPath)
            keyMarks[childPath] = Position(keyNode.mark)
            fields[key.string] = value
        }
        return fields
    }

    /// The items of a sequence, each recorded at `path[i]`. Reports a non-sequence.
    mutating func list(_ node: Yams.Node, _ path: String) -> [(path: String, node: Yams.Node)]? {
        guard case .sequence(let sequence) = node else {
            fail(path, "expected a list, found \(describe(node))", at: node.mark)
            return nil
        }
        return sequence.enumerated().map { index, item in
            let itemPath = "\(path)[\(index)]"
            record(item, itemPath)
            return (itemPath, item)
        }
    }

    // MARK: Scalars

    /// A string value; nil for null. A quoted scalar is always a string; a plain one must not
    /// resolve to another YAML type (timestamps excepted: Kubernetes reads them as strings).
    mutating func string(_ node: Yams.Node?, _ path: String) -> String? {
        guard let node, !Self.isNull(node) else { return nil }
        guard case .scalar(let scalar) = node, [Tag.Name.str, .timestamp].contains(Self.tagName(node)) else {
            fail(path, "expected a string, found \(describe(node))", at: node.mark)
            return nil
        }
        return scalar.string
    }

    /// An integer value; nil for null.
    mutating func int(_ node: Yams.Node?, _ path: String) -> Int? {
        guard let node, !Self.isNull(node) else { return nil }
        guard Self.tagName(node) == .int, let value = node.int else {
            fail(path, "expected an integer, found \(describe(node))", at: node.mark)
            return nil
        }
        return value
    }

    /// A boolean value; nil for null.
    mutating func bool(_ node: Yams.Node?, _ path: String) -> Bool? {
        guard let node, !Self.isNull(node) else { return nil }
        guard Self.tagName(node) == .bool, let value = node.bool else {
            fail(path, "expected a boolean, found \(describe(node))", at: node.mark)
            return nil
        }
        return value
    }

    /// A list of strings; nil for null.
    mutating func strings(_ node: Yams.Node?, _ path: String) -> [String]? {
        guard let node, !Self.isNull(node), let items = list(node, path) else { return nil }
        return items.compactMap { string($0.node, $0.path) }
    }

    /// A string-to-string mapping (labels, annotations); nil for null.
    mutating func stringMap(_ node: Yams.Node?, _ path: String) -> [String: String]? {
        guard let node, !Self.isNull(node), let fields = mapping(node, path, allowed: nil) else { return nil }
        var result: [String: String] = [:]
        for (key, value) in fields {
            result[key] = string(value, Self.join(path, key)) ?? ""
        }
        return result
    }

    /// Any value, kept as written. Non-string mapping keys are reported.
    mutating func raw(_ node: Yams.Node, _ path: String) -> RawValue {
        switch node {
        case .scalar(let scalar):
            switch Self.tagName(node) {
            case .null: return .null
            case .bool: return node.bool.map(RawValue.bool) ?? .string(scalar.string)
            case .int: return node.int.map(RawValue.int) ?? .string(scalar.string)
            case .float: return node.float.map(RawValue.double) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .sequence:
            return .list((list(node, path) ?? []).map { raw($0.node, $0.path) })
        case .mapping:
            let fields = mapping(node, path, allowed: nil) ?? [:]
            return .mapping(
                fields.reduce(into: [:]) { result, field in
                    result[field.key] = raw(field.value, Self.join(path, field.key))
                })
        case .alias:
            return .null
        }
    }

    /// A mapping kept as written; nil for null.
    mutating func rawMapping(_ node: Yams.Node?, _ path: String) -> [String: RawValue]? {
        guard let node, !Self.isNull(node) else { return nil }
        guard case .mapping(let raw) = raw(node, path) else {
            fail(path, "expected a mapping, found \(describe(node))", at: node.mark)
            return nil
        }
        return raw
    }

    // MARK: Helpers

    private mutating func record(_ node: Yams.Node, _ path: String) {
        if let mark = Position(node.mark) { marks[path] = mark }
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    static func tagName(_ node: Yams.Node) -> Tag.Name { Tag.Name(rawValue: node.tag.description) }

    static func isNull(_ node: Yams.Node) -> Bool {
        if case .scalar = node { return tagName(node) == .null }
        return false
    }

    /// `string "x"`, `integer 5`, `a mapping`, ... for type errors.
    func describe(_ node: Yams.Node) -> String {
        switch node {
        case .scalar(let scalar):
            switch Self.tagName(node) {
            case .null: "null"
            case .bool: "boolean \(scalar.string)"
            case .int: "integer \(scalar.string)"
            case .float: "number \(scalar.string)"
            default: "string \"\(scalar.string)\""
            }
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }
}

/// Where a resource or a problem sits in its source text: file name plus 1-based line and column.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    /// The file name as given to the decoder (`-` or a label for standard input).
    public var file: String
    /// 1-based line.
    public var line: Int
    /// 1-based column, counted in Unicode scalars as libyaml counts them.
    public var column: Int

    /// Creates a location.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line:column`.
    public var description: String { "\(file):\(line):\(column)" }
}

/// One problem found while decoding or validating resources.
///
/// Rendered as `file:line:column: Kind(name) field.path: message`; the kind/name part is left out
/// when the document's kind is unknown, and the field part when the problem concerns the whole object.
public struct ResourceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// File the problem is in.
    public var file: String
    /// 1-based line of the offending node (for an unknown key: the key; for a bad value: the value;
    /// for a missing key: the mapping that lacks it).
    public var line: Int
    /// 1-based column of the offending node.
    public var column: Int
    /// Resource kind (`IPPool`, `Node`, ...), when known.
    public var kind: String?
    /// Resource name, when known.
    public var name: String?
    /// Field path inside the resource, such as `spec.ipipMode` or `spec.allowedUses[1]`; empty for
    /// the whole object or document.
    public var field: String
    /// What is wrong. Where Calico has a message for the rule, this is Calico's text.
    public var message: String

    /// Creates an error.
    public init(file: String, line: Int, column: Int, kind: String?, name: String?, field: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.kind = kind
        self.name = name
        self.field = field
        self.message = message
    }

    /// The position as a `SourceLocation`.
    public var location: SourceLocation { SourceLocation(file: file, line: line, column: column) }

    /// `file:line:column: Kind(name) field: message`.
    public var description: String {
        var subject = ""
        if let kind { subject = "\(kind)(\(name ?? ""))" }
        if !field.isEmpty { subject += subject.isEmpty ? field : " " + field }
        let prefix = "\(file):\(line):\(column):"
        return subject.isEmpty ? "\(prefix) \(message)" : "\(prefix) \(subject): \(message)"
    }
}

/// Every problem found in one decode or load, in source order per file.
public struct ResourceErrors: Error, Hashable, Sendable, CustomStringConvertible {
    /// The problems; never empty when thrown.
    public var errors: [ResourceError]

    /// Wraps a list of problems.
    public init(_ errors: [ResourceError]) { self.errors = errors }

    /// One problem per line.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

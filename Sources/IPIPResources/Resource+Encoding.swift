/// A JSON-shaped value whose objects keep their keys in a chosen order: what `ResourceEncoder`
/// builds from a resource before writing it as JSON (struct order) or YAML (sorted keys).
public indirect enum EncodedValue: Hashable, Sendable {
    /// `null`.
    case null
    /// A boolean.
    case bool(Bool)
    /// An integer.
    case int(Int)
    /// A floating-point number.
    case double(Double)
    /// A string.
    case string(String)
    /// A list.
    case list([EncodedValue])
    /// An object, keys in output order.
    case object([EncodedField])

    /// The value of `key` when this is an object.
    public subscript(key: String) -> EncodedValue? {
        guard case .object(let fields) = self else { return nil }
        return fields.first { $0.key == key }?.value
    }
}

/// One key of an `EncodedValue.object`.
public struct EncodedField: Hashable, Sendable {
    /// The key.
    public var key: String
    /// The value.
    public var value: EncodedValue

    /// Creates a field.
    public init(_ key: String, _ value: EncodedValue) {
        self.key = key
        self.value = value
    }
}

/// Writes resources the way calicoctl and Calico's datastores do: Calico's JSON field names, the Go
/// structs' field order for JSON (`kind`, `apiVersion`, `metadata`, `spec`; `omitempty` fields left
/// out when empty), keys sorted for YAML (calicoctl produces YAML from JSON), every default filled
/// in (what Calico's client stores). Output is always valid input for `ResourceDecoder`.
///
/// Field order inside specs follows current Calico (`api/pkg/apis/projectcalico/v3`); FelixConfiguration
/// keys are written sorted, in both formats.
public enum ResourceEncoder {
    /// The resource as an ordered value.
    /// - Parameter includeResourceVersion: false for the value a datastore stores (etcd keeps the
    ///   revision outside the value; so does the SQLite store).
    public static func value(_ resource: Resource, includeResourceVersion: Bool = true) -> EncodedValue {
        let metadata = encodeMetadata(resource.metadata, includeResourceVersion: includeResourceVersion)
        var fields = [
            EncodedField("kind", .string(resource.kind)),
            EncodedField("apiVersion", .string(calicoAPIVersion)),
            EncodedField("metadata", metadata),
        ]
        switch resource {
        case .ipPool(let pool):
            fields.append(EncodedField("spec", encodeSpec(pool.spec)))
        case .node(let node):
            fields.append(EncodedField("spec", encodeSpec(node.spec)))
            if !node.status.isEmpty { fields.append(EncodedField("status", raw(.mapping(node.status)))) }
        case .blockAffinity(let affinity):
            fields.append(EncodedField("spec", encodeSpec(affinity.spec)))
        case .felixConfiguration(let configuration):
            fields.append(EncodedField("spec", encodeSpec(configuration.spec)))
        }
        return .object(fields)
    }

    /// A `<Kind>List` object, as `calicoctl get KIND -o yaml|json` prints it.
    public static func list(kind: String, items: [Resource], resourceVersion: String?) -> EncodedValue {
        var metadata: [EncodedField] = []
        if let resourceVersion { metadata.append(EncodedField("resourceVersion", .string(resourceVersion))) }
        return .object([
            EncodedField("kind", .string(kind + "List")),
            EncodedField("apiVersion", .string(calicoAPIVersion)),
            EncodedField("metadata", .object(metadata)),
            EncodedField("items", .list(items.map { value($0) })),
        ])
    }

    /// One resource as indented JSON (Go's `json.MarshalIndent(v, "", "  ")`), with a final newline.
    public static func json(_ resource: Resource) -> String { json(value(resource)) + "\n" }

    /// One resource as YAML with sorted keys.
    public static func yaml(_ resource: Resource) -> String { yaml(value(resource)) }

    // MARK: Metadata and specs

    private static let metadataOrder = [
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
        "managedFields", "clusterName",
    ]

    private static func encodeMetadata(_ metadata: ObjectMetadata, includeResourceVersion: Bool) -> EncodedValue {
        var fields: [EncodedField] = []
        for key in metadataOrder {
            let value: EncodedValue?
            switch key {
            case "name": value = .string(metadata.name)
            case "namespace": value = metadata.namespace.flatMap { $0.isEmpty ? nil : .string($0) }
            case "uid": value = metadata.uid.map(EncodedValue.string)
            case "resourceVersion":
                value = includeResourceVersion ? metadata.resourceVersion.map(EncodedValue.string) : nil
            case "generation": value = metadata.generation.map(EncodedValue.int)
            case "creationTimestamp": value = metadata.creationTimestamp.map(EncodedValue.string)
            case "labels": value = metadata.labels.isEmpty ? nil : stringMap(metadata.labels)
            case "annotations": value = metadata.annotations.isEmpty ? nil : stringMap(metadata.annotations)
            default: value = metadata.other[key].map(raw)
            }
            if let value { fields.append(EncodedField(key, value)) }
        }
        for (key, value) in metadata.other.sorted(by: { $0.key < $1.key }) where !metadataOrder.contains(key) {
            fields.append(EncodedField(key, raw(value)))
        }
        return .object(fields)
    }

    private static func encodeSpec(_ spec: IPPool.Spec) -> EncodedValue {
        var fields = [
            EncodedField("cidr", .string(spec.cidr)),
            EncodedField("vxlanMode", .string(spec.vxlanMode.rawValue)),
            EncodedField("ipipMode", .string(spec.ipipMode.rawValue)),
        ]
        if spec.natOutgoing { fields.append(EncodedField("natOutgoing", .bool(true))) }
        if spec.disabled { fields.append(EncodedField("disabled", .bool(true))) }
        if spec.disableBGPExport { fields.append(EncodedField("disableBGPExport", .bool(true))) }
        fields.append(EncodedField("blockSize", .int(spec.blockSize)))
        fields.append(EncodedField("nodeSelector", .string(spec.nodeSelector)))
        if !spec.namespaceSelector.isEmpty {
            fields.append(EncodedField("namespaceSelector", .string(spec.namespaceSelector)))
        }
        fields.append(EncodedField("allowedUses", .list(spec.allowedUses.map { .string($0.rawValue) })))
        fields.append(EncodedField("assignmentMode", .string(spec.assignmentMode.rawValue)))
        return .object(fields)
    }

    private static func encodeSpec(_ spec: Node.Spec) -> EncodedValue {
        var fields: [EncodedField] = []
        if let bgp = spec.bgp {
            var b: [EncodedField] = []
            if let asNumber = bgp.asNumber { b.append(EncodedField("asNumber", .int(Int(asNumber)))) }
            if let v4 = bgp.ipv4Address { b.append(EncodedField("ipv4Address", .string(v4.description))) }
            if let v6 = bgp.ipv6Address { b.append(EncodedField("ipv6Address", .string(v6))) }
            if let tunnel = bgp.ipv4IPIPTunnelAddr {
                b.append(EncodedField("ipv4IPIPTunnelAddr", .string(tunnel.description)))
            }
            if let id = bgp.routeReflectorClusterID { b.append(EncodedField("routeReflectorClusterID", .string(id))) }
            fields.append(EncodedField("bgp", .object(b)))
        }
        let strings: [(String, String?)] = [
            ("ipv4VXLANTunnelAddr", spec.ipv4VXLANTunnelAddr), ("vxlanTunnelMACAddr", spec.vxlanTunnelMACAddr),
            ("ipv6VXLANTunnelAddr", spec.ipv6VXLANTunnelAddr), ("vxlanTunnelMACAddrV6", spec.vxlanTunnelMACAddrV6),
        ]
        for (key, value) in strings {
            if let value { fields.append(EncodedField(key, .string(value))) }
        }
        if !spec.orchRefs.isEmpty {
            fields.append(
                EncodedField(
                    "orchRefs",
                    .list(
                        spec.orchRefs.map { ref in
                            var r: [EncodedField] = []
                            if let name = ref.nodeName { r.append(EncodedField("nodeName", .string(name))) }
                            r.append(EncodedField("orchestrator", .string(ref.orchestrator)))
                            return .object(r)
                        })))
        }
        if let wireguard = spec.wireguard { fields.append(EncodedField("wireguard", raw(.mapping(wireguard)))) }
        if !spec.addresses.isEmpty {
            fields.append(EncodedField("addresses", .list(spec.addresses.map { raw(.mapping($0)) })))
        }
        if !spec.interfaces.isEmpty {
            fields.append(EncodedField("interfaces", .list(spec.interfaces.map { raw(.mapping($0)) })))
        }
        return .object(fields)
    }

    private static func encodeSpec(_ spec: BlockAffinity.Spec) -> EncodedValue {
        var fields = [EncodedField("state", .string(spec.state.rawValue)), EncodedField("node", .string(spec.node))]
        if let type = spec.type { fields.append(EncodedField("type", .string(type))) }
        fields.append(EncodedField("cidr", .string(spec.cidr)))
        // Calico's BlockAffinitySpec.Deleted is a string, for compatibility with older releases.
        fields.append(EncodedField("deleted", .string(spec.deleted ? "true" : "false")))
        return .object(fields)
    }

    private static func encodeSpec(_ spec: FelixConfiguration.Spec) -> EncodedValue {
        var fields: [String: EncodedValue] = spec.other.mapValues(raw)
        if let v = spec.ipipEnabled { fields["ipipEnabled"] = .bool(v) }
        if let v = spec.ipipMTU { fields["ipipMTU"] = .int(v) }
        if let r = spec.natPortRange {
            // numorstring.Port: a number for a single port, "low:high" for a range.
            fields["natPortRange"] =
                r.lowerBound == r.upperBound
                ? .int(Int(r.lowerBound))
                : .string("\(r.lowerBound):\(r.upperBound)")
        }
        if let v = spec.natOutgoingAddress { fields["natOutgoingAddress"] = .string(v.description) }
        if let v = spec.iptablesNATOutgoingInterfaceFilter { fields["iptablesNATOutgoingInterfaceFilter"] = .string(v) }
        if !spec.externalNodesCIDRList.isEmpty {
            fields["externalNodesList"] = .list(spec.externalNodesCIDRList.map(EncodedValue.string))
        }
        if let v = spec.logSeverityScreen { fields["logSeverityScreen"] = .string(v) }
        if let v = spec.prometheusMetricsEnabled { fields["prometheusMetricsEnabled"] = .bool(v) }
        if let v = spec.prometheusMetricsHost { fields["prometheusMetricsHost"] = .string(v) }
        if let v = spec.prometheusMetricsPort { fields["prometheusMetricsPort"] = .int(v) }
        if let v = spec.healthEnabled { fields["healthEnabled"] = .bool(v) }
        if let v = spec.healthHost { fields["healthHost"] = .string(v) }
        if let v = spec.healthPort { fields["healthPort"] = .int(v) }
        if let v = spec.debugSimulateDataplaneHangAfterText { fields["debugSimulateDataplaneHangAfter"] = .string(v) }
        return .object(fields.sorted { $0.key < $1.key }.map { EncodedField($0.key, $0.value) })
    }

    private static func stringMap(_ map: [String: String]) -> EncodedValue {
        .object(map.sorted { $0.key < $1.key }.map { EncodedField($0.key, .string($0.value)) })
    }

    /// A value kept as written; mapping keys sorted (Go marshals maps sorted).
    public static func raw(_ value: RawValue) -> EncodedValue {
        switch value {
        case .null: .null
        case .bool(let b): .bool(b)
        case .int(let i): .int(i)
        case .double(let d): .double(d)
        case .string(let s): .string(s)
        case .list(let items): .list(items.map(raw))
        case .mapping(let map): .object(map.sorted { $0.key < $1.key }.map { EncodedField($0.key, raw($0.value)) })
        }
    }

    // MARK: JSON

    /// JSON text. `indent` nil gives compact JSON (Go's `json.Marshal`); otherwise each level is
    /// indented by `indent` (Go's `json.MarshalIndent(v, "", indent)`). No final newline.
    public static func json(_ value: EncodedValue, indent: String? = "  ") -> String {
        var out = ""
        writeJSON(value, indent: indent, level: 0, into: &out)
        return out
    }

    private static func writeJSON(_ value: EncodedValue, indent: String?, level: Int, into out: inout String) {
        func newline(_ level: Int) {
            guard let indent else { return }
            out += "\n" + String(repeating: indent, count: level)
        }
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += formatDouble(d)
        case .string(let s): out += jsonString(s)
        case .list(let items):
            guard !items.isEmpty else {
                out += "[]"
                return
            }
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += "," }
                newline(level + 1)
                writeJSON(item, indent: indent, level: level + 1, into: &out)
            }
            newline(level)
            out += "]"
        case .object(let fields):
            guard !fields.isEmpty else {
                out += "{}"
                return
            }
            out += "{"
            for (index, field) in fields.enumerated() {
                if index > 0 { out += "," }
                newline(level + 1)
                out += jsonString(field.key) + (indent == nil ? ":" : ": ")
                writeJSON(field.value, indent: indent, level: level + 1, into: &out)
            }
            newline(level)
            out += "}"
        }
    }

    private static func formatDouble(_ d: Double) -> String {
        if d.isFinite, d == d.rounded(), abs(d) < 1e15 { return String(Int(d)) }
        return "\(d)"
    }

    /// A JSON string literal with Go's escaping (`<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes).
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                out += "\\u" + hex4(scalar.value)
            case _ where scalar.value < 0x20:
                out += "\\u" + hex4(scalar.value)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    // MARK: YAML

    /// YAML text with keys sorted, in the layout Go's yaml.v2 writes (two-space indent, list items
    /// at their key's indentation), ending with a newline. Strings that would read back as another
    /// type (`"true"`, `"5"`, timestamps, ...) or need escaping are double-quoted.
    public static func yaml(_ value: EncodedValue) -> String {
        var out = ""
        switch value {
        case .object(let fields) where !fields.isEmpty:
            writeYAMLObject(fields, level: 0, into: &out)
        case .list(let items) where !items.isEmpty:
            writeYAMLList(items, level: 0, into: &out)
        default:
            out = yamlScalar(value) + "\n"
        }
        return out
    }

    private static func isCollection(_ value: EncodedValue) -> Bool {
        switch value {
        case .object(let fields): !fields.isEmpty
        case .list(let items): !items.isEmpty
        default: false
        }
    }

    private static func writeYAMLObject(
        _ fields: [EncodedField], level: Int, into out: inout String,
        firstLinePrefix: String? = nil
    ) {
        let pad = String(repeating: "  ", count: level)
        for (index, field) in fields.sorted(by: { $0.key < $1.key }).enumerated() {
            let lead = index == 0 ? (firstLinePrefix ?? pad) : pad
            let key = yamlString(field.key)
            switch field.value {
            case .object(let inner) where !inner.isEmpty:
                out += "\(lead)\(key):\n"
                writeYAMLObject(inner, level: level + 1, into: &out)
            case .list(let items) where !items.isEmpty:
                out += "\(lead)\(key):\n"
                writeYAMLList(items, level: level, into: &out)
            default:
                out += "\(lead)\(key): \(yamlScalar(field.value))\n"
            }
        }
    }

    private static func writeYAMLList(_ items: [EncodedValue], level: Int, into out: inout String) {
        let pad = String(repeating: "  ", count: level)
        for item in items {
            switch item {
            case .object(let fields) where !fields.isEmpty:
                writeYAMLObject(fields, level: level + 1, into: &out, firstLinePrefix: pad + "- ")
            case .list(let inner) where !inner.isEmpty:
                out += "\(pad)-\n"
                writeYAMLList(inner, level: level + 1, into: &out)
            default:
                out += "\(pad)- \(yamlScalar(item))\n"
            }
        }
    }

    private static func yamlScalar(_ value: EncodedValue) -> String {
        switch value {
        case .null: "null"
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .double(let d): formatDouble(d)
        case .string(let s): yamlString(s)
        case .list: "[]"
        case .object: "{}"
        }
    }

    private static let yamlReservedWords: Set<String> = [
        "", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n", "<<", "=",
    ]

    /// A string as a plain scalar when that reads back as the same string, else double-quoted.
    static func yamlString(_ s: String) -> String {
        yamlNeedsQuotes(s) ? jsonString(s) : s
    }

    private static func yamlNeedsQuotes(_ s: String) -> Bool {
        if yamlReservedWords.contains(s.lowercased()) { return true }
        guard let first = s.unicodeScalars.first, let last = s.unicodeScalars.last else { return true }
        if first == " " || last == " " || last == ":" { return true }
        if "-?:,[]{}#&*!|>'\"%@`.+".unicodeScalars.contains(first) { return true }
        if s.contains(": ") || s.contains(" #") { return true }
        if s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0.value > 0x7E }) { return true }
        // Numbers.
        if Double(s) != nil || Int(s) != nil { return true }
        guard ("0"..."9").contains(first) else { return false }
        // Sexagesimal numbers (`1:30`, YAML 1.1) and dates/timestamps (`2024-05-01...`).
        if s.contains(":"), s.unicodeScalars.allSatisfy({ "0123456789_:.+-eE".unicodeScalars.contains($0) }) {
            return true
        }
        let head = Array(s.unicodeScalars.prefix(5))
        return head.count == 5 && head[0..<4].allSatisfy { ("0"..."9").contains($0) } && head[4] == "-"
    }
}

extension Resource {
    /// The resource's metadata, readable and writable whatever the kind.
    public var metadata: ObjectMetadata {
        get {
            switch self {
            case .ipPool(let r): r.metadata
            case .node(let r): r.metadata
            case .blockAffinity(let r): r.metadata
            case .felixConfiguration(let r): r.metadata
            }
        }
        set {
            switch self {
            case .ipPool(var r):
                r.metadata = newValue
                self = .ipPool(r)
            case .node(var r):
                r.metadata = newValue
                self = .node(r)
            case .blockAffinity(var r):
                r.metadata = newValue
                self = .blockAffinity(r)
            case .felixConfiguration(var r):
                r.metadata = newValue
                self = .felixConfiguration(r)
            }
        }
    }
}

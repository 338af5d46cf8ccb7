import Yams

/// Decodes one object of a supported kind: the common envelope and metadata here, each kind's
/// `spec` in `<Kind>+Decoding.swift`.
struct KindDecoder {
    var reader: ObjectReader

    /// The location of the object being decoded.
    var location: SourceLocation {
        SourceLocation(file: reader.file, line: reader.origin.line, column: reader.origin.column)
    }

    /// The location recorded for a field path (or its closest ancestor).
    func location(of path: String) -> SourceLocation {
        let position = reader.mark(for: path)
        return SourceLocation(file: reader.file, line: position.line, column: position.column)
    }

    /// Decodes the object; nil when it has problems (they are in `reader.errors`).
    mutating func decode(_ node: Yams.Node) -> Resource? {
        let kind = reader.kind ?? ""
        var allowed: Set<String> = ["apiVersion", "kind", "metadata", "spec"]
        if kind == "IPPool" || kind == "Node" { allowed.insert("status") }
        guard let fields = reader.mapping(node, "", allowed: allowed) else { return nil }
        let metadata = decodeMetadata(fields["metadata"])
        let spec = fields["spec"].flatMap { ObjectReader.isNull($0) ? nil : $0 }
        let status = reader.rawMapping(fields["status"], "status") ?? [:]
        switch kind {
        case "IPPool":
            return decodeIPPool(metadata: metadata, spec: spec).map(Resource.ipPool)
        case "Node":
            return decodeNode(metadata: metadata, spec: spec, status: status).map(Resource.node)
        case "BlockAffinity":
            return decodeBlockAffinity(metadata: metadata, spec: spec).map(Resource.blockAffinity)
        case "FelixConfiguration":
            return decodeFelixConfiguration(metadata: metadata, spec: spec).map(Resource.felixConfiguration)
        default:
            preconditionFailure("KindDecoder called for unsupported kind \(kind)")
        }
    }

    // MARK: Metadata

    private static let objectMetaKeys: Set<String> = [
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
        "ownerReferences", "finalizers", "managedFields", "clusterName",
    ]

    /// Decodes and validates `metadata` (Calico `validateObjectMeta`, plus the namespace rule of
    /// calicoctl's resource manager).
    private mutating func decodeMetadata(_ node: Yams.Node?) -> ObjectMetadata {
        var metadata = ObjectMetadata(name: "")
        let fields =
            node.flatMap {
                ObjectReader.isNull($0) ? nil : reader.mapping($0, "metadata", allowed: Self.objectMetaKeys)
            } ?? [:]
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let path = "metadata.\(key)"
            switch key {
            case "name": metadata.name = reader.string(value, path) ?? ""
            case "namespace": metadata.namespace = reader.string(value, path)
            case "labels": metadata.labels = reader.stringMap(value, path) ?? [:]
            case "annotations": metadata.annotations = reader.stringMap(value, path) ?? [:]
            case "resourceVersion": metadata.resourceVersion = reader.string(value, path)
            case "uid": metadata.uid = reader.string(value, path)
            case "creationTimestamp": metadata.creationTimestamp = reader.string(value, path)
            case "generation": metadata.generation = reader.int(value, path)
            default: metadata.other[key] = reader.raw(value, path)
            }
        }
        validateMetadata(metadata)
        return metadata
    }

    private mutating func validateMetadata(_ metadata: ObjectMetadata) {
        let name = metadata.name
        if name.isEmpty {
            reader.fail("metadata.name", CalicoMessage.field("Metadata.Name", name, CalicoMessage.nameRequired))
        } else {
            let excess = name.utf8.count - KubernetesNames.dns1123SubdomainMaxLength
            if excess > 0 {
                reader.fail(
                    "metadata.name",
                    CalicoMessage.field("Metadata.Name", name, "name is too long by \(excess) bytes"))
            }
            if !KubernetesNames.matchesDNS1123Subdomain(name) {
                reader.fail(
                    "metadata.name",
                    CalicoMessage.field("Metadata.Name", name, KubernetesNames.calicoNameMessage))
            }
        }
        if let namespace = metadata.namespace, !namespace.isEmpty {
            reader.fail("metadata.namespace", CalicoMessage.nonNamespaced(reader.kind ?? ""))
        }
        for (key, value) in metadata.labels.sorted(by: { $0.key < $1.key }) {
            let path = "metadata.labels.\(key)"
            for reason in KubernetesNames.qualifiedNameErrors(key) {
                reader.failAtKey(path, CalicoMessage.field("Metadata.Labels (label)", key, reason))
            }
            for reason in KubernetesNames.labelValueErrors(value) {
                reader.fail(path, CalicoMessage.field("Metadata.Labels (value)", value, reason))
            }
        }
        var annotationBytes = 0
        for (key, value) in metadata.annotations.sorted(by: { $0.key < $1.key }) {
            for reason in KubernetesNames.qualifiedNameErrors(key.lowercased()) {
                reader.failAtKey(
                    "metadata.annotations.\(key)",
                    CalicoMessage.field("Metadata.Annotations (key)", key, reason))
            }
            annotationBytes += key.utf8.count + value.utf8.count
        }
        let excess = annotationBytes - KubernetesNames.annotationsTotalSizeLimit
        if excess > 0 {
            reader.fail(
                "metadata.annotations",
                CalicoMessage.field(
                    "Metadata.Annotations (key)", "…",
                    "total size of annotations is too large by \(excess) bytes"))
        }
    }

    // MARK: Shared helpers

    /// The fields of `spec` (empty when absent), with unknown keys reported.
    mutating func specFields(_ spec: Yams.Node?, allowed: Set<String>) -> [String: Yams.Node] {
        guard let spec else { return [:] }
        return reader.mapping(spec, "spec", allowed: allowed) ?? [:]
    }

    /// A non-empty string field, or nil (an empty string means "unset", as Go's omitempty does).
    mutating func nonEmptyString(_ node: Yams.Node?, _ path: String) -> String? {
        guard let value = reader.string(node, path), !value.isEmpty else { return nil }
        return value
    }

    /// Checks a string against a Calico field tag that accepts an address or CIDR, reporting the
    /// generic tag message when `isValid` says no.
    mutating func checkTag(_ value: String?, path: String, jsonName: String, tag: String, _ isValid: (String) -> Bool) {
        guard let value, !isValid(value) else { return }
        reader.fail(path, CalicoMessage.tag(jsonName, value, tag))
    }
}

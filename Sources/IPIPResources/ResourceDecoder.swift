import Foundation
import Yams

/// Decodes Calico v3 manifests (YAML or JSON) into resources, with defaults applied and Calico's
/// validation run.
///
/// Accepted input: one document; a multi-document stream (`---`); `IPPoolList`, `NodeList`,
/// `BlockAffinityList` and `FelixConfigurationList` documents with `items` (an item may omit `kind`
/// and `apiVersion`, which it then inherits from the list); top-level arrays of resources. Empty
/// documents are skipped. Unknown fields at any level, wrong types, wrong `apiVersion` and unknown
/// kinds are errors. All problems in all documents are collected; each names
/// `file:line:column`, the resource and the field path.
public enum ResourceDecoder {
    /// Decodes every resource in `text`.
    /// - Parameters:
    ///   - text: YAML or JSON.
    ///   - file: The name used in locations and errors.
    /// - Returns: The resources in source order.
    /// - Throws: `ResourceErrors` with every problem found, when there is at least one.
    public static func decode(_ text: String, file: String) throws(ResourceErrors) -> [Resource] {
        var errors: [ResourceError] = []
        let resources = decode(text, file: file, errors: &errors)
        guard errors.isEmpty else { throw ResourceErrors(errors) }
        return resources
    }

    /// Decodes one object as a datastore holds it (Calico's JSON in etcd): unknown fields are
    /// skipped, as Calico's own reader (Go's `json.Unmarshal`) skips them, so objects written by a
    /// newer Calico still load; everything else (types, values, validation) is as strict as for
    /// manifests. The object must be a single resource of a supported kind.
    public static func decodeStored(_ text: String, file: String) throws(ResourceErrors) -> Resource {
        var errors: [ResourceError] = []
        var resources: [Resource] = []
        do {
            let node = try Yams.compose(yaml: jsonTabsAsSpaces(text))
            if let node {
                decodeObject(
                    node, file: file, inherited: nil, into: &resources, errors: &errors,
                    ignoringUnknownFields: true)
            }
        } catch {
            errors.append(syntaxError(error, file: file))
        }
        guard errors.isEmpty else { throw ResourceErrors(errors) }
        guard resources.count == 1, let resource = resources.first else {
            throw ResourceErrors([
                ResourceError(
                    file: file, line: 1, column: 1, kind: nil, name: nil, field: "",
                    message: "expected one resource")
            ])
        }
        return resource
    }

    /// Decodes what it can and appends every problem to `errors`.
    static func decode(_ text: String, file: String, errors: inout [ResourceError]) -> [Resource] {
        var documents: [Yams.Node] = []
        do {
            var stream = try Yams.compose_all(yaml: jsonTabsAsSpaces(text))
            while let document = stream.next() { documents.append(document) }
            if let error = stream.error { errors.append(syntaxError(error, file: file)) }
        } catch {
            errors.append(syntaxError(error, file: file))
        }
        var resources: [Resource] = []
        for document in documents {
            switch document {
            case _ where ObjectReader.isNull(document):
                continue
            case .sequence(let items):
                for item in items where !ObjectReader.isNull(item) {
                    decodeObject(item, file: file, inherited: nil, into: &resources, errors: &errors)
                }
            default:
                decodeObject(document, file: file, inherited: nil, into: &resources, errors: &errors)
            }
        }
        return resources
    }

    /// libyaml rejects tabs used as indentation, which pretty-printed JSON often has. JSON allows raw
    /// tabs only between tokens (never inside strings), so for input that parses as JSON, turning every
    /// tab into a space changes nothing but that, and keeps every line and column.
    private static func jsonTabsAsSpaces(_ text: String) -> String {
        guard text.contains("\t"), let first = text.first(where: { !$0.isWhitespace }), first == "{" || first == "[",
            (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil
        else { return text }
        return text.replacingOccurrences(of: "\t", with: " ")
    }

    private static func syntaxError(_ error: any Error, file: String) -> ResourceError {
        func make(_ position: Position, _ message: String) -> ResourceError {
            ResourceError(
                file: file, line: position.line, column: position.column, kind: nil, name: nil, field: "",
                message: message)
        }
        guard let error = error as? YamlError else { return make(.start, "\(error)") }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let prefix = context.map { "\($0.text) " } ?? ""
            return make(Position(mark) ?? .start, "\(prefix)\(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let position = Position(context.mark).flatMap { $0.line > 0 ? $0 : nil } ?? .start
            let keys = duplicates.map { "\"\($0)\"" }.joined(separator: ", ")
            return make(position, "duplicate key \(keys) in mapping")
        case .reader(let problem, _, _, _):
            return make(.start, problem)
        default:
            return make(.start, "\(error)")
        }
    }

    // MARK: Objects

    /// The kinds this module decodes, and their list kinds.
    static let supportedKinds = ["IPPool", "Node", "BlockAffinity", "FelixConfiguration"]

    /// Other `projectcalico.org/v3` kinds: recognised, but not read by this dataplane.
    static let otherCalicoKinds: Set<String> = [
        "BGPConfiguration", "BGPFilter", "BGPPeer", "CalicoNodeStatus", "ClusterInformation",
        "GlobalNetworkPolicy", "GlobalNetworkSet", "HostEndpoint", "IPAMBlock", "IPAMConfiguration", "IPAMHandle",
        "IPReservation", "KubeControllersConfiguration", "NetworkPolicy", "NetworkSet", "Profile",
        "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy", "StagedNetworkPolicy", "Tier",
        "WorkloadEndpoint",
    ]

    private static func scalarString(_ node: Yams.Node?) -> String? {
        if case .scalar(let scalar)? = node { return scalar.string }
        return nil
    }

    /// `metadata.name` of an object, if it is written as a scalar.
    private static func peekName(_ fields: [String: Yams.Node]) -> String? {
        guard case .mapping(let metadata)? = fields["metadata"] else { return nil }
        return scalarString(metadata["name"])
    }

    private static func decodeObject(
        _ node: Yams.Node, file: String, inherited: (kind: String, apiVersion: String)?,
        into resources: inout [Resource], errors: inout [ResourceError], ignoringUnknownFields: Bool = false
    ) {
        var reader = ObjectReader(file: file, kind: nil, origin: Position(node.mark) ?? .start)
        reader.ignoresUnknownFields = ignoringUnknownFields
        guard case .mapping(let mapping) = node else {
            reader.fail(
                "", "expected a resource (a mapping) or a list of resources, found \(reader.describe(node))",
                at: node.mark)
            errors += reader.errors
            return
        }
        let kindNode = mapping["kind"]
        let apiVersionNode = mapping["apiVersion"]
        let kind = kindNode.flatMap { reader.string($0, "kind") } ?? inherited?.kind ?? ""
        let apiVersion = apiVersionNode.flatMap { reader.string($0, "apiVersion") } ?? inherited?.apiVersion ?? ""
        guard reader.errors.isEmpty else {
            errors += reader.errors
            return
        }
        if let inherited, kind != inherited.kind {
            reader.fail(
                "kind", "kind '\(kind)' does not match the list's item kind '\(inherited.kind)'",
                at: kindNode?.mark)
            errors += reader.errors
            return
        }
        guard apiVersion == calicoAPIVersion else {
            reader.fail(
                "", CalicoMessage.unknownResource(kind: kind, apiVersion: apiVersion),
                at: (apiVersionNode ?? node).mark)
            errors += reader.errors
            return
        }
        if inherited == nil, kind.hasSuffix("List"), supportedKinds.contains(String(kind.dropLast(4))) {
            decodeList(node, kind: kind, apiVersion: apiVersion, file: file, into: &resources, errors: &errors)
            return
        }
        guard supportedKinds.contains(kind) else {
            let message =
                otherCalicoKinds.contains(kind) || otherCalicoKinds.contains(String(kind.dropLast(4)))
                ? CalicoMessage.unsupportedResource(kind)
                : CalicoMessage.unknownResource(kind: kind, apiVersion: apiVersion)
            reader.fail("", message, at: (kindNode ?? node).mark)
            errors += reader.errors
            return
        }
        reader.kind = kind
        var objectFields: [String: Yams.Node] = [:]
        for (key, value) in mapping {
            if case .scalar(let scalar) = key { objectFields[scalar.string] = value }
        }
        reader.name = peekName(objectFields)
        var decoder = KindDecoder(reader: reader)
        let resource = decoder.decode(node)
        // Decoding and validation run in separate passes; report in source order.
        errors += decoder.reader.errors.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
        if let resource, decoder.reader.errors.isEmpty { resources.append(resource) }
    }

    private static func decodeList(
        _ node: Yams.Node, kind: String, apiVersion: String, file: String,
        into resources: inout [Resource], errors: inout [ResourceError]
    ) {
        var reader = ObjectReader(file: file, kind: kind, origin: Position(node.mark) ?? .start)
        let fields = reader.mapping(node, "", allowed: ["apiVersion", "kind", "metadata", "items"]) ?? [:]
        if let metadata = fields["metadata"], !ObjectReader.isNull(metadata) {
            let listMeta = reader.mapping(
                metadata, "metadata",
                allowed: ["resourceVersion", "continue", "selfLink", "remainingItemCount"])
            for (key, value) in listMeta ?? [:] { _ = reader.raw(value, "metadata.\(key)") }
        }
        errors += reader.errors
        guard let itemsNode = fields["items"], !ObjectReader.isNull(itemsNode) else { return }
        guard case .sequence(let items) = itemsNode else {
            var itemsReader = ObjectReader(file: file, kind: kind, origin: reader.origin)
            itemsReader.fail("items", "expected a list, found \(itemsReader.describe(itemsNode))", at: itemsNode.mark)
            errors += itemsReader.errors
            return
        }
        let itemKind = String(kind.dropLast(4))
        for item in items {
            decodeObject(item, file: file, inherited: (itemKind, apiVersion), into: &resources, errors: &errors)
        }
    }
}

import Yams

extension KindDecoder {
    /// Decodes a BlockAffinity spec. Calico puts no validation tags on it; this module requires what
    /// the dataplane relies on: a known `state`, a `node`, and a strictly masked block `cidr`.
    mutating func decodeBlockAffinity(metadata: ObjectMetadata, spec: Yams.Node?) -> BlockAffinity? {
        let fields = specFields(spec, allowed: ["state", "node", "cidr", "deleted", "type"])
        let stateText = reader.string(fields["state"], "spec.state")
        let node = reader.string(fields["node"], "spec.node")
        let cidrText = reader.string(fields["cidr"], "spec.cidr")
        let type = nonEmptyString(fields["type"], "spec.type")
        let deleted = decodeDeleted(fields["deleted"])

        var state: BlockAffinityState?
        switch stateText {
        case nil, "":
            reader.fail("spec.state", "missing required field \"state\"")
        case let text?:
            state = BlockAffinityState(rawValue: text)
            if state == nil {
                reader.fail("spec.state", "invalid state '\(text)' (expected confirmed, pending or pendingDeletion)")
            }
        }
        if node?.isEmpty ?? true { reader.fail("spec.node", "missing required field \"node\"") }
        var prefix: IPPrefix?
        switch cidrText {
        case nil, "":
            reader.fail("spec.cidr", "missing required field \"cidr\"")
        case let text?:
            prefix = IPPrefix(text)
            if prefix == nil {
                reader.fail("spec.cidr", "invalid block CIDR '\(text)'")
            } else if prefix?.isStrictlyMasked == false {
                reader.fail("spec.cidr", "block CIDR '\(text)' is not strictly masked")
            }
        }
        guard let state, let node, let prefix, let deleted else { return nil }
        return BlockAffinity(
            metadata: metadata,
            spec: BlockAffinity.Spec(
                state: state, node: node, cidr: prefix.description, prefix: prefix, type: type,
                deleted: deleted),
            location: location)
    }

    /// `deleted`: a bool, or the strings `"true"`/`"false"` (or empty) that some Calico versions write.
    private mutating func decodeDeleted(_ node: Yams.Node?) -> Bool? {
        guard let node, !ObjectReader.isNull(node) else { return false }
        if ObjectReader.tagName(node) == .bool, let value = node.bool { return value }
        if case .scalar(let scalar) = node, ObjectReader.tagName(node) == .str {
            switch scalar.string {
            case "true": return true
            case "false", "": return false
            default: break
            }
        }
        reader.fail(
            "spec.deleted", "expected a boolean or \"true\"/\"false\", found \(reader.describe(node))",
            at: node.mark)
        return nil
    }
}

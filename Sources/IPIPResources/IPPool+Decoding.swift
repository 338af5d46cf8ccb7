import IPIPCore
import Yams

extension IPPool {
    /// Block size used when the manifest has none (or 0): 26 for IPv4, as Calico.
    public static let defaultIPv4BlockSize = 26
    /// Block size used when the manifest has none (or 0): 122 for IPv6, as Calico.
    public static let defaultIPv6BlockSize = 122
    /// Node selector used when the manifest has none: every node.
    public static let defaultNodeSelector = "all()"
    /// Allowed uses when the manifest has none, as Calico v3.21+.
    public static let defaultAllowedUses: [IPPoolAllowedUse] = [.workload, .tunnel]
}

extension KindDecoder {
    private static let ipPoolSpecKeys: Set<String> = [
        "cidr", "ipipMode", "vxlanMode", "natOutgoing", "disabled", "disableBGPExport", "blockSize",
        "nodeSelector", "namespaceSelector", "allowedUses", "assignmentMode",
    ]

    /// Decodes an IPPool spec, applies defaults and runs Calico's IPPool rules.
    ///
    /// Messages: the struct validator's (libcalico-go's `validateIPPoolSpec`) for the
    /// rules it has; the client's (`validateAndSetDefaults`; docs/calico.md, "IPPool") for
    /// block-size ranges, which only the client checks.
    /// VXLAN on an IPv6 pool is accepted, as in Calico v3.23 and later.
    mutating func decodeIPPool(metadata: ObjectMetadata, spec: Yams.Node?) -> IPPool? {
        let fields = specFields(spec, allowed: Self.ipPoolSpecKeys)
        let cidrText = reader.string(fields["cidr"], "spec.cidr") ?? ""
        let ipipText = nonEmptyString(fields["ipipMode"], "spec.ipipMode")
        let vxlanText = nonEmptyString(fields["vxlanMode"], "spec.vxlanMode")
        let natOutgoing = reader.bool(fields["natOutgoing"], "spec.natOutgoing") ?? false
        let disabled = reader.bool(fields["disabled"], "spec.disabled") ?? false
        let disableBGPExport = reader.bool(fields["disableBGPExport"], "spec.disableBGPExport") ?? false
        let blockSizeValue = reader.int(fields["blockSize"], "spec.blockSize") ?? 0
        let nodeSelector = nonEmptyString(fields["nodeSelector"], "spec.nodeSelector") ?? IPPool.defaultNodeSelector
        let namespaceSelector = reader.string(fields["namespaceSelector"], "spec.namespaceSelector") ?? ""
        let assignmentText = nonEmptyString(fields["assignmentMode"], "spec.assignmentMode")

        let ipipMode = ipipText.flatMap { text in
            IPIPMode(rawValue: text) ?? failing("spec.ipipMode", CalicoMessage.tag("ipipMode", text, "ipIpMode"))
        }
        let vxlanMode =
            vxlanText.flatMap { text in
                VXLANMode(rawValue: text)
                    ?? failing("spec.vxlanMode", CalicoMessage.tag("vxlanMode", text, "vxlanMode"))
            } ?? .never
        let assignmentMode =
            assignmentText.flatMap { text in
                AssignmentMode(rawValue: text)
                    ?? failing("spec.assignmentMode", CalicoMessage.tag("assignmentMode", text, "assignmentMode"))
            } ?? .automatic

        var allowedUses: [IPPoolAllowedUse] = []
        if let usesNode = fields["allowedUses"], !ObjectReader.isNull(usesNode) {
            for (path, node) in reader.list(usesNode, "spec.allowedUses") ?? [] {
                guard let text = reader.string(node, path) else { continue }
                if let use = IPPoolAllowedUse(rawValue: text) {
                    allowedUses.append(use)
                } else {
                    reader.fail(path, CalicoMessage.field("IPpool.AllowedUses", text, "unknown use: \(text)"))
                }
            }
        }
        if allowedUses.isEmpty { allowedUses = IPPool.defaultAllowedUses }

        checkSelector(nodeSelector, path: "spec.nodeSelector", jsonName: "nodeSelector", rejectGlobal: true)
        checkSelector(
            namespaceSelector, path: "spec.namespaceSelector", jsonName: "namespaceSelector",
            rejectGlobal: false)

        // CIDR rules, in validateIPPoolSpec's order.
        guard !cidrText.isEmpty else {
            reader.fail("spec.cidr", CalicoMessage.field("IPpool.CIDR", cidrText, CalicoMessage.cidrMissing))
            return nil
        }
        guard let written = IPPrefix(cidrText, allowBareAddress: true) else {
            reader.fail("spec.cidr", CalicoMessage.field("IPpool.CIDR", cidrText, CalicoMessage.cidrInvalid))
            return nil
        }
        let prefix = written.network
        let cidr = prefix.description
        // An absent ipipMode defaults per family; a VXLAN pool is never also an IP-in-IP pool.
        let resolvedIPIP =
            ipipMode
            ?? (prefix.isIPv6 || vxlanMode.isEnabled ? .never : IPIPMode.defaultForIPv4Pools)
        let ipipModeIsValid = ipipText == nil || ipipMode != nil
        if ipipModeIsValid, prefix.isIPv6, resolvedIPIP != .never {
            reader.fail(
                "spec.ipipMode",
                CalicoMessage.field("IPpool.IPIPMode", resolvedIPIP.rawValue, CalicoMessage.ipipOnIPv6))
        }
        if ipipModeIsValid, resolvedIPIP.isEnabled, vxlanMode.isEnabled {
            reader.fail(
                "spec.ipipMode",
                CalicoMessage.field("IPpool.IPIPMode", resolvedIPIP.rawValue, CalicoMessage.ipipAndVXLAN))
        }
        let blockSize =
            blockSizeValue != 0
            ? blockSizeValue : (prefix.isIPv6 ? IPPool.defaultIPv6BlockSize : IPPool.defaultIPv4BlockSize)
        if !disabled, prefix.length > blockSize {
            reader.fail("spec.cidr", CalicoMessage.field("IPpool.CIDR", cidr, CalicoMessage.poolTooSmall))
        }
        if !written.isStrictlyMasked {
            reader.fail("spec.cidr", CalicoMessage.field("IPpool.CIDR", cidr, CalicoMessage.cidrNotStrictlyMasked))
        }
        switch prefix {
        case .v4(let v4) where v4.overlaps(IPv4Prefix(address: IPv4Address(169, 254, 0, 0), length: 16)):
            reader.fail("spec.cidr", CalicoMessage.field("IPpool.CIDR", cidr, CalicoMessage.ipv4LinkLocal))
        case .v6(let v6) where v6.overlaps(.linkLocal):
            reader.fail("spec.cidr", CalicoMessage.field("IPpool.CIDR", cidr, CalicoMessage.ipv6LinkLocal))
        default:
            break
        }
        let blockSizeRange = prefix.isIPv6 ? 116...128 : 20...32
        if !blockSizeRange.contains(blockSize) {
            reader.fail(
                "spec.blockSize",
                CalicoMessage.field(
                    "IPPool.Spec.BlockSize", String(blockSize),
                    prefix.isIPv6 ? CalicoMessage.ipv6BlockSize : CalicoMessage.ipv4BlockSize))
        }

        return IPPool(
            metadata: metadata,
            spec: IPPool.Spec(
                cidr: cidr, prefix: prefix, ipipMode: resolvedIPIP, vxlanMode: vxlanMode, natOutgoing: natOutgoing,
                disabled: disabled, disableBGPExport: disableBGPExport, blockSize: blockSize,
                nodeSelector: nodeSelector, namespaceSelector: namespaceSelector, allowedUses: allowedUses,
                assignmentMode: assignmentMode),
            location: location,
            cidrLocation: location(of: "spec.cidr"))
    }

    /// Reports `message` at `path` and yields nil, for `?? failing(...)` chains.
    private mutating func failing<T>(_ path: String, _ message: String) -> T? {
        reader.fail(path, message)
        return nil
    }

    private mutating func checkSelector(_ selector: String, path: String, jsonName: String, rejectGlobal: Bool) {
        do {
            let result = try SelectorSyntax.check(selector)
            if rejectGlobal, result.usesGlobal { reader.fail(path, CalicoMessage.globalNodeSelector) }
        } catch {
            reader.fail(path, CalicoMessage.tag(jsonName, selector, "selector"))
        }
    }
}

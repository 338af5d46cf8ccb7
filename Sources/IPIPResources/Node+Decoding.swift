import IPIPCore
import Yams

extension KindDecoder {
    private static let nodeSpecKeys: Set<String> = [
        "bgp", "ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr", "vxlanTunnelMACAddrV6",
        "orchRefs", "wireguard", "addresses", "interfaces",
    ]
    private static let nodeBGPKeys: Set<String> = [
        "asNumber", "ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "routeReflectorClusterID",
    ]

    private static func isIPv4(_ text: String) -> Bool { IPv4Address(text) != nil }
    private static func isIPv6(_ text: String) -> Bool { IPv6Address(text) != nil }
    private static func isCIDROrIP(_ text: String) -> Bool { IPPrefix(text, allowBareAddress: true) != nil }

    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (the forms Calico writes).
    private static func isMAC(_ text: String) -> Bool {
        for separator in [":", "-"] as [Character] {
            let groups = text.split(separator: separator, omittingEmptySubsequences: false)
            if groups.count == 6, groups.allSatisfy({ $0.count == 2 && UInt8($0, radix: 16) != nil }) { return true }
        }
        return false
    }

    /// Decodes a Node spec and runs Calico's Node rules (`validateNodeSpec` and the field tags).
    mutating func decodeNode(metadata: ObjectMetadata, spec: Yams.Node?, status: [String: RawValue]) -> Node? {
        let fields = specFields(spec, allowed: Self.nodeSpecKeys)
        var result = Node.Spec()
        if let bgpNode = fields["bgp"], !ObjectReader.isNull(bgpNode) {
            result.bgp = decodeBGP(bgpNode)
        }
        result.ipv4VXLANTunnelAddr = nonEmptyString(fields["ipv4VXLANTunnelAddr"], "spec.ipv4VXLANTunnelAddr")
        checkTag(
            result.ipv4VXLANTunnelAddr, path: "spec.ipv4VXLANTunnelAddr", jsonName: "ipv4VXLANTunnelAddr",
            tag: "ipv4", Self.isIPv4)
        result.ipv6VXLANTunnelAddr = nonEmptyString(fields["ipv6VXLANTunnelAddr"], "spec.ipv6VXLANTunnelAddr")
        checkTag(
            result.ipv6VXLANTunnelAddr, path: "spec.ipv6VXLANTunnelAddr", jsonName: "ipv6VXLANTunnelAddr",
            tag: "ipv6", Self.isIPv6)
        result.vxlanTunnelMACAddr = nonEmptyString(fields["vxlanTunnelMACAddr"], "spec.vxlanTunnelMACAddr")
        checkTag(
            result.vxlanTunnelMACAddr, path: "spec.vxlanTunnelMACAddr", jsonName: "vxlanTunnelMACAddr",
            tag: "mac", Self.isMAC)
        result.vxlanTunnelMACAddrV6 = nonEmptyString(fields["vxlanTunnelMACAddrV6"], "spec.vxlanTunnelMACAddrV6")
        checkTag(
            result.vxlanTunnelMACAddrV6, path: "spec.vxlanTunnelMACAddrV6", jsonName: "vxlanTunnelMACAddrV6",
            tag: "mac", Self.isMAC)

        for (path, node) in optionalList(fields["orchRefs"], "spec.orchRefs") {
            let ref = reader.mapping(node, path, allowed: ["nodeName", "orchestrator"]) ?? [:]
            let nodeName = reader.string(ref["nodeName"], "\(path).nodeName")
            let orchestrator = reader.string(ref["orchestrator"], "\(path).orchestrator") ?? ""
            result.orchRefs.append(Node.OrchRef(nodeName: nodeName, orchestrator: orchestrator))
        }
        if let wireguard = fields["wireguard"], !ObjectReader.isNull(wireguard) {
            let wg =
                reader.mapping(
                    wireguard, "spec.wireguard",
                    allowed: ["interfaceIPv4Address", "interfaceIPv6Address"]) ?? [:]
            let v4 = nonEmptyString(wg["interfaceIPv4Address"], "spec.wireguard.interfaceIPv4Address")
            checkTag(
                v4, path: "spec.wireguard.interfaceIPv4Address", jsonName: "interfaceIPv4Address", tag: "ipv4",
                Self.isIPv4)
            let v6 = nonEmptyString(wg["interfaceIPv6Address"], "spec.wireguard.interfaceIPv6Address")
            checkTag(
                v6, path: "spec.wireguard.interfaceIPv6Address", jsonName: "interfaceIPv6Address", tag: "ipv6",
                Self.isIPv6)
            result.wireguard = reader.rawMapping(wireguard, "spec.wireguard")
        }
        for (path, node) in optionalList(fields["addresses"], "spec.addresses") {
            let entry = reader.mapping(node, path, allowed: ["address", "type"]) ?? [:]
            let address = reader.string(entry["address"], "\(path).address") ?? ""
            checkTag(address, path: "\(path).address", jsonName: "address", tag: "net", Self.isCIDROrIP)
            _ = reader.string(entry["type"], "\(path).type")
            result.addresses.append(reader.rawMapping(node, path) ?? [:])
        }
        for (path, node) in optionalList(fields["interfaces"], "spec.interfaces") {
            let entry = reader.mapping(node, path, allowed: ["name", "addresses"]) ?? [:]
            _ = reader.string(entry["name"], "\(path).name")
            _ = reader.strings(entry["addresses"], "\(path).addresses")
            result.interfaces.append(reader.rawMapping(node, path) ?? [:])
        }
        return Node(metadata: metadata, spec: result, status: status, location: location)
    }

    private mutating func optionalList(_ node: Yams.Node?, _ path: String) -> [(path: String, node: Yams.Node)] {
        guard let node, !ObjectReader.isNull(node) else { return [] }
        return reader.list(node, path) ?? []
    }

    private mutating func decodeBGP(_ node: Yams.Node) -> Node.BGP? {
        guard let fields = reader.mapping(node, "spec.bgp", allowed: Self.nodeBGPKeys) else { return nil }
        var bgp = Node.BGP()
        if let text = nonEmptyString(fields["ipv4Address"], "spec.bgp.ipv4Address") {
            bgp.ipv4Address = IPv4Prefix(text, allowBareAddress: true)
            checkTag(text, path: "spec.bgp.ipv4Address", jsonName: "ipv4Address", tag: "cidrv4") { _ in
                bgp.ipv4Address != nil
            }
        }
        bgp.ipv6Address = nonEmptyString(fields["ipv6Address"], "spec.bgp.ipv6Address")
        checkTag(bgp.ipv6Address, path: "spec.bgp.ipv6Address", jsonName: "ipv6Address", tag: "cidrv6") {
            IPv6Prefix($0, allowBareAddress: true) != nil
        }
        if let text = nonEmptyString(fields["ipv4IPIPTunnelAddr"], "spec.bgp.ipv4IPIPTunnelAddr") {
            bgp.ipv4IPIPTunnelAddr = IPv4Address(text)
            checkTag(
                text, path: "spec.bgp.ipv4IPIPTunnelAddr", jsonName: "ipv4IPIPTunnelAddr", tag: "ipv4",
                Self.isIPv4)
        }
        bgp.routeReflectorClusterID = nonEmptyString(
            fields["routeReflectorClusterID"], "spec.bgp.routeReflectorClusterID")
        checkTag(
            bgp.routeReflectorClusterID, path: "spec.bgp.routeReflectorClusterID",
            jsonName: "routeReflectorClusterID", tag: "ipv4", Self.isIPv4)
        if let asNode = fields["asNumber"], !ObjectReader.isNull(asNode) {
            bgp.asNumber = decodeASNumber(asNode)
        }
        let written = fields.values.contains { node in
            if ObjectReader.isNull(node) { return false }
            if case .scalar(let scalar) = node, ObjectReader.tagName(node) == .str { return !scalar.string.isEmpty }
            return true
        }
        if !written {
            reader.fail("spec.bgp", CalicoMessage.field("BGP", "{}", CalicoMessage.emptyBGP))
        }
        return bgp
    }

    /// Calico's `numorstring.ASNumber`: a 32-bit number, or asdot `high.low` with two 16-bit halves.
    private mutating func decodeASNumber(_ node: Yams.Node) -> UInt32? {
        let path = "spec.bgp.asNumber"
        guard case .scalar(let scalar) = node else {
            reader.fail(path, "expected an AS number, found \(reader.describe(node))", at: node.mark)
            return nil
        }
        let text = scalar.string
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        if ObjectReader.tagName(node) == .int, let value = node.int, let asNumber = UInt32(exactly: value) {
            return asNumber
        }
        if parts.count == 2, let high = UInt16(parts[0]), let low = UInt16(parts[1]) {
            return UInt32(high) << 16 | UInt32(low)
        }
        reader.fail(path, "invalid AS number '\(text)': expected 0…4294967295 or asdot 'high.low'", at: node.mark)
        return nil
    }
}

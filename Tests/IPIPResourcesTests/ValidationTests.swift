import Testing

@testable import IPIPResources

/// A manifest and the exact error lines it must produce.
struct ErrorCase: CustomTestStringConvertible, Sendable {
    let name: String
    let manifest: String
    let expected: [String]
    var testDescription: String { name }
}

private let longName = String(repeating: "a", count: 254)
private let longLabelValue = String(repeating: "v", count: 64)

private func nodeManifest(_ specLines: String) -> String {
    """
    apiVersion: projectcalico.org/v3
    kind: Node
    metadata:
      name: n1
    spec:
    \(specLines)
    """
}

private func felixManifest(_ specLines: String) -> String {
    """
    apiVersion: projectcalico.org/v3
    kind: FelixConfiguration
    metadata:
      name: default
    spec:
    \(specLines)
    """
}

private func affinityManifest(_ specLines: String) -> String {
    """
    apiVersion: projectcalico.org/v3
    kind: BlockAffinity
    metadata:
      name: node-a-10-1-0-0-26
    spec:
    \(specLines)
    """
}

private let poolRuleCases: [ErrorCase] = [
    ErrorCase(
        name: "cidr missing is reported at the spec mapping",
        manifest: poolManifest("  natOutgoing: true"),
        expected: ["t.yaml:6:3: IPPool(p) spec.cidr: error with field IPpool.CIDR = '' (IPPool CIDR must be specified)"]
    ),
    ErrorCase(
        name: "cidr empty",
        manifest: poolManifest("  cidr: \"\""),
        expected: ["t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '' (IPPool CIDR must be specified)"]
    ),
    ErrorCase(
        name: "cidr octet out of range",
        manifest: poolManifest("  cidr: 10.0.256.0/24"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '10.0.256.0/24' (IPPool CIDR must be a valid subnet)"
        ]),
    ErrorCase(
        name: "cidr prefix length 33",
        manifest: poolManifest("  cidr: 10.0.1.0/33"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '10.0.1.0/33' (IPPool CIDR must be a valid subnet)"
        ]),
    ErrorCase(
        name: "cidr IPv6 with two gaps",
        manifest: poolManifest("  cidr: fd5f::2::1/32"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = 'fd5f::2::1/32' (IPPool CIDR must be a valid subnet)"
        ]),
    ErrorCase(
        name: "host bits set (value printed canonical)",
        manifest: poolManifest("  cidr: 10.0.0.1/24"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '10.0.0.0/24' (IP pool CIDR is not strictly masked)"
        ]),
    ErrorCase(
        name: "IPv6 host bits set",
        manifest: poolManifest("  cidr: fd5f::1/120"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = 'fd5f::/120' (IP pool CIDR is not strictly masked)"
        ]),
    ErrorCase(
        name: "bare address is a /32, smaller than a block",
        manifest: poolManifest("  cidr: 10.0.250.0"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '10.0.250.0/32' (IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size.)"
        ]),
    ErrorCase(
        name: "/27 smaller than the default /26 block",
        manifest: poolManifest("  cidr: 192.168.0.0/27"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '192.168.0.0/27' (IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size.)"
        ]),
    ErrorCase(
        name: "IPv6 /128 smaller than the default /122 block",
        manifest: poolManifest("  cidr: ::/128"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '::/128' (IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size.)"
        ]),
    ErrorCase(
        name: "inside IPv4 link-local",
        manifest: poolManifest("  cidr: 169.254.1.0/24"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '169.254.1.0/24' (IP pool range overlaps with IPv4 Link Local range 169.254.0.0/16)"
        ]),
    ErrorCase(
        name: "containing IPv4 link-local",
        manifest: poolManifest("  cidr: 128.0.0.0/1"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '128.0.0.0/1' (IP pool range overlaps with IPv4 Link Local range 169.254.0.0/16)"
        ]),
    ErrorCase(
        name: "inside IPv6 link-local",
        manifest: poolManifest("  cidr: fe80::/64"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = 'fe80::/64' (IP pool range overlaps with IPv6 Link Local range fe80::/10)"
        ]),
    ErrorCase(
        name: "containing IPv6 link-local",
        manifest: poolManifest("  cidr: FE00::/7"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = 'fe00::/7' (IP pool range overlaps with IPv6 Link Local range fe80::/10)"
        ]),
    ErrorCase(
        name: "IPv4 blockSize above 32",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  blockSize: 33"),
        expected: [
            "t.yaml:7:14: IPPool(p) spec.blockSize: error with field IPPool.Spec.BlockSize = '33' (IPv4 block size must be between 20 and 32)"
        ]),
    ErrorCase(
        name: "IPv4 blockSize below 20",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  blockSize: 19"),
        expected: [
            "t.yaml:7:14: IPPool(p) spec.blockSize: error with field IPPool.Spec.BlockSize = '19' (IPv4 block size must be between 20 and 32)"
        ]),
    ErrorCase(
        name: "IPv6 blockSize below 116",
        manifest: poolManifest("  cidr: fd00::/48\n  blockSize: 115"),
        expected: [
            "t.yaml:7:14: IPPool(p) spec.blockSize: error with field IPPool.Spec.BlockSize = '115' (IPv6 block size must be between 116 and 128)"
        ]),
    ErrorCase(
        name: "IP-in-IP on an IPv6 pool",
        manifest: poolManifest("  cidr: fd00::/48\n  ipipMode: CrossSubnet"),
        expected: [
            "t.yaml:7:13: IPPool(p) spec.ipipMode: error with field IPpool.IPIPMode = 'CrossSubnet' (IPIPMode other than 'Never' is not supported on an IPv6 IP pool)"
        ]),
    ErrorCase(
        name: "IP-in-IP and VXLAN both enabled",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  ipipMode: Always\n  vxlanMode: CrossSubnet"),
        expected: [
            "t.yaml:7:13: IPPool(p) spec.ipipMode: error with field IPpool.IPIPMode = 'Always' (IPIPMode and VXLANMode cannot both be enabled on the same IP pool)"
        ]),
    ErrorCase(
        name: "ipipMode is case-sensitive",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  ipipMode: always"),
        expected: [
            "t.yaml:7:13: IPPool(p) spec.ipipMode: error with field ipipMode = 'always' (Reason: failed to validate Field: ipipMode because of Tag: ipIpMode )"
        ]),
    ErrorCase(
        name: "vxlanMode unknown",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  vxlanMode: Sometimes"),
        expected: [
            "t.yaml:7:14: IPPool(p) spec.vxlanMode: error with field vxlanMode = 'Sometimes' (Reason: failed to validate Field: vxlanMode because of Tag: vxlanMode )"
        ]),
    ErrorCase(
        name: "assignmentMode unknown",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  assignmentMode: Auto"),
        expected: [
            "t.yaml:7:19: IPPool(p) spec.assignmentMode: error with field assignmentMode = 'Auto' (Reason: failed to validate Field: assignmentMode because of Tag: assignmentMode )"
        ]),
    ErrorCase(
        name: "allowedUses entry unknown",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  allowedUses: [Workload, Pods]"),
        expected: [
            "t.yaml:7:27: IPPool(p) spec.allowedUses[1]: error with field IPpool.AllowedUses = 'Pods' (unknown use: Pods)"
        ]),
    ErrorCase(
        name: "nodeSelector does not parse",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  nodeSelector: \"has(zone\""),
        expected: [
            "t.yaml:7:17: IPPool(p) spec.nodeSelector: error with field nodeSelector = 'has(zone' (Reason: failed to validate Field: nodeSelector because of Tag: selector )"
        ]),
    ErrorCase(
        name: "nodeSelector uses global()",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  nodeSelector: global()"),
        expected: ["t.yaml:7:17: IPPool(p) spec.nodeSelector: global() selector is not valid for IPPool nodeSelector"]),
    ErrorCase(
        name: "namespaceSelector does not parse",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  namespaceSelector: \"a == b\""),
        expected: [
            "t.yaml:7:22: IPPool(p) spec.namespaceSelector: error with field namespaceSelector = 'a == b' (Reason: failed to validate Field: namespaceSelector because of Tag: selector )"
        ]),
]

private let metadataRuleCases: [ErrorCase] = [
    ErrorCase(
        name: "name too long",
        manifest: poolManifest(name: longName, "  cidr: 10.0.0.0/16"),
        expected: [
            "t.yaml:4:9: IPPool(\(longName)) metadata.name: error with field Metadata.Name = '\(longName)' (name is too long by 1 bytes)"
        ]),
    ErrorCase(
        name: "name with an underscore",
        manifest: poolManifest(name: "pool_a", "  cidr: 10.0.0.0/16"),
        expected: [
            "t.yaml:4:9: IPPool(pool_a) metadata.name: error with field Metadata.Name = 'pool_a' (name must consist of lower case alphanumeric characters, '-' or '.' (regex: [a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*))"
        ]),
    ErrorCase(
        name: "name missing (no metadata) is reported at the object",
        manifest: "apiVersion: projectcalico.org/v3\nkind: IPPool\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:1:1: IPPool() metadata.name: error with field Metadata.Name = '' (field must be set for a Create request)"
        ]),
    ErrorCase(
        name: "namespace on a non-namespaced kind",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  namespace: default\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:5:14: IPPool(p) metadata.namespace: namespace should not be specified for a non-namespaced resource. IPPool is not a namespaced resource"
        ]),
    ErrorCase(
        name: "label key with a space",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n    bad key: x\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:6:5: IPPool(p) metadata.labels.bad key: error with field Metadata.Labels (label) = 'bad key' (name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'))"
        ]),
    ErrorCase(
        name: "label key with two slashes",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n    a/b/c: x\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:6:5: IPPool(p) metadata.labels.a/b/c: error with field Metadata.Labels (label) = 'a/b/c' (a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName'))"
        ]),
    ErrorCase(
        name: "label key with an upper-case prefix",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n    Example.com/zone: x\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:6:5: IPPool(p) metadata.labels.Example.com/zone: error with field Metadata.Labels (label) = 'Example.com/zone' (prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'))"
        ]),
    ErrorCase(
        name: "label value too long",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n    zone: \(longLabelValue)\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:6:11: IPPool(p) metadata.labels.zone: error with field Metadata.Labels (value) = '\(longLabelValue)' (must be no more than 63 characters)"
        ]),
    ErrorCase(
        name: "label value starting with a dash",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n    zone: -east\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:6:11: IPPool(p) metadata.labels.zone: error with field Metadata.Labels (value) = '-east' (a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'))"
        ]),
    ErrorCase(
        name: "annotation key ending in a dot",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  annotations:\n    note.: x\nspec:\n  cidr: 10.0.0.0/16\n",
        expected: [
            "t.yaml:6:5: IPPool(p) metadata.annotations.note.: error with field Metadata.Annotations (key) = 'note.' (name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'))"
        ]),
]

private let otherKindRuleCases: [ErrorCase] = [
    ErrorCase(
        name: "Node with an empty bgp",
        manifest: nodeManifest("  bgp: {}"),
        expected: ["t.yaml:6:8: Node(n1) spec.bgp: error with field BGP = '{}' (Spec.BGP should not be empty)"]),
    ErrorCase(
        name: "Node ipv4Address that is IPv6",
        manifest: nodeManifest("  bgp:\n    ipv4Address: fd00::5/64"),
        expected: [
            "t.yaml:7:18: Node(n1) spec.bgp.ipv4Address: error with field ipv4Address = 'fd00::5/64' (Reason: failed to validate Field: ipv4Address because of Tag: cidrv4 )"
        ]),
    ErrorCase(
        name: "Node tunnel address with a prefix",
        manifest: nodeManifest("  bgp:\n    ipv4Address: 10.0.0.5/24\n    ipv4IPIPTunnelAddr: 192.168.1.0/32"),
        expected: [
            "t.yaml:8:25: Node(n1) spec.bgp.ipv4IPIPTunnelAddr: error with field ipv4IPIPTunnelAddr = '192.168.1.0/32' (Reason: failed to validate Field: ipv4IPIPTunnelAddr because of Tag: ipv4 )"
        ]),
    ErrorCase(
        name: "Node ipv6Address that is IPv4",
        manifest: nodeManifest("  bgp:\n    ipv6Address: 10.0.0.5/24"),
        expected: [
            "t.yaml:7:18: Node(n1) spec.bgp.ipv6Address: error with field ipv6Address = '10.0.0.5/24' (Reason: failed to validate Field: ipv6Address because of Tag: cidrv6 )"
        ]),
    ErrorCase(
        name: "Node with a namespace",
        manifest: "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1\n  namespace: kube-system\n",
        expected: [
            "t.yaml:5:14: Node(n1) metadata.namespace: namespace should not be specified for a non-namespaced resource. Node is not a namespaced resource"
        ]),
    ErrorCase(
        name: "BlockAffinity with an unknown state",
        manifest: affinityManifest("  state: claimed\n  node: node-a\n  cidr: 10.1.0.0/26"),
        expected: [
            "t.yaml:6:10: BlockAffinity(node-a-10-1-0-0-26) spec.state: invalid state 'claimed' (expected confirmed, pending or pendingDeletion)"
        ]),
    ErrorCase(
        name: "BlockAffinity with deleted neither bool nor \"true\"/\"false\"",
        manifest: affinityManifest("  state: confirmed\n  node: node-a\n  cidr: 10.1.0.0/26\n  deleted: \"yes\""),
        expected: [
            "t.yaml:9:12: BlockAffinity(node-a-10-1-0-0-26) spec.deleted: expected a boolean or \"true\"/\"false\", found string \"yes\""
        ]),
    ErrorCase(
        name: "BlockAffinity missing node and cidr",
        manifest: affinityManifest("  state: confirmed"),
        expected: [
            "t.yaml:6:3: BlockAffinity(node-a-10-1-0-0-26) spec.node: missing required field \"node\"",
            "t.yaml:6:3: BlockAffinity(node-a-10-1-0-0-26) spec.cidr: missing required field \"cidr\"",
        ]),
    ErrorCase(
        name: "FelixConfiguration natPortRange reversed",
        manifest: felixManifest("  natPortRange: \"40000:30000\""),
        expected: [
            "t.yaml:6:17: FelixConfiguration(default) spec.natPortRange: minimum port number (40000) is greater than maximum port number (30000) in port range"
        ]),
    ErrorCase(
        name: "FelixConfiguration natPortRange above 65535",
        manifest: felixManifest("  natPortRange: 70000"),
        expected: [
            "t.yaml:6:17: FelixConfiguration(default) spec.natPortRange: invalid port range '70000': expected a port or 'low:high' with ports 0…65535"
        ]),
    ErrorCase(
        name: "FelixConfiguration externalNodesList entry not a CIDR",
        manifest: felixManifest("  externalNodesList:\n  - 10.0.0.0/8\n  - gateway.example"),
        expected: [
            "t.yaml:8:5: FelixConfiguration(default) spec.externalNodesList[1]: invalid CIDR or IP address 'gateway.example'"
        ]),
    ErrorCase(
        name: "FelixConfiguration logSeverityScreen unknown",
        manifest: felixManifest("  logSeverityScreen: Verbose"),
        expected: [
            "t.yaml:6:22: FelixConfiguration(default) spec.logSeverityScreen: error with field logSeverityScreen = 'Verbose' (Reason: failed to validate Field: logSeverityScreen because of Tag: logLevel )"
        ]),
    ErrorCase(
        name: "FelixConfiguration interface filter too long",
        manifest: felixManifest("  iptablesNATOutgoingInterfaceFilter: eth-very-long-name0"),
        expected: [
            "t.yaml:6:39: FelixConfiguration(default) spec.iptablesNATOutgoingInterfaceFilter: error with field iptablesNATOutgoingInterfaceFilter = 'eth-very-long-name0' (Reason: failed to validate Field: iptablesNATOutgoingInterfaceFilter because of Tag: ifaceFilter )"
        ]),
    ErrorCase(
        name: "FelixConfiguration natOutgoingAddress not IPv4",
        manifest: felixManifest("  natOutgoingAddress: fd00::1"),
        expected: ["t.yaml:6:23: FelixConfiguration(default) spec.natOutgoingAddress: invalid IPv4 address 'fd00::1'"]),
]

private let structureCases: [ErrorCase] = [
    ErrorCase(
        name: "unknown spec field at its key",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  ipipMod: Always"),
        expected: ["t.yaml:7:3: IPPool(p) spec.ipipMod: unknown field \"ipipMod\""]),
    ErrorCase(
        name: "v1 field nat-outgoing is unknown in v3",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  nat-outgoing: true"),
        expected: ["t.yaml:7:3: IPPool(p) spec.nat-outgoing: unknown field \"nat-outgoing\""]),
    ErrorCase(
        name: "unknown top-level field",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\nextra: 1\n",
        expected: ["t.yaml:5:1: IPPool(p) extra: unknown field \"extra\""]),
    ErrorCase(
        name: "unknown metadata field",
        manifest:
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  nam: q\nspec: {cidr: 10.0.0.0/16}\n",
        expected: ["t.yaml:5:3: IPPool(p) metadata.nam: unknown field \"nam\""]),
    ErrorCase(
        name: "unknown FelixConfiguration key",
        manifest: felixManifest("  ipipMtu: 1400"),
        expected: ["t.yaml:6:3: FelixConfiguration(default) spec.ipipMtu: unknown field \"ipipMtu\""]),
    ErrorCase(
        name: "unknown Node bgp key",
        manifest: nodeManifest("  bgp:\n    ipv4Addr: 10.0.0.5/24"),
        expected: [
            "t.yaml:7:5: Node(n1) spec.bgp.ipv4Addr: unknown field \"ipv4Addr\"",
            "t.yaml:7:5: Node(n1) spec.bgp: error with field BGP = '{}' (Spec.BGP should not be empty)",
        ]),
    ErrorCase(
        name: "string where a bool belongs, at the value",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  disabled: \"True\""),
        expected: ["t.yaml:7:13: IPPool(p) spec.disabled: expected a boolean, found string \"True\""]),
    ErrorCase(
        name: "string where an integer belongs",
        manifest: poolManifest("  cidr: 10.0.0.0/16\n  blockSize: \"26\""),
        expected: ["t.yaml:7:14: IPPool(p) spec.blockSize: expected an integer, found string \"26\""]),
    ErrorCase(
        name: "integer where a string belongs",
        manifest: poolManifest("  cidr: 10\n"),
        expected: [
            "t.yaml:6:9: IPPool(p) spec.cidr: expected a string, found integer 10",
            "t.yaml:6:9: IPPool(p) spec.cidr: error with field IPpool.CIDR = '' (IPPool CIDR must be specified)",
        ]),
    ErrorCase(
        name: "list where a mapping belongs",
        manifest: "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: [10.0.0.0/16]\n",
        expected: [
            "t.yaml:4:7: IPPool(p) spec: expected a mapping, found a list",
            "t.yaml:4:7: IPPool(p) spec.cidr: error with field IPpool.CIDR = '' (IPPool CIDR must be specified)",
        ]),
    ErrorCase(
        name: "wrong apiVersion",
        manifest: "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.1.0.0/16}\n",
        expected: ["t.yaml:1:13: Unknown resource type (ipPool) and/or version (v1)"]),
    ErrorCase(
        name: "unknown kind",
        manifest: "apiVersion: projectcalico.org/v3\nkind: IPPol\nmetadata: {name: p}\n",
        expected: ["t.yaml:2:7: Unknown resource type (IPPol) and/or version (projectcalico.org/v3)"]),
    ErrorCase(
        name: "Calico kind this dataplane does not read",
        manifest: "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: peer}\n",
        expected: ["t.yaml:2:7: resource type 'BGPPeer' is not supported"]),
    ErrorCase(
        name: "list item of another kind",
        manifest: "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- kind: Node\n  metadata: {name: n}\n",
        expected: ["t.yaml:4:9: kind: kind 'Node' does not match the list's item kind 'IPPool'"]),
    ErrorCase(
        name: "YAML syntax error",
        manifest: "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p\nspec: {}\n",
        expected: ["t.yaml:4:5: while parsing a flow mapping did not find expected ',' or '}'"]),
    ErrorCase(
        name: "tab indentation",
        manifest: "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n\tname: p\n",
        expected: ["t.yaml:4:1: while scanning for the next token found character that cannot start any token"]),
    ErrorCase(
        name: "scalar document",
        manifest: "just text\n",
        expected: ["t.yaml:1:1: expected a resource (a mapping) or a list of resources, found string \"just text\""]),
]

@Test("IPPool validation rules", arguments: poolRuleCases)
func ipPoolRule(_ row: ErrorCase) {
    #expect(errorLines(row.manifest) == row.expected)
}

@Test("metadata validation rules", arguments: metadataRuleCases)
func metadataRule(_ row: ErrorCase) {
    #expect(errorLines(row.manifest) == row.expected)
}

@Test("Node, BlockAffinity and FelixConfiguration rules", arguments: otherKindRuleCases)
func otherKindRule(_ row: ErrorCase) {
    #expect(errorLines(row.manifest) == row.expected)
}

@Test("structure: unknown fields, wrong types, kinds, syntax", arguments: structureCases)
func structure(_ row: ErrorCase) {
    #expect(errorLines(row.manifest) == row.expected)
}

@Test func errorsInSeveralDocumentsAreAllCollected() {
    let text =
        poolManifest(name: "a", "  cidr: 10.0.0.1/16\n  ipipMode: Sometimes")
        + "\n---\n" + poolManifest(name: "b", "  cidr: 10.1.0.0/16\n  blockSize: 40")
    #expect(
        errorLines(text, file: "cluster.yaml") == [
            "cluster.yaml:6:9: IPPool(a) spec.cidr: error with field IPpool.CIDR = '10.0.0.0/16' (IP pool CIDR is not strictly masked)",
            "cluster.yaml:7:13: IPPool(a) spec.ipipMode: error with field ipipMode = 'Sometimes' (Reason: failed to validate Field: ipipMode because of Tag: ipIpMode )",
            "cluster.yaml:15:14: IPPool(b) spec.blockSize: error with field IPPool.Spec.BlockSize = '40' (IPv4 block size must be between 20 and 32)",
        ])
}

@Test func errorFieldsAreStructured() throws {
    do {
        _ = try ResourceDecoder.decode(
            poolManifest(name: "pool-a", "  cidr: 10.0.0.0/16\n  ipipMode: x"),
            file: "cluster.yaml")
        Issue.record("expected an error")
    } catch {
        let only = try #require(error.errors.first)
        #expect(error.errors.count == 1)
        #expect(only.file == "cluster.yaml")
        #expect((only.line, only.column) == (7, 13))
        #expect(only.kind == "IPPool")
        #expect(only.name == "pool-a")
        #expect(only.field == "spec.ipipMode")
        #expect(error.description == only.description)
    }
}

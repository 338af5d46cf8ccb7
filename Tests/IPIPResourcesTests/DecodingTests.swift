import IPIPCore
import Testing

@testable import IPIPResources

/// A manifest and the kinds and names it must decode to, in order.
struct FormCase: CustomTestStringConvertible, Sendable {
    let name: String
    let manifest: String
    let expected: [String]
    var testDescription: String { name }
}

private let formCases: [FormCase] = [
    FormCase(
        name: "single document",
        manifest: poolManifest(name: "a", "  cidr: 10.0.0.0/16"),
        expected: ["IPPool(a)@1:1"]),
    FormCase(
        name: "multi-document stream with empty documents",
        manifest: "---\n" + poolManifest(name: "a", "  cidr: 10.0.0.0/16") + "\n---\n---\n# only a comment\n---\n"
            + "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\n...\n",
        expected: ["IPPool(a)@2:1", "Node(n1)@12:1"]),
    FormCase(
        name: "List kind; items may omit kind and apiVersion",
        manifest: """
            apiVersion: projectcalico.org/v3
            kind: IPPoolList
            metadata: {resourceVersion: "123"}
            items:
            - apiVersion: projectcalico.org/v3
              kind: IPPool
              metadata: {name: a}
              spec: {cidr: 10.0.0.0/16}
            - metadata: {name: b}
              spec: {cidr: 10.1.0.0/16}
            """,
        expected: ["IPPool(a)@5:3", "IPPool(b)@9:3"]),
    FormCase(
        name: "NodeList, BlockAffinityList and FelixConfigurationList",
        manifest: """
            {"apiVersion": "projectcalico.org/v3", "kind": "NodeList", "items": [{"metadata": {"name": "n1"}}]}
            ---
            apiVersion: projectcalico.org/v3
            kind: BlockAffinityList
            items:
            - metadata: {name: n1-10-0-0-0-26}
              spec: {state: confirmed, node: n1, cidr: 10.0.0.0/26}
            ---
            apiVersion: projectcalico.org/v3
            kind: FelixConfigurationList
            items: []
            """,
        expected: ["Node(n1)@1:70", "BlockAffinity(n1-10-0-0-0-26)@6:3"]),
    FormCase(
        name: "top-level array",
        manifest: """
            - apiVersion: projectcalico.org/v3
              kind: IPPool
              metadata: {name: a}
              spec: {cidr: 10.0.0.0/16}
            - apiVersion: projectcalico.org/v3
              kind: Node
              metadata: {name: n1}
            """,
        expected: ["IPPool(a)@1:3", "Node(n1)@5:3"]),
    FormCase(
        name: "JSON object indented with tabs",
        manifest: "{\n\t\"apiVersion\": \"projectcalico.org/v3\",\n\t\"kind\": \"IPPool\",\n"
            + "\t\"metadata\": {\"name\": \"j\"},\n\t\"spec\": {\"cidr\": \"10.1.0.0/16\", \"natOutgoing\": true}\n}\n",
        expected: ["IPPool(j)@1:1"]),
    FormCase(
        name: "JSON array",
        manifest: """
            [{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.0.0.0/16"}},
             {"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"b"},"spec":{"cidr":"10.1.0.0/16"}}]
            """,
        expected: ["IPPool(a)@1:2", "IPPool(b)@2:2"]),
    FormCase(name: "empty input", manifest: "", expected: []),
]

@Test("decoding forms", arguments: formCases)
func decodingForm(_ row: FormCase) throws {
    let resources = try ResourceDecoder.decode(row.manifest, file: "t.yaml")
    #expect(resources.map { "\($0.kind)(\($0.name))@\($0.location.line):\($0.location.column)" } == row.expected)
    #expect(resources.allSatisfy { $0.location.file == "t.yaml" })
}

/// A pool manifest and the spec it must default to.
struct DefaultsCase: CustomTestStringConvertible, Sendable {
    let name: String
    let spec: String
    let cidr: String
    let ipipMode: IPIPMode
    let vxlanMode: VXLANMode
    let blockSize: Int
    var testDescription: String { name }

    /// One row: name, the spec lines, then the cidr, modes and block size the defaults give.
    init(
        _ name: String, _ spec: String, expect cidr: String, _ ipipMode: IPIPMode, _ vxlanMode: VXLANMode,
        _ blockSize: Int
    ) {
        self.name = name
        self.spec = spec
        self.cidr = cidr
        self.ipipMode = ipipMode
        self.vxlanMode = vxlanMode
        self.blockSize = blockSize
    }
}

private let defaultsCases: [DefaultsCase] = [
    DefaultsCase(
        "IPv4 without ipipMode is Always (project decision)", "  cidr: 10.0.0.0/16", expect: "10.0.0.0/16", .always,
        .never, 26),
    DefaultsCase(
        "IPv4 with an empty ipipMode is Always", "  cidr: 10.0.0.0/16\n  ipipMode: \"\"", expect: "10.0.0.0/16",
        .always, .never, 26),
    DefaultsCase(
        "IPv4 explicit Never stays Never", "  cidr: 10.0.0.0/16\n  ipipMode: Never", expect: "10.0.0.0/16", .never,
        .never, 26),
    DefaultsCase(
        "IPv4 VXLAN pool without ipipMode is Never", "  cidr: 10.0.0.0/16\n  vxlanMode: Always", expect: "10.0.0.0/16",
        .never, .always, 26),
    DefaultsCase("IPv6 without ipipMode is Never", "  cidr: FD00:0:0::/48", expect: "fd00::/48", .never, .never, 122),
    DefaultsCase(
        "IPv6 VXLAN is accepted (Calico v3.23+)", "  cidr: fd00::/48\n  vxlanMode: CrossSubnet", expect: "fd00::/48",
        .never, .crossSubnet, 122),
    DefaultsCase(
        "blockSize 0 means the default", "  cidr: 10.0.0.0/16\n  blockSize: 0", expect: "10.0.0.0/16", .always, .never,
        26),
    DefaultsCase(
        "explicit blockSize kept", "  cidr: 10.0.0.0/16\n  blockSize: 24", expect: "10.0.0.0/16", .always, .never, 24),
]

@Test("pool defaults", arguments: defaultsCases)
func poolDefaults(_ row: DefaultsCase) throws {
    let pool = try #require(decodePool(poolManifest(row.spec)))
    #expect(pool.spec.cidr == row.cidr)
    #expect(pool.spec.ipipMode == row.ipipMode)
    #expect(pool.spec.vxlanMode == row.vxlanMode)
    #expect(pool.spec.blockSize == row.blockSize)
    #expect(pool.spec.nodeSelector == "all()")
    #expect(pool.spec.namespaceSelector == "")
    #expect(pool.spec.allowedUses == [.workload, .tunnel])
    #expect(pool.spec.assignmentMode == .automatic)
    #expect(pool.spec.natOutgoing == false)
    #expect(pool.spec.disabled == false)
    #expect(pool.spec.disableBGPExport == false)
}

@Test func ipv4DefaultModeIsOneNamedConstant() {
    #expect(IPIPMode.defaultForIPv4Pools == .always)
}

@Test func ipv4PrefixIsExposedForIPv4PoolsOnly() throws {
    let v4 = try #require(decodePool(poolManifest("  cidr: 192.168.0.0/16")))
    #expect(v4.ipv4Prefix == IPv4Prefix("192.168.0.0/16"))
    #expect(v4.cidrLocation == SourceLocation(file: "t.yaml", line: 6, column: 9))
    let v6 = try #require(decodePool(poolManifest("  cidr: fd00::/48")))
    #expect(v6.ipv4Prefix == nil)
}

@Test func disabledPoolMayBeSmallerThanABlock() throws {
    let pool = try #require(decodePool(poolManifest("  cidr: 10.0.0.0/28\n  disabled: true")))
    #expect(pool.spec.disabled)
    #expect(pool.spec.blockSize == 26)
}

@Test func realisticCalicoWrittenPoolDecodes() throws {
    let text = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata:
          annotations:
            projectcalico.org/metadata: '{"uid":"a1","creationTimestamp":"2024-05-01T10:00:00Z"}'
          creationTimestamp: "2024-05-01T10:00:00Z"
          generation: 3
          labels:
            app.kubernetes.io/managed-by: tigera-operator
          name: default-ipv4-ippool
          resourceVersion: "7391"
          uid: 0f5d3c3e-7d9b-4c2a-9a86-3f1c8e2b6a10
        spec:
          allowedUses:
          - Workload
          - Tunnel
          assignmentMode: Automatic
          blockSize: 26
          cidr: 192.168.0.0/16
          disableBGPExport: false
          ipipMode: CrossSubnet
          namespaceSelector: ""
          natOutgoing: true
          nodeSelector: all()
          vxlanMode: Never
        status:
          conditions:
          - type: Allocatable
            status: "True"
            reason: OK
        """
    let pool = try #require(decodePool(text))
    #expect(pool.metadata.name == "default-ipv4-ippool")
    #expect(pool.metadata.uid == "0f5d3c3e-7d9b-4c2a-9a86-3f1c8e2b6a10")
    #expect(pool.metadata.resourceVersion == "7391")
    #expect(pool.metadata.creationTimestamp == "2024-05-01T10:00:00Z")
    #expect(pool.metadata.generation == 3)
    #expect(pool.metadata.labels["app.kubernetes.io/managed-by"] == "tigera-operator")
    #expect(pool.spec.ipipMode == .crossSubnet)
    #expect(pool.spec.natOutgoing)
    #expect(pool.spec.allowedUses == [.workload, .tunnel])
}

@Test func unquotedTimestampAndNullsAreAccepted() throws {
    let text = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata:
          name: p
          creationTimestamp: 2024-05-01T10:00:00Z
          labels: null
        spec:
          cidr: 10.0.0.0/16
          natOutgoing: null
          nodeSelector: "zone == 'east' && !has(edge) || rack in {'r1', 'r2'}"
        """
    let pool = try #require(decodePool(text))
    #expect(pool.metadata.creationTimestamp == "2024-05-01T10:00:00Z")
    #expect(pool.metadata.labels.isEmpty)
    #expect(pool.spec.natOutgoing == false)
}

@Test func nodeDecodes() throws {
    let text = """
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata:
          name: node-a
          labels: {kubernetes.io/hostname: node-a}
        spec:
          addresses:
          - address: 10.0.0.5/24
            type: CalicoNodeIP
          - address: 10.0.0.5
            type: InternalIP
          bgp:
            asNumber: 64512
            ipv4Address: 10.0.0.5/24
            ipv4IPIPTunnelAddr: 192.168.10.1
            ipv6Address: fd00::5/64
          ipv4VXLANTunnelAddr: 192.168.10.2
          vxlanTunnelMACAddr: 66:1f:0b:1c:2d:3e
          orchRefs:
          - nodeName: node-a
            orchestrator: k8s
          wireguard:
            interfaceIPv4Address: 192.168.10.3
        status:
          podCIDRs: [10.244.0.0/24]
        """
    let resources = try ResourceDecoder.decode(text, file: "n.yaml")
    guard case .node(let node)? = resources.first else {
        Issue.record("expected a Node")
        return
    }
    let bgp = try #require(node.spec.bgp)
    #expect(bgp.ipv4Address == IPv4Prefix("10.0.0.5/24"))
    #expect(bgp.ipv4Address?.isStrictlyMasked == false)
    #expect(bgp.ipv4IPIPTunnelAddr == IPv4Address(192, 168, 10, 1))
    #expect(bgp.asNumber == 64512)
    #expect(node.spec.orchRefs == [Node.OrchRef(nodeName: "node-a", orchestrator: "k8s")])
    #expect(node.spec.addresses.count == 2)
    #expect(node.status["podCIDRs"] == .list([.string("10.244.0.0/24")]))
}

@Test func nodeBareAddressIsASlash32AndAsdotIsAccepted() throws {
    let text =
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n}\n"
        + "spec: {bgp: {ipv4Address: 10.0.0.5, asNumber: \"1.10\"}}\n"
    guard case .node(let node)? = try ResourceDecoder.decode(text, file: "n.yaml").first else {
        Issue.record("expected a Node")
        return
    }
    #expect(node.spec.bgp?.ipv4Address == IPv4Prefix("10.0.0.5/32"))
    #expect(node.spec.bgp?.asNumber == 65546)
}

/// A BlockAffinity `deleted` value and what it means.
struct DeletedCase: CustomTestStringConvertible, Sendable {
    let name: String
    let line: String
    let deleted: Bool
    var testDescription: String { name }
}

@Test(
    "BlockAffinity deleted as bool or string",
    arguments: [
        DeletedCase(name: "absent", line: "", deleted: false),
        DeletedCase(name: "bool true", line: "\n  deleted: true", deleted: true),
        DeletedCase(name: "string \"true\"", line: "\n  deleted: \"true\"", deleted: true),
        DeletedCase(name: "string \"false\"", line: "\n  deleted: \"false\"", deleted: false),
        DeletedCase(name: "bool false", line: "\n  deleted: false", deleted: false),
    ])
func blockAffinityDeleted(_ row: DeletedCase) throws {
    let text =
        "apiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata:\n  name: a-10-1-0-0-26\nspec:\n"
        + "  state: confirmed\n  node: node-a\n  cidr: 10.1.0.0/26\n  type: host" + row.line
    guard case .blockAffinity(let affinity)? = try ResourceDecoder.decode(text, file: "b.yaml").first else {
        Issue.record("expected a BlockAffinity")
        return
    }
    #expect(affinity.spec.deleted == row.deleted)
    #expect(affinity.spec.state == .confirmed)
    #expect(affinity.spec.node == "node-a")
    #expect(affinity.ipv4Prefix == IPv4Prefix("10.1.0.0/26"))
    #expect(affinity.spec.type == "host")
}

@Test func realisticFelixConfigurationDecodes() throws {
    let text = """
        apiVersion: projectcalico.org/v3
        kind: FelixConfiguration
        metadata:
          name: default
          creationTimestamp: "2024-05-01T10:00:00Z"
          resourceVersion: "812"
          uid: 5a4c1b2e-0000-4000-8000-000000000001
        spec:
          bpfConnectTimeLoadBalancing: TCP
          bpfEnabled: false
          bpfHostNetworkedNATWithoutCTLB: Enabled
          bpfLogLevel: ""
          chainInsertMode: Insert
          externalNodesList: [203.0.113.0/24, 198.51.100.7, 2001:db8::/64]
          failsafeInboundHostPorts:
          - {port: 22, protocol: TCP}
          - {net: 0.0.0.0/0, port: 179, protocol: TCP}
          floatingIPs: Disabled
          healthPort: 9099
          ipipEnabled: true
          ipipMTU: 1440
          iptablesNATOutgoingInterfaceFilter: eth+
          kubeNodePortRanges: ["30000:32767"]
          logSeverityScreen: Info
          natOutgoingAddress: 10.0.0.5
          natPortRange: "32768:65535"
          prometheusMetricsEnabled: true
          prometheusMetricsPort: 9091
          reportingInterval: 0s
          routeTableRanges: [{min: 1, max: 250}]
          vxlanEnabled: false
          vxlanVNI: 4096
          wireguardEnabled: false
        """
    guard case .felixConfiguration(let felix)? = try ResourceDecoder.decode(text, file: "f.yaml").first else {
        Issue.record("expected a FelixConfiguration")
        return
    }
    #expect(felix.spec.ipipEnabled == true)
    #expect(felix.spec.ipipMTU == 1440)
    #expect(felix.spec.natPortRange == 32768...65535)
    #expect(felix.spec.natOutgoingAddress == IPv4Address(10, 0, 0, 5))
    #expect(felix.spec.iptablesNATOutgoingInterfaceFilter == "eth+")
    #expect(felix.spec.logSeverityScreen == "Info")
    #expect(felix.spec.externalNodesCIDRList == ["203.0.113.0/24", "198.51.100.7", "2001:db8::/64"])
    #expect(felix.spec.externalNodesIPv4 == [IPv4Prefix("203.0.113.0/24")!, IPv4Prefix("198.51.100.7/32")!])
    #expect(felix.spec.prometheusMetricsPort == 9091)
    #expect(felix.spec.other["vxlanVNI"] == .int(4096))
    #expect(felix.spec.other["reportingInterval"] == .string("0s"))
    #expect(felix.spec.other["routeTableRanges"] == .list([.mapping(["min": .int(1), "max": .int(250)])]))
    #expect(felix.spec.other["ipipMTU"] == nil)
}

/// A `natPortRange` value and the range it means.
struct PortRangeCase: CustomTestStringConvertible, Sendable {
    let name: String
    let value: String
    let range: ClosedRange<UInt16>
    var testDescription: String { name }
}

@Test(
    "natPortRange forms",
    arguments: [
        PortRangeCase(name: "integer", value: "32768", range: 32768...32768),
        PortRangeCase(name: "quoted range", value: "\"32768:60999\"", range: 32768...60999),
        PortRangeCase(name: "plain range", value: "20000:29999", range: 20000...29999),
        PortRangeCase(name: "plain range YAML 1.1 reads as sexagesimal", value: "1:59", range: 1...59),
        PortRangeCase(name: "quoted single port", value: "\"1024\"", range: 1024...1024),
    ])
func natPortRange(_ row: PortRangeCase) throws {
    let text =
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n"
        + "spec:\n  natPortRange: \(row.value)\n"
    guard case .felixConfiguration(let felix)? = try ResourceDecoder.decode(text, file: "f.yaml").first else {
        Issue.record("expected a FelixConfiguration")
        return
    }
    #expect(felix.spec.natPortRange == row.range)
}

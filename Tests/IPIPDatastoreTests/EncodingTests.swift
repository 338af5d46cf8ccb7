import IPIPDatastore
import IPIPResources
import Testing

@Suite("Encoding: resources written as Calico writes them")
struct EncodingTests {
    static let seed = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata:
          name: ippool-ipip-1
          uid: 0c6f3a5e-6a63-4d1e-9a2b-1b3c5d7e9f00
          resourceVersion: "7"
          creationTimestamp: "2024-05-01T10:00:00Z"
          labels: {zone: a}
        spec:
          cidr: 192.168.0.0/16
          ipipMode: Always
          natOutgoing: true
        """

    @Test("IPPool YAML: keys sorted, every default written")
    func poolYAML() throws {
        let resource = try #require(decode(Self.seed).first)
        #expect(
            ResourceEncoder.yaml(resource) == """
                apiVersion: projectcalico.org/v3
                kind: IPPool
                metadata:
                  creationTimestamp: "2024-05-01T10:00:00Z"
                  labels:
                    zone: a
                  name: ippool-ipip-1
                  resourceVersion: "7"
                  uid: 0c6f3a5e-6a63-4d1e-9a2b-1b3c5d7e9f00

                """ + examplePoolSpecYAML)
    }

    @Test("IPPool JSON: struct order kind, apiVersion, metadata, spec; omitempty")
    func poolJSON() throws {
        let resource = try #require(decode(Self.seed).first)
        let compact = ResourceEncoder.json(ResourceEncoder.value(resource, includeResourceVersion: false), indent: nil)
        #expect(
            compact
                == #"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"ippool-ipip-1","uid":"0c6f3a5e-6a63-4d1e-9a2b-1b3c5d7e9f00","creationTimestamp":"2024-05-01T10:00:00Z","labels":{"zone":"a"}},"spec":{"cidr":"192.168.0.0/16","vxlanMode":"Never","ipipMode":"Always","natOutgoing":true,"blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}}"#
        )
        #expect(
            ResourceEncoder.json(resource).hasPrefix(
                "{\n  \"kind\": \"IPPool\",\n  \"apiVersion\": \"projectcalico.org/v3\",\n  \"metadata\": {\n    \"name\": \"ippool-ipip-1\","
            ))
    }

    static let roundTrips: [(String, String)] = [
        ("seed pool", seed),
        (
            "pool with every field",
            pool(
                "p", "10.1.0.0/16",
                extra: """

                      ipipMode: CrossSubnet
                      disabled: true
                      disableBGPExport: true
                      blockSize: 28
                      nodeSelector: "zone == 'a'"
                      namespaceSelector: all()
                      allowedUses: [Workload]
                      assignmentMode: Manual
                    """)
        ),
        (
            "node",
            """
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata: {name: node-a, annotations: {"example.com/x": "true"}}
            spec:
              bgp: {ipv4Address: 10.0.0.1/24, ipv4IPIPTunnelAddr: 192.168.0.1, asNumber: 65001}
              orchRefs: [{nodeName: a, orchestrator: k8s}]
              addresses: [{address: 10.0.0.1, type: InternalIP}]
            status: {podCIDRs: ["192.168.0.0/26"]}
            """
        ),
        (
            "block affinity",
            """
            apiVersion: projectcalico.org/v3
            kind: BlockAffinity
            metadata: {name: node-a-192-168-0-0-26}
            spec: {state: confirmed, node: node-a, cidr: 192.168.0.0/26, deleted: "false", type: host}
            """
        ),
        (
            "felix configuration",
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {ipipMTU: 1440, natPortRange: "32768:60999", externalNodesList: [10.9.0.0/16], logSeverityScreen: Info, reportingInterval: 0s, ipipEnabled: true}
            """
        ),
        (
            "strings that need quotes",
            pool(
                "q", "10.2.0.0/16",
                extra: """

                      nodeSelector: "has(x) && y == 'true: no'"
                    """)
        ),
    ]

    @Test("encode → decode → encode is stable, YAML and JSON", arguments: roundTrips.map(\.0))
    func roundTrip(name: String) throws {
        let text = try #require(Self.roundTrips.first { $0.0 == name }?.1)
        let resource = try #require(decode(text).first)
        let value = ResourceEncoder.value(resource)
        for encoded in [ResourceEncoder.yaml(resource), ResourceEncoder.json(resource)] {
            let again = try #require(decode(encoded).first)
            #expect(ResourceEncoder.value(again) == value, "\(encoded)")
        }
    }

    @Test(
        "YAML scalars: strings that would read as other types are quoted",
        arguments: [
            ("true", "\"true\""), ("5", "\"5\""), ("all()", "all()"), ("", "\"\""),
            ("2024-01-01", "\"2024-01-01\""), ("10.0.0.0/16", "10.0.0.0/16"), ("a: b", "\"a: b\""),
            ("- x", "\"- x\""), ("no", "\"no\""), ("x<y", "x<y"),
        ])
    func yamlQuoting(input: String, expected: String) {
        #expect(ResourceEncoder.yaml(.object([EncodedField("k", .string(input))])) == "k: \(expected)\n")
    }
}

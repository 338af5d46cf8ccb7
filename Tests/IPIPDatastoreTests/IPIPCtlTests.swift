import Foundation
import IPIPDatastore
import IPIPResources
import IPIPTestSupport
import Testing

/// One calicoctl verb run against a store prepared with `setup`.
struct CtlCase: CustomTestStringConvertible, Sendable {
    var name: String
    var setup: String = ""
    var verb: CalicoCtl.Verb
    var input: String
    var skipExists = false
    var skipNotExists = false
    var stdout = ""
    var stderr = ""
    var exitCode: Int32 = 0
    /// Names of the IPPools stored afterwards.
    var pools: [String]? = nil

    var testDescription: String { name }
}

func run(_ c: CtlCase, store: any Datastore) -> CtlOutput {
    let options = CalicoCtl.Options(skipExists: c.skipExists, skipNotExists: c.skipNotExists, poolDisableGrace: .zero)
    return CalicoCtl.execute(
        c.verb, input: ManifestInput(text: c.input, file: "in.yaml"), store: { store },
        options: options)
}

func storedPools(_ store: some Datastore) throws -> [String] { try store.list(.ipPool).map(\.name) }

@Suite("IPIPCtl: calicoctl's verbs, messages and exit codes")
struct IPIPCtlVerbTests {
    static let overlapError =
        "error with field IPPool.Spec.CIDR = '192.168.5.0/24' (IPPool(p3) CIDR overlaps with IPPool(ippool-ipip-1) CIDR 192.168.0.0/16)"

    static let cases: [CtlCase] = [
        CtlCase(
            name: "apply the README's example pool", verb: .apply, input: seedPool,
            stdout: "Successfully applied 1 'IPPool' resource(s)\n", pools: ["ippool-ipip-1"]),
        CtlCase(
            name: "apply again updates", setup: seedPool, verb: .apply, input: seedPool,
            stdout: "Successfully applied 1 'IPPool' resource(s)\n", pools: ["ippool-ipip-1"]),
        CtlCase(
            name: "create two", verb: .create, input: pool("a", "10.1.0.0/16") + "---\n" + pool("b", "10.2.0.0/16"),
            stdout: "Successfully created 2 'IPPool' resource(s)\n", pools: ["a", "b"]),
        CtlCase(
            name: "create mixed kinds", verb: .create,
            input: pool("a", "10.1.0.0/16") + "---\n" + node("n", "10.0.0.1/24"),
            stdout: "Successfully created 2 resource(s)\n", pools: ["a"]),
        CtlCase(
            name: "create existing", setup: seedPool, verb: .create, input: seedPool,
            stderr: "Failed to create 'IPPool' resource: resource already exists: IPPool(ippool-ipip-1)\n", exitCode: 1),
        CtlCase(
            name: "create existing --skip-exists", setup: seedPool, verb: .create, input: seedPool, skipExists: true,
            stdout: "Successfully created 1 'IPPool' resource(s)\n"),
        CtlCase(
            name: "create: second of two overlaps (partial success)", setup: seedPool, verb: .create,
            input: pool("p2", "10.10.0.0/24") + "---\n" + pool("p3", "192.168.5.0/24"),
            stderr: "Partial success: created the first 1 out of 2 'IPPool' resources:\nHit error: \(overlapError)\n",
            exitCode: 1, pools: ["ippool-ipip-1", "p2"]),
        CtlCase(
            name: "create: first of two overlaps (nothing handled)", setup: seedPool, verb: .create,
            input: pool("p3", "192.168.5.0/24") + "---\n" + pool("p2", "10.10.0.0/24"),
            stderr: "Failed to create any 'IPPool' resources: \(overlapError)\n", exitCode: 1,
            pools: ["ippool-ipip-1"]),
        CtlCase(
            name: "mixed kinds, nothing handled", setup: seedPool, verb: .create,
            input: pool("p3", "192.168.5.0/24") + "---\n" + node("n", "10.0.0.1/24"),
            stderr: "Failed to create any resources: \(overlapError)\n", exitCode: 1),
        CtlCase(
            name: "mixed kinds, partial", setup: seedPool, verb: .create,
            input: node("n", "10.0.0.1/24") + "---\n" + pool("p3", "192.168.5.0/24") + "---\n"
                + node("m", "10.0.0.2/24"),
            stderr: "Partial success: created the first 1 out of 3 resources:\nHit error: \(overlapError)\n",
            exitCode: 1),
        CtlCase(
            name: "replace missing", verb: .replace, input: seedPool,
            stderr:
                "Failed to replace 'IPPool' resource: resource does not exist: IPPool(ippool-ipip-1) with error: <nil>\n",
            exitCode: 1),
        CtlCase(
            name: "replace existing", setup: seedPool, verb: .replace,
            input: seedPool.replacingOccurrences(of: "Always", with: "CrossSubnet"),
            stdout: "Successfully replaced 1 'IPPool' resource(s)\n"),
        CtlCase(
            name: "replace with a stale resourceVersion", setup: seedPool, verb: .replace,
            input: seedPool.replacingOccurrences(
                of: "  name: ippool-ipip-1", with: "  name: ippool-ipip-1\n  resourceVersion: \"999\""),
            stderr: "Failed to replace 'IPPool' resource: update conflict: IPPool(ippool-ipip-1)\n", exitCode: 1),
        CtlCase(
            name: "replace changes the CIDR", setup: seedPool, verb: .replace,
            input: seedPool.replacingOccurrences(of: "192.168.0.0/16", with: "192.168.0.0/17"),
            stderr:
                "Failed to replace 'IPPool' resource: error with field IPPool.Spec.CIDR = '192.168.0.0/17' (IPPool CIDR cannot be modified)\n",
            exitCode: 1),
        CtlCase(
            name: "create with a resourceVersion", verb: .create,
            input: seedPool.replacingOccurrences(
                of: "  name: ippool-ipip-1", with: "  name: ippool-ipip-1\n  resourceVersion: \"12345\""),
            stderr:
                "Failed to create 'IPPool' resource: error with field Metadata.ResourceVersion = '12345' (field must not be set for a Create request)\n",
            exitCode: 1),
        CtlCase(
            name: "delete", setup: seedPool, verb: .delete, input: seedPool,
            stdout: "Successfully deleted 1 'IPPool' resource(s)\n", pools: []),
        CtlCase(
            name: "delete missing", verb: .delete, input: seedPool,
            stderr:
                "Failed to delete 'IPPool' resource: resource does not exist: IPPool(ippool-ipip-1) with error: <nil>\n",
            exitCode: 1),
        CtlCase(
            name: "delete missing --skip-not-exists", verb: .delete, input: seedPool, skipNotExists: true,
            stdout: "Successfully deleted 1 'IPPool' resource(s)\n"),
        CtlCase(
            name: "delete two, second missing", setup: pool("a", "10.1.0.0/16"), verb: .delete,
            input: pool("a", "10.1.0.0/16") + "---\n" + pool("b", "10.2.0.0/16"),
            stderr:
                "Partial success: deleted the first 1 out of 2 'IPPool' resources:\nHit error: resource does not exist: IPPool(b) with error: <nil>\n",
            exitCode: 1, pools: []),
        CtlCase(
            name: "empty input", verb: .apply, input: "---\n",
            stderr: "No resources specified in file\n", exitCode: 1),
        CtlCase(
            name: "invalid document: nothing written, file:line:column", verb: .apply,
            input: pool("a", "10.1.0.0/16") + "---\n" + pool("b", "10.2.0.0/16", extra: "\n  ipipMode: always"),
            stderr:
                "Failed to execute command: in.yaml:14:13: IPPool(b) spec.ipipMode: error with field ipipMode = 'always' (Reason: failed to validate Field: ipipMode because of Tag: ipIpMode )\n",
            exitCode: 1, pools: []),
    ]

    @Test("verb", arguments: cases)
    func verb(_ c: CtlCase) throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        if !c.setup.isEmpty { for r in try decode(c.setup) { try store.create(r) } }
        let output = run(c, store: store)
        #expect(output.stdout == c.stdout)
        #expect(output.stderr == c.stderr)
        #expect(output.exitCode == c.exitCode)
        if let pools = c.pools { #expect(try storedPools(store) == pools) }
    }

    @Test(
        "delete KIND NAME, kinds and aliases case-insensitive",
        arguments: ["ippool", "IPPool", "ippools", "ipp", "IPPS", "pool", "Pools"])
    func deleteByName(kind: String) throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        for r in try decode(seedPool) { try store.create(r) }
        let options = CalicoCtl.Options(poolDisableGrace: .zero)
        let output = CalicoCtl.delete(kind: kind, name: "ippool-ipip-1", store: { store }, options: options)
        #expect(output == CtlOutput(stdout: "Successfully deleted 1 'IPPool' resource(s)\n"))
        let again = CalicoCtl.delete(kind: kind, name: "ippool-ipip-1", store: { store }, options: options)
        #expect(
            again
                == CtlOutput(
                    stderr:
                        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(ippool-ipip-1) with error: <nil>\n",
                    exitCode: 1))
    }

    @Test("unknown kind")
    func unknownKind() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        let expected = CtlOutput(
            stderr: "Failed to execute command: resource type 'foo' is not supported\n", exitCode: 1)
        #expect(CalicoCtl.get(kind: "foo", name: nil, output: "ps", store: { store }) == expected)
        #expect(CalicoCtl.delete(kind: "foo", name: "x", store: { store }) == expected)
    }

    @Test("deleting a pool disables it first and releases its blocks")
    func poolDeleteSideEffect() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        for r in try decode(seedPool + "---\n" + pool("other", "10.1.0.0/16")) { try store.create(r) }
        let a = try IPAM.claim(in: store, node: "node-a", pool: "ippool-ipip-1")
        let b = try IPAM.claim(in: store, node: "node-b", pool: "other")
        let before = try store.revision()
        try store.delete(.ipPool, name: "ippool-ipip-1", poolDisableGrace: .zero)
        // disable, release one affinity, delete: three writes.
        #expect(try store.revision() == before + 3)
        #expect(try store.list(.blockAffinity).map(\.name) == [b.affinity.metadata.name])
        #expect(a.affinity.spec.cidr == "192.168.0.0/26")
    }
}

@Suite("IPIPCtl: get outputs")
struct IPIPCtlGetTests {
    /// A store with fixed uid/timestamps so outputs can be pinned.
    static func pinnedStore() throws -> (SQLiteDatastore, TempDir) {
        let (store, dir) = try makeStore()
        let text =
            seedPool.replacingOccurrences(
                of: "  name: ippool-ipip-1",
                with: """
                      name: ippool-ipip-1
                      uid: 11111111-2222-3333-4444-555555555555
                      creationTimestamp: "2024-05-01T10:00:00Z"
                    """) + "---\n"
            + pool(
                "ippool-name1", "10.0.1.0/24",
                extra: "\n  ipipMode: Always\n  blockSize: 27\n  nodeSelector: foo == 'bar'")
            + "---\n" + node("node-a", "10.0.0.1/24") + "---\n"
            + node("node-b", "10.0.1.2/24").replacingOccurrences(
                of: "    ipv4Address: 10.0.1.2/24",
                with: "    ipv4Address: 10.0.1.2/24\n    asNumber: 65001\n    ipv6Address: fd00::2/64")
        for r in try decode(text) { _ = try store.insert(r) }
        return (store, dir)
    }

    static let cases: [(String, String, String?, String, String)] = [
        (
            "pools ps", "ippool", nil, "ps",
            """
            NAME            CIDR             SELECTOR       
            ippool-ipip-1   192.168.0.0/16   all()          
            ippool-name1    10.0.1.0/24      foo == 'bar'   


            """
        ),
        (
            "pools wide", "ipp", nil, "wide",
            """
            NAME            CIDR             NAT     IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR       ASSIGNMENTMODE   
            ippool-ipip-1   192.168.0.0/16   true    Always     Never       false      false              all()          Automatic        
            ippool-name1    10.0.1.0/24      false   Always     Never       false      false              foo == 'bar'   Automatic        


            """
        ),
        (
            "one pool yaml", "IPPool", "ippool-ipip-1", "yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata:
              creationTimestamp: "2024-05-01T10:00:00Z"
              name: ippool-ipip-1
              resourceVersion: "1"
              uid: 11111111-2222-3333-4444-555555555555

            """ + examplePoolSpecYAML
        ),
        (
            "one pool json", "pool", "ippool-ipip-1", "json",
            """
            {
              "kind": "IPPool",
              "apiVersion": "projectcalico.org/v3",
              "metadata": {
                "name": "ippool-ipip-1",
                "uid": "11111111-2222-3333-4444-555555555555",
                "resourceVersion": "1",
                "creationTimestamp": "2024-05-01T10:00:00Z"
              },
              "spec": {
                "cidr": "192.168.0.0/16",
                "vxlanMode": "Never",
                "ipipMode": "Always",
                "natOutgoing": true,
                "blockSize": 26,
                "nodeSelector": "all()",
                "allowedUses": [
                  "Workload",
                  "Tunnel"
                ],
                "assignmentMode": "Automatic"
              }
            }

            """
        ),
        ("nodes ps", "nodes", nil, "ps", "NAME     \nnode-a   \nnode-b   \n\n"),
        (
            "nodes wide", "no", nil, "wide",
            """
            NAME     ASN       IPV4          IPV6         
            node-a   (64512)   10.0.0.1/24                
            node-b   65001     10.0.1.2/24   fd00::2/64   


            """
        ),
        (
            "empty list yaml", "blockaffinities", nil, "yaml",
            """
            apiVersion: projectcalico.org/v3
            items: []
            kind: BlockAffinityList
            metadata:
              resourceVersion: "4"

            """
        ),
        ("empty table", "BlockAffinities", nil, "ps", "NAME   NODE   CIDR   STATE   \n\n"),
    ]

    @Test("get", arguments: cases.map(\.0))
    func get(name: String) throws {
        let c = try #require(Self.cases.first { $0.0 == name })
        let (store, dir) = try Self.pinnedStore()
        defer { dir.cleanup() }
        let output = CalicoCtl.get(kind: c.1, name: c.2, output: c.3, store: { store })
        #expect(output.stderr == "")
        #expect(output.stdout == c.4)
        #expect(output.exitCode == 0)
    }

    @Test("get a missing name")
    func missing() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        #expect(
            CalicoCtl.get(kind: "ippool", name: "nope", output: "ps", store: { store })
                == CtlOutput(
                    stderr: "Failed to get resources: resource does not exist: IPPool(nope) with error: <nil>\n",
                    exitCode: 1))
    }

    @Test("yaml and json output are valid input: get | apply round trip")
    func outputIsInput() throws {
        let (store, dir) = try Self.pinnedStore()
        defer { dir.cleanup() }
        for format in ["yaml", "json"] {
            let listed = CalicoCtl.get(kind: "ippools", name: nil, output: format, store: { store }).stdout
            let applied = CalicoCtl.execute(.apply, input: ManifestInput(text: listed, file: "get"), store: { store })
            #expect(applied == CtlOutput(stdout: "Successfully applied 2 'IPPool' resource(s)\n"), "\(format)")
        }
    }

    @Test("tabwriter: minimum width 5, padding 3")
    func tabwriter() {
        #expect(CalicoCtl.tabulate([["A", "BB"], ["xyz", ""]]) == "A     BB   \nxyz        \n")
    }
}

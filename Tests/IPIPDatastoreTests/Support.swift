import Foundation
import IPIPDatastore
import IPIPResources
import IPIPTestSupport
import Testing

/// A new SQLite store in its own directory.
func makeStore() throws -> (SQLiteDatastore, TempDir) {
    let dir = TempDir()
    return (try SQLiteDatastore(path: dir.file("datastore.sqlite")), dir)
}

func decode(_ text: String) throws -> [Resource] { try ResourceDecoder.decode(text, file: "test.yaml") }

func pool(_ name: String, _ cidr: String, extra: String = "") -> String {
    """
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata:
      name: \(name)
    spec:
      cidr: \(cidr)\(extra)

    """
}

func node(_ name: String, _ address: String) -> String {
    """
    apiVersion: projectcalico.org/v3
    kind: Node
    metadata:
      name: \(name)
    spec:
      bgp:
        ipv4Address: \(address)

    """
}

/// The README's example pool: Calico's v3.5 IP-in-IP example (docs/calico.md, "Calico's v3.5 IP-in-IP
/// example manifests").
let seedPool = """
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata:
      name: ippool-ipip-1
    spec:
      cidr: 192.168.0.0/16
      ipipMode: Always
      natOutgoing: true

    """

/// The built `ipipctl` (beside the test bundle, or in .build/debug).
func ipipctlPath() -> String? { builtProgram("ipipctl") }

/// A built executable of the package, `ipipctl` or `ipipd` (beside the test bundle, or in .build/debug).
func builtProgram(_ name: String) -> String? {
    var candidates: [String] = []
    if let exe = Bundle.main.executableURL?.deletingLastPathComponent().path { candidates.append(exe + "/" + name) }
    candidates.append(Bundle.main.bundlePath + "/../" + name)
    candidates.append(ExampleCluster.repositoryRoot.path + "/.build/debug/" + name)
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// The datastore variables of the test runner's own environment: a child must not inherit them.
let inheritedDatastoreVariables = ["IPIPD_DATASTORE", "DATASTORE_TYPE", "ETCD_ENDPOINTS"]

/// Runs a program to completion, feeding `stdin`, without the runner's datastore variables.
func runProcess(
    _ path: String, _ args: [String], stdin: String? = nil, environment: [String: String] = [:]
)
    throws -> ProcessResult
{
    try Processes.run(path, args, stdin: stdin, environment: environment, removing: inheritedDatastoreVariables)
}

/// Starts a program without the runner's datastore variables.
func startProcess(
    _ path: String, _ args: [String], stdin: String? = nil, environment: [String: String] = [:]
)
    throws -> RunningProcess
{
    try Processes.start(path, args, stdin: stdin, environment: environment, removing: inheritedDatastoreVariables)
}

/// Calico's two v3.5 IP-in-IP `calicoctl apply -f - << EOF` examples (docs/calico.md, "Calico's
/// v3.5 IP-in-IP example manifests"), with
/// `ipipctl` in place of `calicoctl`, verbatim otherwise.
func seedExample(_ ctl: String, _ number: Int) -> String {
    let (name, mode) = number == 1 ? ("ippool-ipip-1", "Always") : ("ippool-cs-1", "CrossSubnet")
    return """
        "\(ctl)" apply -f - << EOF
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata:
          name: \(name)
        spec:
          cidr: 192.168.0.0/16
          ipipMode: \(mode)
          natOutgoing: true
        EOF

        """
}

/// Runs both examples against the store `environment` selects: the first, then the second
/// (which overlaps the first: calicoctl's overlap error, exit 1), then, with the first pool
/// deleted, the second again. Returns the three results.
func runSeedExamples(_ ctl: String, environment: [String: String]) throws -> [ProcessResult] {
    let first = try runProcess("/bin/sh", ["-c", seedExample(ctl, 1)], environment: environment)
    let overlapping = try runProcess("/bin/sh", ["-c", seedExample(ctl, 2)], environment: environment)
    let second = try runProcess(
        "/bin/sh",
        [
            "-c",
            "\"\(ctl)\" delete ippool ippool-ipip-1 >/dev/null && "
                + seedExample(ctl, 2) + "\"\(ctl)\" get ippools -o wide",
        ], environment: environment)
    return [first, overlapping, second]
}

/// What the three runs of `runSeedExamples` must print.
func checkSeedExamples(_ results: [ProcessResult]) {
    #expect(
        (results[0].status, results[0].stdout) == (0, "Successfully applied 1 'IPPool' resource(s)\n"),
        "\(results[0].stderr)")
    #expect(
        (results[1].status, results[1].stdout, results[1].stderr) == (
            1, "",
            "Failed to apply 'IPPool' resource: error with field IPPool.Spec.CIDR = '192.168.0.0/16' "
                + "(IPPool(ippool-cs-1) CIDR overlaps with IPPool(ippool-ipip-1) CIDR 192.168.0.0/16)\n"
        ))
    #expect(results[2].status == 0, "\(results[2].stderr)")
    #expect(results[2].stdout.hasPrefix("Successfully applied 1 'IPPool' resource(s)\nNAME "))
    #expect(results[2].stdout.contains("\nippool-cs-1   192.168.0.0/16   true   CrossSubnet   Never "))
}

/// The `spec:` of the README's example pool as ipipctl writes it in YAML: keys sorted, every
/// default filled in (the tail of every `-o yaml` of that pool).
let examplePoolSpecYAML = """
    spec:
      allowedUses:
      - Workload
      - Tunnel
      assignmentMode: Automatic
      blockSize: 26
      cidr: 192.168.0.0/16
      ipipMode: Always
      natOutgoing: true
      nodeSelector: all()
      vxlanMode: Never

    """

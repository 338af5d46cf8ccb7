import ArgumentParser
import IPIPCore
import IPIPResources

#if canImport(Glibc)
import Glibc
#endif

@main
struct IPIPCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipipctl",
        abstract: "Manage swift-ipip's Calico resources (projectcalico.org/v3).",
        subcommands: [
            Create.self, Apply.self, Replace.self, Delete.self, Get.self, IPAMCommand.self, Validate.self,
            NodeCommand.self,
            MonitorCommand.self,
        ]
    )
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode and validate manifests the way Calico does, without storing anything.",
        discussion: "Prints one line per resource, or every problem as file:line:column and exits 1."
    )

    @Option(
        name: .shortAndLong,
        help: ArgumentHelp("A manifest file or directory, or - for standard input (repeatable).", valueName: "path"))
    var filename: [String] = []

    @Option(
        help: ArgumentHelp(
            "Also compile the topology as ipipd does on this node (routes, peers, warnings).", valueName: "name"))
    var node: String?

    @Option(help: ArgumentHelp("The underlay MTU for --node.", valueName: "bytes"))
    var underlayMTU = 1500

    func run() throws {
        guard !filename.isEmpty else { throw ValidationError("give -f FILE (or -f - for standard input)") }
        do {
            let set = try ClusterLoader.resources(paths: filename)
            for line in ClusterLoader.describe(set) { print(line) }
            if let node {
                let topology = try Topology.compile(ClusterLoader.spec(from: set, node: node, underlayMTU: underlayMTU))
                for warning in topology.warnings { print("warning: \(warning)") }
                print(
                    "topology of \(node): \(topology.routes.count) routes, \(topology.nodes.count) nodes, "
                        + "\(topology.pools.count) IPv4 pools, \(topology.warnings.count) warnings, "
                        + "tunnel MTU \(topology.tunnelMTU)")
            }
        } catch {
            var text = "\(error)\n"
            text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
            throw ExitCode(1)
        }
    }
}

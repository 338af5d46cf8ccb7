import Foundation
import IPIPCore

/// From Calico resources to a compiled topology: the control-plane path that `ipipd` and
/// `ipipctl validate` share. Reading, decoding and validation are the rest of this module's; this
/// file decides which resources count for the dataplane and hands plain values to
/// `Topology.compile`.
public enum ClusterLoader {
    /// Loads manifests from paths (files or directories) or `-` for standard input (alone).
    /// - Throws: `ResourceErrors` naming file:line:column and field for every problem.
    public static func resources(paths: [String]) throws -> ResourceSet {
        if paths.contains("-") {
            guard paths.count == 1 else {
                throw ResourceErrors([
                    ResourceError(
                        file: "-", line: 1, column: 1, kind: nil, name: nil, field: "",
                        message: "standard input (-) cannot be combined with other manifest paths")
                ])
            }
            return try ResourceLoader.load(text: ResourceLoader.readStandardInput(), file: "<stdin>")
        }
        return try ResourceLoader.load(paths: paths)
    }

    /// Reads a flight recording's cluster.yaml (docs/flight-recorder.md): the Calico resources
    /// before `RecordedEngineState.marker`, loaded and validated as any manifests (errors keep
    /// their lines), and the recorded engine state after it. Only `ipipd replay` calls this: every
    /// other reader of manifests refuses the `RecordedEngineState` kind.
    /// - Returns: nil when `path` is not a file with the marker (ordinary manifests).
    /// - Throws: `ResourceErrors` for every problem in either part.
    public static func recording(path: String) throws -> (set: ResourceSet, states: [RecordedEngineState])? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
            let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8),
            let parts = RecordedEngineState.split(text)
        else { return nil }
        var errors: [ResourceError] = []
        var set = ResourceSet()
        do { set = try ResourceLoader.load(text: parts.manifests, file: path) } catch { errors += error.errors }
        var states: [RecordedEngineState] = []
        do {
            states = try RecordedEngineState.decode(parts.state, file: path, firstLine: parts.firstLine)
        } catch {
            errors += error.errors
        }
        guard errors.isEmpty else { throw ResourceErrors(errors) }
        return (set, states)
    }

    /// Loads, validates and compiles the topology for `node`.
    public static func topology(manifests: [String], node: String, underlayMTU: Int = 1500) throws -> Topology {
        let set = try resources(paths: manifests)
        return try Topology.compile(spec(from: set, node: node, underlayMTU: underlayMTU))
    }

    /// The dataplane's reading of a resource set:
    /// - IPv4 pools only (IPv6 pools are valid Calico resources but this is an IPv4 dataplane);
    ///   disabled pools still route and NAT (disabled only stops IPAM, as in Felix);
    /// - blocks from BlockAffinity resources in state `confirmed` and not marked deleted;
    /// - FelixConfiguration `default`, then `node.<name>` for this node on top (Calico's order):
    ///   `ipipMTU`, `externalNodesCIDRList`, `natPortRange`.
    public static func spec(from set: ResourceSet, node: String, underlayMTU: Int) -> TopologySpec {
        let pools: [TopologySpec.Pool] = set.pools.compactMap { p in
            guard let prefix = p.ipv4Prefix else { return nil }
            let mode: EncapsulationMode
            switch p.spec.ipipMode {
            case .always: mode = .always
            case .crossSubnet: mode = .crossSubnet
            case .never: mode = .never
            }
            return TopologySpec.Pool(
                name: p.metadata.name, prefix: prefix, ipipMode: mode,
                vxlanEnabled: p.spec.vxlanMode.isEnabled, natOutgoing: p.spec.natOutgoing,
                disabled: p.spec.disabled)
        }
        let nodes = set.nodes.map { n in
            TopologySpec.Node(
                name: n.metadata.name, address: n.spec.bgp?.ipv4Address,
                tunnelAddress: n.spec.bgp?.ipv4IPIPTunnelAddr)
        }
        let blocks: [TopologySpec.Block] = set.blockAffinities.compactMap { b in
            guard b.spec.state == .confirmed, !b.spec.deleted, let prefix = b.ipv4Prefix else { return nil }
            return TopologySpec.Block(prefix: prefix, node: b.spec.node)
        }
        var ipipMTU: Int?
        var external: [IPv4Prefix] = []
        var natPortRange: ClosedRange<UInt16>?
        for name in ["default", "node.\(node)"] {
            guard let f = set.felixConfigurations.first(where: { $0.metadata.name == name }) else { continue }
            if let m = f.spec.ipipMTU, m > 0 { ipipMTU = m }
            if !f.spec.externalNodesCIDRList.isEmpty { external = f.spec.externalNodesIPv4 }
            if let r = f.spec.natPortRange { natPortRange = r }
        }
        return TopologySpec(
            localNodeName: node, pools: pools, nodes: nodes, blocks: blocks, ipipMTU: ipipMTU,
            underlayMTU: underlayMTU, externalNodes: external, natPortRange: natPortRange)
    }

    /// One line per resource, for `ipipctl validate`.
    public static func describe(_ set: ResourceSet) -> [String] {
        var lines: [String] = []
        for p in set.pools {
            var s =
                "IPPool \(p.metadata.name): cidr \(p.spec.cidr) ipipMode \(p.spec.ipipMode.rawValue)"
                + " vxlanMode \(p.spec.vxlanMode.rawValue) natOutgoing \(p.spec.natOutgoing) disabled \(p.spec.disabled)"
                + " blockSize \(p.spec.blockSize)"
            if p.spec.vxlanMode.isEnabled { s += " (VXLAN: stored, not routed by this dataplane)" }
            if p.ipv4Prefix == nil { s += " (IPv6: stored, not routed by this dataplane)" }
            lines.append(s)
        }
        for n in set.nodes {
            let a = n.spec.bgp?.ipv4Address.map { "\($0)" } ?? "-"
            let t = n.spec.bgp?.ipv4IPIPTunnelAddr.map { "\($0)" } ?? "-"
            lines.append("Node \(n.metadata.name): ipv4Address \(a) ipv4IPIPTunnelAddr \(t)")
        }
        for b in set.blockAffinities {
            lines.append(
                "BlockAffinity \(b.metadata.name): \(b.spec.cidr) -> \(b.spec.node) (\(b.spec.state.rawValue))")
        }
        for f in set.felixConfigurations {
            lines.append("FelixConfiguration \(f.metadata.name)")
        }
        lines.append(
            "\(set.pools.count) pools, \(set.nodes.count) nodes, \(set.blockAffinities.count) block affinities, "
                + "\(set.felixConfigurations.count) felix configurations: valid")
        return lines
    }
}

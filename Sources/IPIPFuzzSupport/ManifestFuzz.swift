import Foundation
import IPIPCore
import IPIPResources

/// The `manifest` target: the input is a manifest file's bytes (YAML or JSON, any number of
/// documents), read as `ipipctl validate -f` and `ipipd run --manifests` read it.
///
/// Invariants:
/// - bytes that are not UTF-8 are refused before decoding (as `ResourceLoader.load(paths:)` does);
/// - a refused load reports at least one error, each naming the file with line and column ≥ 1;
/// - an accepted set gives a topology spec for every node it names (and for an unknown one), and
///   compiling it either succeeds or throws (never traps);
/// - encoding an accepted set and loading the encoding again succeeds, and encodes to the same
///   text (what `ipipctl get -o yaml` prints can be applied back).
enum ManifestFuzz {
    static let file = "fuzz.yaml"

    static func run(_ input: UnsafeRawBufferPointer) -> [FuzzFinding] {
        guard let text = String(data: Data(input), encoding: .utf8) else { return [] }
        let set: ResourceSet
        do {
            set = try ResourceLoader.load(text: text, file: file)
        } catch {
            return check(error, of: "the input")
        }
        var findings: [FuzzFinding] = []
        for node in set.nodes.map(\.metadata.name) + ["no-such-node"] {
            let spec = ClusterLoader.spec(from: set, node: node, underlayMTU: 1500)
            _ = try? Topology.compile(spec)
        }
        let encoded = encode(set)
        do {
            let again = try ResourceLoader.load(text: encoded, file: "encoded.yaml")
            let reencoded = encode(again)
            if reencoded != encoded {
                findings.append(
                    FuzzFinding(
                        kind: "manifest-roundtrip",
                        message: "encoding changed after a decode:\n--- first\n\(encoded)\n--- second\n\(reencoded)"))
            }
        } catch {
            findings.append(
                FuzzFinding(
                    kind: "manifest-roundtrip",
                    message: "the encoding of an accepted set is refused: \(error)\n--- encoding\n\(encoded)"))
        }
        return findings
    }

    static func encode(_ set: ResourceSet) -> String {
        let resources: [Resource] =
            set.pools.map { .ipPool($0) } + set.nodes.map { .node($0) }
            + set.blockAffinities.map { .blockAffinity($0) } + set.felixConfigurations.map { .felixConfiguration($0) }
        return resources.map { ResourceEncoder.yaml($0) }.joined(separator: "---\n")
    }

    static func check(_ errors: ResourceErrors, of what: String) -> [FuzzFinding] {
        guard !errors.errors.isEmpty else {
            return [FuzzFinding(kind: "manifest-error", message: "\(what) was refused with no error")]
        }
        var findings: [FuzzFinding] = []
        for e in errors.errors where e.file != file || e.line < 1 || e.column < 1 {
            findings.append(FuzzFinding(kind: "manifest-error", message: "error without a location: \(e)"))
        }
        return findings
    }
}

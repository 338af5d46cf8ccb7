import Foundation
import IPIPCore
import Testing

@testable import IPIPResources

/// A multi-document manifest and the set-level errors it must produce.
struct SetCase: CustomTestStringConvertible, Sendable {
    let name: String
    let manifest: String
    let expected: [String]
    var testDescription: String { name }
}

private func pools(_ entries: [(name: String, cidr: String)]) -> String {
    entries.map { poolManifest(name: $0.name, "  cidr: \($0.cidr)") }.joined(separator: "\n---\n")
}

@Test(
    "set-level rules",
    arguments: [
        SetCase(
            name: "later pool inside an earlier one is rejected at its cidr",
            manifest: pools([("a", "10.0.0.0/16"), ("b", "10.0.1.0/24")]),
            expected: ["t.yaml:13:9: IPPool(b) spec.cidr: IPPool(b) CIDR overlaps with IPPool(a) CIDR 10.0.0.0/16"]),
        SetCase(
            name: "later pool containing an earlier one is rejected",
            manifest: pools([("small", "10.0.1.0/24"), ("big", "10.0.0.0/8")]),
            expected: [
                "t.yaml:13:9: IPPool(big) spec.cidr: IPPool(big) CIDR overlaps with IPPool(small) CIDR 10.0.1.0/24"
            ]),
        SetCase(
            name: "identical IPv6 pools",
            manifest: pools([("a6", "fd00::/48"), ("b6", "FD00:0::/48")]),
            expected: ["t.yaml:13:9: IPPool(b6) spec.cidr: IPPool(b6) CIDR overlaps with IPPool(a6) CIDR fd00::/48"]),
        SetCase(
            name: "only the first overlap is reported per pool; accepted pools stay",
            manifest: pools([("a", "10.0.0.0/16"), ("b", "10.1.0.0/16"), ("c", "10.0.0.0/8")]),
            expected: ["t.yaml:20:9: IPPool(c) spec.cidr: IPPool(c) CIDR overlaps with IPPool(a) CIDR 10.0.0.0/16"]),
        SetCase(
            name: "adjacent pools do not overlap",
            manifest: pools([("a", "10.0.0.0/24"), ("b", "10.0.1.0/24"), ("c", "10.0.2.0/23")]),
            expected: []),
        SetCase(
            name: "the halves of a range are adjacent, the whole overlaps the first half",
            manifest: pools([("lo", "10.0.0.0/25"), ("hi", "10.0.0.128/25"), ("all", "10.0.0.0/24")]),
            expected: ["t.yaml:20:9: IPPool(all) spec.cidr: IPPool(all) CIDR overlaps with IPPool(lo) CIDR 10.0.0.0/25"]
        ),
        SetCase(
            name: "equal IPv4 pools",
            manifest: pools([("a", "10.9.0.0/16"), ("b", "10.9.0.0/16")]),
            expected: ["t.yaml:13:9: IPPool(b) spec.cidr: IPPool(b) CIDR overlaps with IPPool(a) CIDR 10.9.0.0/16"]),
        SetCase(
            name: "a pool containing several earlier ones names the earliest declared, not the first by name",
            manifest: pools([("z", "10.5.0.0/16"), ("m", "10.1.0.0/16"), ("a", "10.2.0.0/16"), ("big", "10.0.0.0/8")]),
            expected: ["t.yaml:27:9: IPPool(big) spec.cidr: IPPool(big) CIDR overlaps with IPPool(z) CIDR 10.5.0.0/16"]),
        SetCase(
            name: "a pool nested in an earlier one, deepest last",
            manifest: pools([("outer", "10.0.0.0/8"), ("inner", "10.1.2.0/24"), ("deep", "10.1.2.64/26")]),
            expected: [
                "t.yaml:13:9: IPPool(inner) spec.cidr: IPPool(inner) CIDR overlaps with IPPool(outer) CIDR 10.0.0.0/8",
                "t.yaml:20:9: IPPool(deep) spec.cidr: IPPool(deep) CIDR overlaps with IPPool(outer) CIDR 10.0.0.0/8",
            ]),
        SetCase(
            name: "a rejected pool is not compared with later ones",
            manifest: pools([("a", "10.0.0.0/16"), ("wide", "10.0.0.0/8"), ("b", "10.1.0.0/16")]),
            expected: [
                "t.yaml:13:9: IPPool(wide) spec.cidr: IPPool(wide) CIDR overlaps with IPPool(a) CIDR 10.0.0.0/16"
            ]),
        SetCase(
            name: "IPv6 pools: nested and adjacent",
            manifest: pools([("a6", "fd00:0:0:1::/64"), ("b6", "fd00:0:0:2::/64"), ("c6", "fd00::/48")]),
            expected: [
                "t.yaml:20:9: IPPool(c6) spec.cidr: IPPool(c6) CIDR overlaps with IPPool(a6) CIDR fd00:0:0:1::/64"
            ]),
        SetCase(
            name: "IPv4 and IPv6 pools never overlap",
            manifest: pools([("v4", "10.0.0.0/8"), ("v6", "a00::/8")]),
            expected: []),
        SetCase(
            name: "duplicate pool name",
            manifest: pools([("a", "10.0.0.0/16"), ("a", "10.1.0.0/16")]),
            expected: ["t.yaml:8:1: IPPool(a) metadata.name: duplicate IPPool name 'a' (first declared at t.yaml:1:1)"]),
        SetCase(
            name: "same name in different kinds is fine",
            manifest: poolManifest(name: "x", "  cidr: 10.0.0.0/16")
                + "\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: x}\n",
            expected: []),
        SetCase(
            name: "disjoint IPv4 and IPv6 pools load",
            manifest: pools([("a", "10.0.0.0/16"), ("b", "10.1.0.0/16"), ("c", "fd00::/48")]),
            expected: []),
    ])
func setLevel(_ row: SetCase) {
    #expect(loadErrorLines(row.manifest) == row.expected)
}

@Test func loadIsAllOrNothing() {
    let text = pools([("good", "10.0.0.0/16")]) + "\n---\n" + poolManifest(name: "bad", "  cidr: 10.1.0.1/16")
    #expect(throws: ResourceErrors.self) { try ResourceLoader.load(text: text, file: "t.yaml") }
}

@Test func loadSortsResourcesByKind() throws {
    let text =
        pools([("a", "10.0.0.0/16")])
        + "\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\nspec: {bgp: {ipv4Address: 10.0.0.5/24}}\n"
        + "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {ipipMTU: 1400}\n"
        + "---\napiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata: {name: n1-10-0-0-0-26}\n"
        + "spec: {state: confirmed, node: n1, cidr: 10.0.0.0/26, deleted: \"false\"}\n"
    let set = try ResourceLoader.load(text: text, file: "t.yaml")
    #expect(set.pools.map(\.metadata.name) == ["a"])
    #expect(set.nodes.map(\.metadata.name) == ["n1"])
    #expect(set.felixConfigurations.first?.spec.ipipMTU == 1400)
    #expect(set.blockAffinities.first?.spec.node == "n1")
}

@Test func loadReadsFilesAndDirectoriesSortedByName() throws {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("ipip-resources-\(UInt64.random(in: 0...UInt64.max))")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    try poolManifest(name: "second", "  cidr: 10.1.0.0/16").write(
        to: directory.appendingPathComponent("b.yml"), atomically: true, encoding: .utf8)
    try
        #"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"first"},"spec":{"cidr":"10.0.0.0/16"}}"#
        .write(to: directory.appendingPathComponent("a.json"), atomically: true, encoding: .utf8)
    try "not: [a manifest".write(to: directory.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
    try FileManager.default.createDirectory(
        at: directory.appendingPathComponent("sub.yaml"),
        withIntermediateDirectories: true)
    let extra = directory.appendingPathComponent("sub.yaml/c.yaml")
    try poolManifest(name: "third", "  cidr: 10.2.0.0/16").write(to: extra, atomically: true, encoding: .utf8)

    let fromDirectory = try ResourceLoader.load(paths: [directory.path])
    #expect(fromDirectory.pools.map(\.metadata.name) == ["first", "second"])
    #expect(fromDirectory.pools.first?.location.file == directory.path + "/a.json")

    let mixed = try ResourceLoader.load(paths: [extra.path, directory.path])
    #expect(mixed.pools.map(\.metadata.name) == ["third", "first", "second"])
}

@Test func missingPathIsAnError() {
    do {
        _ = try ResourceLoader.load(paths: ["/nonexistent/ipip.yaml"])
        Issue.record("expected an error")
    } catch {
        #expect(error.description == "/nonexistent/ipip.yaml:1:1: no such file or directory")
    }
}

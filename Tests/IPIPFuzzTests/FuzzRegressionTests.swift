import Foundation
import IPIPCore
import IPIPFuzzSupport
import Testing

/// Every fuzz target's committed inputs run through the target's own code, as `ipip-fuzz` runs
/// them: the seed corpus (Tests/Fixtures/fuzz/<target>/) and every input that once crashed or
/// broke an invariant (Tests/Fixtures/fuzz/<target>/crashes/). A crash that still crashes takes
/// the test process down with it (that is the failure); a broken invariant is a test issue.
///
/// A crash whose bug is still open is listed in `openBugs`, and runs inside `withKnownIssue`:
/// the test passes while the bug reproduces as a broken invariant, and fails as soon as it no
/// longer does, so the entry gets removed together with the fix. (An open bug that traps cannot
/// be replayed in-process: it is recorded in docs/fuzzing.md and kept out of crashes/.)
@Suite("Fuzz regression")
struct FuzzRegressionTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/fuzz")

    /// "<target>/crashes/<file>" of bugs not fixed yet → where the bug is.
    static let openBugs: [String: String] = [:]

    struct Input: CustomTestStringConvertible, Sendable {
        let target: String
        let relativePath: String
        let url: URL
        var testDescription: String { relativePath }
    }

    static func files(in dir: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted().filter { !$0.hasPrefix(".") }.map { dir.appendingPathComponent($0) }.filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0.path, isDirectory: &isDirectory) && !isDirectory.boolValue
        }
    }

    static var inputs: [Input] {
        var out: [Input] = []
        for target in FuzzTargets.all.map(\.name) {
            for sub in ["", "crashes"] {
                let dir = fuzzDirectory.appendingPathComponent(target).appendingPathComponent(sub)
                for url in files(in: dir) {
                    let relative =
                        sub.isEmpty ? "\(target)/\(url.lastPathComponent)" : "\(target)/\(sub)/\(url.lastPathComponent)"
                    out.append(Input(target: target, relativePath: relative, url: url))
                }
            }
        }
        return out
    }

    @Test("every target has a committed seed corpus and a crashes folder")
    func corporaPresent() {
        let inputs = Self.inputs
        for target in FuzzTargets.all {
            let seeds = inputs.filter { $0.target == target.name && !$0.relativePath.contains("/crashes/") }
            #expect(!seeds.isEmpty, "no seed in Tests/Fixtures/fuzz/\(target.name)/")
            let crashes = Self.fuzzDirectory.appendingPathComponent(target.name).appendingPathComponent("crashes")
            #expect(FileManager.default.fileExists(atPath: crashes.path), "missing \(crashes.path)")
        }
        let names = Set(inputs.map(\.relativePath))
        #expect(names.contains("engine/seed-egress-fragment"))
        #expect(names.contains("engine/crashes/egress-refragment-offset-wrap"))
        for bug in Self.openBugs.keys { #expect(names.contains(bug), "missing \(bug)") }
    }

    @Test("every committed fuzz input keeps its target's invariants", arguments: inputs)
    func fixture(_ input: Input) throws {
        let target = try #require(FuzzTargets.named(input.target))
        let bytes = try [UInt8](Data(contentsOf: input.url))
        let run = target.makeRunner()
        let findings = bytes.withUnsafeBytes { run($0) }
        if let bug = Self.openBugs[input.relativePath] {
            withKnownIssue("open bug: \(bug)") {
                for f in findings { Issue.record("\(f)") }
            }
        } else {
            for f in findings { Issue.record("\(f)") }
        }
    }

    @Test("the generated engine seeds match the committed ones")
    func seedsCommitted() throws {
        for seed in FuzzSeeds.all {
            let url = Self.fuzzDirectory.appendingPathComponent("engine").appendingPathComponent(seed.name)
            let onDisk = try [UInt8](Data(contentsOf: url))
            #expect(
                onDisk == seed.bytes, "\(seed.name) differs: run `ipip-fuzz --write-seeds Tests/Fixtures/fuzz/engine`")
        }
    }

    @Test("arbitrary bytes keep every target's invariants (seeded)", arguments: FuzzTargets.all.map(\.name))
    func randomInputs(_ name: String) throws {
        // A cheap stand-in for the fuzzer in every `swift test`: random inputs, and random
        // mutations of each seed (a few bytes overwritten), for each target.
        let target = try #require(FuzzTargets.named(name))
        let run = target.makeRunner()
        var rng = SplitMix64(seed: 0x1F2E_3D4C_5B6A_7988)
        func next() -> UInt64 { rng.next() }
        let seeds = Self.inputs.filter { $0.target == name && !$0.relativePath.contains("/crashes/") }.compactMap {
            try? [UInt8](Data(contentsOf: $0.url))
        }
        for n in 0..<300 {
            var bytes: [UInt8]
            if n % 2 == 0 || seeds.isEmpty {
                bytes = (0..<(Int(next() % 200) + 1)).map { _ in UInt8(truncatingIfNeeded: next()) }
            } else {
                bytes = seeds[Int(next() % UInt64(seeds.count))]
                for _ in 0..<(1 + Int(next() % 4)) where !bytes.isEmpty {
                    bytes[Int(next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: next())
                }
            }
            let findings = bytes.withUnsafeBytes { run($0) }
            for f in findings { Issue.record("\(name) input \(n) (seed 0x1F2E3D4C5B6A7988): \(f)") }
        }
    }
}

import Foundation
import Testing

@testable import IPIPDataplane

/// The manifests source's change token: what the daemon polls every 0.2 s to reload on change.
@Suite("ManifestSource change token")
struct ManifestSourceTests {
    final class Directory {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ipipd-manifests-\(UUID().uuidString)")
        init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(at: url) }
        func path(_ name: String) -> String { url.appendingPathComponent(name).path }
        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        }
    }

    @Test("a rewritten file, a new manifest and a removed one change it; nothing else does")
    func filesInADirectory() throws {
        let d = try Directory()
        try d.write("cluster.yaml", "a: 1\n")
        let source = ManifestSource(paths: [d.url.path])
        let t0 = source.changeToken()
        #expect(source.changeToken() == t0, "stable while nothing changes")
        try d.write("cluster.yaml", "a: 22\n")
        let t1 = source.changeToken()
        #expect(t1 != t0)
        try d.write("more.json", "{}")
        let t2 = source.changeToken()
        #expect(t2 != t1)
        try FileManager.default.removeItem(atPath: d.path("more.json"))
        #expect(source.changeToken() != t2)
    }

    @Test("a manifest behind a symbolic link that is swapped (a ConfigMap volume) changes it")
    func symbolicLinkSwap() throws {
        let d = try Directory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: d.path("v1"), withIntermediateDirectories: true)
        try fm.createDirectory(atPath: d.path("v2"), withIntermediateDirectories: true)
        try fm.createDirectory(atPath: d.path("mount"), withIntermediateDirectories: true)
        try d.write("v1/cluster.yaml", "a: 1\n")
        try d.write("v2/cluster.yaml", "a: 2\n")
        // As a ConfigMap volume is laid out: mount/..data → v1, mount/cluster.yaml → ..data/cluster.yaml.
        // A change swaps ..data only; the link the daemon is given stays as it was.
        try fm.createSymbolicLink(atPath: d.path("mount/..data"), withDestinationPath: "../v1")
        try fm.createSymbolicLink(atPath: d.path("mount/cluster.yaml"), withDestinationPath: "..data/cluster.yaml")
        let source = ManifestSource(paths: [d.path("mount/cluster.yaml")])
        let before = source.changeToken()
        try fm.removeItem(atPath: d.path("mount/..data"))
        try fm.createSymbolicLink(atPath: d.path("mount/..data"), withDestinationPath: "../v2")
        #expect(source.changeToken() != before)
    }

    @Test("a path that does not exist reads as absent, and its creation changes the token")
    func absentPath() throws {
        let d = try Directory()
        let source = ManifestSource(paths: [d.path("later.yaml")])
        let before = source.changeToken()
        #expect(before == "absent")
        try d.write("later.yaml", "a: 1\n")
        #expect(source.changeToken() != before)
    }
}

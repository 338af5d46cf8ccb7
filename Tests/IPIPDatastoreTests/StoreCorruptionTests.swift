import Foundation
import GRDB
import IPIPCore
import IPIPDatastore
import IPIPResources
import IPIPTestSupport
import Synchronization
import Testing

/// A corrupted SQLite store, page by page, against the real `ipipctl` and `ipipd` binaries: every
/// verb that touches the store answers with the data or with a clear error naming the store, never
/// a crash (a signal, an exit status of 128 or more, Swift's "Fatal error") and never a hang.
@Suite("Datastore: a corrupted SQLite store never crashes ipipctl or ipipd", .serialized)
struct StoreCorruptionTests {
    /// Small pages, so that the example cluster and a few more objects fill a couple of dozen of
    /// them, with the larger values on overflow pages.
    static let pageSize = 512

    /// What goes in: the example cluster plus two nodes with a block each and a FelixConfiguration.
    static func manifests() throws -> String {
        var text = try ExampleCluster.manifests()
        for i in 10..<12 {
            text += "\n---\n" + node("node-\(i)", "10.0.2.\(i)/24")
            text += """
                ---
                apiVersion: projectcalico.org/v3
                kind: BlockAffinity
                metadata:
                  name: node-\(i)-192-168-\(i)-0-26
                spec:
                  state: confirmed
                  node: node-\(i)
                  cidr: 192.168.\(i).0/26

                """
        }
        text += """
            ---
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata:
              name: default
            spec:
              ipipMTU: 1400

            """
        return text
    }

    /// A store at `path` with `pageSize` pages holding `manifests()`, checkpointed into the main
    /// file (no write-ahead log left), so the file is the whole store.
    static func makeStore(_ path: String) throws {
        let setup = try DatabaseQueue(path: path)
        // The page size holds once the file has its first page.
        try setup.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA page_size = \(pageSize); CREATE TABLE scratch (x); DROP TABLE scratch")
        }
        try setup.close()
        do {
            let store = try SQLiteDatastore(path: path)
            for resource in try decode(manifests()) { try store.create(resource) }
        }
        let queue = try DatabaseQueue(path: path)
        try queue.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        try queue.close()
    }

    /// One corrupted copy: what was done, and the file's bytes.
    struct Copy {
        var name: String
        var bytes: [UInt8]
    }

    /// Every page: zeros, 0xFF, random bytes, the first row's record header on the page (where
    /// there is one), and the file cut at the page.
    static func copies(of original: [UInt8]) -> [Copy] {
        var random = SplitMix64(seed: 15)
        var copies: [Copy] = []
        let pages = original.count / pageSize
        for page in 0..<pages {
            let range = page * pageSize..<(page + 1) * pageSize
            func with(_ name: String, _ change: (inout [UInt8]) -> Void) {
                var bytes = original
                change(&bytes)
                copies.append(Copy(name: "page \(page + 1) \(name)", bytes: bytes))
            }
            with("zeros") { for i in range { $0[i] = 0 } }
            with("0xFF") { for i in range { $0[i] = 0xFF } }
            with("random") { for i in range { $0[i] = UInt8(truncatingIfNeeded: random.next()) } }
            // A row's record header sits just before its first column, the kind's name (the JSON
            // value repeats the name, but after a quote): the four bytes before it are the serial
            // types of name, revision and value. Changed, a revision reads back as text.
            let at = ResourceKind.allCases.compactMap { kind -> Int? in
                let name = Array(kind.rawValue.utf8)
                return (range.lowerBound + 4...range.upperBound - name.count).first { i in
                    original[i - 1] != UInt8(ascii: "\"") && Array(original[i..<i + name.count]) == name
                }
            }.min()
            if let at {
                with("row header before offset \(at)") { for i in at - 4..<at { $0[i] = 0x7F } }
            }
            with("truncated") { $0.removeSubrange(range.lowerBound...) }
        }
        return copies
    }

    /// Every `ipipctl` verb that reads or writes the store (`validate` reads only manifests), and
    /// the daemon's first step on a store (`ipipd run --check`: open, load, compile).
    static func writeInputs(_ files: TempDir) {
        _ = files.write("fresh.yaml", node("node-new", "10.0.3.1/24"))
        _ = files.write("changed.yaml", node("node-b", "10.0.0.22/24"))
    }

    static func commands(store: String, files: TempDir) -> [(program: String, arguments: [String])] {
        let ds = ["--datastore", "sqlite:" + store]
        let cluster = ExampleCluster.manifestsURL.path
        let fresh = files.file("fresh.yaml")
        let changed = files.file("changed.yaml")
        return [
            ("ipipctl", ["get", "ippools", "-o", "wide"] + ds),
            ("ipipctl", ["get", "nodes", "-o", "yaml"] + ds),
            ("ipipctl", ["get", "blockaffinities", "-o", "json"] + ds),
            ("ipipctl", ["get", "felixconfigurations"] + ds),
            ("ipipctl", ["get", "ippool", "ippool-ipip-1", "-o", "yaml"] + ds),
            ("ipipctl", ["get", "-f", cluster] + ds),
            ("ipipd", ["run", "--check", "--node", "node-a"] + ds),
            ("ipipctl", ["apply", "-f", cluster] + ds),
            ("ipipctl", ["create", "-f", fresh] + ds),
            ("ipipctl", ["replace", "-f", changed] + ds),
            ("ipipctl", ["delete", "-f", fresh] + ds),
            ("ipipctl", ["delete", "node", "node-c"] + ds),
            ("ipipctl", ["ipam", "claim", "--node", "node-a"] + ds),
            ("ipipctl", ["ipam", "release", "--node", "node-b", "--cidr", "192.168.1.0/26"] + ds),
        ]
    }

    /// What a run must be: the data (exit 0), or exit 1 with an error that names the store, or
    /// calicoctl's "resource does not exist": a key whose bytes spilled onto a corrupted overflow
    /// page reads back as another key, which SQLite itself cannot tell (its integrity_check passes),
    /// so a lookup of the old name finds nothing. That is the store's data as it now is.
    static func problem(_ r: ProcessResult, store: String) -> String? {
        if r.crashedOrHung {
            return r.timedOut ? "hung (killed after the timeout)" : "crashed (status \(r.status))"
        }
        if r.status == 0 { return nil }
        if r.status == 1 && (r.stderr.contains(store) || r.stderr.contains("resource does not exist: ")) {
            return nil
        }
        return "exit \(r.status) without naming the store"
    }

    @Test(
        "ipipd run itself (not --check), in a network namespace, on the copies --check refuses: exit 1 naming the store",
        .needsRoot)
    func daemonRun() throws {
        let ipipd = try #require(builtProgram("ipipd"), "build ipipd first (swift build)")
        let dir = TempDir()
        defer { dir.cleanup() }
        let pristine = dir.file("pristine.sqlite")
        try Self.makeStore(pristine)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: pristine)))
        let namespace = try NetworkNamespace("corrupt", prefix: "ipdst")
        defer { namespace.delete() }
        func run(_ store: String) throws -> ProcessResult {
            try Processes.run(
                "/usr/sbin/ip",
                [
                    "netns", "exec", namespace.name, ipipd, "run", "--node", "node-a", "--datastore", "sqlite:" + store,
                    "--metrics-address", "off", "--control-socket", "off",
                ], timeout: 20, removing: inheritedDatastoreVariables)
        }
        // The pristine store gets the daemon past its store to the host: no interface of the empty
        // namespace holds node-a's address.
        let good = try run(pristine)
        #expect(good.status == 1 && !good.crashedOrHung, "\(good.stderr)")
        #expect(good.stderr.contains("10.0.0.1") && !good.stderr.contains(pristine), "\(good.stderr)")
        var refused = 0
        let store = dir.file("corrupt.sqlite")
        for copy in Self.copies(of: original) where copy.name.contains("row header") || copy.name.hasPrefix("page 1 ") {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: store + suffix) }
            try Data(copy.bytes).write(to: URL(fileURLWithPath: store))
            let check = try Processes.run(
                ipipd, ["run", "--check", "--node", "node-a", "--datastore", "sqlite:" + store], timeout: 20,
                removing: inheritedDatastoreVariables)
            guard check.status == 1, check.stderr.contains(store) else { continue }
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: store + suffix) }
            try Data(copy.bytes).write(to: URL(fileURLWithPath: store))
            let r = try run(store)
            #expect(r.status == 1 && !r.crashedOrHung, "\(copy.name): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains(store), "\(copy.name): \(r.stderr)")
            refused += 1
        }
        #expect(refused >= 3, "copies that --check refuses: \(refused)")
    }

    @Test("every page of a store, five corruptions each, every verb: the data or an error naming the store")
    func everyPage() throws {
        let programs = try ["ipipctl", "ipipd"].map { name in
            (name, try #require(builtProgram(name), "build \(name) first (swift build)"))
        }
        let paths = Dictionary(uniqueKeysWithValues: programs)
        let dir = TempDir()
        defer { dir.cleanup() }
        let pristine = dir.file("pristine.sqlite")
        try Self.makeStore(pristine)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: pristine)))
        #expect(original.count % Self.pageSize == 0)
        #expect(original.count / Self.pageSize >= 10, "a store of several pages: \(original.count) bytes")

        Self.writeInputs(dir)
        // The pristine store answers every command with exit 0: the verbs are set up to succeed.
        let control = dir.file("control.sqlite")
        try Data(original).write(to: URL(fileURLWithPath: control))
        for (program, arguments) in Self.commands(store: control, files: dir) {
            let r = try runProcess(paths[program]!, arguments)
            #expect(r.status == 0, "pristine: \(program) \(arguments.joined(separator: " ")): \(r.stderr)")
        }

        // Two copies at a time: each command is mostly process start-up, little CPU.
        let copies = Self.copies(of: original)
        let lanes = 2
        let results = Mutex<(failures: [String], data: Int, errors: Int)>(([], 0, 0))
        DispatchQueue.concurrentPerform(iterations: lanes) { lane in
            let store = dir.file("corrupt-\(lane).sqlite")
            for copy in stride(from: lane, to: copies.count, by: lanes).map({ copies[$0] }) {
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: store + suffix) }
                do {
                    try Data(copy.bytes).write(to: URL(fileURLWithPath: store))
                    for (program, arguments) in Self.commands(store: store, files: dir) {
                        let r = try Processes.run(
                            paths[program]!, arguments, timeout: 20, removing: inheritedDatastoreVariables)
                        let problem = Self.problem(r, store: store).map {
                            "\(copy.name): \(program) \(arguments.prefix(3).joined(separator: " ")): \($0): "
                                + r.stderr.suffix(300)
                        }
                        results.withLock { results in
                            if let problem { results.failures.append(problem) }
                            if r.status == 0 { results.data += 1 } else { results.errors += 1 }
                        }
                    }
                } catch {
                    results.withLock { $0.failures.append("\(copy.name): \(error)") }
                }
            }
        }
        let (failures, data, errors) = results.withLock { $0 }
        let report = failures.prefix(20).joined(separator: "\n")
        #expect(failures.isEmpty, "\(failures.count) bad answers:\n\(report)")
        // Both kinds of answer occur: corruption that is read as data, and corruption that is refused.
        #expect(data > 0 && errors > 0, "answers with data: \(data), errors: \(errors)")
        print(
            "store corruption: \(copies.count) copies of \(original.count / Self.pageSize) pages, "
                + "\(data) answers with data, \(errors) errors naming the store")
    }
}

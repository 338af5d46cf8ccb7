import Foundation
import GRDB
import IPIPDatastore
import IPIPResources
import IPIPTestSupport
import Testing

@Suite("Datastore: SQLite store semantics")
struct SQLiteDatastoreTests {
    @Test("create sets uid, creationTimestamp and resourceVersion; every write bumps the revision")
    func createAndRevisions() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        #expect(try store.revision() == 0)
        let created = try store.create(#require(decode(seedPool).first))
        #expect(created.metadata.resourceVersion == "1")
        #expect(created.metadata.uid?.count == 36)
        #expect(created.metadata.creationTimestamp?.hasSuffix("Z") == true)
        let read = try store.get(.ipPool, name: "ippool-ipip-1")
        #expect(ResourceEncoder.value(read) == ResourceEncoder.value(created))
        let updated = try store.update(
            #require(decode(seedPool.replacingOccurrences(of: "Always", with: "Never")).first))
        #expect(updated.metadata.resourceVersion == "2")
        #expect(updated.metadata.uid == created.metadata.uid)
        #expect(updated.metadata.creationTimestamp == created.metadata.creationTimestamp)
        #expect(try store.revision() == 2)
    }

    @Test("update-if-unchanged: a stale resourceVersion conflicts")
    func conflict() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        let created = try store.create(#require(decode(seedPool).first))
        _ = try store.update(created)
        #expect(throws: DatastoreError.updateConflict(kind: "IPPool", name: "ippool-ipip-1")) {
            try store.update(created)
        }
        #expect(throws: DatastoreError.updateConflict(kind: "IPPool", name: "ippool-ipip-1")) {
            try store.delete(.ipPool, name: "ippool-ipip-1", resourceVersion: "1", poolDisableGrace: .zero)
        }
    }

    @Test("reopen: everything committed is there")
    func reopen() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let path = dir.file("sub/dir/datastore.sqlite")
        do {
            let store = try SQLiteDatastore(path: path)
            for r in try decode(seedPool + "---\n" + node("node-a", "10.0.0.1/24")) { try store.create(r) }
        }
        let store = try SQLiteDatastore(path: path)
        #expect(try store.resourceSet().pools.map(\.metadata.name) == ["ippool-ipip-1"])
        #expect(try store.resourceSet().nodes.map(\.metadata.name) == ["node-a"])
        #expect(try store.integrityCheck() == "ok")
    }

    @Test("a stored row whose columns no longer decode is an error naming the store and the object, never a trap")
    func corruptedRow() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let path = dir.file("datastore.sqlite")
        do {
            let store = try SQLiteDatastore(path: path)
            for r in try decode(seedPool) { try store.create(r) }
        }
        // What a few overwritten bytes can leave: a revision that is no integer, a value that is no text.
        for corruption in ["UPDATE resources SET revision = 'x7'", "UPDATE resources SET value = x'00ff'"] {
            let queue = try DatabaseQueue(path: path)
            try queue.write { db in try db.execute(sql: corruption) }
            try queue.close()
            let store = try SQLiteDatastore(path: path)
            for attempt in [
                { _ = try store.fetch(.ipPool, name: "ippool-ipip-1") },
                { _ = try store.fetchAll(.ipPool) },
                { _ = try store.resourceSet() },
            ] as [() throws -> Void] {
                do {
                    try attempt()
                    Issue.record("\(corruption): read without an error")
                } catch {
                    #expect("\(error)".contains(path), "\(corruption): \(error)")
                    #expect("\(error)".contains("ippool-ipip-1"), "\(corruption): \(error)")
                }
            }
            // A list as get shows it: the row is left out and named, with the store's path.
            var skipped: [DatastoreError] = []
            #expect(try store.list(.ipPool) { skipped.append($0) }.isEmpty)
            #expect(skipped.count == 1 && "\(skipped)".contains(path) && "\(skipped)".contains("ippool-ipip-1"))
            // Put it back for the next corruption.
            try DatabaseQueue(path: path).write { db in
                try db.execute(sql: "DELETE FROM resources")
            }
            for r in try decode(seedPool) { try store.create(r) }
        }
    }

    @Test("every row the sources read goes through GRDB's throwing decoders: no trapping subscript, no try!")
    func noTrappingRowAccess() throws {
        let sources = ExampleCluster.repositoryRoot.appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        // Row subscripts (`row["revision"]`, `rows[0]["value"]`) trap on a value that does not
        // convert; so do try! and GRDB's dataNoCopy.
        let trapping = try NSRegularExpression(pattern: #"(\b\w*[rR]ow\w*(\[[^\]]*\])?\s*\[)|try!|dataNoCopy"#)
        var readers = 0
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            guard text.contains("import GRDB") else { continue }
            readers += 1
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = String(line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false)[0])
                let range = NSRange(code.startIndex..., in: code)
                #expect(
                    trapping.firstMatch(in: code, range: range) == nil,
                    "Sources/\(file):\(number + 1): a GRDB accessor that traps: \(line)")
            }
        }
        #expect(readers > 0, "no source imports GRDB: the check would pass vacuously")
    }

    @Test("manifests datastore reads, refuses writes")
    func manifests() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let file = dir.write("cluster.yaml", seedPool)
        let store = ManifestDatastore(paths: [file])
        #expect(try store.list(.ipPool).map(\.name) == ["ippool-ipip-1"])
        let output = CalicoCtl.execute(
            .apply, input: ManifestInput(text: pool("x", "10.1.0.0/16"), file: "x"),
            store: { store })
        #expect(output.exitCode == 1)
        #expect(
            output.stderr == "Failed to apply 'IPPool' resource: the manifests datastore (\(file)) is read-only: "
                + "cannot create; use --datastore sqlite:PATH to store resources\n")
        let before = try store.revision()
        #expect(try store.revision() == before)
    }
}

@Suite("Datastore: choosing a store")
struct DatastoreLocationTests {
    @Test("the systemd unit's state directory holds root's default store (ProtectSystem=strict allows nothing else)")
    func unitStateDirectory() throws {
        let unit = try String(
            contentsOf: ExampleCluster.repositoryRoot.appendingPathComponent("deploy/ipipd.service"), encoding: .utf8)
        let states = unit.split(separator: "\n").filter { $0.hasPrefix("StateDirectory=") }.map { $0.dropFirst(15) }
        let store = SQLiteDatastore.defaultPath(environment: [:], isRoot: true)
        let directory = String(store[..<store.lastIndex(of: "/")!])
        #expect(states.map { "/var/lib/" + $0 }.contains(directory), "unit: \(states), root's store: \(store)")
    }

    @Test(
        "parse",
        arguments: [
            ("sqlite:/tmp/x.sqlite", DatastoreLocation.sqlite(path: "/tmp/x.sqlite")),
            ("SQLITE:/a:b", .sqlite(path: "/a:b")),
            ("sqlite", .sqlite(path: SQLiteDatastore.defaultPath(environment: ["XDG_DATA_HOME": "/data"]))),
            ("manifests:a.yaml,dir", .manifests(paths: ["a.yaml", "dir"])),
            ("etcd:http://127.0.0.1:2379", .etcd(endpoints: ["http://127.0.0.1:2379"])),
        ])
    func parse(text: String, expected: DatastoreLocation) throws {
        #expect(try DatastoreLocation.parse(text, environment: ["XDG_DATA_HOME": "/data"]) == expected)
    }

    @Test("option, then IPIPD_DATASTORE, then the default path")
    func resolve() throws {
        let env = ["IPIPD_DATASTORE": "sqlite:/env.sqlite", "HOME": "/home/u"]
        #expect(
            try DatastoreLocation.resolve(option: "sqlite:/opt.sqlite", environment: env)
                == .sqlite(path: "/opt.sqlite"))
        #expect(try DatastoreLocation.resolve(option: nil, environment: env) == .sqlite(path: "/env.sqlite"))
        #expect(
            SQLiteDatastore.defaultPath(environment: ["HOME": "/home/u"], isRoot: false)
                == "/home/u/.local/share/ipipd/datastore.sqlite")
        #expect(
            SQLiteDatastore.defaultPath(environment: ["XDG_DATA_HOME": "/x"], isRoot: false)
                == "/x/ipipd/datastore.sqlite")
        #expect(SQLiteDatastore.defaultPath(environment: [:], isRoot: true) == "/var/lib/ipipd/datastore.sqlite")
    }

    @Test("etcd: endpoints from the value, ETCD_ENDPOINTS, calicoctl's DATASTORE_TYPE, or etcd's default")
    func etcd() throws {
        #expect(
            try DatastoreLocation.parse("etcd:http://10.0.0.1:2379,http://10.0.0.2:2379", environment: [:])
                == .etcd(endpoints: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]))
        #expect(
            try DatastoreLocation.parse("etcdv3", environment: ["ETCD_ENDPOINTS": "http://e1:2379, http://e2:2379"])
                == .etcd(endpoints: ["http://e1:2379", "http://e2:2379"]))
        #expect(try DatastoreLocation.parse("etcd", environment: [:]) == .etcd(endpoints: ["http://127.0.0.1:2379"]))
        #expect(
            try DatastoreLocation.resolve(
                option: nil,
                environment: [
                    "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": "http://e:2379",
                ]) == .etcd(endpoints: ["http://e:2379"]))
        // IPIPD_DATASTORE wins over calicoctl's variables.
        #expect(
            try DatastoreLocation.resolve(
                option: nil,
                environment: [
                    "DATASTORE_TYPE": "etcdv3", "IPIPD_DATASTORE": "sqlite:/x.sqlite",
                ]) == .sqlite(path: "/x.sqlite"))
        #expect(throws: DatastoreError.self) { try DatastoreLocation.parse("etcd:127.0.0.1:2379", environment: [:]) }
    }

    @Test("unknown types are clear errors")
    func errors() throws {
        #expect(throws: DatastoreError.self) { try DatastoreLocation.parse("redis:x") }
    }
}

@Suite("Datastore: ipam claim and release")
struct IPAMTests {
    @Test("claims walk the pool block by block; release frees a block for the next claim")
    func claimRelease() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        for r in try decode(pool("small", "10.5.0.0/24", extra: "\n  blockSize: 26") + "---\n" + seedPool) {
            try store.create(r)
        }
        var blocks: [String] = []
        for n in ["a", "b", "c", "d"] {
            blocks.append(try IPAM.claim(in: store, node: n, pool: "small").affinity.spec.cidr)
        }
        #expect(blocks == ["10.5.0.0/26", "10.5.0.64/26", "10.5.0.128/26", "10.5.0.192/26"])
        #expect(throws: DatastoreError.validation("no free block left in IPPool(small)")) {
            try IPAM.claim(in: store, node: "e", pool: "small")
        }
        let released = try IPAM.release(in: store, node: "b", cidr: "10.5.0.64/26")
        #expect(released.metadata.name == "b-10-5-0-64-26")
        let again = try IPAM.claim(in: store, node: "e", pool: "small")
        #expect(again.affinity.spec.cidr == "10.5.0.64/26")
        #expect(again.affinity.spec.state == .confirmed)
        // Without --pool: enabled IPv4 pools in name order ("ippool-ipip-1" < "small").
        #expect(try IPAM.claim(in: store, node: "f", pool: nil).affinity.spec.cidr == "192.168.0.0/26")
        #expect(throws: DatastoreError.doesNotExist(kind: "BlockAffinity", name: "b-10-5-0-64-26")) {
            try IPAM.release(in: store, node: "b", cidr: "10.5.0.64/26")
        }
        // The dataplane sees the blocks.
        #expect(try store.resourceSet().blockAffinities.count == 5)
    }

    @Test("disabled pools hand out nothing")
    func disabled() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        for r in try decode(pool("off-pool", "10.5.0.0/24", extra: "\n  disabled: true")) { try store.create(r) }
        #expect(throws: DatastoreError.self) { try IPAM.claim(in: store, node: "a", pool: "off-pool") }
        #expect(throws: DatastoreError.validation("no enabled IPv4 IPPool to claim a block from")) {
            try IPAM.claim(in: store, node: "a", pool: nil)
        }
    }
}

/// Tests that run the built `ipipctl` binary.
@Suite("Datastore: several ipipctl processes", .serialized)
struct DatastoreProcessTests {
    static func ctl() throws -> String {
        try #require(ipipctlPath(), "build ipipctl first (swift build)")
    }

    @Test("Calico's v3.5 IP-in-IP heredoc: ipipctl apply -f - <<EOF, then get")
    func heredoc() throws {
        let ctl = try Self.ctl()
        let dir = TempDir()
        defer { dir.cleanup() }
        let script = """
            set -e
            export IPIPD_DATASTORE=sqlite:\(dir.file("ds.sqlite"))
            "\(ctl)" apply -f - << EOF
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata:
              name: ippool-ipip-1
            spec:
              cidr: 192.168.0.0/16
              ipipMode: Always
              natOutgoing: true
            EOF
            "\(ctl)" get ippool -o wide
            """
        let result = try runProcess("/bin/sh", ["-c", script])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stdout == """
                Successfully applied 1 'IPPool' resource(s)
                NAME            CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   ASSIGNMENTMODE   
                ippool-ipip-1   192.168.0.0/16   true   Always     Never       false      false              all()      Automatic        


                """)
    }

    @Test("Calico's two v3.5 IP-in-IP calicoctl apply examples, verbatim with ipipctl (SQLite)")
    func seedExamples() throws {
        let ctl = try Self.ctl()
        let dir = TempDir()
        defer { dir.cleanup() }
        checkSeedExamples(try runSeedExamples(ctl, environment: ["IPIPD_DATASTORE": "sqlite:" + dir.file("ds.sqlite")]))
    }

    @Test("command line: exit codes, stderr, --datastore, delete KIND NAME, ipam")
    func commandLine() throws {
        let ctl = try Self.ctl()
        let dir = TempDir()
        defer { dir.cleanup() }
        let ds = ["--datastore", "sqlite:" + dir.file("ds.sqlite")]
        let file = dir.write("pools.yaml", seedPool)
        var r = try runProcess(ctl, ["create", "-f", file] + ds)
        #expect((r.status, r.stdout) == (0, "Successfully created 1 'IPPool' resource(s)\n"))
        r = try runProcess(ctl, ["create", "-f", file] + ds)
        #expect(
            (r.status, r.stdout, r.stderr)
                == (1, "", "Failed to create 'IPPool' resource: resource already exists: IPPool(ippool-ipip-1)\n"))
        r = try runProcess(ctl, ["ipam", "claim", "--node", "node-a"] + ds)
        #expect(
            r.stdout == "Claimed block 192.168.0.0/26 of IPPool(ippool-ipip-1) for node node-a "
                + "(BlockAffinity node-a-192-168-0-0-26, state confirmed)\n")
        r = try runProcess(ctl, ["get", "blockaffinities"] + ds)
        #expect(
            r.stdout
                == "NAME                    NODE     CIDR             STATE       \nnode-a-192-168-0-0-26   node-a   192.168.0.0/26   confirmed   \n\n"
        )
        r = try runProcess(ctl, ["ipam", "release", "--node", "node-a", "--cidr", "192.168.0.0/26"] + ds)
        #expect(
            (r.status, r.stdout) == (
                0, "Released block 192.168.0.0/26 of node node-a (BlockAffinity node-a-192-168-0-0-26)\n"
            ))
        r = try runProcess(ctl, ["delete", "IPPOOL", "ippool-ipip-1"] + ds)
        #expect((r.status, r.stdout) == (0, "Successfully deleted 1 'IPPool' resource(s)\n"))
        r = try runProcess(ctl, ["get", "pools", "-o", "yaml"] + ds)
        #expect(r.stdout.contains("items: []"))
        r = try runProcess(ctl, ["apply", "-f", dir.file("missing.yaml")] + ds)
        #expect(
            (r.status, r.stderr) == (
                1, "Failed to execute command: open \(dir.file("missing.yaml")): no such file or directory\n"
            ))
    }

    @Test("8 processes apply different pools at once into a new file: all land")
    func concurrentWriters() throws {
        let ctl = try Self.ctl()
        let dir = TempDir()
        defer { dir.cleanup() }
        let path = dir.file("ds.sqlite")
        let writers = 8
        let perWriter = 5
        var running: [RunningProcess] = []
        for w in 0..<writers {
            let text = (0..<perWriter).map { i in pool("w\(w)-p\(i)", "10.\(w).\(i).0/24") }.joined(separator: "---\n")
            let file = dir.write("w\(w).yaml", text)
            running.append(try startProcess(ctl, ["apply", "-f", file, "--datastore", "sqlite:" + path]))
        }
        for (w, process) in running.enumerated() {
            let r = process.wait()
            #expect(r.status == 0, "writer \(w): \(r.stderr)")
            #expect(r.stdout == "Successfully applied \(perWriter) 'IPPool' resource(s)\n")
        }
        let store = try SQLiteDatastore(path: path)
        #expect(try store.list(.ipPool).count == writers * perWriter)
        #expect(try store.revision() == Int64(writers * perWriter))
        #expect(try store.integrityCheck() == "ok")
    }

    @Test(
        "kill -9 during an apply, reopen: no corruption, each command's resources all present or none, earlier commands intact"
    )
    func killDuringWrites() throws {
        let ctl = try Self.ctl()
        let dir = TempDir()
        defer { dir.cleanup() }
        let path = dir.file("ds.sqlite")
        let count = 1000
        // One file per round, of nodes of their own: one apply is one transaction (docs/decisions.md,
        // "Scale"), so a kill leaves all of a round's nodes or none of them.
        func names(_ round: Int) -> [String] { (0..<count).map { String(format: "node-\(round)-%04d", $0) } }
        func file(_ round: Int) -> String {
            let text = names(round).enumerated().map { i, n in node(n, "10.\(round).\(i / 250).\(i % 250 + 1)/16") }
                .joined(separator: "---\n")
            return dir.write("nodes-\(round).yaml", text)
        }
        var expected: [String] = []
        var killedRounds = 0
        // Kills after growing delays: the early ones land while the file is decoded, the later ones
        // during or after the transaction (the writer is not observable from outside before it commits).
        let delays: [useconds_t] = [20_000, 80_000, 200_000, 400_000, 700_000, 1_000_000, 1_500_000]
        for (round, delay) in delays.enumerated() {
            let process = try startProcess(ctl, ["apply", "-f", file(round), "--datastore", "sqlite:" + path])
            usleep(delay)
            kill(process.process.processIdentifier, SIGKILL)
            let result = process.wait()
            if result.status == SIGKILL { killedRounds += 1 }
            let store = try SQLiteDatastore(path: path)
            #expect(try store.integrityCheck() == "ok")
            let present = Set(try store.list(.node).map(\.name))
            let mine = present.intersection(names(round))
            #expect(mine.isEmpty || mine.count == count, "round \(round): \(mine.count) of \(count) nodes stored")
            if result.status == 0 { #expect(mine.count == count) }
            #expect(present.isSuperset(of: expected), "round \(round) lost nodes of an earlier round")
            expected += mine
        }
        #expect(killedRounds >= 1, "no round killed the writer")
        let r = try runProcess(ctl, ["apply", "-f", file(0), "--datastore", "sqlite:" + path])
        #expect(r.status == 0, "\(r.stderr)")
        let store = try SQLiteDatastore(path: path)
        #expect(Set(try store.list(.node).map(\.name)).isSuperset(of: names(0)))
        #expect(try store.integrityCheck() == "ok")
    }
}

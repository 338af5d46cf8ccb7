import Foundation
import IPIPCore
import IPIPResources
import IPIPTestSupport
import Synchronization
import Testing

@testable import IPIPDatastore

/// One etcd per suite, started on first use and stopped at process exit (the suite's tests run one
/// after another, each on a store with every `/calico/` key removed).
private final class SharedEtcd: Sendable {
    static let shared = SharedEtcd(tls: false)
    static let withTLS = SharedEtcd(tls: true)
    /// A plain etcd with user authentication on (root / `authPassword`).
    static let withAuth = SharedEtcd(tls: false, authentication: true)
    static let authPassword = "s3cret-root"
    let authentication: Bool
    let tls: Bool
    init(tls: Bool, authentication: Bool = false) {
        self.tls = tls
        self.authentication = authentication
    }
    private let state = Mutex<(started: Bool, server: EtcdServer?, error: String?)>((false, nil, nil))

    func server() throws -> EtcdServer? {
        try state.withLock { state in
            if !state.started {
                state.started = true
                do {
                    state.server = try EtcdServer.start(tls: tls)
                    if authentication { try state.server?.enableAuthentication(rootPassword: Self.authPassword) }
                    if let server = state.server { atexit_servers.withLock { $0.append(server) } }
                } catch {
                    state.error = "\(error)"
                }
                stopAtExit()
            }
            if let error = state.error { throw DatastoreError.storage(error) }
            return state.server
        }
    }
}

private let atexit_servers = Mutex<[EtcdServer]>([])
private let atexitOnce = Mutex(false)
private func stopAtExit() {
    atexitOnce.withLock { registered in
        guard !registered else { return }
        registered = true
        atexit { atexit_servers.withLock { servers in for s in servers { s.stop() } } }
    }
}

/// The value Calico writes for the README's example pool (Calico's v3.5 IP-in-IP example), with
/// this store's uid and timestamp.
private func seedPoolValue(uid: String, created: String) -> String {
    #"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"ippool-ipip-1","uid":""#
        + uid + #"","creationTimestamp":""# + created
        + #""},"spec":{"cidr":"192.168.0.0/16","vxlanMode":"Never","ipipMode":"Always","natOutgoing":true,"blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}}"#
}

@Suite("Datastore: etcd v3 in Calico's key layout (a real etcd-server on loopback)", .serialized, .needsEtcd)
struct EtcdDatastoreTests {
    func store() throws -> EtcdDatastore? {
        guard let server = try SharedEtcd.shared.server() else { return nil }
        return try server.freshStore()
    }

    @Test("keys and values are byte-compatible with Calico's layout; resourceVersion is the mod revision")
    func layout() throws {
        guard let store = try store() else { return }
        let created = try store.create(try #require(decode(seedPool).first))
        try store.create(try #require(decode(node("node-a", "10.0.0.1/24")).first))
        let claim = try IPAM.claim(in: store, node: "node-a", pool: nil)
        #expect(claim.affinity.spec.cidr == "192.168.0.0/26")

        let all = try store.client.range("/calico/", prefix: true).kvs
        #expect(
            all.map(\.key) == [
                "/calico/ipam/v2/assignment/ipv4/block/192.168.0.0-26",
                "/calico/ipam/v2/host/node-a/ipv4/block/192.168.0.0-26",
                "/calico/resources/v3/projectcalico.org/ippools/ippool-ipip-1",
                "/calico/resources/v3/projectcalico.org/nodes/node-a",
            ])
        let byKey = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })
        let poolKV = try #require(byKey["/calico/resources/v3/projectcalico.org/ippools/ippool-ipip-1"])
        let uid = try #require(created.metadata.uid)
        let timestamp = try #require(created.metadata.creationTimestamp)
        #expect(poolKV.text == seedPoolValue(uid: uid, created: timestamp))
        #expect(created.metadata.resourceVersion == String(poolKV.modRevision))
        #expect(try store.get(.ipPool, name: "ippool-ipip-1").metadata.resourceVersion == String(poolKV.modRevision))
        #expect(!poolKV.text.contains("resourceVersion"))

        let nodeKV = try #require(byKey["/calico/resources/v3/projectcalico.org/nodes/node-a"])
        #expect(
            nodeKV.text.hasPrefix(
                #"{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"node-a","uid":""#))
        #expect(nodeKV.text.hasSuffix(#""spec":{"bgp":{"ipv4Address":"10.0.0.1/24"}}}"#))

        let affinityKV = try #require(byKey["/calico/ipam/v2/host/node-a/ipv4/block/192.168.0.0-26"])
        #expect(affinityKV.text == #"{"state":"confirmed"}"#)
        #expect(claim.affinity.metadata.resourceVersion == String(affinityKV.modRevision))

        let blockKV = try #require(byKey["/calico/ipam/v2/assignment/ipv4/block/192.168.0.0-26"])
        let nulls = Array(repeating: "null", count: 64).joined(separator: ",")
        let ordinals = (0..<64).map(String.init).joined(separator: ",")
        #expect(
            blockKV.text == #"{"cidr":"192.168.0.0/26","affinity":"host:node-a","strictAffinity":false,"allocations":["#
                + nulls + #"],"unallocated":["# + ordinals + #"],"attributes":[]}"#)
        // Claim and block went in one transaction.
        #expect(blockKV.modRevision == affinityKV.modRevision)
    }

    @Test("reads what Calico wrote: v3.5 and newer values, unknown fields, affinity states, foreign blocks")
    func readsCalico() throws {
        guard let store = try store() else { return }
        let c = store.client
        // As calico/node and calicoctl v3.5 write them, plus fields a newer Calico adds.
        try c.put(
            "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
            Array(
                #"""
                {"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default-ipv4-ippool","uid":"5e6b3d2c-1111-11e9-9d2c-525400123456","creationTimestamp":"2019-01-10T10:00:00Z"},"spec":{"cidr":"10.244.0.0/16","ipipMode":"CrossSubnet","natOutgoing":true,"blockSize":26,"nodeSelector":"all()","someFutureField":{"x":1}}}
                """#.utf8))
        try c.put(
            "/calico/resources/v3/projectcalico.org/nodes/worker-1",
            Array(
                #"""
                {"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"worker-1","uid":"u1","creationTimestamp":"2019-01-10T10:00:00Z","labels":{"kubernetes.io/hostname":"worker-1"}},"spec":{"bgp":{"ipv4Address":"172.16.1.11/24","ipv4IPIPTunnelAddr":"10.244.5.1"},"orchRefs":[{"nodeName":"worker-1","orchestrator":"k8s"}],"newerSpecField":true},"status":{"podCIDRs":["10.244.5.0/24"]}}
                """#.utf8))
        try c.put("/calico/ipam/v2/host/worker-1/ipv4/block/10.244.5.0-26", Array(#"{"state":"confirmed"}"#.utf8))
        try c.put(
            "/calico/ipam/v2/host/worker-1/ipv4/block/10.244.5.64-26",
            Array(#"{"state":"pending","deleted":false}"#.utf8))
        try c.put(
            "/calico/ipam/v2/host/worker-2/ipv4/block/10.244.6.0-26",
            Array(#"{"state":"confirmed","deleted":"true"}"#.utf8))
        // A block Calico allocated from without an affinity key for it (borrowed / affinity gone).
        try c.put(
            "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26",
            Array(
                #"{"cidr":"10.244.0.0/26","affinity":null,"strictAffinity":false,"allocations":[0],"unallocated":[],"attributes":[{"handle_id":"h","secondary":null}]}"#
                    .utf8))
        // Keys the dataplane does not read.
        try c.put("/calico/ipam/v2/handle/k8s-pod-network.abc", Array(#"{"block":{"10.244.5.0/26":1}}"#.utf8))
        try c.put("/calico/ipam/v2/config", Array(#"{"strict_affinity":false,"auto_allocate_blocks":true}"#.utf8))

        let set = try store.resourceSet()
        let pool = try #require(set.pools.first)
        #expect(set.pools.count == 1)
        #expect(pool.spec.ipipMode == .crossSubnet && pool.spec.natOutgoing && pool.spec.cidr == "10.244.0.0/16")
        #expect(pool.metadata.uid == "5e6b3d2c-1111-11e9-9d2c-525400123456")
        let worker = try #require(set.nodes.first)
        #expect(worker.metadata.name == "worker-1" && worker.spec.bgp?.ipv4Address?.description == "172.16.1.11/24")
        #expect(
            set.blockAffinities.map(\.metadata.name)
                == ["worker-1-10-244-5-0-26", "worker-1-10-244-5-64-26", "worker-2-10-244-6-0-26"])
        #expect(set.blockAffinities.map(\.spec.state.rawValue) == ["confirmed", "pending", "confirmed"])
        #expect(set.blockAffinities.map(\.spec.deleted) == [false, false, true])

        // The foreign block is skipped by a claim: the next claim takes the first block that is
        // neither affine (10.244.5.x, 10.244.6.0 is being deleted) nor allocated (10.244.0.0).
        let claim = try IPAM.claim(in: store, node: "worker-3", pool: nil)
        #expect(claim.affinity.spec.cidr == "10.244.0.64/26")
        // Releasing a block with allocations keeps the allocations and drops only its affinity.
        try c.put(
            "/calico/ipam/v2/assignment/ipv4/block/10.244.5.0-26",
            Array(
                #"{"cidr":"10.244.5.0/26","affinity":"host:worker-1","strictAffinity":false,"allocations":[0,null],"unallocated":[1],"attributes":[{"handle_id":"h","secondary":null}]}"#
                    .utf8))
        try IPAM.release(in: store, node: "worker-1", cidr: "10.244.5.0/26")
        let kept = try #require(try c.range("/calico/ipam/v2/assignment/ipv4/block/10.244.5.0-26").kvs.first)
        #expect(kept.text.contains(#""affinity":null"#) && kept.text.contains(#""allocations":[0,null]"#))
        #expect(try c.range("/calico/ipam/v2/host/worker-1/ipv4/block/10.244.5.0-26").kvs.isEmpty)
        // Releasing our own empty claim removes the block as well.
        try IPAM.release(in: store, node: "worker-3", cidr: "10.244.0.64/26")
        #expect(try c.range("/calico/ipam/v2/assignment/ipv4/block/10.244.0.64-26").kvs.isEmpty)
    }

    @Test("create-if-absent, update and delete guarded on the mod revision")
    func transactions() throws {
        guard let store = try store() else { return }
        let seed = try #require(decode(seedPool).first)
        let first = try store.create(seed)
        #expect(throws: DatastoreError.alreadyExists(kind: "IPPool", name: "ippool-ipip-1")) { try store.create(seed) }
        var stale = first
        guard case .ipPool(var changed) = first else {
            Issue.record("not a pool")
            return
        }
        changed.spec.ipipMode = .crossSubnet
        let second = try store.update(.ipPool(changed))
        #expect(Int64(second.metadata.resourceVersion ?? "") ?? 0 > Int64(first.metadata.resourceVersion ?? "") ?? 0)
        // A stale resourceVersion conflicts, for update and delete; the object is unchanged.
        guard case .ipPool(var again) = stale else { return }
        again.spec.natOutgoing = false
        stale = .ipPool(again)
        #expect(throws: DatastoreError.updateConflict(kind: "IPPool", name: "ippool-ipip-1")) {
            try store.update(stale)
        }
        #expect(throws: DatastoreError.updateConflict(kind: "IPPool", name: "ippool-ipip-1")) {
            try store.delete(.ipPool, name: "ippool-ipip-1", resourceVersion: first.metadata.resourceVersion)
        }
        #expect(throws: DatastoreError.updateConflict(kind: "Node", name: "n")) {
            let n = try store.create(try #require(decode(node("n", "10.0.0.9/24")).first))
            _ = try store.update(n)  // moves the revision on
            try store.delete(.node, name: "n", resourceVersion: n.metadata.resourceVersion)
        }
        guard case .ipPool(let now) = try store.get(.ipPool, name: "ippool-ipip-1") else { return }
        #expect(now.spec.ipipMode == .crossSubnet && now.spec.natOutgoing)
        // A missing object.
        #expect(throws: DatastoreError.doesNotExist(kind: "Node", name: "nope")) {
            try store.delete(.node, name: "nope")
        }
        // The pool delete disables first (a watcher sees disabled: true), then deletes.
        let before = try store.revision()
        try store.delete(.ipPool, name: "ippool-ipip-1", poolDisableGrace: .zero)
        let history = try store.client.range(
            "/calico/resources/v3/projectcalico.org/ippools/ippool-ipip-1",
            revision: before + 1
        ).kvs
        #expect(history.first?.text.contains(#""disabled":true"#) == true)
        #expect(try store.list(.ipPool).isEmpty)
    }

    @Test("8 threads claim blocks at once: every block is claimed once (the transaction decides)")
    func concurrentClaims() throws {
        guard let store = try store() else { return }
        try store.create(try #require(decode(pool("small", "10.9.0.0/24", extra: "\n  blockSize: 28")).first))
        let results = Mutex<[String]>([])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            // Each thread its own client, as separate ipipctl processes would be.
            let own = EtcdDatastore(endpoints: store.client.endpoints)
            do {
                let claim = try IPAM.claim(in: own, node: "node-\(i)", pool: "small")
                results.withLock { $0.append(claim.affinity.spec.cidr) }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let blocks = results.withLock { $0 }
        #expect(blocks.count == 8 && Set(blocks).count == 8)
        let keys = try store.client.range("/calico/ipam/v2/assignment/", prefix: true).kvs
        #expect(keys.count == 8)
    }

    @Test("watch: the change token moves on a relevant write, not on IPAM bookkeeping, and survives an etcd restart")
    func watch() throws {
        guard let server = try SharedEtcd.shared.server() else { return }
        let store = try server.freshStore()
        defer { store.stopWatching() }
        let writer = EtcdDatastore(endpoints: [server.endpoint])
        func waitForChange(from token: String?, seconds: Double = 5) -> String? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let now = store.changeToken()
                if now != token { return now }
                usleep(20_000)
            }
            return nil
        }
        // The watch comes up.
        let token = store.changeToken()
        let deadline = Date().addingTimeInterval(5)
        while !store.isWatching && Date() < deadline { usleep(20_000) }
        #expect(store.isWatching)
        #expect(token == "w0:0")
        try writer.create(try #require(decode(seedPool).first))
        let afterPool = try #require(waitForChange(from: token))
        // Bookkeeping keys (handles, block contents) do not count as changes.
        try writer.client.put("/calico/ipam/v2/handle/x", Array("{}".utf8))
        usleep(500_000)
        #expect(store.changeToken() == afterPool)
        // etcd restarts: the watch resumes, and a later write is seen.
        server.kill()
        try server.launch()
        try writer.create(try #require(decode(node("node-b", "10.0.0.2/24")).first))
        #expect(waitForChange(from: afterPool, seconds: 10) != nil)
    }

    @Test("watch: a write between the daemon's first read and the watch's start is not missed")
    func noGapAfterSnapshot() throws {
        guard let server = try SharedEtcd.shared.server() else { return }
        let store = try server.freshStore()
        defer { store.stopWatching() }
        _ = try store.resourceSet()  // the daemon's first load, at revision R
        let writer = EtcdDatastore(endpoints: [server.endpoint])
        let written = try writer.create(try #require(decode(seedPool).first))  // R + 1, before any watch
        let first = store.changeToken()  // starts the watch now
        #expect(first == "w0:0")
        let deadline = Date().addingTimeInterval(5)
        var now = store.changeToken()
        while now == first && Date() < deadline {
            usleep(20_000)
            now = store.changeToken()
        }
        #expect(now == "w0:\(written.metadata.resourceVersion ?? "?")")
    }

    @Test("watch: after a compaction the token changes so that everything is read again")
    func compaction() throws {
        guard let server = try SharedEtcd.shared.server() else { return }
        _ = try server.freshStore()
        // The watch waits 4 s before it reconnects: etcd is back, written and compacted by then.
        let store = EtcdDatastore(endpoints: [server.endpoint], watchRetryDelay: 4)
        defer { store.stopWatching() }
        let token = store.changeToken()
        let deadline = Date().addingTimeInterval(5)
        while !store.isWatching && Date() < deadline { usleep(20_000) }
        #expect(token == "w0:0")
        // Kill etcd; while the watch is away, write and compact past its resume point.
        server.kill()
        try server.launch()
        let writer = EtcdDatastore(endpoints: [server.endpoint])
        try writer.create(try #require(decode(seedPool).first))
        try writer.client.put("/calico/ipam/v2/handle/y", Array("{}".utf8))
        try writer.client.compact(try writer.revision())
        let end = Date().addingTimeInterval(10)
        var seen = store.changeToken()
        while (seen == token || !store.isWatching) && Date() < end {
            usleep(50_000)
            seen = store.changeToken()
        }
        // Generation 1: the watch restarted from the current revision and everything is reloaded.
        #expect(seen?.hasPrefix("w1:") == true, "\(seen ?? "nil")")
    }

    /// Values under /calico/ that are not Calico's JSON for their key, as a broken writer, a bad
    /// restore or a hand edit with etcdctl leaves them.
    static func garbage() -> [(key: String, value: [UInt8])] {
        let pools = EtcdDatastore.resourcePrefix + "ippools/"
        var random = SplitMix64(seed: 4)
        return [
            (pools + "broken-json", Array(#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":"#.utf8)),
            (
                pools + "wrong-shape",
                Array(
                    #"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"wrong-shape"},"spec":{"cidr":12}}"#
                        .utf8)
            ),
            (pools + "an-array", Array("[1,2,3]".utf8)),
            (
                pools + "wrong-kind",
                Array(
                    #"{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"wrong-kind"},"spec":{}}"#
                        .utf8)
            ),
            (
                pools + "misnamed",
                Array(
                    #"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"other"},"spec":{"cidr":"10.7.0.0/16"}}"#
                        .utf8)
            ),
            (pools + "huge-nesting", Array(repeating: UInt8(ascii: "["), count: 1_000_000)),
            (
                pools + "huge-text",
                Array(#"{"kind":"IPPool","x":""#.utf8) + Array(repeating: UInt8(ascii: "x"), count: 1_000_000)
            ),
            (pools + "binary", (0..<4096).map { _ in UInt8(truncatingIfNeeded: random.next()) } + [0, 0]),
            (EtcdDatastore.affinityPrefix + "node-a/ipv4/block/10.9.0.0-26", Array("not json".utf8)),
            (EtcdDatastore.affinityPrefix + "node-a/ipv4/block/10.9.0.64-26", Array(#"{"state":7}"#.utf8)),
        ]
    }

    @Test(
        "values that are not Calico's JSON: a list skips and names each; get NAME, delete and the daemon's read refuse")
    func garbageValues() throws {
        guard let server = try SharedEtcd.shared.server() else { return }
        let store = try server.freshStore()
        try store.create(try #require(decode(seedPool).first))
        try store.create(try #require(decode(node("node-a", "10.0.0.1/24")).first))
        let garbage = Self.garbage()
        for (key, value) in garbage { try store.client.put(key, value) }
        let pools = garbage.filter { $0.key.hasPrefix(EtcdDatastore.resourcePrefix) }
        let affinities = garbage.filter { $0.key.hasPrefix(EtcdDatastore.affinityPrefix) }

        // A list: the good objects on standard output, every bad key named on standard error, exit 0
        // (calicoctl's list skips values it cannot parse).
        let list = CalicoCtl.get(kind: "ippools", name: nil, output: "ps", store: { store })
        #expect(list.exitCode == 0)
        #expect(
            list.stdout.hasPrefix(
                "NAME            CIDR             SELECTOR   \nippool-ipip-1   192.168.0.0/16   all()"))
        #expect(list.stdout.split(separator: "\n").count == 2, "\(list.stdout)")
        let lines = list.stderr.split(separator: "\n").filter { $0.hasPrefix("Skipped an unreadable IPPool: ") }
        #expect(lines.count == pools.count, "\(list.stderr.prefix(3000))")
        for (key, _) in pools { #expect(lines.contains { $0.contains(key) }, "\(key) not named") }
        #expect(lines.allSatisfy { $0.count < 2000 }, "a huge value is not printed whole")
        let affinityList = CalicoCtl.get(kind: "blockaffinities", name: nil, output: "yaml", store: { store })
        #expect(affinityList.exitCode == 0)
        for (key, _) in affinities { #expect(affinityList.stderr.contains(key), "\(affinityList.stderr)") }

        // A named get refuses with the key, as libcalico-go's Get returns its parse error.
        for (key, _) in pools {
            let name = String(key.split(separator: "/").last!)
            let one = CalicoCtl.get(kind: "ippool", name: name, output: "yaml", store: { store })
            #expect(one.exitCode == 1 && one.stderr.contains(key), "\(name): \(one.stderr.prefix(500))")
        }
        // The daemon's snapshot refuses whole (nothing is half-read), naming a bad key.
        do {
            _ = try store.resourceSet()
            Issue.record("resourceSet read garbage without an error")
        } catch {
            #expect(garbage.contains { "\(error)".contains($0.key) }, "\(error)")
        }
        // A delete of an unreadable object fails and leaves it (nothing half-applied).
        #expect(throws: DatastoreError.self) { try store.delete(.ipPool, name: "broken-json", poolDisableGrace: .zero) }
        try store.client.put(EtcdDatastore.resourcePrefix + "nodes/garbage", Array("{".utf8))
        #expect(throws: DatastoreError.self) { try store.delete(.node, name: "garbage") }
        #expect(try store.client.range(EtcdDatastore.resourcePrefix + "nodes/garbage").kvs.count == 1)
        #expect(try store.client.range(pools[0].key).kvs.count == 1)

        // The real binary: no crash, no hang, the same answer.
        let ctl = try #require(ipipctlPath(), "build ipipctl first (swift build)")
        for arguments in [
            ["get", "ippools"], ["get", "ippool", "huge-nesting"], ["get", "blockaffinities", "-o", "json"],
        ] {
            let r = try Processes.run(
                ctl, arguments + ["--datastore", "etcd:\(server.endpoint)"], timeout: 30,
                removing: inheritedDatastoreVariables)
            #expect(!r.crashedOrHung, "\(arguments): \(r.status) \(r.stderr.prefix(500))")
            #expect(r.stderr.contains("/calico/"), "\(arguments): \(r.stderr.prefix(500))")
        }
    }

    @Test("calicoctl's verbs, messages and exit codes are the same on etcd", arguments: IPIPCtlVerbTests.cases)
    func verbs(_ c: CtlCase) throws {
        guard let store = try store() else { return }
        if !c.setup.isEmpty { for r in try decode(c.setup) { try store.create(r) } }
        let output = run(c, store: store)
        #expect(output.stdout == c.stdout)
        #expect(output.stderr == c.stderr)
        #expect(output.exitCode == c.exitCode)
        if let pools = c.pools { #expect(try storedPools(store) == pools) }
    }

    @Test(
        "ipipctl on etcd: Calico's v3.5 IP-in-IP heredoc with calicoctl's DATASTORE_TYPE/ETCD_ENDPOINTS, --datastore etcd:URL"
    )
    func commandLine() throws {
        guard let server = try SharedEtcd.shared.server() else { return }
        _ = try server.freshStore()
        let ctl = try #require(ipipctlPath(), "build ipipctl first (swift build)")
        let script =
            "set -e\nexport DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS=\(server.endpoint)\n"
            + seedExample(ctl, 1) + "\"\(ctl)\" get ippool -o wide\n"
        var r = try runProcess("/bin/sh", ["-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("Successfully applied 1 'IPPool' resource(s)\nNAME            CIDR "))
        let ds = ["--datastore", "etcd:\(server.endpoint)"]
        r = try runProcess(ctl, ["ipam", "claim", "--node", "node-a"] + ds)
        #expect(
            r.stdout == "Claimed block 192.168.0.0/26 of IPPool(ippool-ipip-1) for node node-a "
                + "(BlockAffinity node-a-192-168-0-0-26, state confirmed)\n")
        r = try runProcess(ctl, ["get", "blockaffinities"] + ds)
        #expect(
            r.stdout
                == "NAME                    NODE     CIDR             STATE       \nnode-a-192-168-0-0-26   node-a   192.168.0.0/26   confirmed   \n\n"
        )
        r = try runProcess(ctl, ["get", "ippool", "ippool-ipip-1", "-o", "yaml"] + ds)
        let revision = try server.freshStoreless().range("/calico/resources/v3/projectcalico.org/ippools/ippool-ipip-1")
            .kvs.first?.modRevision
        #expect(r.stdout.contains("resourceVersion: \"\(revision ?? -1)\""))
        r = try runProcess(ctl, ["delete", "pool", "ippool-ipip-1"] + ds)
        #expect((r.status, r.stdout) == (0, "Successfully deleted 1 'IPPool' resource(s)\n"))
        #expect(try server.freshStoreless().range("/calico/", prefix: true).kvs.isEmpty)
        // The seed's two examples, verbatim, with calicoctl's environment variables.
        checkSeedExamples(
            try runSeedExamples(
                ctl,
                environment: [
                    "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": server.endpoint,
                ]))
        // An etcd that is not there: a clear error naming the endpoint, exit 1.
        let dead = "http://127.0.0.1:\(try EtcdServer.freePort())"
        r = try runProcess(ctl, ["get", "pools", "--datastore", "etcd:\(dead)"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("etcd \(dead)"), "\(r.stderr)")
    }
}

extension EtcdServer {
    /// A client on this server that leaves the keys alone.
    func freshStoreless() -> EtcdClient { EtcdClient(endpoints: [endpoint]) }
}

@Suite("Datastore: etcd over TLS with a client certificate (etcd --client-cert-auth)", .serialized, .needsEtcd)
struct EtcdTLSTests {
    @Test("with calicoctl's ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE: store, read back, watch")
    func withCertificates() throws {
        guard let server = try SharedEtcd.withTLS.server(), let files = server.clientTLS else { return }
        #expect(server.endpoint.hasPrefix("https://"))
        let environment = [
            "ETCD_CA_CERT_FILE": files.caFile ?? "", "ETCD_CERT_FILE": files.certFile ?? "",
            "ETCD_KEY_FILE": files.keyFile ?? "",
        ]
        let store = try DatastoreLocation.parse("etcd:\(server.endpoint)", environment: environment)
            .open(environment: environment)
        try #require(store as? EtcdDatastore).client.deletePrefix("/calico/")
        try store.create(try #require(decode(seedPool).first))
        #expect(try store.list(.ipPool).map(\.name) == ["ippool-ipip-1"])
        // The watch runs over TLS too.
        let token = store.changeToken()
        let etcdStore = try #require(store as? EtcdDatastore)
        let deadline = Date().addingTimeInterval(5)
        while !etcdStore.isWatching && Date() < deadline { usleep(20_000) }
        #expect(etcdStore.isWatching)
        try store.create(try #require(decode(node("node-a", "10.0.0.1/24")).first))
        var moved = store.changeToken()
        while moved == token && Date() < deadline.addingTimeInterval(5) {
            usleep(20_000)
            moved = store.changeToken()
        }
        #expect(moved != token)
        (store as? EtcdDatastore)?.stopWatching()

        // ipipctl with the same variables.
        let ctl = try #require(ipipctlPath(), "build ipipctl first (swift build)")
        let r = try runProcess(
            ctl, ["get", "nodes"],
            environment: environment.merging([
                "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": server.endpoint,
            ]) { $1 })
        #expect((r.status, r.stdout) == (0, "NAME     \nnode-a   \n\n"), "\(r.stderr)")
    }

    @Test("without the client certificate etcd refuses, and the error names the endpoint")
    func refused() throws {
        guard let server = try SharedEtcd.withTLS.server(), let files = server.clientTLS else { return }
        let store = try EtcdDatastore(endpoints: [server.endpoint], tls: EtcdClient.TLSFiles(caFile: files.caFile))
        do {
            _ = try store.list(.ipPool)
            Issue.record("listed without a client certificate")
        } catch {
            #expect("\(error)".contains("etcd \(server.endpoint)"), "\(error)")
        }
        // Untrusted server (no CA given: the system roots do not know ours).
        let untrusted = try EtcdDatastore(
            endpoints: [server.endpoint],
            tls: EtcdClient.TLSFiles(
                certFile: files.certFile, keyFile: files.keyFile))
        #expect(throws: DatastoreError.self) { try untrusted.list(.ipPool) }
        // Half a client certificate, or a file that is not there: an error before any request.
        #expect(
            throws: DatastoreError.storage("etcd: a client certificate needs both ETCD_CERT_FILE and ETCD_KEY_FILE")
        ) {
            try EtcdDatastore(endpoints: [server.endpoint], tls: EtcdClient.TLSFiles(certFile: files.certFile))
        }
        do {
            _ = try EtcdDatastore(endpoints: [server.endpoint], tls: EtcdClient.TLSFiles(caFile: "/nonexistent/ca.pem"))
            Issue.record("a missing CA file was accepted")
        } catch {
            #expect("\(error)".contains("/nonexistent/ca.pem (ETCD_CA_CERT_FILE)"))
        }
    }
}

@Suite("Datastore: etcd with user authentication (calicoctl's ETCD_USERNAME / ETCD_PASSWORD)", .serialized, .needsEtcd)
struct EtcdAuthTests {
    @Test("with credentials: store, read back, watch across an etcd restart; a rejected token is renewed")
    func withCredentials() throws {
        guard let server = try SharedEtcd.withAuth.server() else { return }
        let environment = ["ETCD_USERNAME": "root", "ETCD_PASSWORD": SharedEtcd.authPassword]
        let store = try #require(
            try DatastoreLocation.parse("etcd:\(server.endpoint)", environment: [:])
                .open(environment: environment) as? EtcdDatastore)
        defer { store.stopWatching() }
        try store.client.deletePrefix("/calico/")
        try store.create(try #require(decode(seedPool).first))
        #expect(try store.list(.ipPool).map(\.name) == ["ippool-ipip-1"])
        let token = store.changeToken()
        let deadline = Date().addingTimeInterval(5)
        while !store.isWatching && Date() < deadline { usleep(20_000) }
        #expect(store.isWatching)
        // A token etcd no longer accepts (expired or revoked: 401 "invalid auth token"): the next
        // call authenticates again. (A store without a watch, whose reconnects would renew it.)
        let unwatched = try EtcdDatastore(
            endpoints: [server.endpoint], tls: nil,
            credentials: EtcdClient.Credentials(username: "root", password: SharedEtcd.authPassword))
        #expect(try unwatched.list(.ipPool).count == 1)
        unwatched.client.replaceToken("revoked.token.1")
        try unwatched.create(try #require(decode(node("node-a", "10.0.0.1/24")).first))
        #expect(try store.list(.node).map(\.name) == ["node-a"])
        var moved = store.changeToken()
        while moved == token && Date() < deadline.addingTimeInterval(5) {
            usleep(20_000)
            moved = store.changeToken()
        }
        #expect(moved != token)
        // The watch survives an etcd restart with authentication on: it reconnects (authenticating
        // again) and reports a write made after the restart.
        server.kill()
        try server.launch(credentials: EtcdClient.Credentials(username: "root", password: SharedEtcd.authPassword))
        try unwatched.create(try #require(decode(node("node-b", "10.0.0.2/24")).first))
        let afterRestart = Date().addingTimeInterval(10)
        var seen = store.changeToken()
        while seen == moved && Date() < afterRestart {
            usleep(20_000)
            seen = store.changeToken()
        }
        #expect(seen != moved)

        let ctl = try #require(ipipctlPath(), "build ipipctl first (swift build)")
        let r = try runProcess(
            ctl, ["get", "nodes"],
            environment: environment.merging([
                "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": server.endpoint,
            ]) { $1 })
        #expect((r.status, r.stdout) == (0, "NAME     \nnode-a   \nnode-b   \n\n"), "\(r.stderr)")
    }

    @Test("without credentials or with a wrong password: a clear error naming the endpoint")
    func refused() throws {
        guard let server = try SharedEtcd.withAuth.server() else { return }
        let anonymous = EtcdDatastore(endpoints: [server.endpoint])
        do {
            _ = try anonymous.list(.ipPool)
            Issue.record("listed without credentials")
        } catch {
            #expect("\(error)".contains("etcd \(server.endpoint)"), "\(error)")
            #expect("\(error)".contains("user name is empty"), "\(error)")
        }
        let wrong = try EtcdDatastore(
            endpoints: [server.endpoint], tls: nil,
            credentials: EtcdClient.Credentials(username: "root", password: "nope"))
        do {
            _ = try wrong.list(.ipPool)
            Issue.record("listed with a wrong password")
        } catch {
            #expect("\(error)".contains("authentication failed"), "\(error)")
        }
    }
}

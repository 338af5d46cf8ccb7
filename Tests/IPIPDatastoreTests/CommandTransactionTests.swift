import Foundation
import IPIPDatastore
import IPIPResources
import Testing

/// `ipipctl VERB -f` on SQLite: the resources of one command in one transaction, each in a
/// savepoint (docs/decisions.md, "Scale").
@Suite("SQLite: one transaction per command")
struct CommandTransactionTests {
    func ctl(_ verb: CalicoCtl.Verb, _ input: String, _ store: SQLiteDatastore) -> CtlOutput {
        CalicoCtl.execute(
            verb, input: ManifestInput(text: input, file: "in.yaml"), store: { store },
            options: CalicoCtl.Options(poolDisableGrace: .zero))
    }

    @Test func aFailingStepLeavesNothingTheStepsBeforeItStay() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        let resources = try decode(pool("a", "10.1.0.0/16") + "---\n" + node("n", "10.0.0.1/24"))
        let run = store.runSteps(3) { (i: Int) throws(DatastoreError) in
            try store.create(resources[i == 0 ? 0 : 1])
            if i == 1 { throw .validation("the second step fails after its write") }
            if i > 1 { Issue.record("a step after the failing one ran") }
        }
        #expect(run.stored == 1)
        #expect(run.failure == .validation("the second step fails after its write"))
        #expect(try storedPools(store) == ["a"])
        #expect(try store.list(.node).isEmpty)
        // The store works normally afterwards, outside any transaction.
        try store.create(resources[1])
        #expect(try store.list(.node).map(\.name) == ["n"])
    }

    @Test func otherConnectionsSeeTheCommandOnlyWhenItIsDone() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        let other = try SQLiteDatastore(path: store.path)
        let resources = try decode(pool("a", "10.1.0.0/16") + "---\n" + pool("b", "10.2.0.0/16"))
        var seenMeanwhile: [[String]] = []
        let run = store.runSteps(2) { (i: Int) throws(DatastoreError) in
            try store.create(resources[i])
            seenMeanwhile.append(try other.list(.ipPool).map(\.name))
        }
        #expect(run.stored == 2 && run.failure == nil)
        #expect(seenMeanwhile == [[], []])
        #expect(try storedPools(other) == ["a", "b"])
    }

    @Test func overlapWithAPoolOfTheSameCommandIsFound() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        let out = ctl(.apply, pool("x", "10.3.0.0/16") + "---\n" + pool("y", "10.3.0.0/16"), store)
        #expect(
            out.stderr
                == "Partial success: applied the first 1 out of 2 'IPPool' resources:\nHit error: error with field IPPool.Spec.CIDR = '10.3.0.0/16' (IPPool(y) CIDR overlaps with IPPool(x) CIDR 10.3.0.0/16)\n"
        )
        #expect(out.exitCode == 1)
        #expect(try storedPools(store) == ["x"])
    }

    @Test func overlapNamesTheFirstPoolByNameAsTheScanDid() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        #expect(ctl(.create, pool("z", "10.0.0.0/16") + "---\n" + pool("m", "10.1.0.0/16"), store).exitCode == 0)
        // Adjacent to both; then one containing all three, which names the first of them by name
        // (one stored before the command, one written by it); then one equal to z.
        let out = ctl(
            .apply,
            pool("z", "10.0.0.0/16") + "---\n" + pool("adjacent", "10.2.0.0/16") + "---\n" + pool("big", "10.0.0.0/8")
                + "---\n" + pool("again", "10.0.0.0/16"), store)
        #expect(
            out.stderr
                == "Partial success: applied the first 2 out of 4 'IPPool' resources:\nHit error: error with field IPPool.Spec.CIDR = '10.0.0.0/8' (IPPool(big) CIDR overlaps with IPPool(adjacent) CIDR 10.2.0.0/16)\n"
        )
        #expect(try storedPools(store) == ["adjacent", "m", "z"])
        // A deleted pool no longer counts, in the same command or the next.
        #expect(ctl(.delete, pool("m", "10.1.0.0/16") + "---\n" + node("n", "10.0.0.1/24"), store).exitCode == 1)
        #expect(try storedPools(store) == ["adjacent", "z"])
        let again = ctl(.apply, pool("m2", "10.1.0.0/17") + "---\n" + pool("inner", "10.0.5.0/24"), store)
        #expect(
            again.stderr
                == "Partial success: applied the first 1 out of 2 'IPPool' resources:\nHit error: error with field IPPool.Spec.CIDR = '10.0.5.0/24' (IPPool(inner) CIDR overlaps with IPPool(z) CIDR 10.0.0.0/16)\n"
        )
    }

    @Test func aPoolDeleteRunsOnItsOwnBetweenTheOthers() throws {
        let (store, dir) = try makeStore()
        defer { dir.cleanup() }
        let text = node("n", "10.0.0.1/24") + "---\n" + pool("p", "10.1.0.0/16") + "---\n" + node("m", "10.0.0.2/24")
        #expect(ctl(.create, text, store).stdout == "Successfully created 3 resource(s)\n")
        let out = ctl(.delete, text, store)
        #expect(out.stdout == "Successfully deleted 3 resource(s)\n")
        #expect(try storedPools(store).isEmpty)
        #expect(try store.list(.node).isEmpty)
    }
}

@Test("creationTimestamp: the same text as ISO8601DateFormatter's internet date-time in UTC")
func creationTimestampMatchesTheFormatter() {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    formatter.timeZone = TimeZone(identifier: "UTC")
    for seconds in [0, 1.999, 59, 86_399.5, 951_782_400, 1_700_000_000.25, 1_796_355_201, 4_102_444_799, -1.5] {
        let date = Date(timeIntervalSince1970: seconds)
        #expect(SQLiteDatastore.timestamp(date) == formatter.string(from: date), "\(seconds)")
    }
    #expect(SQLiteDatastore.timestamp(Date(timeIntervalSince1970: 1_796_355_201)) == "2026-12-04T03:33:21Z")
}

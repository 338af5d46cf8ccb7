import Testing

@testable import IPIPCore

// MARK: - Helpers

private func address(_ text: String) -> IPv4Address {
    guard let a = IPv4Address(text) else { fatalError("bad address literal \(text)") }
    return a
}

/// The slow obvious reference: scan every prefix, keep the longest that contains the address.
private struct LinearScanTable {
    var routes: [(prefix: IPv4Prefix, value: UInt32)] = []

    mutating func insert(_ p: IPv4Prefix, value: UInt32) {
        let key = p.network
        if let i = routes.firstIndex(where: { $0.prefix == key }) {
            routes[i].value = value
        } else {
            routes.append((key, value))
        }
    }

    mutating func remove(_ p: IPv4Prefix) -> UInt32? {
        let key = p.network
        guard let i = routes.firstIndex(where: { $0.prefix == key }) else { return nil }
        return routes.remove(at: i).value
    }

    func longestMatch(_ a: IPv4Address) -> (prefix: IPv4Prefix, value: UInt32)? {
        var best: (prefix: IPv4Prefix, value: UInt32)?
        for route in routes where route.prefix.contains(a) {
            if best == nil || route.prefix.length > best!.prefix.length { best = route }
        }
        return best
    }
}

// MARK: - Table-driven basics

struct TrieCase: Sendable, CustomTestStringConvertible {
    enum Step: Sendable {
        /// Insert a prefix with a value.
        case insert(String, UInt32)
        /// Remove a prefix; the value `remove` must return.
        case remove(String, returns: UInt32?)
    }

    var name: String
    var steps: [Step]
    /// Address → expected longest-match value.
    var lookups: [(String, UInt32?)]
    var expectedCount: Int

    var testDescription: String { name }

    /// Rows for a single prefix of each length at a stride boundary: the first and last address
    /// match, the neighbours outside do not.
    static func strideBoundary(_ length: UInt8) -> TrieCase {
        // 10.170.85.170 has alternating bits, so every length keeps some ones in its network part.
        let p = IPv4Prefix(address: IPv4Address(10, 170, 85, 170), length: length).network
        return TrieCase(
            name: "single /\(length) at a stride boundary",
            steps: [.insert(p.description, 42)],
            lookups: [
                (p.first.description, 42), (p.last.description, 42),
                (IPv4Address(rawValue: p.first.rawValue - 1).description, nil),
                (IPv4Address(rawValue: p.last.rawValue + 1).description, nil),
            ],
            expectedCount: 1
        )
    }
}

private let basicCases: [TrieCase] =
    [
        TrieCase(
            name: "empty",
            steps: [],
            lookups: [("0.0.0.0", nil), ("10.1.2.3", nil), ("255.255.255.255", nil)],
            expectedCount: 0
        ),
        TrieCase(
            name: "default route 0/0",
            steps: [.insert("0.0.0.0/0", 7)],
            lookups: [("0.0.0.0", 7), ("10.1.2.3", 7), ("255.255.255.255", 7)],
            expectedCount: 1
        ),
        TrieCase(
            name: "/32 host routes",
            steps: [.insert("10.1.2.3/32", 1), .insert("10.1.2.4/32", 2), .insert("255.255.255.255/32", 3)],
            lookups: [
                ("10.1.2.2", nil), ("10.1.2.3", 1), ("10.1.2.4", 2), ("10.1.2.5", nil), ("255.255.255.255", 3),
                ("255.255.255.254", nil),
            ],
            expectedCount: 3
        ),
        TrieCase(
            name: "nested prefixes",
            steps: [
                .insert("10.0.0.0/8", 1), .insert("10.1.0.0/16", 2), .insert("10.1.2.0/24", 3),
                .insert("10.1.2.128/25", 4), .insert("10.1.2.200/32", 5), .insert("0.0.0.0/0", 6),
            ],
            lookups: [
                ("10.9.9.9", 1), ("10.1.9.9", 2), ("10.1.2.9", 3), ("10.1.2.129", 4), ("10.1.2.200", 5),
                ("10.1.2.201", 4), ("11.0.0.0", 6), ("9.255.255.255", 6),
            ],
            expectedCount: 6
        ),
        TrieCase(
            name: "nested inserted longest first",
            steps: [
                .insert("10.1.2.200/32", 5), .insert("10.1.2.128/25", 4), .insert("10.1.2.0/24", 3),
                .insert("10.1.0.0/16", 2), .insert("10.0.0.0/8", 1),
            ],
            lookups: [("10.9.9.9", 1), ("10.1.9.9", 2), ("10.1.2.9", 3), ("10.1.2.129", 4), ("10.1.2.200", 5)],
            expectedCount: 5
        ),
        TrieCase(
            name: "replace value",
            steps: [.insert("10.0.0.0/8", 1), .insert("10.1.0.0/16", 2), .insert("10.0.0.0/8", 9)],
            lookups: [("10.9.9.9", 9), ("10.1.9.9", 2)],
            expectedCount: 2
        ),
        TrieCase(
            name: "remove restores covering prefix",
            steps: [
                .insert("10.0.0.0/8", 1), .insert("10.1.0.0/16", 2), .insert("10.1.2.0/26", 3),
                .insert("10.1.2.7/32", 4),
                .remove("10.1.2.0/26", returns: 3),
                .remove("10.1.0.0/16", returns: 2),
            ],
            lookups: [("10.1.2.5", 1), ("10.1.2.7", 4), ("10.1.3.0", 1), ("11.0.0.0", nil)],
            expectedCount: 2
        ),
        TrieCase(
            name: "remove everything leaves nothing",
            steps: [
                .insert("10.0.0.0/8", 1), .insert("10.1.2.7/32", 4), .remove("10.0.0.0/8", returns: 1),
                .remove("10.1.2.7/32", returns: 4),
            ],
            lookups: [("10.1.2.7", nil), ("10.0.0.0", nil)],
            expectedCount: 0
        ),
        TrieCase(
            name: "remove of absent returns nil",
            steps: [
                .insert("10.0.0.0/8", 1), .remove("10.0.0.0/9", returns: nil), .remove("11.0.0.0/8", returns: nil),
                .remove("10.0.0.0/8", returns: 1), .remove("10.0.0.0/8", returns: nil),
            ],
            lookups: [("10.0.0.1", nil)],
            expectedCount: 0
        ),
        TrieCase(
            name: "host bits dropped",
            steps: [.insert("10.1.2.3/24", 5), .insert("10.1.2.99/24", 6), .remove("10.1.2.255/24", returns: 6)],
            lookups: [("10.1.2.0", nil)],
            expectedCount: 0
        ),
    ] + [15, 16, 17, 23, 24, 25, 31, 32].map(TrieCase.strideBoundary)

@Suite("IPv4PrefixTrie")
struct IPv4PrefixTrieTests {
    @Test("basics", arguments: basicCases)
    func basics(_ row: TrieCase) {
        var trie = IPv4PrefixTrie()
        for step in row.steps {
            switch step {
            case .insert(let text, let value):
                trie.insert(prefix(text), value: value)
            case .remove(let text, let expected):
                #expect(trie.remove(prefix(text)) == expected, "remove \(text)")
            }
        }
        for (text, expected) in row.lookups {
            #expect(trie.lookup(address(text)) == expected, "lookup \(text)")
            #expect(trie.longestMatch(address(text))?.value == expected, "longestMatch \(text)")
        }
        #expect(trie.count == row.expectedCount)
        #expect(trie.isEmpty == (row.expectedCount == 0))
        #expect(trie.entries.count == row.expectedCount)
        #expect(trie.invariantViolation() == nil)
    }

    @Test("host bits are dropped from the key")
    func hostBitsDropped() {
        var trie = IPv4PrefixTrie()
        trie.insert(prefix("10.1.2.3/24"), value: 5)
        #expect(trie[exactly: prefix("10.1.2.0/24")] == 5)
        #expect(trie[exactly: prefix("10.1.2.77/24")] == 5)
        #expect(trie[exactly: prefix("10.1.2.0/25")] == nil)
        #expect(trie.entries.map(\.prefix) == [prefix("10.1.2.0/24")])
        #expect(trie.lookup(address("10.1.2.255")) == 5)
    }

    @Test("longestMatch returns the masked matching prefix")
    func longestMatchPrefix() {
        var trie = IPv4PrefixTrie()
        trie.insert(prefix("10.0.0.0/8"), value: 1)
        trie.insert(prefix("10.1.2.64/26"), value: 2)
        let outer = trie.longestMatch(address("10.200.3.4"))
        #expect(outer?.prefix == prefix("10.0.0.0/8"))
        #expect(outer?.value == 1)
        let inner = trie.longestMatch(address("10.1.2.100"))
        #expect(inner?.prefix == prefix("10.1.2.64/26"))
        #expect(inner?.value == 2)
        #expect(trie.longestMatch(address("11.0.0.0")) == nil)
    }

    @Test("entries are sorted by address, then length")
    func entriesSorted() {
        var trie = IPv4PrefixTrie()
        let inserted = ["10.1.0.0/16", "0.0.0.0/0", "10.0.0.0/8", "192.168.1.1/32", "10.0.0.0/9"]
        for (i, text) in inserted.enumerated() { trie.insert(prefix(text), value: UInt32(i)) }
        #expect(
            trie.entries.map(\.prefix.description)
                == ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/9", "10.1.0.0/16", "192.168.1.1/32"]
        )
        #expect(trie.entries.map(\.value) == [1, 2, 4, 0, 3])
    }

    @Test("chunks are recycled under churn and folded when uniform")
    func chunkRecycling() {
        var trie = IPv4PrefixTrie()
        trie.insert(prefix("10.0.0.0/8"), value: 0)
        let baseline = trie.tableByteCount
        var highWater = 0
        for round in 0..<5 {
            for i in 0..<512 {
                // Host routes spread over 32 /24s in 4 /16s: needs level-2 and level-3 chunks.
                let a = IPv4Address(10, UInt8(i % 4), UInt8(i % 32), UInt8(i / 32))
                trie.insert(IPv4Prefix(address: a, length: 32), value: UInt32(round * 1000 + i))
            }
            #expect(trie.chunkCount == 4 + 32)
            if round == 0 { highWater = trie.tableByteCount }
            #expect(trie.tableByteCount == highWater, "round \(round) grew the table")
            for i in 0..<512 {
                let a = IPv4Address(10, UInt8(i % 4), UInt8(i % 32), UInt8(i / 32))
                #expect(trie.remove(IPv4Prefix(address: a, length: 32)) == UInt32(round * 1000 + i))
            }
            #expect(trie.chunkCount == 0)
            #expect(trie.count == 1)
            #expect(trie.lookup(address("10.1.1.1")) == 0)
            #expect(trie.invariantViolation() == nil)
        }
        #expect(highWater > baseline)
    }

    @Test("batch lookup of an empty batch and of absent addresses")
    func batchLookupEdges() {
        var trie = IPv4PrefixTrie()
        trie.insert(prefix("10.1.2.0/26"), value: 3)
        var values: [UInt32] = [9, 9]
        let addresses = [address("10.1.2.63"), address("10.1.2.64")]
        addresses.withUnsafeBufferPointer { a in
            values.withUnsafeMutableBufferPointer { v in
                trie.lookup(UnsafeBufferPointer(rebasing: a[0..<0]), into: v, absent: 0)
            }
        }
        #expect(values == [9, 9])
        addresses.withUnsafeBufferPointer { a in
            values.withUnsafeMutableBufferPointer { trie.lookup(a, into: $0, absent: 0) }
        }
        #expect(values == [3, 0])
    }

    @Test("a copy is unaffected by mutations of the original")
    func valueSemantics() {
        var trie = IPv4PrefixTrie()
        trie.insert(prefix("10.0.0.0/8"), value: 1)
        let snapshot = trie
        trie.insert(prefix("10.1.2.3/32"), value: 2)
        trie.remove(prefix("10.0.0.0/8"))
        #expect(snapshot.lookup(address("10.1.2.3")) == 1)
        #expect(trie.lookup(address("10.1.2.3")) == 2)
        #expect(trie.lookup(address("10.9.9.9")) == nil)
    }

    // MARK: Differential test against the linear scan

    /// A random prefix near one of a few anchors, so prefixes nest and share chunks. Lengths are
    /// drawn from 0…32 with extra weight on the stride boundaries.
    private static func randomPrefix(_ rng: inout SplitMix64, anchors: [UInt32]) -> IPv4Prefix {
        let boundaryLengths: [UInt8] = [15, 16, 17, 23, 24, 25, 26, 31, 32]
        let length: UInt8 =
            rng.next(below: 3) == 0
            ? boundaryLengths[rng.next(below: boundaryLengths.count)] : UInt8(rng.next(below: 33))
        // Vary only the low `spread` bits of the anchor: 8, 12, 16 or 24.
        let spread = [8, 12, 16, 24][rng.next(below: 4)]
        let anchor = anchors[rng.next(below: anchors.count)]
        let noise = rng.nextUInt32() & ((1 << UInt32(spread)) - 1)
        return IPv4Prefix(address: IPv4Address(rawValue: anchor ^ noise), length: length).network
    }

    @Test("matches a linear scan over seeded random prefixes", arguments: [0x5EED_0001, 0xC0FF_EE42] as [UInt64])
    func differential(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let anchors = (0..<6).map { _ in rng.nextUInt32() } + [0, 0xFFFF_FFFF]
        var trie = IPv4PrefixTrie()
        var reference = LinearScanTable()
        var failures = 0
        func check(_ a: IPv4Address, _ context: String) {
            let want = reference.longestMatch(a)
            let got = trie.longestMatch(a)
            if got?.prefix != want?.prefix || got?.value != want?.value || trie.lookup(a) != want?.value {
                failures += 1
                if failures <= 5 {
                    Issue.record(
                        "seed \(seed) \(context): \(a) → trie \(got.map { "\($0.prefix)=\($0.value)" } ?? "nil"), reference \(want.map { "\($0.prefix)=\($0.value)" } ?? "nil")"
                    )
                }
            }
        }

        var randomLookups = 0
        for round in 0..<25 {
            // Interleaved inserts and removes; the population grows early and then churns.
            let operations = round < 5 ? 120 : 80
            for _ in 0..<operations {
                if !reference.routes.isEmpty, rng.next(below: 10) < (round < 5 ? 2 : 5) {
                    // Remove: mostly a present prefix, sometimes an absent one.
                    let victim =
                        rng.next(below: 8) == 0
                        ? Self.randomPrefix(&rng, anchors: anchors)
                        : reference.routes[rng.next(below: reference.routes.count)].prefix
                    let want = reference.remove(victim)
                    let got = trie.remove(victim)
                    if got != want {
                        failures += 1
                        Issue.record(
                            "seed \(seed) round \(round): remove \(victim) → \(String(describing: got)), want \(String(describing: want))"
                        )
                    }
                } else {
                    let p = Self.randomPrefix(&rng, anchors: anchors)
                    let value = UInt32(truncatingIfNeeded: rng.next())
                    trie.insert(p, value: value)
                    reference.insert(p, value: value)
                }
            }
            #expect(trie.count == reference.routes.count, "seed \(seed) round \(round)")
            if let problem = trie.invariantViolation() {
                Issue.record("seed \(seed) round \(round): \(problem)")
                return
            }
            // Boundary addresses of every live prefix, and their outside neighbours.
            for route in reference.routes {
                let first = route.prefix.first.rawValue
                let last = route.prefix.last.rawValue
                for a in [first, last, first &- 1, last &+ 1] {
                    check(IPv4Address(rawValue: a), "boundary round \(round)")
                }
            }
            // Random addresses: half near the anchors (inside the populated regions), half anywhere.
            var batch: [IPv4Address] = []
            for _ in 0..<4_000 {
                let a =
                    rng.next(below: 2) == 0
                    ? anchors[rng.next(below: anchors.count)] ^ (rng.nextUInt32() & 0x00FF_FFFF) : rng.nextUInt32()
                check(IPv4Address(rawValue: a), "random round \(round)")
                batch.append(IPv4Address(rawValue: a))
                randomLookups += 1
            }
            // The batch lookup agrees with the reference on the same addresses.
            let absent: UInt32 = 0xDEAD_BEEF
            var batchValues = [UInt32](repeating: 0, count: batch.count + 3)
            batch.withUnsafeBufferPointer { addresses in
                batchValues.withUnsafeMutableBufferPointer { trie.lookup(addresses, into: $0, absent: absent) }
            }
            for (i, a) in batch.enumerated() where batchValues[i] != reference.longestMatch(a)?.value ?? absent {
                failures += 1
                if failures <= 5 { Issue.record("seed \(seed) batch round \(round): \(a) → \(batchValues[i])") }
            }
            #expect(batchValues.suffix(3) == [0, 0, 0], "batch lookup wrote past the batch")
            if failures > 0 { break }
        }
        #expect(randomLookups >= 100_000 || failures > 0)
        #expect(failures == 0, "seed \(seed): \(failures) mismatches")
        // Exact-match view agrees too.
        let sortedReference = reference.routes.sorted {
            ($0.prefix.address.rawValue, $0.prefix.length) < ($1.prefix.address.rawValue, $1.prefix.length)
        }
        #expect(trie.entries.map(\.prefix) == sortedReference.map(\.prefix), "seed \(seed)")
        #expect(trie.entries.map(\.value) == sortedReference.map(\.value), "seed \(seed)")
    }
}

import IPIPCore
import Testing

@testable import IPIPResources

/// The index against the scan it replaces: the smallest key among the stored prefixes for which
/// `IPPrefix.overlaps` holds, with one key excluded, after random inserts and removals.
@Test(arguments: [UInt64(1), 2, 3, 4])
func prefixOverlapIndexMatchesAScan(seed: UInt64) {
    var random = SplitMix64(seed: seed)
    func prefix() -> IPPrefix {
        // Few distinct high bits, so that nesting, equality and adjacency all occur.
        if random.next() % 4 == 0 {
            let high = 0xFD00_0000_0000_0000 | (random.next() % 8) << 40
            let p = IPv6Prefix(address: IPv6Address(high: high, low: 0), length: UInt8(8 + random.next() % 40))
            return .v6(p.network)
        }
        let address = IPv4Address(rawValue: 0x0A00_0000 | UInt32(truncatingIfNeeded: random.next() % 16) << 16)
        return .v4(IPv4Prefix(address: address, length: UInt8(random.next() % 33)).network)
    }
    var index = PrefixOverlapIndex<Int>()
    var stored: [(prefix: IPPrefix, key: Int)] = []
    for step in 0..<600 {
        if !stored.isEmpty, random.next() % 5 == 0 {
            let victim = stored.remove(at: Int(random.next() % UInt64(stored.count)))
            let removed = index.remove(victim.prefix, key: victim.key)
            #expect(removed)
        } else {
            let p = prefix()
            let key = Int(random.next() % 1000)
            index.insert(p, key: key)
            stored.append((p, key))
        }
        let query = prefix()
        let excluded: Int? = stored.isEmpty || step % 3 != 0 ? nil : stored[0].key
        let expected = stored.filter { $0.prefix.overlaps(query) && $0.key != excluded }.map(\.key).min()
        #expect(index.firstOverlapping(query, excluding: excluded) == expected, "step \(step): \(query)")
        #expect(index.count == stored.count)
    }
    let absent = index.remove(.v4(IPv4Prefix(address: IPv4Address(rawValue: 0xC000_0200), length: 24)), key: 7)
    #expect(absent == false)
}

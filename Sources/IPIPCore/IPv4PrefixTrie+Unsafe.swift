// The lookup walk of IPv4PrefixTrie: the only per-packet code of the trie, and the only place it
// skips bounds checks. The structural invariants it relies on are kept by the mutating methods in
// IPv4PrefixTrie.swift and checked by `invariantViolation()` in the tests.

extension IPv4PrefixTrie {
    /// The leaf entry (or 0) holding the longest prefix that contains `address` (host order).
    ///
    /// Constants are spelled out rather than read from the `static let`s so that the inlined code
    /// in other modules carries no lazy-global access.
    @inlinable
    @inline(__always)
    func leafEntry(for address: UInt32) -> UInt32 {
        table.withUnsafeBufferPointer { table in
            // Safe: the table always holds the 65536-slot root (init) and `address >> 16 < 65536`.
            var entry = table[Int(address >> 16)]
            if entry & 0x8000_0000 != 0 {
                // Safe: a chunk entry c is only written after slots c·256 ..< c·256 + 256 were
                // appended (`chunk(at:)`), the table never shrinks, and the octet is < 256.
                entry = table[Int(entry & 0x7FFF_FFFF) << 8 | Int((address >> 8) & 0xFF)]
                if entry & 0x8000_0000 != 0 {
                    // Safe: as above.
                    entry = table[Int(entry & 0x7FFF_FFFF) << 8 | Int(address & 0xFF)]
                }
            }
            return entry
        }
    }

    /// The payload of a non-empty leaf entry.
    @inlinable
    @inline(__always)
    func payload(ofLeaf entry: UInt32) -> UInt32 {
        payloads.withUnsafeBufferPointer { payloads in
            // Safe: a leaf entry (s, L) is written only for a payload slot s - 1 < payloads.count
            // (`insert`), payloads never shrinks, and entry ≥ 64 so s ≥ 1.
            payloads[Int(entry >> 6) &- 1]
        }
    }
}

extension IPv4PrefixTrie {
    /// Looks up a batch of addresses, writing each one's longest-match value (or `absent`) to the
    /// same index of `values`.
    ///
    /// Works level by level across the batch (all root loads, then all level-2 loads, ...), so the
    /// cache misses of different addresses overlap instead of queueing behind each other: with
    /// tables larger than the cache this is markedly faster per address than calling `lookup(_:)`
    /// in a loop. `values` doubles as the scratch space; nothing is allocated.
    ///
    /// - Parameters:
    ///   - addresses: The destination addresses of a batch.
    ///   - values: Output, at least `addresses.count` long; only the first `addresses.count`
    ///     elements are written.
    ///   - absent: The value written for addresses no prefix covers.
    /// - Precondition: `values.count >= addresses.count`.
    @inlinable
    public func lookup(
        _ addresses: UnsafeBufferPointer<IPv4Address>,
        into values: UnsafeMutableBufferPointer<UInt32>,
        absent: UInt32
    ) {
        precondition(values.count >= addresses.count, "output buffer shorter than the batch")
        let count = addresses.count
        table.withUnsafeBufferPointer { table in
            for i in 0..<count {
                // Safe: i < count ≤ values.count (precondition); the root index < 65536 ≤ table.count.
                values[i] = table[Int(addresses[i].rawValue >> 16)]
            }
            for i in 0..<count where values[i] & 0x8000_0000 != 0 {
                // Safe: chunk entries point at appended, never-removed chunks (see `leafEntry(for:)`).
                values[i] = table[Int(values[i] & 0x7FFF_FFFF) << 8 | Int((addresses[i].rawValue >> 8) & 0xFF)]
            }
            for i in 0..<count where values[i] & 0x8000_0000 != 0 {
                // Safe: as above.
                values[i] = table[Int(values[i] & 0x7FFF_FFFF) << 8 | Int(addresses[i].rawValue & 0xFF)]
            }
        }
        payloads.withUnsafeBufferPointer { payloads in
            for i in 0..<count {
                let entry = values[i]
                // Safe: a non-zero leaf entry names a live payload slot (see `payload(ofLeaf:)`).
                values[i] = entry == 0 ? absent : payloads[Int(entry >> 6) &- 1]
            }
        }
    }
}

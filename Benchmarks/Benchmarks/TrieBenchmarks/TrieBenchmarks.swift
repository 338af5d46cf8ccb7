// Longest-prefix-match benchmarks for IPv4PrefixTrie.
//
// Every lookup benchmark builds its trie and its address stream in `setup:` (outside the timed
// region), then times 1,000,000 lookups per iteration with `scalingFactor: .mega`, so the reported
// wall clock is nanoseconds per lookup and throughput is million lookups per second. Each result
// goes through `blackHole`, so no lookup can be optimised away.

import Benchmark
import IPIPCore

// MARK: - Workload

// SplitMix64 (IPIPCore): a fixed, seeded sequence, so every run benchmarks the same prefixes and addresses.

/// A Calico-like route set of `count` prefixes:
/// - 60 % /26 IPAM blocks, drawn without repetition from the first 2·(block count) blocks of the
///   10.0.0.0/8 pool (a pool about half used, so blocks are clustered but not contiguous);
/// - 38 % /32 host routes (borrowed addresses) inside randomly chosen blocks;
/// - 2 % pools and external routes of length 8…16 anywhere, plus the default route.
func realisticPrefixes(count: Int, seed: UInt64 = 0x1B1B_2026) -> [IPv4Prefix] {
    var rng = SplitMix64(seed: seed)
    let blockCount = count * 60 / 100
    let hostCount = count * 38 / 100
    let shortCount = count - blockCount - hostCount - 1
    var prefixes: [IPv4Prefix] = [IPv4Prefix(address: .any, length: 0)]
    prefixes.reserveCapacity(count)

    let poolBase: UInt32 = 0x0A00_0000  // 10.0.0.0
    var blockIndices = Set<Int>()
    while blockIndices.count < blockCount { blockIndices.insert(rng.next(below: 2 * blockCount)) }
    // Added, not OR-ed: from 2^19 blocks on, the block offset reaches the bits of 10.0.0.0.
    let blocks = blockIndices.sorted().map { poolBase &+ UInt32($0) << 6 }
    for block in blocks { prefixes.append(IPv4Prefix(address: IPv4Address(rawValue: block), length: 26)) }

    var hosts = Set<UInt32>()
    while hosts.count < hostCount { hosts.insert(blocks[rng.next(below: blocks.count)] | UInt32(rng.next(below: 64))) }
    for host in hosts.sorted() { prefixes.append(IPv4Prefix(address: IPv4Address(rawValue: host), length: 32)) }

    var shorts = Set<IPv4Prefix>()
    while shorts.count < shortCount {
        let length = UInt8(8 + rng.next(below: 9))
        shorts.insert(IPv4Prefix(address: IPv4Address(rawValue: rng.nextUInt32()), length: length).network)
    }
    prefixes.append(contentsOf: shorts)
    return prefixes
}

/// Lookups per benchmark iteration (the scaling factor).
let lookupsPerIteration = BenchmarkScalingFactor.mega.rawValue

/// A trie and the addresses to look up, built once per benchmark in `setup:`.
struct LookupWorkload {
    var trie: IPv4PrefixTrie
    var addresses: [IPv4Address]

    init(prefixCount: Int, sequential: Bool) {
        let prefixes = realisticPrefixes(count: prefixCount)
        trie = IPv4PrefixTrie()
        for (i, p) in prefixes.enumerated() { trie.insert(p, value: UInt32(i)) }
        precondition(trie.count == prefixCount)
        if sequential {
            // Consecutive addresses from the start of the pool, as a sweep or a scan would send.
            addresses = (0..<lookupsPerIteration).map { IPv4Address(rawValue: 0x0A00_0000 &+ UInt32($0)) }
        } else {
            // 90 % inside a random installed prefix (so long prefixes are hit), 10 % anywhere in
            // the pool. Independent of the previous address, so no cache locality between lookups.
            var rng = SplitMix64(seed: 0xADD7_E55E5)
            addresses = (0..<lookupsPerIteration).map { _ in
                if rng.next(below: 10) == 0 { return IPv4Address(rawValue: 0x0A00_0000 | rng.nextUInt32() >> 8) }
                let p = prefixes[rng.next(below: prefixes.count)]
                return IPv4Address(rawValue: p.first.rawValue | (rng.nextUInt32() & ~p.mask))
            }
        }
    }
}

/// The timed loop: one lookup per scaled iteration.
func runLookups(_ benchmark: Benchmark, _ workload: LookupWorkload) {
    let trie = workload.trie
    let addresses = workload.addresses
    for i in benchmark.scaledIterations {
        blackHole(trie.lookup(addresses[i]))
    }
}

/// The timed loop for the batch API: the same addresses in batches of `batchSize`; each scaled
/// iteration is still one address. The output buffer is allocated before the timed region.
func runBatchLookups(_ benchmark: Benchmark, _ workload: LookupWorkload, batchSize: Int) {
    let trie = workload.trie
    let values = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: batchSize)
    defer { values.deallocate() }
    workload.addresses.withUnsafeBufferPointer { addresses in
        benchmark.startMeasurement()
        var start = 0
        while start < lookupsPerIteration {
            let end = min(start + batchSize, lookupsPerIteration)
            trie.lookup(UnsafeBufferPointer(rebasing: addresses[start..<end]), into: values, absent: .max)
            blackHole(values)
            start = end
        }
        benchmark.stopMeasurement()
    }
}

// MARK: - Benchmarks

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .mega,
        maxDuration: .seconds(2),
        maxIterations: 100
    )

    for prefixCount in [1_000, 10_000, 100_000, 1_000_000] {
        let label = prefixCount >= 1_000_000 ? "\(prefixCount / 1_000_000)M" : "\(prefixCount / 1_000)k"
        Benchmark("LPM lookup random, \(label) prefixes") { benchmark, workload in
            runLookups(benchmark, workload)
        } setup: {
            LookupWorkload(prefixCount: prefixCount, sequential: false)
        }
        Benchmark("LPM lookup random, batch of 64, \(label) prefixes") { benchmark, workload in
            runBatchLookups(benchmark, workload, batchSize: 64)
        } setup: {
            LookupWorkload(prefixCount: prefixCount, sequential: false)
        }
        Benchmark("LPM lookup sequential, \(label) prefixes") { benchmark, workload in
            runLookups(benchmark, workload)
        } setup: {
            LookupWorkload(prefixCount: prefixCount, sequential: true)
        }
    }

    // Control-plane cost: building a 100k-prefix trie from scratch, and its table size.
    Benchmark(
        "LPM build, 100k prefixes",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .custom("tableMiB", useScalingFactor: false)],
            warmupIterations: 1,
            scalingFactor: .one,
            maxDuration: .seconds(3),
            maxIterations: 10
        )
    ) { benchmark, prefixes in
        var trie = IPv4PrefixTrie()
        for (i, p) in prefixes.enumerated() { trie.insert(p, value: UInt32(i)) }
        benchmark.stopMeasurement()
        blackHole(trie.count)
        benchmark.measurement(.custom("tableMiB", useScalingFactor: false), trie.tableByteCount >> 20)
    } setup: {
        realisticPrefixes(count: 100_000)
    }
}

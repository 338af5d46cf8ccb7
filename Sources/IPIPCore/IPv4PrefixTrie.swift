/// A longest-prefix-match table from IPv4 prefixes to `UInt32` payloads (route indices, peer
/// indices, ...), built for lookups on the per-packet path and updates on the control plane.
///
/// ## Layout: DIR-16-8-8 with controlled prefix expansion
///
/// All tables live in one flat `[UInt32]`:
///
/// ```
///  table[0 ..< 65536]         root, indexed by address bits 31…16        (/0 … /16 expanded here)
///  table[256·c ..< 256·c+256]  chunk c (c ≥ 256), indexed by one octet
///                               level 2: bits 15…8 of a root slot         (/17 … /24 expanded here)
///                               level 3: bits 7…0 of a level-2 slot       (/25 … /32 expanded here)
/// ```
///
/// Each 32-bit entry is one of
///
/// ```
///  0                              no route
///  1 ccccccc cccccccc cccccccc cccccccc   chunk: entries start at table[c << 8]
///  0 sssssss ssssssss ssssssss ssLLLLLL   leaf: payload slot s - 1, prefix length L (0…32)
/// ```
///
/// A prefix of length `L` is written into every slot of its range at the level that holds `L`
/// (a /12 fills 16 root slots, a /26 fills 64 level-3 slots), and into every slot of the chunks
/// below those slots that does not already hold a longer prefix. So every slot always holds the
/// longest prefix covering it, and a lookup is at most three dependent table loads (root, level 2,
/// level 3) and one load of the payload from `payloads`, a dense array of 4 bytes per prefix.
/// The payload sits behind a slot rather than in the entry so that entries stay 4 bytes (half the
/// memory of inline 64-bit entries) and replacing a value is a single store.
///
/// The control plane keeps `routes`, an exact-match dictionary from each stored (masked) prefix to
/// its payload slot. It is the source of truth: removing a prefix rewrites its slots with the
/// next-shorter covering prefix found there. A chunk whose 256 entries become equal leaves (or are
/// all empty) is folded back into its parent slot and put on a free list, so churn reuses chunks
/// instead of growing the table.
///
/// ## Complexity
///
/// - `lookup`, `longestMatch`: O(1), at most 4 dependent loads, no allocation, no locks.
///   `lookup(_:into:absent:)` walks a whole batch level by level so that cache misses overlap;
///   prefer it when the table does not fit in the cache.
/// - `insert`, `remove`: O(2^(stride - L mod stride) + 256 · touched chunks); a /8 touches 256 root
///   slots plus every chunk beneath them, a /32 touches one slot. Removal also probes `routes` for
///   up to 32 shorter lengths. Replacing the value of an existing prefix is O(1).
/// - `entries`: O(n log n).
///
/// ## Memory
///
/// 256 KiB for the root, 1 KiB per live chunk, plus about 4 bytes (payload) + a dictionary entry
/// per prefix. Every distinct /16 holding a prefix longer than /16 costs one level-2 chunk and
/// every distinct /24 holding a prefix longer than /24 one level-3 chunk. 100,000 Calico-like
/// prefixes (60 % /26 blocks in a half-used 10.0.0.0/8 pool, 38 % /32s inside them, 2 % /8–/16)
/// measure 28 MiB of tables (about 28,000 level-3 chunks), plus the dictionary; the worst case,
/// one long prefix in each of n distinct /24s, is about 1 KiB per prefix.
/// `tableByteCount` reports the current size. The table array never shrinks; freed chunks are
/// reused first.
///
/// The type is a value: copies share storage until one of them is mutated (then the mutator
/// copies everything, O(size)). Build a new trie on the control plane and publish it to workers
/// as an immutable snapshot.
public struct IPv4PrefixTrie: Sendable {
    // MARK: Entry encoding

    /// Root slots: one per value of the top 16 address bits.
    @usableFromInline static let rootSlotCount = 1 << 16
    /// Slots per level-2 or level-3 chunk.
    @usableFromInline static let chunkSlotCount = 256
    /// Set in an entry that points at a chunk.
    @usableFromInline static let chunkFlag: UInt32 = 0x8000_0000
    /// Bits of a leaf entry holding the prefix length.
    @usableFromInline static let lengthBits: UInt32 = 6
    @usableFromInline static let lengthMask: UInt32 = (1 << lengthBits) - 1
    /// Largest payload slot + 1 that fits in a leaf entry below the chunk flag.
    static let maximumLeafSlot: UInt32 = (chunkFlag >> lengthBits) - 1

    /// The flat table: the root, then chunks of 256 slots. Chunk `c` starts at `c << 8`; chunk
    /// numbers below 256 would overlap the root and are never handed out.
    @usableFromInline var table: [UInt32]
    /// Payload of each leaf slot (the `s - 1` of a leaf entry).
    @usableFromInline var payloads: [UInt32]
    /// Exact-match source of truth: masked prefix → payload slot.
    var routes: [IPv4Prefix: UInt32]
    /// Payload slots no prefix uses.
    var freePayloadSlots: [UInt32]
    /// Chunk numbers no slot points at.
    var freeChunks: [UInt32]

    /// Creates an empty trie (256 KiB: the root table).
    public init() {
        table = Array(repeating: 0, count: Self.rootSlotCount)
        payloads = []
        routes = [:]
        freePayloadSlots = []
        freeChunks = []
    }

    /// A copy that shares no storage with this one: its arrays are fresh allocations. Each packet
    /// worker reads its own replica, so no reference count or cache line of the table is written
    /// by two cores (a shared array's count is, on every retain the optimiser leaves in).
    public func replica() -> IPv4PrefixTrie {
        var r = IPv4PrefixTrie(empty: ())
        r.table = table.withOwnStorage()
        r.payloads = payloads.withOwnStorage()
        r.routes = Dictionary(minimumCapacity: routes.count)
        for (k, v) in routes { r.routes[k] = v }
        r.freePayloadSlots = freePayloadSlots.withOwnStorage()
        r.freeChunks = freeChunks.withOwnStorage()
        return r
    }

    private init(empty: ()) {
        table = []
        payloads = []
        routes = [:]
        freePayloadSlots = []
        freeChunks = []
    }

    // MARK: Queries (control plane)

    /// Number of stored prefixes.
    public var count: Int { routes.count }

    /// True when no prefix is stored.
    public var isEmpty: Bool { routes.isEmpty }

    /// The value stored for exactly this prefix (host bits ignored), or nil. No longest match.
    public subscript(exactly prefix: IPv4Prefix) -> UInt32? {
        routes[prefix.network].map { payloads[Int($0)] }
    }

    /// All stored prefixes (masked) and their values, ordered by network address, then length.
    public var entries: [(prefix: IPv4Prefix, value: UInt32)] {
        routes.map { (prefix: $0.key, value: payloads[Int($0.value)]) }.sorted {
            ($0.prefix.address.rawValue, $0.prefix.length) < ($1.prefix.address.rawValue, $1.prefix.length)
        }
    }

    /// Bytes held by the lookup tables (root, chunks including free ones, payloads); excludes the
    /// exact-match dictionary and free lists.
    public var tableByteCount: Int { (table.count + payloads.count) * MemoryLayout<UInt32>.stride }

    /// Chunks currently linked into the table (level 2 and level 3).
    public var chunkCount: Int {
        table.count / Self.chunkSlotCount - Self.rootSlotCount / Self.chunkSlotCount - freeChunks.count
    }

    // MARK: Updates (control plane)

    /// Stores `value` for `prefix`, replacing the value if the prefix is already present.
    ///
    /// - Parameters:
    ///   - prefix: The key; host bits are dropped (`10.1.2.3/24` is stored as `10.1.2.0/24`).
    ///   - value: The payload returned by lookups that match this prefix longest.
    /// - Precondition: fewer than 2^25 - 1 prefixes are stored.
    public mutating func insert(_ prefix: IPv4Prefix, value: UInt32) {
        let key = prefix.network
        if let slot = routes[key] {
            payloads[Int(slot)] = value
            return
        }
        let slot: UInt32
        if let reused = freePayloadSlots.popLast() {
            slot = reused
            payloads[Int(slot)] = value
        } else {
            precondition(UInt32(payloads.count) < Self.maximumLeafSlot, "IPv4PrefixTrie is full")
            slot = UInt32(payloads.count)
            payloads.append(value)
        }
        routes[key] = slot
        paint(key, with: Self.leaf(slot: slot, length: key.length))
    }

    /// Removes `prefix` (host bits ignored); addresses it covered fall back to the next-shorter
    /// stored prefix that covers them.
    ///
    /// - Returns: The value that was stored, or nil if the prefix was absent.
    @discardableResult
    public mutating func remove(_ prefix: IPv4Prefix) -> UInt32? {
        let key = prefix.network
        guard let slot = routes.removeValue(forKey: key) else { return nil }
        let value = payloads[Int(slot)]
        freePayloadSlots.append(slot)
        paint(key, with: coveringEntry(of: key))
        return value
    }

    /// Removes every prefix, keeping the allocated capacity.
    public mutating func removeAll() {
        self = IPv4PrefixTrie()
    }

    // MARK: Lookups (data plane)

    /// The value of the longest stored prefix containing `address`, or nil.
    ///
    /// At most four dependent loads; no allocation, no locking, no reference counting.
    @inlinable
    public func lookup(_ address: IPv4Address) -> UInt32? {
        let entry = leafEntry(for: address.rawValue)
        guard entry != 0 else { return nil }
        return payload(ofLeaf: entry)
    }

    /// The longest stored prefix containing `address` (masked) and its value, or nil.
    @inlinable
    public func longestMatch(_ address: IPv4Address) -> (prefix: IPv4Prefix, value: UInt32)? {
        let entry = leafEntry(for: address.rawValue)
        guard entry != 0 else { return nil }
        let length = UInt8(truncatingIfNeeded: entry & Self.lengthMask)
        let prefix = IPv4Prefix(address: address, length: length).network
        return (prefix, payload(ofLeaf: entry))
    }

    // MARK: Internals

    /// The leaf entry for a payload slot and prefix length.
    static func leaf(slot: UInt32, length: UInt8) -> UInt32 {
        (slot + 1) << lengthBits | UInt32(length)
    }

    /// Prefix length of a leaf entry; -1 for an empty entry, so it loses to every prefix.
    static func length(ofLeaf entry: UInt32) -> Int {
        entry == 0 ? -1 : Int(entry & lengthMask)
    }

    /// Index of the first slot of the chunk a chunk entry points at.
    static func chunkBase(_ entry: UInt32) -> Int {
        Int(entry & ~chunkFlag) << 8
    }

    /// The entry that should fill `prefix`'s slots once it is gone: the leaf of the longest
    /// stored prefix strictly shorter that covers it, or empty.
    func coveringEntry(of prefix: IPv4Prefix) -> UInt32 {
        var length = Int(prefix.length) - 1
        while length >= 0 {
            let shorter = IPv4Prefix(address: prefix.address, length: UInt8(length)).network
            if let slot = routes[shorter] { return Self.leaf(slot: slot, length: UInt8(length)) }
            length -= 1
        }
        return 0
    }

    /// Writes `entry` into every slot covered by `prefix` (masked) that holds a prefix no longer
    /// than `prefix`, descending into chunks, and folds chunks that become uniform.
    ///
    /// One rule serves insert and remove: on insert, the slots in range hold shorter prefixes or
    /// longer ones (a same-length one would be the prefix itself); on remove, they hold the prefix
    /// itself or longer ones (shorter ones are hidden under it).
    mutating func paint(_ prefix: IPv4Prefix, with entry: UInt32) {
        let network = prefix.address.rawValue
        let length = Int(prefix.length)
        let rootSlot = Int(network >> 16)
        if length <= 16 {
            for slot in rootSlot..<(rootSlot + 1 << (16 - length)) {
                paintSlot(slot, with: entry, length: length)
            }
            return
        }
        let level2 = chunk(at: rootSlot)
        let level2Slot = level2 + Int((network >> 8) & 0xFF)
        if length <= 24 {
            for slot in level2Slot..<(level2Slot + 1 << (24 - length)) {
                paintSlot(slot, with: entry, length: length)
            }
        } else {
            let level3 = chunk(at: level2Slot)
            let level3Slot = level3 + Int(network & 0xFF)
            for slot in level3Slot..<(level3Slot + 1 << (32 - length)) {
                paintSlot(slot, with: entry, length: length)
            }
            foldIfUniform(level2Slot)
        }
        foldIfUniform(rootSlot)
    }

    /// `paint` for one slot and everything beneath it.
    mutating func paintSlot(_ slot: Int, with entry: UInt32, length: Int) {
        let current = table[slot]
        if current & Self.chunkFlag != 0 {
            let base = Self.chunkBase(current)
            for child in base..<(base + Self.chunkSlotCount) {
                paintSlot(child, with: entry, length: length)
            }
            foldIfUniform(slot)
        } else if Self.length(ofLeaf: current) <= length {
            table[slot] = entry
        }
    }

    /// The first slot of the chunk under `slot`, creating one filled with the slot's current leaf
    /// (or emptiness) if the slot is a leaf.
    mutating func chunk(at slot: Int) -> Int {
        let current = table[slot]
        if current & Self.chunkFlag != 0 { return Self.chunkBase(current) }
        let number: UInt32
        if let reused = freeChunks.popLast() {
            number = reused
            let base = Int(number) << 8
            for child in base..<(base + Self.chunkSlotCount) { table[child] = current }
        } else {
            precondition(table.count >> 8 < Int(Self.chunkFlag), "IPv4PrefixTrie chunk space exhausted")
            number = UInt32(table.count >> 8)
            table.append(contentsOf: repeatElement(current, count: Self.chunkSlotCount))
        }
        table[slot] = Self.chunkFlag | number
        return Int(number) << 8
    }

    /// If `slot` points at a chunk whose slots are all the same leaf (or all empty), puts that
    /// leaf in `slot` and frees the chunk.
    mutating func foldIfUniform(_ slot: Int) {
        let current = table[slot]
        guard current & Self.chunkFlag != 0 else { return }
        let base = Self.chunkBase(current)
        let first = table[base]
        // Chunk entries are unique, so a chunk pointer in the first slot means "not uniform".
        guard first & Self.chunkFlag == 0 else { return }
        for child in (base + 1)..<(base + Self.chunkSlotCount) where table[child] != first { return }
        table[slot] = first
        freeChunks.append(current & ~Self.chunkFlag)
    }

    /// Checks the structural invariants; returns a description of the first violation, or nil.
    /// For tests: O(table size).
    func invariantViolation() -> String? {
        var linked = 0
        func check(_ slot: Int, depth: Int) -> String? {
            let entry = table[slot]
            if entry & Self.chunkFlag != 0 {
                guard depth < 2 else { return "chunk below level 3 at slot \(slot)" }
                let base = Self.chunkBase(entry)
                guard base >= Self.rootSlotCount, base + Self.chunkSlotCount <= table.count else {
                    return "chunk \(base >> 8) out of range"
                }
                guard !freeChunks.contains(entry & ~Self.chunkFlag) else { return "free chunk \(base >> 8) linked" }
                linked += 1
                let first = table[base]
                if first & Self.chunkFlag == 0,
                    (base..<(base + Self.chunkSlotCount)).allSatisfy({ table[$0] == first })
                {
                    return "uniform chunk \(base >> 8) not folded"
                }
                for child in base..<(base + Self.chunkSlotCount) {
                    if let problem = check(child, depth: depth + 1) { return problem }
                }
                return nil
            }
            guard entry != 0 else { return nil }
            let slotIndex = Int(entry >> Self.lengthBits) - 1
            guard slotIndex < payloads.count, !freePayloadSlots.contains(UInt32(slotIndex)) else {
                return "leaf at slot \(slot) names unused payload slot \(slotIndex)"
            }
            let length = Int(entry & Self.lengthMask)
            let maxLength = depth == 0 ? 16 : depth == 1 ? 24 : 32
            guard length <= maxLength else { return "/\(length) leaf at level \(depth + 1)" }
            return nil
        }
        for slot in 0..<Self.rootSlotCount {
            if let problem = check(slot, depth: 0) { return problem }
        }
        let allocated = table.count / Self.chunkSlotCount - Self.rootSlotCount / Self.chunkSlotCount
        guard linked + freeChunks.count == allocated else {
            return "\(linked) linked + \(freeChunks.count) free chunks != \(allocated) allocated"
        }
        guard routes.count + freePayloadSlots.count == payloads.count else { return "payload slots leak" }
        return nil
    }
}

extension Array {
    /// The same elements in storage of their own (`Array(self)` would share this array's buffer).
    func withOwnStorage() -> [Element] { withUnsafeBufferPointer { Array($0) } }
}

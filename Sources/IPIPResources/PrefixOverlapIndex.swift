/// A set of prefixes, each with a key, that answers "the smallest key among the prefixes that
/// overlap this one" in time proportional to the prefix length (at most 32 steps for IPv4, 128 for
/// IPv6), whatever the number of prefixes: the pool-overlap checks of a manifest load and of a
/// datastore create ask it once per pool, where a scan of every earlier pool made them quadratic.
///
/// Two prefixes overlap when one contains the other (equal included): the same relation as
/// `IPPrefix.overlaps`. IPv4 and IPv6 prefixes never overlap each other.
///
/// A binary trie per family: a prefix lives at the node its network bits lead to; every node
/// keeps the two smallest keys in its subtree. A query walks from the root to the query's node:
/// the keys of the nodes on the way are the prefixes that contain it, the subtree minimum at its
/// node covers every prefix inside it. Keeping two minima lets a query skip one key (a pool is not
/// compared with itself).
public struct PrefixOverlapIndex<Key: Comparable> {
    private struct Node {
        var children: (Int32, Int32) = (-1, -1)
        /// Keys of the prefixes stored exactly here, unordered (usually zero or one).
        var keys: [Key] = []
        /// The two smallest distinct keys of this subtree, smallest first.
        var smallest: (Key?, Key?) = (nil, nil)
    }

    private var nodes: [Node] = [Node(), Node()]  // 0: IPv4 root, 1: IPv6 root
    /// The number of (prefix, key) entries.
    public private(set) var count = 0

    /// An empty index.
    public init() {}

    /// Adds `prefix` with `key`. The same pair may be added twice; it then needs two removals.
    public mutating func insert(_ prefix: IPPrefix, key: Key) {
        let path = walk(prefix, creating: true)
        nodes[Int(path.last!)].keys.append(key)
        count += 1
        refresh(path)
    }

    /// Removes one entry of `prefix` with `key`; false when there is none.
    @discardableResult
    public mutating func remove(_ prefix: IPPrefix, key: Key) -> Bool {
        let path = walk(prefix, creating: false)
        guard path.count == Self.depth(prefix) + 1, let last = path.last,
            let i = nodes[Int(last)].keys.firstIndex(of: key)
        else { return false }
        nodes[Int(last)].keys.remove(at: i)
        count -= 1
        refresh(path)
        return true
    }

    /// The smallest key among the stored prefixes that overlap `prefix`, `excluding` one key.
    public func firstOverlapping(_ prefix: IPPrefix, excluding: Key? = nil) -> Key? {
        var best: Key?
        func consider(_ key: Key?) {
            guard let key, key != excluding else { return }
            if best == nil || key < best! { best = key }
        }
        let depth = Self.depth(prefix)
        let bits = Self.bits(prefix)
        var node = Self.root(prefix)
        var level = 0
        while true {
            let n = nodes[Int(node)]
            if level == depth {
                // Everything at or below this node lies inside `prefix`.
                consider(n.smallest.0)
                consider(n.smallest.1)
                return best
            }
            for key in n.keys { consider(key) }
            let child = Self.bit(bits, level) ? n.children.1 : n.children.0
            guard child >= 0 else { return best }
            node = child
            level += 1
        }
    }

    // MARK: Trie

    private static func root(_ prefix: IPPrefix) -> Int32 { prefix.isIPv6 ? 1 : 0 }

    private static func depth(_ prefix: IPPrefix) -> Int { prefix.length }

    /// The prefix's address bits, most significant first, in 128 bits (IPv4 in the high 32).
    private static func bits(_ prefix: IPPrefix) -> (UInt64, UInt64) {
        switch prefix {
        case .v4(let p): (UInt64(p.address.rawValue) << 32, 0)
        case .v6(let p): (p.address.high, p.address.low)
        }
    }

    private static func bit(_ bits: (UInt64, UInt64), _ i: Int) -> Bool {
        i < 64 ? (bits.0 >> UInt64(63 - i)) & 1 == 1 : (bits.1 >> UInt64(127 - i)) & 1 == 1
    }

    /// The nodes from the root to the prefix's node (shorter when it does not exist and
    /// `creating` is false).
    private mutating func walk(_ prefix: IPPrefix, creating: Bool) -> [Int32] {
        let depth = Self.depth(prefix)
        let bits = Self.bits(prefix)
        var path: [Int32] = [Self.root(prefix)]
        path.reserveCapacity(depth + 1)
        var node = path[0]
        for level in 0..<depth {
            let one = Self.bit(bits, level)
            var child = one ? nodes[Int(node)].children.1 : nodes[Int(node)].children.0
            if child < 0 {
                guard creating else { return path }
                child = Int32(nodes.count)
                nodes.append(Node())
                if one { nodes[Int(node)].children.1 = child } else { nodes[Int(node)].children.0 = child }
            }
            node = child
            path.append(node)
        }
        return path
    }

    /// Recomputes the subtree minima along `path`, deepest first.
    private mutating func refresh(_ path: [Int32]) {
        for node in path.reversed() {
            var first: Key?
            var second: Key?
            func offer(_ key: Key?) {
                guard let key else { return }
                if let f = first {
                    if key == f { return }
                    if key < f {
                        second = f
                        first = key
                    } else if second == nil || key < second! {
                        if key != second { second = key }
                    }
                } else {
                    first = key
                }
            }
            let n = nodes[Int(node)]
            for key in n.keys { offer(key) }
            for child in [n.children.0, n.children.1] where child >= 0 {
                offer(nodes[Int(child)].smallest.0)
                offer(nodes[Int(child)].smallest.1)
            }
            nodes[Int(node)].smallest = (first, second)
        }
    }
}

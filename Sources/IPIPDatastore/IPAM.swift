import IPIPCore
import IPIPResources

/// Block assignment for clusters that run without Calico's IPAM: claim the next free block of a
/// pool for a node, recorded as a `BlockAffinity` in state `confirmed` (what the dataplane routes),
/// and release it again. Blocks follow Calico's semantics: a pool is cut into blocks of its
/// `blockSize`; a block belongs to at most one node; disabled pools hand out no blocks.
public enum IPAM {
    /// What `claim` did.
    public struct Claim: Hashable, Sendable {
        /// The pool the block was cut from.
        public var pool: String
        /// The stored affinity.
        public var affinity: BlockAffinity
    }

    /// Calico's name for a block affinity: the node, `-`, the CIDR with `.`, `:` and `/` as `-`.
    public static func affinityName(node: String, cidr: String) -> String {
        node + "-" + String(cidr.map { $0 == "." || $0 == ":" || $0 == "/" ? "-" : $0 })
    }

    /// Claims the next free block for `node`: from `pool` when given, else from the enabled IPv4
    /// pools in name order. Two claims racing for the same block both write, see each other, and
    /// the later write (higher resourceVersion) backs off and takes the next block.
    public static func claim(
        in store: any Datastore, node: String, pool poolName: String?
    ) throws(DatastoreError)
        -> Claim
    {
        guard !node.isEmpty else { throw .validation("a node name is required") }
        let pools: [IPPool]
        if let poolName {
            guard case .ipPool(let pool) = try store.get(.ipPool, name: poolName) else { return try unreachable() }
            guard !pool.spec.disabled else {
                throw .validation("IPPool(\(poolName)) is disabled: it hands out no blocks")
            }
            guard pool.ipv4Prefix != nil else {
                throw .validation("IPPool(\(poolName)) is an IPv6 pool: this dataplane assigns IPv4 blocks only")
            }
            pools = [pool]
        } else {
            pools = try store.list(.ipPool).compactMap { resource in
                guard case .ipPool(let pool) = resource, !pool.spec.disabled, pool.ipv4Prefix != nil else { return nil }
                return pool
            }
            guard !pools.isEmpty else { throw .validation("no enabled IPv4 IPPool to claim a block from") }
        }
        // Blocks found claimed in the store's IPAM records (etcd: a block key without an affinity
        // key, as Calico can leave) although no affinity names them.
        var claimedElsewhere: [BlockAffinity] = []
        for _ in 0..<64 {
            let taken = try affinities(store).filter { !$0.spec.deleted } + claimedElsewhere
            guard let (pool, block) = nextFree(pools: pools, taken: taken) else {
                let names = pools.map { "IPPool(\($0.metadata.name))" }.joined(separator: ", ")
                throw .validation("no free block left in \(names)")
            }
            let cidr = block.description
            let request = try affinityResource(node: node, cidr: cidr)
            let stored: Resource
            do {
                stored = try store.create(request)
            } catch .alreadyExists(let kind, _) where kind == "IPAMBlock" {
                if case .blockAffinity(let affinity) = request { claimedElsewhere.append(affinity) }
                continue
            }
            guard case .blockAffinity(let mine) = stored else { return try unreachable() }
            let myVersion = Int64(mine.metadata.resourceVersion ?? "") ?? .max
            let rivals = try affinities(store).filter { other in
                other.metadata.name != mine.metadata.name && !other.spec.deleted
                    && other.spec.prefix.overlaps(mine.spec.prefix)
                    && (Int64(other.metadata.resourceVersion ?? "") ?? .max) < myVersion
            }
            if rivals.isEmpty { return Claim(pool: pool.metadata.name, affinity: mine) }
            _ = try? store.delete(.blockAffinity, name: mine.metadata.name)
        }
        throw .storage("could not claim a block: too many concurrent claims")
    }

    /// Releases the block `cidr` of `node` (deletes its affinity). Throws `doesNotExist` when the
    /// node holds no such block.
    @discardableResult
    public static func release(
        in store: any Datastore, node: String, cidr: String
    ) throws(DatastoreError)
        -> BlockAffinity
    {
        guard let prefix = IPPrefix(cidr) else { throw .validation("invalid block CIDR '\(cidr)'") }
        guard let affinity = try affinities(store).first(where: { $0.spec.node == node && $0.spec.prefix == prefix })
        else { throw .doesNotExist(kind: "BlockAffinity", name: affinityName(node: node, cidr: prefix.description)) }
        guard case .blockAffinity(let removed) = try store.delete(.blockAffinity, name: affinity.metadata.name) else {
            return try unreachable()
        }
        return removed
    }

    private static func affinities(_ store: any Datastore) throws(DatastoreError) -> [BlockAffinity] {
        try store.list(.blockAffinity).compactMap { resource in
            if case .blockAffinity(let affinity) = resource { return affinity }
            return nil
        }
    }

    /// The first block, in address order per pool, that no affinity overlaps.
    static func nextFree(pools: [IPPool], taken: [BlockAffinity]) -> (IPPool, IPv4Prefix)? {
        let takenV4 = taken.compactMap(\.ipv4Prefix)
        for pool in pools {
            guard let prefix = pool.ipv4Prefix, pool.spec.blockSize >= Int(prefix.length), pool.spec.blockSize <= 32
            else { continue }
            let size = UInt64(1) << UInt64(32 - pool.spec.blockSize)
            let count = UInt64(1) << UInt64(pool.spec.blockSize - Int(prefix.length))
            let base = UInt64(prefix.first.rawValue)
            var index: UInt64 = 0
            while index < count {
                let block = IPv4Prefix(
                    address: IPv4Address(rawValue: UInt32(base + index * size)),
                    length: UInt8(pool.spec.blockSize))
                if let blocker = takenV4.first(where: { $0.overlaps(block) }) {
                    // Skip past whatever overlaps (a larger foreign block skips several of ours).
                    let end = UInt64(blocker.last.rawValue) + 1
                    let next = (end - base + size - 1) / size
                    index = max(index + 1, next)
                    continue
                }
                return (pool, block)
            }
        }
        return nil
    }

    /// A BlockAffinity resource with Calico's name for it (validated like any other).
    static func affinityResource(
        node: String, cidr: String, state: String = "confirmed", deleted: Bool = false,
        source: String = "ipam"
    ) throws(DatastoreError) -> Resource {
        let name = affinityName(node: node, cidr: cidr)
        let text = """
            {"kind":"BlockAffinity","apiVersion":"\(calicoAPIVersion)","metadata":{"name":\(quote(name))},\
            "spec":{"state":\(quote(state)),"node":\(quote(node)),"cidr":\(quote(cidr)),"deleted":"\(deleted)"}}
            """
        do {
            let resources = try ResourceDecoder.decode(text, file: source)
            guard let resource = resources.first else { return try unreachable() }
            return resource
        } catch {
            throw .validation("\(error)")
        }
    }

    private static func quote(_ s: String) -> String {
        ResourceEncoder.json(.string(s), indent: nil)
    }

    private static func unreachable<T>() throws(DatastoreError) -> T {
        throw .storage("internal error: unexpected resource kind")
    }
}

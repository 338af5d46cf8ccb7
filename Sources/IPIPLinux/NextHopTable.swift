import IPIPCore

/// The link-layer next hop of each tunnel peer, for the uplink's frame-writing transmit paths
/// (AF_XDP, AF_PACKET): peer node IP → the MAC address of the gateway (or of the peer itself
/// when it is on the link), as the kernel's route and neighbour tables say at the time the table
/// is built (`NextHopTable.resolve`).
///
/// Immutable once built; the control thread builds a new one every second and on topology
/// changes and hands it to the packet loop, which only reads it (an open-addressing table of
/// peer addresses: one or two probes per lookup, no allocation).
public final class NextHopTable: @unchecked Sendable {
    /// A peer and its next hop.
    public struct Entry: Sendable, Equatable {
        public var peer: IPv4Address
        public var nextHop: IPv4Address
        public var linkAddress: MACAddress
    }

    /// The resolved peers, in the order given.
    public let entries: [Entry]
    /// Peers the table has no MAC address for (no route via the uplink, or no usable neighbour
    /// entry yet): their packets take the raw socket, whose traffic makes the kernel resolve them.
    public let unresolved: [IPv4Address]

    private let mask: Int
    private let keys: UnsafeMutablePointer<UInt32>
    private let values: UnsafeMutablePointer<MACAddress>
    private let used: UnsafeMutablePointer<Bool>

    /// An empty table: every packet takes the raw socket.
    public static let empty = NextHopTable(entries: [], unresolved: [])

    public init(entries: [Entry], unresolved: [IPv4Address]) {
        self.entries = entries
        self.unresolved = unresolved
        var size = 8
        while size < 2 * max(1, entries.count) { size <<= 1 }
        mask = size - 1
        keys = .allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        values = .allocate(capacity: size)
        values.initialize(repeating: .zero, count: size)
        used = .allocate(capacity: size)
        used.initialize(repeating: false, count: size)
        for e in entries {
            var i = Self.slot(e.peer.rawValue, mask)
            while used[i] && keys[i] != e.peer.rawValue { i = (i + 1) & mask }
            used[i] = true
            keys[i] = e.peer.rawValue
            values[i] = e.linkAddress
        }
    }

    deinit {
        keys.deallocate()
        values.deallocate()
        used.deallocate()
    }

    @inline(__always)
    static func slot(_ key: UInt32, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(key) &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    /// Number of slots: `slot(for:)` returns an index below it, for per-peer state kept beside
    /// the table.
    public var slotCount: Int { mask &+ 1 }

    /// The slot of `peer` (an IPv4 address as a host-order integer), or -1 when it has no entry.
    @inline(__always)
    public func slot(for peer: UInt32) -> Int {
        var i = Self.slot(peer, mask)
        // Safe: the table is at most half full, so a probe sequence always meets an unused slot.
        while used[i] {
            if keys[i] == peer { return i }
            i = (i &+ 1) & mask
        }
        return -1
    }

    /// The next hop's MAC address of the peer in `slot` (from `slot(for:)`).
    @inline(__always)
    public func linkAddress(at slot: Int) -> MACAddress {
        precondition(slot >= 0 && slot <= mask && used[slot], "not a used slot")
        return values[slot]
    }

    /// The next hop's MAC address for packets to `peer`, or nil.
    public func linkAddress(for peer: IPv4Address) -> MACAddress? {
        let s = slot(for: peer.rawValue)
        return s >= 0 ? values[s] : nil
    }

    /// Builds the table for `peers` from the kernel's route and neighbour tables: a peer gets an
    /// entry when its route leaves through `interfaceIndex` and the next hop has a usable
    /// neighbour entry (`NeighborEntry.isUsable`).
    /// - Throws: `NetlinkError` from the neighbour dump (a failed route lookup leaves that peer
    ///   unresolved).
    public static func resolve(
        peers: [IPv4Address], interfaceIndex: Int32, netlink: NetlinkSocket
    ) throws(NetlinkError)
        -> NextHopTable
    {
        var neighbors: [UInt32: MACAddress] = [:]
        for n in try netlink.neighbors(interfaceIndex: interfaceIndex) where n.isUsable {
            neighbors[n.address.rawValue] = n.linkAddress
        }
        var entries: [Entry] = []
        var unresolved: [IPv4Address] = []
        for peer in peers {
            guard let route = try? netlink.routeLookup(to: peer), route.interfaceIndex == interfaceIndex else {
                unresolved.append(peer)
                continue
            }
            let hop = route.nextHop(for: peer)
            if let mac = neighbors[hop.rawValue] {
                entries.append(Entry(peer: peer, nextHop: hop, linkAddress: mac))
            } else {
                unresolved.append(peer)
            }
        }
        return NextHopTable(entries: entries, unresolved: unresolved)
    }
}

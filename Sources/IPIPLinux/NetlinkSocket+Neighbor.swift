// Next hops over rtnetlink: the route the kernel would take to a destination (RTM_GETROUTE for
// one address, as `ip route get` asks) and the neighbour table (RTM_GETNEIGH dump, `ip neigh`).
// The uplink's fast transmit paths (AF_XDP, AF_PACKET) write link-layer frames themselves and so
// need the next hop's MAC address, which the kernel's own IP output would have resolved.
import CIPIPLinux
import Glibc
import IPIPCore

/// Where the kernel would send a packet for one destination.
public struct RouteLookup: Sendable, Equatable {
    /// The output interface (`RTA_OIF`).
    public var interfaceIndex: Int32
    /// The gateway (`RTA_GATEWAY`), or nil when the destination is on the link.
    public var gateway: IPv4Address?

    /// The address whose link-layer address the frame needs: the gateway, or the destination.
    public func nextHop(for destination: IPv4Address) -> IPv4Address { gateway ?? destination }
}

/// One IPv4 neighbour entry.
public struct NeighborEntry: Sendable, Equatable {
    public var address: IPv4Address
    public var interfaceIndex: Int32
    /// The link-layer address, nil while unresolved.
    public var linkAddress: MACAddress?
    /// `NUD_*` state bits.
    public var state: UInt16

    /// Whether the kernel would use this entry to send a frame now or after a quick confirmation:
    /// reachable, stale, delay, probe, permanent or noarp (`NUD_VALID`).
    public var isUsable: Bool { linkAddress != nil && state & Self.validStates != 0 }

    /// `NUD_VALID`: `NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY`.
    public static let validStates: UInt16 = 0x80 | 0x40 | 0x02 | 0x10 | 0x04 | 0x08
}

/// `struct ndmsg` (12 bytes).
struct NeighborMessageHeader {
    static let byteCount = 12
    var family: UInt8 = NL.familyIPv4
    var index: Int32 = 0
    var state: UInt16 = 0
    var flags: UInt8 = 0
    var type: UInt8 = 0

    func encode(into b: inout NetlinkMessageBuilder) {
        b.append(family)
        b.append(UInt8(0))
        b.append(UInt16(0))
        b.append(index)
        b.append(state)
        b.append(flags)
        b.append(type)
    }

    init() {}

    init?(parsing p: ArraySlice<UInt8>) {
        guard p.count >= Self.byteCount else { return nil }
        family = p[p.startIndex]
        index = p.netlinkInteger(at: 4)!
        state = p.netlinkInteger(at: 8)!
        flags = p[p.startIndex + 10]
        type = p[p.startIndex + 11]
    }
}

extension NetlinkSocket {
    static let getNeighbor = UInt16(RTM_GETNEIGH)
    static let newNeighbor = UInt16(RTM_NEWNEIGH)
    static let ndaDestination = UInt16(NDA_DST)
    static let ndaLinkAddress = UInt16(NDA_LLADDR)

    /// The route the kernel would use for `destination` (`ip route get`), or nil when there is
    /// none (unreachable, or a blackhole).
    /// - Throws: `NetlinkError` for failures other than "unreachable".
    public func routeLookup(to destination: IPv4Address) throws(NetlinkError) -> RouteLookup? {
        var b = NetlinkMessageBuilder(type: NL.getRoute, flags: 0)
        var h = RouteMessageHeader()
        h.destinationLength = 32
        h.encode(into: &b)
        b.appendAttribute(type: NL.rtaDestination, address: destination)
        let answer: [NetlinkMessage]
        do {
            answer = try request(b, detail: "route to \(destination)")
        } catch  where error.errno == ENETUNREACH || error.errno == EHOSTUNREACH || error.errno == EINVAL {
            return nil
        }
        for m in answer where m.header.type == NL.newRoute {
            guard let route = try Route(parsing: m.payload), let oif = route.outputInterface,
                route.type == .unicast
            else { continue }
            return RouteLookup(interfaceIndex: oif, gateway: route.gateway)
        }
        return nil
    }

    /// Every IPv4 neighbour entry (`ip -4 neigh`), optionally of one interface only.
    /// - Throws: `NetlinkError`.
    public func neighbors(interfaceIndex: Int32? = nil) throws(NetlinkError) -> [NeighborEntry] {
        var b = NetlinkMessageBuilder(type: Self.getNeighbor, flags: 0)
        NeighborMessageHeader().encode(into: &b)
        var entries: [NeighborEntry] = []
        for m in try dump(b, detail: "neighbours") where m.header.type == Self.newNeighbor {
            guard let entry = try NeighborEntry(parsing: m.payload) else { continue }
            if let interfaceIndex, entry.interfaceIndex != interfaceIndex { continue }
            entries.append(entry)
        }
        return entries
    }
}

extension NeighborEntry {
    /// Parses an `RTM_NEWNEIGH` payload (ndmsg + attributes); nil for other families and for an
    /// entry without a destination (nothing to send to). A payload shorter than ndmsg is skipped
    /// too, as the dump always skipped it.
    /// - Throws: `NetlinkError` (`EPROTO`) for malformed attributes.
    init?(parsing payload: ArraySlice<UInt8>) throws(NetlinkError) {
        guard let h = NeighborMessageHeader(parsing: payload), h.family == NL.familyIPv4 else { return nil }
        var address: IPv4Address?
        var link: MACAddress?
        for a in try NetlinkParser.attributes(in: payload.dropFirst(NeighborMessageHeader.byteCount)) {
            switch a.type {
            case NetlinkSocket.ndaDestination: address = a.ipv4Address
            case NetlinkSocket.ndaLinkAddress: link = MACAddress(a.payload)
            default: break
            }
        }
        guard let address else { return nil }
        self.init(address: address, interfaceIndex: h.index, linkAddress: link, state: h.state)
    }
}

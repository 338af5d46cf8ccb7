// Route: one IPv4 route as rtnetlink carries it (struct rtmsg + RTA_* attributes).
import CIPIPLinux
import Glibc
import IPIPCore

/// An IPv4 route in a kernel routing table.
///
/// The kernel identifies a route by (table, destination, TOS, metric): adding a route with the
/// same key and `NLM_F_REPLACE` changes it in place. The other fields are what the route does.
/// Routes with several next hops (`RTA_MULTIPATH`) or source-specific routes are not modelled:
/// they parse with their key and type but without next hop.
public struct Route: Hashable, Sendable, CustomStringConvertible {
    /// The route type (C: `rtm_type`, `RTN_*`).
    public struct RouteType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The `RTN_*` value.
        public var rawValue: UInt8
        /// Creates a type from its `RTN_*` value.
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// A normal route (C: `RTN_UNICAST`).
        public static let unicast = RouteType(rawValue: UInt8(RTN_UNICAST))
        /// Silently drop (C: `RTN_BLACKHOLE`).
        public static let blackhole = RouteType(rawValue: UInt8(RTN_BLACKHOLE))
        /// Drop with ICMP host unreachable (C: `RTN_UNREACHABLE`).
        public static let unreachable = RouteType(rawValue: UInt8(RTN_UNREACHABLE))
        /// Drop with ICMP administratively prohibited (C: `RTN_PROHIBIT`).
        public static let prohibit = RouteType(rawValue: UInt8(RTN_PROHIBIT))
        /// Stop looking in this table: the policy rule lookup continues with the next rule
        /// (C: `RTN_THROW`).
        public static let `throw` = RouteType(rawValue: UInt8(RTN_THROW))

        /// The `ip route` keyword (`unicast`, `blackhole`, ...), or the number.
        public var description: String {
            switch self {
            case .unicast: "unicast"
            case .blackhole: "blackhole"
            case .unreachable: "unreachable"
            case .prohibit: "prohibit"
            case .throw: "throw"
            default: "type \(rawValue)"
            }
        }
    }

    /// The main routing table (C: `RT_TABLE_MAIN`).
    public static let mainTable = UInt32(RT_TABLE_MAIN.rawValue)

    /// The destination (host bits are cleared by the initialiser).
    public var destination: IPv4Prefix
    /// The next hop (`RTA_GATEWAY`), nil for routes straight onto a link or without a next hop.
    public var gateway: IPv4Address?
    /// The output interface index (`RTA_OIF`).
    public var outputInterface: Int32?
    /// The routing table (`RTA_TABLE`; 254 is main).
    public var table: UInt32
    /// Who installed the route (C: `rtm_protocol`, `RTPROT_*` or /etc/iproute2/rt_protos).
    public var protocolNumber: UInt8
    /// The route type.
    public var type: RouteType
    /// Whether the gateway is taken to be on the link even when no address of the link covers it
    /// (C: `RTNH_F_ONLINK`, `ip route ... onlink`).
    public var onlink: Bool
    /// The path MTU of the route (`RTA_METRICS` / `RTAX_MTU`), nil for the device's MTU.
    public var mtu: UInt32?
    /// The preferred source address (`RTA_PREFSRC`, `ip route ... src`).
    public var source: IPv4Address?
    /// The metric (`RTA_PRIORITY`); part of the route's key. 0 is the kernel's default.
    public var metric: UInt32

    /// Creates a route.
    /// - Parameters:
    ///   - destination: The destination prefix; host bits are cleared.
    ///   - gateway: The next hop, if any.
    ///   - outputInterface: The output interface index, if any.
    ///   - table: The routing table, main by default.
    ///   - protocolNumber: The owner's route protocol number.
    ///   - type: The route type, unicast by default.
    ///   - onlink: Whether the gateway is assumed on-link.
    ///   - mtu: The route MTU, if any.
    ///   - source: The preferred source address, if any.
    ///   - metric: The metric, 0 by default.
    public init(
        destination: IPv4Prefix, gateway: IPv4Address? = nil, outputInterface: Int32? = nil,
        table: UInt32 = Route.mainTable, protocolNumber: UInt8, type: RouteType = .unicast,
        onlink: Bool = false, mtu: UInt32? = nil, source: IPv4Address? = nil, metric: UInt32 = 0
    ) {
        self.destination = destination.network
        self.gateway = gateway
        self.outputInterface = outputInterface
        self.table = table
        self.protocolNumber = protocolNumber
        self.type = type
        self.onlink = onlink
        self.mtu = mtu
        self.source = source
        self.metric = metric
    }

    /// What identifies the route in the kernel (TOS is always 0 here).
    struct Key: Hashable {
        var table: UInt32
        var destination: IPv4Prefix
        var metric: UInt32
    }

    var key: Key { Key(table: table, destination: destination.network, metric: metric) }

    /// The scope the kernel expects: link for a unicast route straight onto a link (no gateway),
    /// universe for everything else (what `ip route add` picks).
    var scope: UInt8 { type == .unicast && gateway == nil && outputInterface != nil ? NL.scopeLink : NL.scopeUniverse }

    /// `ip route`-like text, with `dev #<index>` for the interface.
    public var description: String {
        var s = type == .unicast ? "" : "\(type) "
        s += destination.length == 0 ? "default" : "\(destination)"
        if let gateway { s += " via \(gateway)" }
        if let outputInterface { s += " dev #\(outputInterface)" }
        if onlink { s += " onlink" }
        if table != Route.mainTable { s += " table \(table)" }
        s += " proto \(protocolNumber)"
        if metric != 0 { s += " metric \(metric)" }
        if let source { s += " src \(source)" }
        if let mtu { s += " mtu \(mtu)" }
        return s
    }
}

/// `struct rtmsg` (12 bytes), and `struct fib_rule_hdr`, which shares its layout (`RuleMessageHeader`).
struct RouteMessageHeader: Equatable {
    static let byteCount = 12
    var family: UInt8 = NL.familyIPv4
    var destinationLength: UInt8 = 0
    var sourceLength: UInt8 = 0
    var tos: UInt8 = 0
    var table: UInt8 = 0
    var protocolNumber: UInt8 = 0
    var scope: UInt8 = 0
    var type: UInt8 = 0
    var flags: UInt32 = 0

    init() {}

    func encode(into b: inout NetlinkMessageBuilder) {
        for byte in [family, destinationLength, sourceLength, tos, table, protocolNumber, scope, type] {
            b.append(byte)
        }
        b.append(flags)
    }

    init?(parsing p: ArraySlice<UInt8>) {
        guard p.count >= Self.byteCount else { return nil }
        let s = p.startIndex
        family = p[s]
        destinationLength = p[s + 1]
        sourceLength = p[s + 2]
        tos = p[s + 3]
        table = p[s + 4]
        protocolNumber = p[s + 5]
        scope = p[s + 6]
        type = p[s + 7]
        flags = p.netlinkInteger(at: 8)!
    }
}

extension Route {
    /// Parses an `RTM_NEWROUTE` payload (rtmsg + attributes); nil for families other than IPv4.
    /// - Throws: `NetlinkError` (`EPROTO`) for a truncated header or malformed attributes.
    init?(parsing payload: ArraySlice<UInt8>) throws(NetlinkError) {
        guard let h = RouteMessageHeader(parsing: payload) else { throw .malformed("rtmsg shorter than 12 bytes") }
        guard h.family == NL.familyIPv4, h.destinationLength <= 32 else { return nil }
        var destination = IPv4Address.any
        var table = UInt32(h.table)
        var gateway: IPv4Address?
        var oif: Int32?
        var source: IPv4Address?
        var metric: UInt32 = 0
        var mtu: UInt32?
        for a in try NetlinkParser.attributes(in: payload.dropFirst(RouteMessageHeader.byteCount)) {
            switch a.type {
            case NL.rtaDestination: destination = a.ipv4Address ?? .any
            case NL.rtaGateway: gateway = a.ipv4Address
            case NL.rtaOutputInterface: oif = a.integer(as: UInt32.self).map { Int32(bitPattern: $0) }
            case NL.rtaPreferredSource: source = a.ipv4Address
            case NL.rtaPriority: metric = a.integer() ?? 0
            case NL.rtaTable: table = a.integer() ?? table
            case NL.rtaMetrics:
                for m in try a.nested() where m.type == NL.rtaxMTU { mtu = m.integer() }
            default: break
            }
        }
        self.init(
            destination: IPv4Prefix(address: destination, length: h.destinationLength), gateway: gateway,
            outputInterface: oif, table: table, protocolNumber: h.protocolNumber, type: RouteType(rawValue: h.type),
            onlink: h.flags & NL.flagOnlink != 0, mtu: mtu, source: source, metric: metric)
    }

    /// The `RTM_NEWROUTE` (with `flags`) or `RTM_DELROUTE` message for this route.
    ///
    /// Deletes carry the key, type, protocol and next hop but scope `RT_SCOPE_NOWHERE` and no
    /// metrics, so the kernel matches exactly this route of this protocol and nothing else
    /// (`fib_table_delete` compares every field that is given).
    func message(_ messageType: UInt16, flags: UInt16 = 0) -> NetlinkMessageBuilder {
        let isDelete = messageType == NL.deleteRoute
        var b = NetlinkMessageBuilder(type: messageType, flags: flags)
        var h = RouteMessageHeader()
        h.destinationLength = destination.length
        // Tables above 255 only fit RTA_TABLE; rtm_table then says RT_TABLE_UNSPEC (as iproute2).
        h.table = table < 256 ? UInt8(table) : NL.tableUnspecified
        h.protocolNumber = protocolNumber
        h.scope = isDelete ? NL.scopeNowhere : scope
        h.type = type.rawValue
        h.flags = onlink && !isDelete ? NL.flagOnlink : 0
        h.encode(into: &b)
        if destination.length > 0 { b.appendAttribute(type: NL.rtaDestination, address: destination.network.address) }
        b.appendAttribute(type: NL.rtaTable, integer: table)
        if let gateway { b.appendAttribute(type: NL.rtaGateway, address: gateway) }
        if let outputInterface {
            b.appendAttribute(type: NL.rtaOutputInterface, integer: UInt32(bitPattern: outputInterface))
        }
        if metric != 0 { b.appendAttribute(type: NL.rtaPriority, integer: metric) }
        if !isDelete {
            if let source { b.appendAttribute(type: NL.rtaPreferredSource, address: source) }
            if let mtu {
                b.appendNestedAttribute(type: NL.rtaMetrics) { $0.appendAttribute(type: NL.rtaxMTU, integer: mtu) }
            }
        }
        return b
    }
}

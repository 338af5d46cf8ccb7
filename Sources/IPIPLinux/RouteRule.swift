// Rule: one IPv4 policy routing rule (struct fib_rule_hdr + FRA_* attributes), `ip rule`.
import CIPIPLinux
import Glibc
import IPIPCore

/// An IPv4 policy rule that sends matching packets to a routing table (`FR_ACT_TO_TBL`):
/// `ip rule add priority P from S to D lookup T protocol N`.
///
/// Rules with other actions or other selectors (iif, oif, fwmark, ...) are not modelled; they
/// parse to nil.
public struct Rule: Hashable, Sendable, CustomStringConvertible {
    /// The rule's priority (`FRA_PRIORITY`): lower is consulted first; main's rule is 32766.
    public var priority: UInt32
    /// The source selector (`FRA_SRC`), nil for any source.
    public var source: IPv4Prefix?
    /// The destination selector (`FRA_DST`), nil for any destination.
    public var destination: IPv4Prefix?
    /// The table to look up (`FRA_TABLE`).
    public var table: UInt32
    /// Who installed the rule (`FRA_PROTOCOL`, Linux 4.17 and later).
    public var protocolNumber: UInt8

    /// Creates a rule; host bits of the selectors are cleared.
    /// - Parameters:
    ///   - priority: The priority.
    ///   - source: The source selector, if any.
    ///   - destination: The destination selector, if any.
    ///   - table: The table to look up.
    ///   - protocolNumber: The owner's protocol number.
    public init(
        priority: UInt32, source: IPv4Prefix? = nil, destination: IPv4Prefix? = nil, table: UInt32,
        protocolNumber: UInt8
    ) {
        self.priority = priority
        self.source = source?.network
        self.destination = destination?.network
        self.table = table
        self.protocolNumber = protocolNumber
    }

    /// `ip rule`-like text.
    public var description: String {
        "\(priority): from \(source.map { "\($0)" } ?? "all")\(destination.map { " to \($0)" } ?? "") lookup \(table) proto \(protocolNumber)"
    }
}

/// `struct fib_rule_hdr` (12 bytes): the kernel lays it out over `struct rtmsg` (family, the two
/// prefix lengths, TOS and table, then two reserved bytes where a route keeps its protocol and
/// scope, then the action where a route keeps its type, then the flags), so it is read and written
/// as one (`RouteMessageHeader`), the reserved bytes 0.
typealias RuleMessageHeader = RouteMessageHeader

extension RouteMessageHeader {
    /// The rule's action (`FR_ACT_*`): the byte a route calls its type.
    var action: UInt8 {
        get { type }
        set { type = newValue }
    }
}

extension Rule {
    /// Parses an `RTM_NEWRULE` payload; nil for other families, actions or selectors.
    /// - Throws: `NetlinkError` (`EPROTO`) for a truncated header or malformed attributes.
    init?(parsing payload: ArraySlice<UInt8>) throws(NetlinkError) {
        guard let h = RuleMessageHeader(parsing: payload) else {
            throw .malformed("fib_rule_hdr shorter than 12 bytes")
        }
        guard h.family == NL.familyIPv4, h.action == NL.actionToTable, h.tos == 0,
            h.sourceLength <= 32, h.destinationLength <= 32
        else { return nil }
        var priority: UInt32 = 0
        var source: IPv4Address?
        var destination: IPv4Address?
        var table = UInt32(h.table)
        var protocolNumber: UInt8 = 0
        for a in try NetlinkParser.attributes(in: payload.dropFirst(RuleMessageHeader.byteCount)) {
            switch a.type {
            case NL.fraPriority: priority = a.integer() ?? 0
            case NL.fraSource: source = a.ipv4Address
            case NL.fraDestination: destination = a.ipv4Address
            case NL.fraTable: table = a.integer() ?? table
            case NL.fraProtocol: protocolNumber = a.integer() ?? 0
            // Selectors this type does not model: the rule is not one of the kind we manage.
            case UInt16(FRA_IIFNAME), UInt16(FRA_OIFNAME), UInt16(FRA_FWMARK), UInt16(FRA_FWMASK),
                UInt16(FRA_GOTO), UInt16(FRA_L3MDEV), UInt16(FRA_UID_RANGE), UInt16(FRA_IP_PROTO),
                UInt16(FRA_SPORT_RANGE), UInt16(FRA_DPORT_RANGE):
                return nil
            default: break
            }
        }
        self.init(
            priority: priority,
            source: h.sourceLength == 0 ? nil : IPv4Prefix(address: source ?? .any, length: h.sourceLength),
            destination: h.destinationLength == 0
                ? nil : IPv4Prefix(address: destination ?? .any, length: h.destinationLength),
            table: table, protocolNumber: protocolNumber)
    }

    /// The `RTM_NEWRULE` (with `flags`) or `RTM_DELRULE` message for this rule.
    func message(_ messageType: UInt16, flags: UInt16 = 0) -> NetlinkMessageBuilder {
        var b = NetlinkMessageBuilder(type: messageType, flags: flags)
        var h = RuleMessageHeader()
        h.sourceLength = source?.length ?? 0
        h.destinationLength = destination?.length ?? 0
        h.table = table < 256 ? UInt8(table) : NL.tableUnspecified
        h.action = NL.actionToTable
        h.encode(into: &b)
        b.appendAttribute(type: NL.fraPriority, integer: priority)
        if let source { b.appendAttribute(type: NL.fraSource, address: source.address) }
        if let destination { b.appendAttribute(type: NL.fraDestination, address: destination.address) }
        b.appendAttribute(type: NL.fraTable, integer: table)
        b.appendAttribute(type: NL.fraProtocol, integer: protocolNumber)
        return b
    }
}

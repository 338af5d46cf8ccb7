// Netlink messages built and parsed by hand (RFC 3549; linux/netlink.h, linux/rtnetlink.h).
//
//   0                   1                   2                   3
//   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |                          Length                               |  nlmsghdr
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |            Type              |           Flags                |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |                      Sequence Number                          |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |                      Process ID (PID)                         |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  | family header (rtmsg, ifaddrmsg, ifinfomsg, fib_rule_hdr)     |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  | attributes: { u16 length; u16 type; payload; pad to 4 } ...   |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Every integer of netlink itself is in the host's byte order; addresses inside attributes are in
// network byte order. Messages and attributes start on 4-byte boundaries (NLMSG_ALIGN, RTA_ALIGN:
// the C function-like macros do not import into Swift, so `netlinkAlign` stands in for both).
// Everything here is plain array code: the control plane handles a few messages per second.
import CIPIPLinux
import IPIPCore

/// Rounds `length` up to the 4-byte netlink alignment (C: `NLMSG_ALIGN`, `RTA_ALIGN`, `NLA_ALIGN`).
@inlinable
public func netlinkAlign(_ length: Int) -> Int { (length + 3) & ~3 }

/// The kernel constants this module uses, converted once to the widths of the wire format (the C
/// headers import them as a mix of `Int`, `Int32` and enum structs).
enum NL {
    static let headerByteCount = 16
    static let attributeHeaderByteCount = 4

    // nlmsghdr types and flags.
    static let (error, done) = (UInt16(NLMSG_ERROR), UInt16(NLMSG_DONE))
    static let (request, multi, ack) = (UInt16(NLM_F_REQUEST), UInt16(NLM_F_MULTI), UInt16(NLM_F_ACK))
    static let (dump, dumpInterrupted) = (UInt16(NLM_F_DUMP), UInt16(NLM_F_DUMP_INTR))
    static let (create, replace, exclusive) = (UInt16(NLM_F_CREATE), UInt16(NLM_F_REPLACE), UInt16(NLM_F_EXCL))
    static let ackTLVs = UInt16(NLM_F_ACK_TLVS)
    static let errorAttributeMessage = UInt16(NLMSGERR_ATTR_MSG.rawValue)

    // rtnetlink message types, per object.
    static let (newLink, getLink) = (UInt16(RTM_NEWLINK), UInt16(RTM_GETLINK))
    static let (newAddress, deleteAddress, getAddress) = (UInt16(RTM_NEWADDR), UInt16(RTM_DELADDR), UInt16(RTM_GETADDR))
    static let (newRoute, deleteRoute, getRoute) = (UInt16(RTM_NEWROUTE), UInt16(RTM_DELROUTE), UInt16(RTM_GETROUTE))
    static let (newRule, deleteRule, getRule) = (UInt16(RTM_NEWRULE), UInt16(RTM_DELRULE), UInt16(RTM_GETRULE))

    // Address families.
    static let (familyIPv4, familyUnspecified) = (UInt8(AF_INET), UInt8(AF_UNSPEC))

    // Route attributes (rtattr_type_t) and metrics.
    static let (rtaDestination, rtaGateway, rtaOutputInterface) =
        (UInt16(RTA_DST.rawValue), UInt16(RTA_GATEWAY.rawValue), UInt16(RTA_OIF.rawValue))
    static let (rtaPriority, rtaPreferredSource, rtaTable) =
        (UInt16(RTA_PRIORITY.rawValue), UInt16(RTA_PREFSRC.rawValue), UInt16(RTA_TABLE.rawValue))
    static let (rtaMetrics, rtaxMTU) = (UInt16(RTA_METRICS.rawValue), UInt16(RTAX_MTU))
    // Route scopes, next-hop flags, tables.
    static let (scopeUniverse, scopeLink, scopeNowhere) =
        (UInt8(RT_SCOPE_UNIVERSE.rawValue), UInt8(RT_SCOPE_LINK.rawValue), UInt8(RT_SCOPE_NOWHERE.rawValue))
    static let flagOnlink = UInt32(RTNH_F_ONLINK)
    static let tableUnspecified = UInt8(RT_TABLE_UNSPEC.rawValue)

    // Rule attributes and the lookup action.
    static let (fraDestination, fraSource) = (UInt16(FRA_DST), UInt16(FRA_SRC))
    static let (fraPriority, fraTable, fraProtocol) = (UInt16(FRA_PRIORITY), UInt16(FRA_TABLE), UInt16(FRA_PROTOCOL))
    static let actionToTable = UInt8(FR_ACT_TO_TBL)

    // Link and address attributes.
    static let (iflaName, iflaMTU) = (UInt16(IFLA_IFNAME), UInt16(IFLA_MTU))
    static let (ifaAddress, ifaLocal) = (UInt16(IFA_ADDRESS), UInt16(IFA_LOCAL))
    static let interfaceUp = UInt32(IFF_UP)

    /// Attribute type bits that are flags, not part of the type (C: `NLA_TYPE_MASK`).
    static let attributeTypeMask: UInt16 = ~UInt16(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

    /// Readable names for the request types, for errors.
    static func name(of type: UInt16) -> String {
        switch type {
        case newLink: "RTM_NEWLINK"
        case getLink: "RTM_GETLINK"
        case newAddress: "RTM_NEWADDR"
        case deleteAddress: "RTM_DELADDR"
        case getAddress: "RTM_GETADDR"
        case newRoute: "RTM_NEWROUTE"
        case deleteRoute: "RTM_DELROUTE"
        case getRoute: "RTM_GETROUTE"
        case newRule: "RTM_NEWRULE"
        case deleteRule: "RTM_DELRULE"
        case getRule: "RTM_GETRULE"
        default: "netlink message type \(type)"
        }
    }
}

// MARK: - Building

/// Builds one netlink request: the `nlmsghdr`, a family header, then 4-byte aligned attributes.
///
/// The length and sequence number are filled in by `bytes(sequence:portID:)` when the message is
/// sent. Integers are written in the host's byte order (netlink's), IPv4 addresses in network
/// byte order.
public struct NetlinkMessageBuilder: Sendable {
    /// The message so far (the header's length and sequence fields are still zero).
    public private(set) var bytes: [UInt8]

    /// The message type (`RTM_NEWROUTE`, ...).
    public var type: UInt16 { bytes.netlinkInteger(at: 4)! }

    /// The `NLM_F_*` flags of the header.
    public var flags: UInt16 {
        get { bytes.netlinkInteger(at: 6)! }
        set {
            let v = newValue.littleEndian
            bytes[6] = UInt8(truncatingIfNeeded: v)
            bytes[7] = UInt8(truncatingIfNeeded: v >> 8)
        }
    }

    /// Starts a message.
    /// - Parameters:
    ///   - type: The message type, for example `UInt16(RTM_NEWROUTE)`.
    ///   - flags: `NLM_F_*` flags; `NLM_F_REQUEST` is always added.
    public init(type: UInt16, flags: UInt16) {
        bytes = []
        bytes.reserveCapacity(128)
        append(UInt32(0))  // length, patched when sent
        append(type)
        append(flags | NL.request)
        append(UInt32(0))  // sequence number, patched when sent
        append(UInt32(0))  // port ID: 0 addresses the kernel
    }

    /// Appends an integer in the host's byte order (netlink's), unaligned.
    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        for _ in 0..<MemoryLayout<T>.size {
            bytes.append(UInt8(truncatingIfNeeded: v))
            v >>= 8
        }
    }

    /// Appends raw bytes, unaligned.
    public mutating func append(contentsOf raw: some Sequence<UInt8>) {
        bytes.append(contentsOf: raw)
    }

    /// Pads with zeros to the next 4-byte boundary.
    public mutating func align() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    /// Appends an attribute with a raw payload, padded to 4 bytes.
    /// - Parameters:
    ///   - type: The attribute type (`RTA_DST`, ...).
    ///   - payload: The payload bytes, without padding.
    public mutating func appendAttribute(type: UInt16, payload: some Collection<UInt8>) {
        align()
        append(UInt16(NL.attributeHeaderByteCount + payload.count))
        append(type)
        bytes.append(contentsOf: payload)
        align()
    }

    /// Appends an integer attribute in the host's byte order.
    public mutating func appendAttribute<T: FixedWidthInteger>(type: UInt16, integer value: T) {
        align()
        append(UInt16(NL.attributeHeaderByteCount + MemoryLayout<T>.size))
        append(type)
        append(value)
        align()
    }

    /// Appends an IPv4 address attribute (4 bytes, network byte order).
    public mutating func appendAttribute(type: UInt16, address: IPv4Address) {
        let o = address.octets
        appendAttribute(type: type, payload: [o.0, o.1, o.2, o.3])
    }

    /// Appends a NUL-terminated string attribute (`IFLA_IFNAME`).
    public mutating func appendAttribute(type: UInt16, string: String) {
        appendAttribute(type: type, payload: Array(string.utf8) + [0])
    }

    /// Appends a nested attribute (`RTA_METRICS`) whose payload `body` writes as attributes.
    public mutating func appendNestedAttribute(type: UInt16, _ body: (inout NetlinkMessageBuilder) -> Void) {
        align()
        let start = bytes.count
        append(UInt16(0))
        append(type)
        body(&self)
        align()
        let length = UInt16(bytes.count - start)
        bytes[start] = UInt8(truncatingIfNeeded: length.littleEndian)
        bytes[start + 1] = UInt8(truncatingIfNeeded: length.littleEndian >> 8)
    }

    /// The finished message with its length, sequence number and port ID filled in.
    /// - Parameters:
    ///   - sequence: The sequence number the answer will carry.
    ///   - portID: The sender's port ID; 0 lets the kernel fill it in.
    /// - Returns: The bytes to send.
    public func bytes(sequence: UInt32, portID: UInt32 = 0) -> [UInt8] {
        var out = bytes
        while out.count % 4 != 0 { out.append(0) }
        Self.put(UInt32(out.count), into: &out, at: 0)
        Self.put(sequence, into: &out, at: 8)
        Self.put(portID, into: &out, at: 12)
        return out
    }

    private static func put(_ value: UInt32, into out: inout [UInt8], at offset: Int) {
        var v = value.littleEndian
        for i in 0..<4 {
            out[offset + i] = UInt8(truncatingIfNeeded: v)
            v >>= 8
        }
    }
}

// MARK: - Parsing

/// Reads integers in the host's byte order from netlink bytes.
extension Collection where Element == UInt8, Index == Int {
    /// The integer at `offset` (host byte order), or nil when the bytes run out.
    func netlinkInteger<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T? {
        let size = MemoryLayout<T>.size
        let start = startIndex + offset
        guard offset >= 0, start + size <= endIndex else { return nil }
        var v: T = 0
        for i in 0..<size { v |= T(truncatingIfNeeded: self[start + i]) << (8 * i) }
        return T(littleEndian: v)
    }
}

/// The fixed header of every netlink message (C: `struct nlmsghdr`).
public struct NetlinkMessageHeader: Sendable, Equatable {
    /// Length of the whole message, header included, without trailing padding.
    public var length: UInt32
    /// Message type (`NLMSG_ERROR`, `RTM_NEWROUTE`, ...).
    public var type: UInt16
    /// `NLM_F_*` flags.
    public var flags: UInt16
    /// Sequence number of the request this answers.
    public var sequence: UInt32
    /// Port ID of the sender (0 for the kernel).
    public var portID: UInt32
}

/// One message of a netlink datagram: the header and the bytes after it.
public struct NetlinkMessage: Sendable {
    /// The `nlmsghdr`.
    public var header: NetlinkMessageHeader
    /// Everything after the header up to `header.length` (family header, then attributes).
    public var payload: ArraySlice<UInt8>
}

/// One attribute (C: `struct rtattr` / `struct nlattr`) and its payload.
public struct NetlinkAttribute: Sendable {
    /// The type, without the `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` flag bits.
    public var type: UInt16
    /// The payload, without padding.
    public var payload: ArraySlice<UInt8>

    /// The payload as an integer in the host's byte order, or nil when its size differs.
    public func integer<T: FixedWidthInteger>(as: T.Type = T.self) -> T? {
        guard payload.count == MemoryLayout<T>.size else { return nil }
        return payload.netlinkInteger(at: 0)
    }

    /// The payload as an IPv4 address (4 bytes, network byte order), or nil when its size differs.
    public var ipv4Address: IPv4Address? {
        guard payload.count == 4 else { return nil }
        let p = payload.startIndex
        return IPv4Address(payload[p], payload[p + 1], payload[p + 2], payload[p + 3])
    }

    /// The payload as a string, up to the first NUL.
    public var string: String {
        let end = payload.firstIndex(of: 0) ?? payload.endIndex
        return String(decoding: payload[payload.startIndex..<end], as: UTF8.self)
    }

    /// The payload parsed as nested attributes.
    /// - Throws: `NetlinkError` (`EPROTO`) when the nested attributes are malformed.
    public func nested() throws(NetlinkError) -> [NetlinkAttribute] {
        try NetlinkParser.attributes(in: payload)
    }
}

/// Splits netlink datagrams into messages and attribute runs into attributes, checking every
/// length against the bytes that are really there.
public enum NetlinkParser {
    /// The messages of one datagram, in order.
    /// - Parameter bytes: What one `recv` returned.
    /// - Returns: Each message with its payload (padding between messages skipped).
    /// - Throws: `NetlinkError` (`EPROTO`) when a header is truncated or a length is out of bounds.
    public static func messages(in bytes: ArraySlice<UInt8>) throws(NetlinkError) -> [NetlinkMessage] {
        var out: [NetlinkMessage] = []
        var offset = 0
        while bytes.count - offset >= NL.headerByteCount {
            let s = bytes.startIndex + offset
            let rest = bytes[s...]
            guard let length = rest.netlinkInteger(at: 0, as: UInt32.self),
                let type = rest.netlinkInteger(at: 4, as: UInt16.self),
                let flags = rest.netlinkInteger(at: 6, as: UInt16.self),
                let sequence = rest.netlinkInteger(at: 8, as: UInt32.self),
                let portID = rest.netlinkInteger(at: 12, as: UInt32.self)
            else { throw .malformed("truncated netlink header at offset \(offset)") }
            guard Int(length) >= NL.headerByteCount, Int(length) <= rest.count else {
                throw .malformed(
                    "netlink message length \(length) at offset \(offset) exceeds the \(rest.count) bytes left")
            }
            let header = NetlinkMessageHeader(
                length: length, type: type, flags: flags, sequence: sequence, portID: portID)
            out.append(NetlinkMessage(header: header, payload: bytes[(s + NL.headerByteCount)..<(s + Int(length))]))
            offset += netlinkAlign(Int(length))
        }
        if offset < bytes.count {
            throw .malformed("\(bytes.count - offset) trailing bytes after the last netlink message")
        }
        return out
    }

    /// The attributes of a run of attributes (after a family header, or inside a nested attribute).
    /// - Parameter bytes: The run; it may end with padding.
    /// - Returns: The attributes in order.
    /// - Throws: `NetlinkError` (`EPROTO`) when an attribute's length is below 4 or out of bounds.
    public static func attributes(in bytes: ArraySlice<UInt8>) throws(NetlinkError) -> [NetlinkAttribute] {
        var out: [NetlinkAttribute] = []
        var offset = 0
        while bytes.count - offset >= NL.attributeHeaderByteCount {
            let s = bytes.startIndex + offset
            let rest = bytes[s...]
            guard let length = rest.netlinkInteger(at: 0, as: UInt16.self),
                let type = rest.netlinkInteger(at: 2, as: UInt16.self)
            else { throw .malformed("truncated attribute header at offset \(offset)") }
            guard Int(length) >= NL.attributeHeaderByteCount, Int(length) <= rest.count else {
                throw .malformed("attribute length \(length) at offset \(offset) exceeds the \(rest.count) bytes left")
            }
            out.append(
                NetlinkAttribute(
                    type: type & NL.attributeTypeMask,
                    payload: bytes[(s + NL.attributeHeaderByteCount)..<(s + Int(length))]))
            offset += netlinkAlign(Int(length))
        }
        // Fewer than 4 bytes left: padding (the kernel pads, we do not complain).
        return out
    }
}

/// The error (or acknowledgement) a kernel answer carries (C: `struct nlmsgerr` plus the
/// extended-ack attributes).
struct NetlinkErrorAnswer: Equatable, Sendable {
    /// 0 for an acknowledgement, else a positive errno.
    var errno: Int32
    /// `NLMSGERR_ATTR_MSG`, when the kernel explained itself.
    var message: String?

    init(errno: Int32, message: String?) {
        self.errno = errno
        self.message = message
    }

    /// Parses the payload of an `NLMSG_ERROR` message.
    /// - Parameters:
    ///   - payload: The message payload: `int error`, the echoed request header (and its payload
    ///     unless `NLM_F_CAPPED`), then TLVs when `NLM_F_ACK_TLVS`.
    ///   - flags: The message's `nlmsghdr` flags.
    init(parsing payload: ArraySlice<UInt8>, flags: UInt16) throws(NetlinkError) {
        guard let e = payload.netlinkInteger(at: 0, as: Int32.self) else {
            throw .malformed("NLMSG_ERROR shorter than 4 bytes")
        }
        errno = e == Int32.min ? Int32.max : -e
        message = nil
        guard flags & NL.ackTLVs != 0 else { return }
        // The echoed request: its header always, its payload unless capped (we set NETLINK_CAP_ACK,
        // but parse both forms).
        var offset = 4 + NL.headerByteCount
        if flags & UInt16(NLM_F_CAPPED) == 0, let echoed = payload.netlinkInteger(at: 4, as: UInt32.self) {
            offset = 4 + netlinkAlign(Int(echoed))
        }
        guard offset <= payload.count else { return }
        let tlvs = try NetlinkParser.attributes(in: payload[(payload.startIndex + offset)...])
        message = tlvs.first(where: { $0.type == NL.errorAttributeMessage })?.string
    }
}

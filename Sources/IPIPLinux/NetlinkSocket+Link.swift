// Links and IPv4 addresses over rtnetlink (RTM_GETLINK/NEWLINK, RTM_GETADDR/NEWADDR/DELADDR).
import CIPIPLinux
import Glibc
import IPIPCore

/// A network interface as rtnetlink reports it.
public struct NetlinkLink: Sendable, Equatable {
    /// The interface index (C: `ifi_index`).
    public var index: Int32
    /// The interface name (`IFLA_IFNAME`).
    public var name: String
    /// The MTU in bytes (`IFLA_MTU`).
    public var mtu: Int
    /// Whether the link is administratively up (`IFF_UP`).
    public var isUp: Bool
}

/// `struct ifinfomsg` (16 bytes).
struct LinkMessageHeader: Equatable {
    static let byteCount = 16
    var family: UInt8 = NL.familyUnspecified
    var deviceType: UInt16 = 0
    var index: Int32 = 0
    var flags: UInt32 = 0
    var change: UInt32 = 0

    func encode(into b: inout NetlinkMessageBuilder) {
        b.append(family)
        b.append(UInt8(0))
        b.append(deviceType)
        b.append(index)
        b.append(flags)
        b.append(change)
    }

    init(family: UInt8 = NL.familyUnspecified, index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) {
        self.family = family
        self.index = index
        self.flags = flags
        self.change = change
    }

    init?(parsing p: ArraySlice<UInt8>) {
        guard p.count >= Self.byteCount else { return nil }
        family = p[p.startIndex]
        deviceType = p.netlinkInteger(at: 2)!
        index = p.netlinkInteger(at: 4)!
        flags = p.netlinkInteger(at: 8)!
        change = p.netlinkInteger(at: 12)!
    }
}

/// `struct ifaddrmsg` (8 bytes).
struct AddressMessageHeader: Equatable {
    static let byteCount = 8
    var family: UInt8 = NL.familyIPv4
    var prefixLength: UInt8 = 0
    var flags: UInt8 = 0
    var scope: UInt8 = 0
    var index: UInt32 = 0

    func encode(into b: inout NetlinkMessageBuilder) {
        b.append(family)
        b.append(prefixLength)
        b.append(flags)
        b.append(scope)
        b.append(index)
    }

    init(prefixLength: UInt8 = 0, index: UInt32 = 0) {
        self.prefixLength = prefixLength
        self.index = index
    }

    init?(parsing p: ArraySlice<UInt8>) {
        guard p.count >= Self.byteCount else { return nil }
        family = p[p.startIndex]
        prefixLength = p[p.startIndex + 1]
        flags = p[p.startIndex + 2]
        scope = p[p.startIndex + 3]
        index = p.netlinkInteger(at: 4)!
    }
}

extension NetlinkLink {
    /// Parses an `RTM_NEWLINK` message payload; nil when it lacks a name or MTU.
    init?(parsing payload: ArraySlice<UInt8>) throws(NetlinkError) {
        guard let h = LinkMessageHeader(parsing: payload) else { throw .malformed("ifinfomsg shorter than 16 bytes") }
        var name: String?
        var mtu: UInt32?
        for a in try NetlinkParser.attributes(in: payload.dropFirst(LinkMessageHeader.byteCount)) {
            switch a.type {
            case NL.iflaName: name = a.string
            case NL.iflaMTU: mtu = a.integer()
            default: break
            }
        }
        guard let name, let mtu else { return nil }
        self.init(index: h.index, name: name, mtu: Int(mtu), isUp: h.flags & NL.interfaceUp != 0)
    }
}

/// An IPv4 address on a link, from an `RTM_NEWADDR` message.
struct InterfaceAddress: Equatable {
    var index: Int32
    var prefix: IPv4Prefix

    init(index: Int32, prefix: IPv4Prefix) {
        self.index = index
        self.prefix = prefix
    }

    /// Parses an `RTM_NEWADDR` payload; nil for other families.
    init?(parsing payload: ArraySlice<UInt8>) throws(NetlinkError) {
        guard let h = AddressMessageHeader(parsing: payload) else { throw .malformed("ifaddrmsg shorter than 8 bytes") }
        guard h.family == NL.familyIPv4, h.prefixLength <= 32 else { return nil }
        var local: IPv4Address?
        var address: IPv4Address?
        for a in try NetlinkParser.attributes(in: payload.dropFirst(AddressMessageHeader.byteCount)) {
            switch a.type {
            case NL.ifaLocal: local = a.ipv4Address
            case NL.ifaAddress: address = a.ipv4Address
            default: break
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        // links and equals IFA_LOCAL elsewhere.
        guard let own = local ?? address else { return nil }
        self.index = Int32(bitPattern: h.index)
        self.prefix = IPv4Prefix(address: own, length: h.prefixLength)
    }
}

extension NetlinkSocket {
    /// The link with this index, or nil when there is none.
    /// - Throws: `NetlinkError` for failures other than "no such device".
    public func link(index: Int32) throws(NetlinkError) -> NetlinkLink? {
        var b = NetlinkMessageBuilder(type: NL.getLink, flags: 0)
        LinkMessageHeader(index: index).encode(into: &b)
        return try fetchLink(b, detail: "link index \(index)")
    }

    /// The link with this name, or nil when there is none.
    /// - Throws: `NetlinkError` for failures other than "no such device".
    public func link(name: String) throws(NetlinkError) -> NetlinkLink? {
        var b = NetlinkMessageBuilder(type: NL.getLink, flags: 0)
        LinkMessageHeader().encode(into: &b)
        b.appendAttribute(type: NL.iflaName, string: name)
        return try fetchLink(b, detail: "link \(name)")
    }

    private func fetchLink(_ b: NetlinkMessageBuilder, detail: String) throws(NetlinkError) -> NetlinkLink? {
        let answer: [NetlinkMessage]
        do {
            answer = try request(b, detail: detail)
        } catch  where error.errno == ENODEV {
            return nil
        }
        for m in answer where m.header.type == NL.newLink {
            if let l = try NetlinkLink(parsing: m.payload) { return l }
        }
        return nil
    }

    /// The index of the interface called `name`, or nil when there is none (C: `if_nametoindex`,
    /// but answered in this socket's network namespace).
    /// - Throws: `NetlinkError` for failures other than "no such device".
    public func linkIndex(name: String) throws(NetlinkError) -> Int32? { try link(name: name)?.index }

    /// The name of the interface with this index, or nil when there is none.
    /// - Throws: `NetlinkError` for failures other than "no such device".
    public func linkName(index: Int32) throws(NetlinkError) -> String? { try link(index: index)?.name }

    /// The MTU of the interface with this index, or nil when there is none.
    /// - Throws: `NetlinkError` for failures other than "no such device".
    public func linkMTU(index: Int32) throws(NetlinkError) -> Int? { try link(index: index)?.mtu }

    /// Brings a link up or down and optionally sets its MTU (`RTM_NEWLINK` on an existing link;
    /// idempotent).
    /// - Parameters:
    ///   - index: The interface index.
    ///   - up: Whether the link should be administratively up.
    ///   - mtu: The MTU to set, or nil to leave it.
    /// - Throws: `NetlinkError` (for example `ENODEV`, or `EINVAL` for an MTU the device refuses).
    public func setLink(index: Int32, up: Bool, mtu: Int? = nil) throws(NetlinkError) {
        var b = NetlinkMessageBuilder(type: NL.newLink, flags: 0)
        LinkMessageHeader(index: index, flags: up ? NL.interfaceUp : 0, change: NL.interfaceUp).encode(into: &b)
        if let mtu { b.appendAttribute(type: NL.iflaMTU, integer: UInt32(clamping: mtu)) }
        try request(b, detail: "link index \(index) \(up ? "up" : "down")\(mtu.map { " mtu \($0)" } ?? "")")
    }

    /// Every IPv4 address of every link.
    func allAddresses() throws(NetlinkError) -> [InterfaceAddress] {
        var b = NetlinkMessageBuilder(type: NL.getAddress, flags: 0)
        AddressMessageHeader().encode(into: &b)
        var out: [InterfaceAddress] = []
        for m in try dump(b, detail: "IPv4 addresses") where m.header.type == NL.newAddress {
            if let a = try InterfaceAddress(parsing: m.payload) { out.append(a) }
        }
        return out
    }

    /// The IPv4 addresses of a link, each with its prefix length (`10.0.0.1/24`).
    /// - Throws: `NetlinkError` when the dump fails.
    public func addresses(index: Int32) throws(NetlinkError) -> [IPv4Prefix] {
        try allAddresses().filter { $0.index == index }.map(\.prefix)
    }

    /// Adds an IPv4 address to a link; an address that is already there is fine.
    /// - Parameters:
    ///   - prefix: The address with its prefix length (host bits are the address).
    ///   - index: The interface index.
    /// - Throws: `NetlinkError` for failures other than `EEXIST`.
    public func addAddress(_ prefix: IPv4Prefix, index: Int32) throws(NetlinkError) {
        do {
            try request(
                addressMessage(NL.newAddress, flags: NL.create | NL.exclusive, prefix, index),
                detail: "address \(prefix) on link index \(index)")
        } catch  where error.isAlreadyExists {}
    }

    /// Removes an IPv4 address from a link; an address that is not there is fine.
    /// - Throws: `NetlinkError` for failures other than `EADDRNOTAVAIL`/`ENOENT`/`ESRCH`.
    public func deleteAddress(_ prefix: IPv4Prefix, index: Int32) throws(NetlinkError) {
        do {
            try request(
                addressMessage(NL.deleteAddress, flags: 0, prefix, index),
                detail: "address \(prefix) on link index \(index)")
        } catch  where error.isNotFound {}
    }

    private func addressMessage(
        _ type: UInt16, flags: UInt16, _ prefix: IPv4Prefix, _ index: Int32
    ) -> NetlinkMessageBuilder {
        var b = NetlinkMessageBuilder(type: type, flags: flags)
        AddressMessageHeader(prefixLength: prefix.length, index: UInt32(bitPattern: index)).encode(into: &b)
        b.appendAttribute(type: NL.ifaLocal, address: prefix.address)
        b.appendAttribute(type: NL.ifaAddress, address: prefix.address)
        return b
    }

    /// The link that carries `address` (uplink autodetection: the interface holding the node IP).
    /// - Returns: The link's index, name and MTU and the address with its prefix length, or nil
    ///   when no link holds the address.
    /// - Throws: `NetlinkError` when a dump or lookup fails.
    public func interfaceHolding(
        address: IPv4Address
    ) throws(NetlinkError)
        -> (index: Int32, name: String, mtu: Int, prefix: IPv4Prefix)?
    {
        for a in try allAddresses() where a.prefix.address == address {
            guard let l = try link(index: a.index) else { continue }
            return (l.index, l.name, l.mtu, a.prefix)
        }
        return nil
    }
}

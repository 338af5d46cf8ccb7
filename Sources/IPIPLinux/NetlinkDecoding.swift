/// Reads a whole rtnetlink datagram the way `NetlinkSocket` reads the kernel's answers: split into
/// messages, then each payload parsed by the parser the socket uses for its type (links,
/// addresses, routes, rules, neighbours, errors and acknowledgements, the end of a dump).
///
/// The socket only ever parses what the kernel sent; this entry point exists so that the parsers
/// can be driven from arbitrary bytes (the `netlink` fuzz target) and inspected (tests).
public enum NetlinkDecoding {
    /// What one message decoded to, as text (`route 10.0.0.0/24 …`, `not IPv4`, `error 17 …`).
    /// - Throws: `NetlinkError` (`EPROTO`) when the datagram or a payload is malformed: the
    ///   error the socket would have thrown at that message.
    public static func describe(datagram: ArraySlice<UInt8>) throws(NetlinkError) -> [String] {
        var out: [String] = []
        for m in try NetlinkParser.messages(in: datagram) {
            out.append(try describe(m))
        }
        return out
    }

    static func describe(_ m: NetlinkMessage) throws(NetlinkError) -> String {
        switch m.header.type {
        case NL.newLink:
            return try NetlinkLink(parsing: m.payload).map { "link \($0)" } ?? "link without a name or MTU"
        case NL.newAddress:
            return try InterfaceAddress(parsing: m.payload).map { "address \($0)" } ?? "address not IPv4"
        case NL.newRoute:
            return try Route(parsing: m.payload).map { "route \($0)" } ?? "route not IPv4"
        case NL.newRule:
            return try Rule(parsing: m.payload).map { "rule \($0)" } ?? "rule not of our kind"
        case NetlinkSocket.newNeighbor:
            return try NeighborEntry(parsing: m.payload).map { "neighbour \($0)" } ?? "neighbour not IPv4"
        case NL.error:
            let answer = try NetlinkErrorAnswer(parsing: m.payload, flags: m.header.flags)
            return "error \(answer.errno) \(answer.message ?? "")"
        case NL.done:
            return "done \(m.payload.netlinkInteger(at: 0, as: Int32.self).map(String.init) ?? "")"
        default:
            return "type \(m.header.type), \(m.payload.count) bytes"
        }
    }
}

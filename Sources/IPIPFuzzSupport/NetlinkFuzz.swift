import IPIPLinux

/// The `netlink` target: the input is one rtnetlink datagram as `recv` would return it, decoded
/// as the socket decodes the kernel's answers (`NetlinkDecoding`: messages, then links, addresses,
/// routes, rules, neighbours, errors and ends of dumps by message type).
///
/// Invariant: a malformed datagram is a thrown `NetlinkError` (`EPROTO`, with a detail), never
/// a trap; decoding the same bytes twice gives the same answer.
enum NetlinkFuzz {
    static func run(_ input: UnsafeRawBufferPointer) -> [FuzzFinding] {
        let bytes = [UInt8](input)
        let first = Result { () throws(NetlinkError) in try NetlinkDecoding.describe(datagram: bytes[...]) }
        let second = Result { () throws(NetlinkError) in try NetlinkDecoding.describe(datagram: bytes[...]) }
        switch (first, second) {
        case (.success(let a), .success(let b)) where a == b: return []
        case (.failure(let a), .failure(let b)) where "\(a)" == "\(b)":
            if "\(a)".isEmpty { return [FuzzFinding(kind: "netlink", message: "an error without a description")] }
            return []
        default:
            return [FuzzFinding(kind: "netlink", message: "two decodes of the same bytes differ: \(first), \(second)")]
        }
    }
}

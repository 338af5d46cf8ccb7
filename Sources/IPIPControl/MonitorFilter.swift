import IPIPCore

/// What `ipipctl monitor` wants to see: `--drops`, `--reason R`, `--peer IP`, `--host IP`,
/// `--port N`. Different flags must all hold (AND); the values of one flag are alternatives
/// (OR), and every flag is repeatable and takes comma-separated lists: `--reason
/// ipip_unknown_peer,no_route --host 192.168.0.10` is "dropped as one of those two, and to or
/// from that address".
///
/// Parsed twice from the same text: by ipipctl, so a typo fails before any connection, and by
/// the daemon (`init(wire:)`), which applies it and trusts nothing a client sends. A token that
/// does not parse is an error naming the flag and the token.
public struct MonitorFilter: Sendable, Equatable {
    /// Only dropped packets (`--drops`; implied by `--reason`).
    public var dropsOnly = false
    /// Any of these drop reasons (empty: any).
    public var reasons: [DropReason] = []
    /// The event's peer node is one of these (the outer source or destination of IP-in-IP).
    public var peers: [IPv4Address] = []
    /// One of these is an outer or inner source or destination.
    public var hosts: [IPv4Address] = []
    /// One of these is the innermost TCP or UDP source or destination port.
    public var ports: [UInt16] = []

    public init() {}

    /// Parses the flags' values (each may be a comma-separated list).
    /// - Throws: `ControlError` naming the flag and the token that does not parse.
    public static func parse(
        drops: Bool = false, reasons: [String] = [], peers: [String] = [], hosts: [String] = [], ports: [String] = []
    ) throws(ControlError) -> MonitorFilter {
        var f = MonitorFilter()
        f.dropsOnly = drops
        for token in tokens(reasons) {
            guard let r = DropReason.allCases.first(where: { $0.name == token }) else {
                throw ControlError(
                    "--reason: unknown drop reason '\(token)' (one of: \(DropReason.allCases.map(\.name).joined(separator: ", ")))"
                )
            }
            if !f.reasons.contains(r) { f.reasons.append(r) }
        }
        if !f.reasons.isEmpty { f.dropsOnly = true }
        f.peers = try addresses(peers, flag: "--peer")
        f.hosts = try addresses(hosts, flag: "--host")
        for token in tokens(ports) {
            guard let p = UInt16(token), p > 0 else {
                throw ControlError("--port: '\(token)' is not a port number (1…65535)")
            }
            if !f.ports.contains(p) { f.ports.append(p) }
        }
        return f
    }

    /// The values of a flag, comma lists split; an empty element is kept so that it is refused.
    static func tokens(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
    }

    static func addresses(_ values: [String], flag: String) throws(ControlError) -> [IPv4Address] {
        var out: [IPv4Address] = []
        for token in tokens(values) {
            guard let a = IPv4Address(token) else {
                throw ControlError("\(flag): '\(token)' is not an IPv4 address")
            }
            if !out.contains(a) { out.append(a) }
        }
        return out
    }

    /// The request's `filter` object.
    public var wire: [String: Any] {
        [
            "drops": dropsOnly, "reasons": reasons.map(\.name), "peers": peers.map(\.description),
            "hosts": hosts.map(\.description), "ports": ports.map { Int($0) },
        ]
    }

    /// Parses a request's `filter` object the way `parse` does (the daemon's side).
    /// - Throws: `ControlError` naming a field of the wrong type or the token that does not parse.
    public init(wire o: [String: Any]) throws(ControlError) {
        let known: Set<String> = ["drops", "reasons", "peers", "hosts", "ports"]
        if let unknown = o.keys.sorted().first(where: { !known.contains($0) }) {
            throw ControlError("monitor filter: unknown field '\(unknown)'")
        }
        func strings(_ key: String) throws(ControlError) -> [String] {
            guard let v = o[key] else { return [] }
            if let a = v as? [String] { return a }
            if let a = v as? [Any] {
                var out: [String] = []
                for x in a {
                    if let s = x as? String {
                        out.append(s)
                    } else if let n = x as? Int {
                        out.append(String(n))
                    } else {
                        throw ControlError("monitor filter: '\(key)' holds \(x), not a string")
                    }
                }
                return out
            }
            throw ControlError("monitor filter: '\(key)' must be a list")
        }
        var drops = false
        if let d = o["drops"] {
            guard let b = d as? Bool else { throw ControlError("monitor filter: 'drops' must be true or false") }
            drops = b
        }
        self = try Self.parse(
            drops: drops, reasons: try strings("reasons"), peers: try strings("peers"), hosts: try strings("hosts"),
            ports: try strings("ports"))
    }

    /// What the packet loops need to record for this filter.
    public var ringMode: MonitorRing.Mode { dropsOnly ? .dropsOnly : .all }

    /// Whether `event` passes.
    public func matches(_ event: MonitorEvent) -> Bool {
        if dropsOnly && event.action != .dropped { return false }
        if !reasons.isEmpty && !(event.reason.map { reasons.contains($0) } ?? false) { return false }
        if !peers.isEmpty && !(event.peer.map { peers.contains($0) } ?? false) { return false }
        if hosts.isEmpty && ports.isEmpty { return true }
        let h = event.headers
        if !hosts.isEmpty && !h.addresses.contains(where: { hosts.contains($0) }) { return false }
        if !ports.isEmpty {
            let mine = [h.sourcePort, h.destinationPort].compactMap { $0 }
            if !mine.contains(where: { ports.contains($0) }) { return false }
        }
        return true
    }

    /// The filter as the flags that give it (for messages).
    public var description: String {
        var parts: [String] = []
        if dropsOnly && reasons.isEmpty { parts.append("--drops") }
        if !reasons.isEmpty { parts.append("--reason " + reasons.map(\.name).joined(separator: ",")) }
        if !peers.isEmpty { parts.append("--peer " + peers.map(\.description).joined(separator: ",")) }
        if !hosts.isEmpty { parts.append("--host " + hosts.map(\.description).joined(separator: ",")) }
        if !ports.isEmpty { parts.append("--port " + ports.map(String.init).joined(separator: ",")) }
        return parts.isEmpty ? "every verdict" : parts.joined(separator: " ")
    }
}

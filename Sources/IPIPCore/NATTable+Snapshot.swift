// NATTable+Snapshot: the sessions of a table as plain values, and a table refilled from them.
// The flight recorder writes what a live table holds into a recording; `ipipd replay` puts it
// back before the first recorded packet, so that verdicts about flows older than the recording
// (a reply to a NAT session, a port already taken) come out as they did live.

/// One SNAT session with its mapping, as plain values (what a recording keeps of it).
public struct NATSessionState: Sendable, Equatable {
    public var proto: NATProtocol
    /// The workload's endpoint (the packet's source before translation).
    public var internalAddress: IPv4Address
    public var internalPort: UInt16
    /// The node's port (or ICMP identifier) the mapping owns.
    public var externalPort: UInt16
    /// The far end the session is filtered on (port 0 for ICMP).
    public var remoteAddress: IPv4Address
    public var remotePort: UInt16
    /// TCP only; `.opening` for UDP and ICMP.
    public var tcpState: NATTCPState
    /// Last activity, nanoseconds on the engine's clock.
    public var lastActivity: Int64

    public init(
        proto: NATProtocol, internalAddress: IPv4Address, internalPort: UInt16, externalPort: UInt16,
        remoteAddress: IPv4Address, remotePort: UInt16, tcpState: NATTCPState = .opening, lastActivity: Int64
    ) {
        self.proto = proto
        self.internalAddress = internalAddress
        self.internalPort = internalPort
        self.externalPort = externalPort
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.tcpState = tcpState
        self.lastActivity = lastActivity
    }
}

/// Why `NATTable.restore` refused a session (nothing of the call is kept then).
public struct NATRestoreError: Error, Sendable, CustomStringConvertible {
    /// Index of the refused session in the array given to `restore`.
    public var index: Int
    public var message: String
    public var description: String { "NAT session \(index): \(message)" }
}

extension NATTable {
    /// Every session held (expired ones not yet reaped included), oldest activity first.
    ///
    /// Allocates (an array): for the control plane and the recorder's dump, never per packet.
    public func sessionStates() -> [NATSessionState] {
        var out: [NATSessionState] = []
        out.reserveCapacity(count)
        for c in 0..<NATTimeoutClass.count {
            var s = listEnds[2 * c]
            while s >= 0 {
                let r = sessions[Int(s)]
                let m = mappings[Int(r.mapping)]
                out.append(
                    NATSessionState(
                        proto: NATProtocol(rawValue: r.proto) ?? .udp,
                        internalAddress: IPv4Address(rawValue: m.internalAddress), internalPort: m.internalPort,
                        externalPort: r.externalPort, remoteAddress: IPv4Address(rawValue: r.remoteAddress),
                        remotePort: r.remotePort, tcpState: NATTCPState(rawValue: r.tcpState) ?? .opening,
                        lastActivity: r.lastActivity))
                s = r.next
            }
        }
        out.sort { $0.lastActivity < $1.lastActivity }
        return out
    }

    /// Fills an empty table with `states` (sessions of one endpoint share one mapping), without
    /// moving the table clock: the first packet after it sets the clock as usual.
    ///
    /// All or nothing: every session is checked first (external port inside `portRange`, one
    /// external port per internal endpoint and one endpoint per port, no duplicate session, room
    /// in the table), and on the first problem nothing is inserted.
    /// - Precondition: the table is empty (a fresh engine's, before any packet).
    public func restore(_ states: [NATSessionState]) throws(NATRestoreError) {
        precondition(count == 0 && mappingCount == 0, "NATTable.restore needs an empty table")
        guard states.count <= capacity else {
            throw NATRestoreError(
                index: capacity, message: "\(states.count) sessions do not fit a table of \(capacity)")
        }
        struct EndpointKey: Hashable {
            var proto: UInt8, address: UInt32, port: UInt16
        }
        struct SessionKey: Hashable {
            var proto: UInt8, externalPort: UInt16, remote: UInt32, remotePort: UInt16
        }
        var portOf: [EndpointKey: UInt16] = [:]
        var endpointOf: [EndpointKey: EndpointKey] = [:]
        var seen: Set<SessionKey> = []
        for (i, s) in states.enumerated() {
            guard portRange.contains(s.externalPort) else {
                throw NATRestoreError(
                    index: i,
                    message:
                        "external port \(s.externalPort) is outside this table's range \(portRange.lowerBound)-\(portRange.upperBound)"
                )
            }
            let endpoint = EndpointKey(
                proto: s.proto.rawValue, address: s.internalAddress.rawValue, port: s.internalPort)
            let external = EndpointKey(proto: s.proto.rawValue, address: 0, port: s.externalPort)
            if let p = portOf[endpoint], p != s.externalPort {
                throw NATRestoreError(
                    index: i,
                    message: "\(s.internalAddress):\(s.internalPort) has external port \(p) and \(s.externalPort)")
            }
            if let e = endpointOf[external], e != endpoint {
                throw NATRestoreError(
                    index: i,
                    message:
                        "external port \(s.externalPort) belongs to \(IPv4Address(rawValue: e.address)):\(e.port) too")
            }
            portOf[endpoint] = s.externalPort
            endpointOf[external] = endpoint
            let remotePort = s.proto == .icmp ? 0 : s.remotePort
            guard
                seen.insert(
                    SessionKey(
                        proto: s.proto.rawValue, externalPort: s.externalPort, remote: s.remoteAddress.rawValue,
                        remotePort: remotePort)
                ).inserted
            else {
                throw NATRestoreError(index: i, message: "duplicate session to \(s.remoteAddress):\(remotePort)")
            }
        }
        // Oldest first, so that every timeout list stays ordered by last activity.
        for s in states.sorted(by: { $0.lastActivity < $1.lastActivity }) {
            var m = findMapping(s.proto, s.internalAddress.rawValue, s.internalPort)
            if m < 0 {
                setPort(s.proto, s.externalPort, taken: true)
                m = insertMapping(s.proto, s.internalAddress.rawValue, s.internalPort, externalPort: s.externalPort)
            }
            insertSession(
                mapping: m, proto: s.proto, remoteAddress: s.remoteAddress.rawValue,
                remotePort: s.proto == .icmp ? 0 : s.remotePort, tcpState: s.tcpState, at: s.lastActivity)
        }
    }
}

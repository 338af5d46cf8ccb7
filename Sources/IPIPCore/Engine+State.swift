/// The engine's state that a verdict can depend on besides the topology and the packet: learned
/// path MTUs, the ICMP error budget, the IP identification counter, and the SNAT sessions.
///
/// The flight recorder writes it into a recording (`docs/flight-recorder.md`) and `ipipd replay`
/// puts it into a fresh engine before the first recorded packet (`Engine.preload`). Times are
/// nanoseconds on the engine's clock.
public struct EngineState: Sendable, Equatable {
    /// One learned path MTU (outer packet size) toward a peer, and when it lapses.
    public struct PathMTU: Sendable, Equatable {
        public var peer: IPv4Address
        public var mtu: Int
        public var expires: Int64
        public init(peer: IPv4Address, mtu: Int, expires: Int64) {
            self.peer = peer
            self.mtu = mtu
            self.expires = expires
        }
    }

    public var pathMTUs: [PathMTU] = []
    public var icmp = EngineScalarState()
    public var natSessions: [NATSessionState] = []

    public init(
        pathMTUs: [PathMTU] = [], icmp: EngineScalarState = EngineScalarState(), natSessions: [NATSessionState] = []
    ) {
        self.pathMTUs = pathMTUs
        self.icmp = icmp
        self.natSessions = natSessions
    }
}

/// The engine's small mutable scalars: the ICMP token bucket and the next IP identification.
/// The flight recorder copies them into every record (they change per packet and cost three
/// loads), so a recording knows them as they were before its oldest batch.
public struct EngineScalarState: Sendable, Equatable {
    /// Tokens of the ICMP error bucket, in billionths of a token.
    public var icmpTokens: Int64
    /// Time of the bucket's last refill in ns; `Int64.min` before the first ICMP error (a full bucket).
    public var icmpLastRefill: Int64
    /// The next IPv4 identification the engine writes into a packet of its own.
    public var nextIdentification: UInt16

    @inlinable
    public init(icmpTokens: Int64 = 0, icmpLastRefill: Int64 = .min, nextIdentification: UInt16 = 1) {
        self.icmpTokens = icmpTokens
        self.icmpLastRefill = icmpLastRefill
        self.nextIdentification = nextIdentification
    }
}

/// Why `Engine.preload` refused a state (nothing of it is applied then).
public struct EngineStateError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension Engine {
    /// The ICMP bucket and the identification counter now (three loads; no allocation).
    public var scalarState: EngineScalarState {
        let s = state.pointee
        return EngineScalarState(
            icmpTokens: s.icmpTokens, icmpLastRefill: s.icmpLastRefill, nextIdentification: s.nextIdentification)
    }

    /// Everything `EngineState` holds, as it is now. Allocates: call it between batches (the
    /// flight recorder does, on the worker's own thread), never per packet.
    public func exportState() -> EngineState {
        var mtus: [EngineState.PathMTU] = []
        for (i, n) in topology.nodes.enumerated() where i < pathMTUs.count && pathMTUs.mtu[i] != 0 {
            guard let a = n.address else { continue }
            mtus.append(EngineState.PathMTU(peer: a, mtu: Int(pathMTUs.mtu[i]), expires: pathMTUs.expiry[i]))
        }
        return EngineState(pathMTUs: mtus, icmp: scalarState, natSessions: nat.sessionStates())
    }

    /// Puts `state` into this engine before its first packet: path MTUs by peer address (a peer
    /// the topology does not know is an error, as is an MTU outside minimumPathMTU…65535), the
    /// ICMP bucket and identification counter, and the NAT sessions (`NATTable.restore`).
    /// All or nothing.
    /// - Precondition: no packet was processed yet (the NAT table is empty).
    public func preload(_ state: EngineState) throws(EngineStateError) {
        var index: [IPv4Address: Int] = [:]
        for (i, n) in topology.nodes.enumerated() {
            if let a = n.address, index[a] == nil { index[a] = i }
        }
        var mtus: [(Int, EngineState.PathMTU)] = []
        for p in state.pathMTUs {
            guard let i = index[p.peer] else {
                throw EngineStateError("path MTU for \(p.peer): no node of the topology has that address")
            }
            guard p.mtu >= configuration.minimumPathMTU && p.mtu <= 65535 else {
                throw EngineStateError(
                    "path MTU for \(p.peer): \(p.mtu) is outside \(configuration.minimumPathMTU)…65535")
            }
            mtus.append((i, p))
        }
        guard state.icmp.icmpTokens >= 0 else {
            throw EngineStateError("ICMP tokens \(state.icmp.icmpTokens) are negative")
        }
        do { try nat.restore(state.natSessions) } catch { throw EngineStateError("\(error)") }
        for (i, p) in mtus {
            pathMTUs.mtu[i] = UInt16(p.mtu)
            pathMTUs.expiry[i] = p.expires
        }
        self.state.pointee.icmpTokens = state.icmp.icmpTokens
        self.state.pointee.icmpLastRefill = state.icmp.icmpLastRefill
        self.state.pointee.nextIdentification = state.icmp.nextIdentification
    }
}

extension PacketVerdict {
    /// The verdict in the project's wording, one line: the action's name (`encapsulated`,
    /// `dropped`, …), then the drop reason, the peer of an encapsulated or decapsulated packet and
    /// the ICMP error sent, e.g. `dropped fragmentation_needed icmp 3/4`,
    /// `encapsulated peer 10.0.0.2`. The flight recorder writes it as each packet's pcapng
    /// comment and `ipipd replay` compares its own against it, so both come from here.
    public var text: String {
        var s = action.name
        if let r = dropReason { s += " " + r.name }
        if action == .encapsulated || action == .decapsulated { s += " peer \(peer)" }
        if let t = icmpType { s += " icmp \(t)/\(icmpCode)" }
        return s
    }
}

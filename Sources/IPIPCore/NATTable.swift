// NATTable: the connection-tracking / SNAT session table of one engine worker (natOutgoing).
//
// ## Architecture note
//
// The table keeps state only; the engine rewrites packets and fixes checksums. One table per
// worker, never shared, no locks. Everything is allocated in `init` and freed in `deinit`; the
// per-packet methods allocate nothing (no arrays, dictionaries, classes, strings or escaping
// closures). All mutable state sits behind `let` pointers, so no access pays a dynamic
// exclusivity check.
//
// Storage (indices are Int32; -1 means "none"):
//
// ```
//  sessions[capacity]        32 B  NATSessionRecord: remote addr/port, external port, protocol,
//                                  TCP state, timeout class, last activity (ns), mapping index,
//                                  previous/next links of its timeout list
//  mappings[capacity]        16 B  NATMappingRecord: protocol, internal addr/port, external port,
//                                  number of live sessions
//  sessionSlots[S], S = 2^k ≥ 2·capacity   4 B each: session index + 1, 0 = empty
//  mappingSlots[S]                         4 B each: mapping index + 1, 0 = empty
//  freeSessions[capacity], freeMappings[capacity]   4 B each: stacks of free record indices
//  portBitmap[3 × 1024]      24 KiB: one bit per (protocol, external port) held by a mapping
//  listEnds[4 × 2]           head and tail of each timeout-class list
//  state                     counts, the clock, counters
// ```
//
// Keys: a mapping is (protocol, internal address, internal port); a session is (protocol,
// external port, remote address, remote port). Because a mapping owns its external port alone
// (no port overloading, one external address), the session key identifies the 5-tuple on both
// sides, so one session hash serves both directions: outbound finds the mapping first, then the
// session under the mapping's external port; inbound finds the session directly.
//
// Hashing: open addressing with linear probing over power-of-two tables at most half full.
// The hash is a wyhash-style folded 128-bit multiply of the packed key with two secrets derived
// from the seed, so a remote host cannot choose keys that collide without knowing the seed (it is
// not a cryptographic MAC; live mode must pass a random seed, replay a fixed one). Deletion is
// backward-shift (no tombstones), so probe sequences never lengthen with churn.
//
// Expiry: one intrusive doubly-linked list per timeout class (UDP, ICMP, TCP transitory, TCP
// established), ordered by last activity. The table clock never runs backwards (a timestamp older
// than one already seen counts as the latest one), so each list is sorted and its expired
// sessions are exactly a prefix of it. A refresh moves the session to the tail of its (possibly
// new) class list in O(1). `expire(now:)` pops heads while they are expired. `outbound` and
// `inbound` do the same first ("reaping"), so no expired session or mapping is ever visible to a
// lookup and behaviour never depends on when the engine calls `expire`. The read-only `peek*`
// lookups check expiry of what they find instead of removing it.
//
// Complexity: outbound/inbound/peek O(1) expected (one or two hash probes), plus the amortised
// O(1) reaping (each session is removed once); creating a mapping whose internal port is taken
// scans the port bitmap 64 ports per step, at most range/64 + 1 steps (1,009 for 1024…65535).
//
// Memory per session of capacity: 32 (session) + 16 (mapping) + 4 + 4 (free stacks) + 8…16 per
// hash table × 2 = 72…88 bytes, plus 24 KiB of bitmaps. 1 M sessions ≈ 88 MB.
//
// Hazards:
// - Reaping in `outbound`/`inbound` is amortised: a packet that arrives after many sessions
//   expired at once pays for removing all of them (each removal is tens of ns). Calling
//   `expire(now:)` once per batch spreads that work.
// - Indices are Int32, so capacity is limited to 2^28 sessions.
// - The port-choice key and the hash secrets come from `seed`: with a fixed seed the port choice
//   and the hash layout are predictable; live mode should pass a secret seed (`ipipd run` keeps
//   one, made from a random source, in a file so that a restart chooses the same ports).
// - `isExternalPortInUse` reads the bitmap directly and has no `now`: a mapping whose sessions
//   have all expired but were not yet reaped still reports its port as in use.

/// The transport protocols the NAT translates.
///
/// For ICMP echo the "port" is the echo identifier (internal: the workload's identifier;
/// external: the translated one) and the remote port is always 0.
public enum NATProtocol: UInt8, Sendable, CaseIterable {
    case icmp = 1
    case tcp = 6
    case udp = 17

    /// 0, 1, 2: the index of the protocol's port space.
    @inlinable var spaceIndex: Int {
        switch self {
        case .icmp: 0
        case .tcp: 1
        case .udp: 2
        }
    }
}

/// The TCP connection state the NAT tracks (a reduced RFC 6146 / RFC 7857 §2 machine).
public enum NATTCPState: UInt8, Sendable, CaseIterable {
    /// Created by an outbound SYN (or an outbound mid-stream packet); transitory timeout.
    case opening = 0
    /// An inbound ACK (or SYN+ACK) was seen on an opening session; established timeout.
    case established = 1
    /// A FIN was seen in either direction; transitory timeout.
    case closing = 2
    /// An RST was seen in either direction; kept for the transitory timeout (RFC 7857 §2.2).
    case reset = 3
}

/// Idle timeouts per timeout class, in whole seconds.
///
/// Defaults: UDP 300 s (RFC 4787 REQ-5 recommends ≥ 5 min), TCP established 7440 s (RFC 5382
/// REQ-5: 2 h 4 min), TCP transitory 240 s (RFC 5382 REQ-5 / RFC 7857 §2.1: 4 min),
/// ICMP query 60 s (RFC 5508 REQ-1). All must be positive.
public struct NATTimeouts: Sendable, Equatable {
    /// UDP sessions.
    public var udp: Int64
    /// TCP sessions in `established`.
    public var tcpEstablished: Int64
    /// TCP sessions in `opening`, `closing` or `reset`.
    public var tcpTransitory: Int64
    /// ICMP echo sessions.
    public var icmp: Int64

    /// Creates a timeout set; every parameter defaults to the recommended value.
    public init(udp: Int64 = 300, tcpEstablished: Int64 = 7440, tcpTransitory: Int64 = 240, icmp: Int64 = 60) {
        self.udp = udp
        self.tcpEstablished = tcpEstablished
        self.tcpTransitory = tcpTransitory
        self.icmp = icmp
    }
}

/// Plain-integer counters of one table (summed across workers on read).
public struct NATCounters: Sendable, Equatable {
    /// Sessions created.
    public var created: UInt64 = 0
    /// Sessions removed because they expired (by `expire` or by reaping in `outbound`/`inbound`).
    public var expired: UInt64 = 0
    /// Outbound packets refused because the table held `capacity` sessions.
    public var tableFull: UInt64 = 0
    /// Outbound packets refused because no external port was free for a new mapping.
    public var portsExhausted: UInt64 = 0
    /// Outbound packets that do not create a session by policy (a TCP RST with no session).
    public var refused: UInt64 = 0

    /// All zero.
    public init() {}
}

/// What `NATTable.outbound` decided for one packet.
public struct NATOutboundResult: Sendable, Equatable {
    /// The outcome.
    public enum Status: UInt8, Sendable, Equatable {
        /// The packet matched a live session (which was refreshed): translate it.
        case existing
        /// A session was created (and a mapping, if the internal endpoint had none): translate it.
        case created
        /// No session and the table holds `capacity` sessions: drop (NAT-16).
        case tableFull
        /// No session, no mapping, and every port of the range is taken: drop (NAT-16).
        case portsExhausted
        /// No session and the packet does not deserve one (a TCP RST): drop, do not forward
        /// untranslated (that would leak the workload address).
        case refused
    }

    /// The outcome.
    public var status: Status
    /// The external port (or ICMP identifier) to write; 0 unless `isTranslated`.
    public var externalPort: UInt16

    /// Creates a result.
    @inlinable
    public init(status: Status, externalPort: UInt16) {
        self.status = status
        self.externalPort = externalPort
    }

    /// True for `.existing` and `.created`: the engine rewrites the source to
    /// (node IP, `externalPort`).
    @inlinable public var isTranslated: Bool { status == .existing || status == .created }
}

/// The SNAT session table of one engine worker.
///
/// ## Semantics (decisions)
///
/// - **Mapping: endpoint-independent** (RFC 4787 REQ-1, RFC 5382 REQ-1, NAT-02), per protocol:
///   all sessions of one (protocol, internal address, internal port) share one external port
///   while at least one of them lives. Different internal endpoints never share an external port
///   of the same protocol (no port overloading, no port overlapping: NAT-03 is not used, NAT-04).
/// - **Filtering: address-and-port-dependent**, as Linux conntrack: an inbound packet is accepted
///   only if it matches a live session (protocol, external port, remote address, remote port).
///   RFC 4787 REQ-8 recommends EIF for transparency, but APDF is what a Calico node does today
///   with iptables MASQUERADE, and it admits nothing a workload did not talk to. Filtered
///   packets neither create nor refresh anything (NAT-09).
/// - **Port assignment**: the internal port is kept if it is inside `portRange` and free for the
///   protocol (port preservation, NAT-05/06); otherwise a pseudo-random free port inside
///   `portRange`: the search starts at a keyed hash of the internal endpoint (protocol, address,
///   port) with a secret derived from `seed` (RFC 6056's hash-based selection, so an outsider
///   cannot predict it) and walks the free-port bitmap 64 ports per step, so it is bounded by
///   range/64 + 1 steps. The choice depends on the seed and the endpoint, not on the order flows
///   come in: with the same seed, a table that starts empty (after a restart) gives an endpoint
///   the port it had before unless another mapping holds it, so its flows carry on (`ipipd run`
///   keeps its seed in a file for that). Replays reproduce exactly with a fixed seed. Parity is not preserved (RFC 7857
///   §8 allows this for dynamic mappings). ICMP identifiers have their own port space, same rule.
///   A port outside `portRange` is never handed out, preserved ports included.
/// - **Bounded**: at most `capacity` sessions (and so at most `capacity` mappings). Table full →
///   `.tableFull`; no free port for a new mapping → `.portsExhausted`; both counted, existing
///   sessions untouched (NAT-16). The table never evicts a live session to make room.
/// - **Timeouts** follow the session's class: UDP → `udp`, ICMP → `icmp`, TCP opening, closing or
///   reset → `tcpTransitory`, TCP established → `tcpEstablished`. **Outbound and inbound packets
///   both refresh** a session (RFC 4787 REQ-6 requires outbound refresh for UDP and allows
///   inbound refresh; refreshing on both keeps long server-push flows alive, and only packets
///   that passed APDF filtering can refresh). A mapping lives while one of its sessions lives.
/// - **Expiry edge**: a session whose last activity was at `t` is alive at any `now` with
///   `now − t < timeout` and expired when `now − t ≥ timeout` (alive at timeout − 1 ns, gone at
///   exactly timeout). Time is the engine's `Timestamp` in nanoseconds; the table clock never runs
///   backwards (an older `now` is treated as the newest seen).
/// - **TCP** (RFC 5382, RFC 7857 §2, NAT-10); the flags byte is the raw TCP flags byte:
///   - no session + outbound RST → `.refused` (not worth a session; the engine drops it);
///   - no session + outbound FIN → created in `closing`;
///   - no session + any other outbound packet → created in `opening` (SYN, or a mid-stream
///     pickup, e.g. after a worker restart: it gets the short transitory timeout until the peer
///     answers with an ACK);
///   - RST in either direction → `reset` (kept and still translated for `tcpTransitory`; the
///     sequence number is not checked, the table never sees it);
///   - outbound SYN without ACK on a `closing` or `reset` session → `opening` (tuple reuse);
///   - FIN in either direction on `opening`/`established` → `closing`;
///   - inbound packet with ACK (SYN+ACK included) on `opening` → `established`; simultaneous open
///     (inbound SYN without ACK) stays `opening` until the ACK;
///   - anything else leaves the state unchanged. Every matching packet refreshes the session.
///   An unsolicited inbound SYN finds no session and returns nil (NAT-11 handling is the engine's).
/// - **ICMP**: the remote port argument is ignored and stored as 0.
///
/// Not Sendable: one table per worker. Nothing allocates after `init`.
public final class NATTable {
    /// The default external port range, 61000…65535.
    ///
    /// It lies outside Linux's default ephemeral range 32768–60999
    /// (`net.ipv4.ip_local_port_range`), so the host's own connections from the node IP never
    /// collide with NAT ports, and above the well-known and registered listener ports most node
    /// services use. 4,536 ports per protocol.
    public static let defaultPortRange: ClosedRange<UInt16> = 61000...65535

    /// Maximum number of sessions.
    public let capacity: Int
    /// External ports (and ICMP identifiers) the table hands out.
    public let portRange: ClosedRange<UInt16>
    /// The idle timeouts.
    public let timeouts: NATTimeouts

    // Timeouts per class in nanoseconds, indexed by NATTimeoutClass.
    @usableFromInline let timeoutNanoseconds: UnsafeMutablePointer<Int64>
    @usableFromInline let sessions: UnsafeMutablePointer<NATSessionRecord>
    @usableFromInline let mappings: UnsafeMutablePointer<NATMappingRecord>
    @usableFromInline let sessionSlots: UnsafeMutablePointer<UInt32>
    @usableFromInline let mappingSlots: UnsafeMutablePointer<UInt32>
    @usableFromInline let slotMask: Int
    @usableFromInline let freeSessions: UnsafeMutablePointer<Int32>
    @usableFromInline let freeMappings: UnsafeMutablePointer<Int32>
    @usableFromInline let portBitmap: UnsafeMutablePointer<UInt64>
    @usableFromInline let listEnds: UnsafeMutablePointer<Int32>
    @usableFromInline let state: UnsafeMutablePointer<NATTableState>
    /// Scratch of `warm()`: the queued keys and, per key, the slot index being probed.
    @usableFromInline let warmKeys: UnsafeMutablePointer<NATWarmKey>
    @usableFromInline let warmSlots: UnsafeMutablePointer<Int>
    // Hash secrets (derived from the seed).
    @usableFromInline let sessionKey0: UInt64
    @usableFromInline let sessionKey1: UInt64
    @usableFromInline let mappingKey0: UInt64
    @usableFromInline let mappingKey1: UInt64
    /// The secret of the port choice (`allocatePort`): a keyed hash of the internal endpoint.
    @usableFromInline let portKey0: UInt64
    @usableFromInline let portKey1: UInt64

    /// Creates an empty table; this is the only place it allocates.
    /// - Parameters:
    ///   - capacity: Maximum number of sessions, 1…2^28.
    ///   - portRange: External ports to hand out (per protocol); must not include 0.
    ///   - timeouts: Idle timeouts; each must be positive.
    ///   - seed: Seeds the port choice and the hash secrets. Fixed for replay, secret for live mode.
    public init(
        capacity: Int,
        portRange: ClosedRange<UInt16> = NATTable.defaultPortRange,
        timeouts: NATTimeouts = .init(),
        seed: UInt64 = 0x5EED
    ) {
        precondition(capacity > 0 && capacity <= 1 << 28, "NAT capacity out of range")
        precondition(portRange.lowerBound > 0, "port 0 cannot be an external port")
        precondition(
            timeouts.udp > 0 && timeouts.tcpEstablished > 0 && timeouts.tcpTransitory > 0 && timeouts.icmp > 0,
            "NAT timeouts must be positive")
        self.capacity = capacity
        self.portRange = portRange
        self.timeouts = timeouts

        var slotCount = 16
        while slotCount < 2 * capacity { slotCount <<= 1 }
        slotMask = slotCount - 1

        var seeder = seed
        sessionKey0 = NATTable.splitMix(&seeder)
        sessionKey1 = NATTable.splitMix(&seeder) | 1
        mappingKey0 = NATTable.splitMix(&seeder)
        mappingKey1 = NATTable.splitMix(&seeder) | 1
        portKey0 = NATTable.splitMix(&seeder)
        portKey1 = NATTable.splitMix(&seeder) | 1

        timeoutNanoseconds = .allocate(capacity: NATTimeoutClass.count)
        timeoutNanoseconds.initialize(repeating: 0, count: NATTimeoutClass.count)
        for c in NATTimeoutClass.allCases {
            let seconds: Int64
            switch c {
            case .udp: seconds = timeouts.udp
            case .icmp: seconds = timeouts.icmp
            case .tcpTransitory: seconds = timeouts.tcpTransitory
            case .tcpEstablished: seconds = timeouts.tcpEstablished
            }
            let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            timeoutNanoseconds[Int(c.rawValue)] = overflow ? .max : ns
        }

        sessions = .allocate(capacity: capacity)
        sessions.initialize(repeating: NATSessionRecord(), count: capacity)
        mappings = .allocate(capacity: capacity)
        mappings.initialize(repeating: NATMappingRecord(), count: capacity)
        sessionSlots = .allocate(capacity: slotCount)
        sessionSlots.initialize(repeating: 0, count: slotCount)
        mappingSlots = .allocate(capacity: slotCount)
        mappingSlots.initialize(repeating: 0, count: slotCount)
        freeSessions = .allocate(capacity: capacity)
        freeMappings = .allocate(capacity: capacity)
        // Stacks pop from the top: put index 0 on top so records fill from the front.
        for i in 0..<capacity {
            freeSessions[i] = Int32(capacity - 1 - i)
            freeMappings[i] = Int32(capacity - 1 - i)
        }
        portBitmap = .allocate(capacity: 3 * 1024)
        portBitmap.initialize(repeating: 0, count: 3 * 1024)
        listEnds = .allocate(capacity: 2 * NATTimeoutClass.count)
        listEnds.initialize(repeating: -1, count: 2 * NATTimeoutClass.count)
        warmKeys = .allocate(capacity: NATTable.warmCapacity)
        warmKeys.initialize(repeating: NATWarmKey(), count: NATTable.warmCapacity)
        warmSlots = .allocate(capacity: NATTable.warmCapacity)
        warmSlots.initialize(repeating: -1, count: NATTable.warmCapacity)
        state = .allocate(capacity: 1)
        state.initialize(
            to: NATTableState(
                sessionCount: 0, mappingCount: 0, freeSessionCount: capacity, freeMappingCount: capacity,
                clock: .min, counters: NATCounters()))
    }

    deinit {
        timeoutNanoseconds.deallocate()
        sessions.deallocate()
        mappings.deallocate()
        sessionSlots.deallocate()
        mappingSlots.deallocate()
        freeSessions.deallocate()
        freeMappings.deallocate()
        portBitmap.deallocate()
        listEnds.deallocate()
        state.deallocate()
        warmKeys.deallocate()
        warmSlots.deallocate()
    }

    /// Number of sessions held (expired ones not yet reaped included).
    public var count: Int { state.pointee.sessionCount }
    /// Number of mappings (internal endpoints with an external port) held.
    public var mappingCount: Int { state.pointee.mappingCount }
    /// A snapshot of the counters.
    public var counters: NATCounters { state.pointee.counters }

    // MARK: - Per-packet API

    /// Looks up or creates the session of an outbound packet (workload → outside) and refreshes it.
    ///
    /// Reaps every expired session first (amortised O(1)).
    /// - Parameters:
    ///   - proto: The transport protocol.
    ///   - internalAddress: The workload's address (the packet's source).
    ///   - internalPort: The source port, or the ICMP echo identifier.
    ///   - remoteAddress: The destination address.
    ///   - remotePort: The destination port (ignored for ICMP).
    ///   - tcpFlags: The raw TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); ignored
    ///     unless `proto` is `.tcp`.
    ///   - now: The packet's time.
    /// - Returns: The status and, when translated, the external port.
    public func outbound(
        _ proto: NATProtocol,
        internalAddress: IPv4Address,
        internalPort: UInt16,
        remoteAddress: IPv4Address,
        remotePort: UInt16,
        tcpFlags: UInt8,
        now: Timestamp
    ) -> NATOutboundResult {
        let t = advanceClock(to: now)
        _ = reapExpired(at: t)
        let remotePort = proto == .icmp ? 0 : remotePort
        var mapping = findMapping(proto, internalAddress.rawValue, internalPort)
        if mapping >= 0 {
            let externalPort = mappings[Int(mapping)].externalPort
            let session = findSession(proto, externalPort, remoteAddress.rawValue, remotePort)
            if session >= 0 {
                if proto == .tcp {
                    let old = NATTCPState(rawValue: sessions[Int(session)].tcpState) ?? .opening
                    sessions[Int(session)].tcpState = NATTable.nextState(old, flags: tcpFlags, outbound: true).rawValue
                }
                touch(session, at: t)
                return NATOutboundResult(status: .existing, externalPort: externalPort)
            }
        }
        // A new session.
        var initialState = NATTCPState.opening
        if proto == .tcp {
            if tcpFlags & NATTable.rst != 0 {
                state.pointee.counters.refused &+= 1
                return NATOutboundResult(status: .refused, externalPort: 0)
            }
            if tcpFlags & NATTable.fin != 0 { initialState = .closing }
        }
        if state.pointee.sessionCount >= capacity {
            state.pointee.counters.tableFull &+= 1
            return NATOutboundResult(status: .tableFull, externalPort: 0)
        }
        if mapping < 0 {
            guard let port = allocatePort(proto, internalAddress.rawValue, preferring: internalPort) else {
                state.pointee.counters.portsExhausted &+= 1
                return NATOutboundResult(status: .portsExhausted, externalPort: 0)
            }
            mapping = insertMapping(proto, internalAddress.rawValue, internalPort, externalPort: port)
        }
        let externalPort = mappings[Int(mapping)].externalPort
        insertSession(
            mapping: mapping, proto: proto, remoteAddress: remoteAddress.rawValue, remotePort: remotePort,
            tcpState: initialState, at: t)
        state.pointee.counters.created &+= 1
        return NATOutboundResult(status: .created, externalPort: externalPort)
    }

    /// Looks up the session of an inbound packet (outside → node IP) and refreshes it.
    ///
    /// Address-and-port-dependent filtering: nil unless a live session matches all four fields.
    /// Reaps every expired session first (amortised O(1)).
    /// - Parameters:
    ///   - proto: The transport protocol.
    ///   - externalPort: The destination port, or the ICMP echo identifier.
    ///   - remoteAddress: The packet's source address.
    ///   - remotePort: The source port (ignored for ICMP).
    ///   - tcpFlags: The raw TCP flags byte; ignored unless `proto` is `.tcp`.
    ///   - now: The packet's time.
    /// - Returns: The internal endpoint to rewrite the destination to, or nil (drop).
    public func inbound(
        _ proto: NATProtocol,
        externalPort: UInt16,
        remoteAddress: IPv4Address,
        remotePort: UInt16,
        tcpFlags: UInt8,
        now: Timestamp
    ) -> (internalAddress: IPv4Address, internalPort: UInt16)? {
        let t = advanceClock(to: now)
        _ = reapExpired(at: t)
        let remotePort = proto == .icmp ? 0 : remotePort
        let session = findSession(proto, externalPort, remoteAddress.rawValue, remotePort)
        guard session >= 0 else { return nil }
        if proto == .tcp {
            let old = NATTCPState(rawValue: sessions[Int(session)].tcpState) ?? .opening
            sessions[Int(session)].tcpState = NATTable.nextState(old, flags: tcpFlags, outbound: false).rawValue
        }
        touch(session, at: t)
        let m = mappings[Int(sessions[Int(session)].mapping)]
        return (IPv4Address(rawValue: m.internalAddress), m.internalPort)
    }

    /// The external port of a live session, without refreshing or changing anything (for ICMP
    /// errors, which must not refresh or terminate a session: NAT-14).
    /// - Returns: The external port, or nil when no live session matches.
    public func peekOutbound(
        _ proto: NATProtocol,
        internalAddress: IPv4Address,
        internalPort: UInt16,
        remoteAddress: IPv4Address,
        remotePort: UInt16,
        now: Timestamp
    ) -> UInt16? {
        let remotePort = proto == .icmp ? 0 : remotePort
        let mapping = findMapping(proto, internalAddress.rawValue, internalPort)
        guard mapping >= 0 else { return nil }
        let externalPort = mappings[Int(mapping)].externalPort
        let session = findSession(proto, externalPort, remoteAddress.rawValue, remotePort)
        guard session >= 0, !isExpired(session, at: peekClock(now)) else { return nil }
        return externalPort
    }

    /// The internal endpoint of a live session, without refreshing or changing anything.
    /// - Returns: The internal endpoint, or nil when no live session matches.
    public func peekInbound(
        _ proto: NATProtocol,
        externalPort: UInt16,
        remoteAddress: IPv4Address,
        remotePort: UInt16,
        now: Timestamp
    ) -> (internalAddress: IPv4Address, internalPort: UInt16)? {
        let remotePort = proto == .icmp ? 0 : remotePort
        let session = findSession(proto, externalPort, remoteAddress.rawValue, remotePort)
        guard session >= 0, !isExpired(session, at: peekClock(now)) else { return nil }
        let m = mappings[Int(sessions[Int(session)].mapping)]
        return (IPv4Address(rawValue: m.internalAddress), m.internalPort)
    }

    /// Whether a mapping holds `port` for `proto` (sessions expired but not yet reaped count).
    public func isExternalPortInUse(_ proto: NATProtocol, _ port: UInt16) -> Bool {
        isPortTaken(proto, port)
    }

    /// Removes every expired session (and every mapping left without sessions).
    ///
    /// Amortised O(1) per session: pops only list heads, never scans the table.
    /// - Returns: The number of sessions removed.
    @discardableResult
    public func expire(now: Timestamp) -> Int {
        reapExpired(at: advanceClock(to: now))
    }

    // MARK: - Test and debugging helpers

    /// The TCP state of a session (ignores expiry), or nil when there is none.
    func tcpState(externalPort: UInt16, remoteAddress: IPv4Address, remotePort: UInt16) -> NATTCPState? {
        let session = findSession(.tcp, externalPort, remoteAddress.rawValue, remotePort)
        guard session >= 0 else { return nil }
        return NATTCPState(rawValue: sessions[Int(session)].tcpState)
    }

    // MARK: - TCP state machine

    @usableFromInline static let fin: UInt8 = 0x01
    @usableFromInline static let syn: UInt8 = 0x02
    @usableFromInline static let rst: UInt8 = 0x04
    @usableFromInline static let ack: UInt8 = 0x10

    /// The state after a packet with `flags` on a session in `state` (see the type's doc comment).
    static func nextState(_ state: NATTCPState, flags: UInt8, outbound: Bool) -> NATTCPState {
        if flags & rst != 0 { return .reset }
        if outbound, flags & (syn | ack | fin) == syn, state == .closing || state == .reset { return .opening }
        if flags & fin != 0 { return state == .reset ? .reset : .closing }
        if !outbound, flags & ack != 0, state == .opening { return .established }
        return state
    }

    /// The timeout class of a session.
    @inlinable
    static func timeoutClass(_ proto: NATProtocol, _ tcpState: NATTCPState) -> NATTimeoutClass {
        switch proto {
        case .udp: .udp
        case .icmp: .icmp
        case .tcp: tcpState == .established ? .tcpEstablished : .tcpTransitory
        }
    }

    /// One SplitMix64 step.
    @inlinable
    static func splitMix(_ state: inout UInt64) -> UInt64 { SplitMix64.step(&state) }
}

/// The timeout classes; each has its own expiry list.
@usableFromInline
enum NATTimeoutClass: UInt8, CaseIterable {
    case udp = 0, icmp, tcpTransitory, tcpEstablished
    @usableFromInline static let count = 4
}

/// One session (32 bytes). Free records are garbage.
@usableFromInline
struct NATSessionRecord {
    /// Last activity, table clock, nanoseconds.
    @usableFromInline var lastActivity: Int64 = 0
    @usableFromInline var remoteAddress: UInt32 = 0
    /// Index of the owning mapping.
    @usableFromInline var mapping: Int32 = -1
    /// Neighbours in the timeout-class list (-1: none).
    @usableFromInline var previous: Int32 = -1
    @usableFromInline var next: Int32 = -1
    @usableFromInline var remotePort: UInt16 = 0
    @usableFromInline var externalPort: UInt16 = 0
    /// `NATProtocol.rawValue`.
    @usableFromInline var proto: UInt8 = 0
    /// `NATTCPState.rawValue` (0 for UDP and ICMP).
    @usableFromInline var tcpState: UInt8 = 0
    /// `NATTimeoutClass.rawValue`.
    @usableFromInline var timeoutClass: UInt8 = 0
    @usableFromInline init() {}
}

/// One mapping (16 bytes): an internal endpoint and its external port.
@usableFromInline
struct NATMappingRecord {
    @usableFromInline var internalAddress: UInt32 = 0
    /// Live sessions using this mapping; the mapping is freed when it drops to 0.
    @usableFromInline var sessionCount: Int32 = 0
    @usableFromInline var internalPort: UInt16 = 0
    @usableFromInline var externalPort: UInt16 = 0
    /// `NATProtocol.rawValue`.
    @usableFromInline var proto: UInt8 = 0
    @usableFromInline init() {}
}

/// The scalar mutable state of a table, kept behind a pointer (no exclusivity checks).
@usableFromInline
struct NATTableState {
    @usableFromInline var sessionCount: Int
    @usableFromInline var mappingCount: Int
    @usableFromInline var freeSessionCount: Int
    @usableFromInline var freeMappingCount: Int
    /// The newest time seen, nanoseconds (`Int64.min` before the first call).
    @usableFromInline var clock: Int64
    @usableFromInline var counters: NATCounters
    /// Keys queued for `warm()`.
    @usableFromInline var warmCount: Int = 0
    /// Where the warming loads end up, so that they are not optimised away.
    @usableFromInline var warmSink: UInt64 = 0
}

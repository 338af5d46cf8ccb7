// The storage primitives of NATTable: hash tables, timeout lists, free stacks and the port
// bitmap, all over the raw memory allocated in `NATTable.init`. The structural invariants they rely
// on (checked by `invariantViolation()` in the tests):
// - every index stored in a slot, a list link, a free stack or a session's `mapping` field is in
//   0 ..< capacity;
// - a slot holds `index + 1` of a live record, or 0; the tables are at most half full, so every
//   probe loop meets an empty slot;
// - each live session is in exactly one list (its timeout class), each free record in no list;
// - a mapping's bit in `portBitmap` is set exactly while the mapping is live.

extension NATTable {
    // MARK: Clock and expiry

    /// Advances the table clock to `now` unless it is older, and returns the clock.
    @inline(__always)
    func advanceClock(to now: Timestamp) -> Int64 {
        let t = now.totalNanoseconds
        if t > state.pointee.clock { state.pointee.clock = t }
        return state.pointee.clock
    }

    /// The clock `advanceClock` would return, without advancing it.
    @inline(__always)
    func peekClock(_ now: Timestamp) -> Int64 {
        max(now.totalNanoseconds, state.pointee.clock)
    }

    /// Whether session `s` is expired at clock `t` (`t − lastActivity ≥ timeout`).
    @inline(__always)
    func isExpired(_ s: Int32, at t: Int64) -> Bool {
        // Safe: s is a live session index (< capacity) and its class < NATTimeoutClass.count.
        let record = sessions[Int(s)]
        let (idle, overflow) = t.subtractingReportingOverflow(record.lastActivity)
        return overflow || idle >= timeoutNanoseconds[Int(record.timeoutClass)]
    }

    /// Pops expired heads off every timeout list; returns how many sessions were removed.
    func reapExpired(at t: Int64) -> Int {
        var removed = 0
        for c in 0..<NATTimeoutClass.count {
            while true {
                // Safe: c < NATTimeoutClass.count and listEnds holds 2 entries per class.
                let head = listEnds[2 * c]
                guard head >= 0, isExpired(head, at: t) else { break }
                removeSession(head)
                removed &+= 1  // Safe: bounded by capacity.
            }
        }
        state.pointee.counters.expired &+= UInt64(removed)
        return removed
    }

    /// Sets the last activity of session `s` to `t` and moves it to the tail of the list of its
    /// (possibly new) timeout class.
    func touch(_ s: Int32, at t: Int64) {
        unlink(s)
        let record = sessions[Int(s)]
        let proto = NATProtocol(rawValue: record.proto) ?? .udp
        let tcp = NATTCPState(rawValue: record.tcpState) ?? .opening
        sessions[Int(s)].timeoutClass = NATTable.timeoutClass(proto, tcp).rawValue
        sessions[Int(s)].lastActivity = t
        append(s)
    }

    // MARK: Timeout lists

    /// Appends session `s` to the tail of the list of its timeout class.
    @inline(__always)
    func append(_ s: Int32) {
        let c = Int(sessions[Int(s)].timeoutClass)
        let tail = listEnds[2 * c + 1]
        sessions[Int(s)].previous = tail
        sessions[Int(s)].next = -1
        if tail >= 0 { sessions[Int(tail)].next = s } else { listEnds[2 * c] = s }
        listEnds[2 * c + 1] = s
    }

    /// Removes session `s` from the list of its timeout class.
    @inline(__always)
    func unlink(_ s: Int32) {
        let c = Int(sessions[Int(s)].timeoutClass)
        let previous = sessions[Int(s)].previous
        let next = sessions[Int(s)].next
        if previous >= 0 { sessions[Int(previous)].next = next } else { listEnds[2 * c] = next }
        if next >= 0 { sessions[Int(next)].previous = previous } else { listEnds[2 * c + 1] = previous }
        sessions[Int(s)].previous = -1
        sessions[Int(s)].next = -1
    }

    // MARK: Hashing

    /// wyhash-style mix: the folded 128-bit product of the key words xored with the secrets.
    @inline(__always)
    static func mix(_ a: UInt64, _ b: UInt64, _ k0: UInt64, _ k1: UInt64) -> UInt64 {
        let p = (a ^ k0).multipliedFullWidth(by: b ^ k1)
        let q = (p.high ^ p.low ^ k0).multipliedFullWidth(by: k1)
        return q.high ^ q.low
    }

    @inline(__always)
    func sessionHome(_ proto: UInt8, _ externalPort: UInt16, _ remoteAddress: UInt32, _ remotePort: UInt16) -> Int {
        let a = UInt64(remoteAddress) << 32 | UInt64(remotePort) << 16 | UInt64(externalPort)
        return Int(truncatingIfNeeded: NATTable.mix(a, UInt64(proto), sessionKey0, sessionKey1)) & slotMask
    }

    @inline(__always)
    func mappingHome(_ proto: UInt8, _ internalAddress: UInt32, _ internalPort: UInt16) -> Int {
        let a = UInt64(internalAddress) << 16 | UInt64(internalPort)
        return Int(truncatingIfNeeded: NATTable.mix(a, UInt64(proto), mappingKey0, mappingKey1)) & slotMask
    }

    @inline(__always)
    func sessionHome(of s: Int32) -> Int {
        let r = sessions[Int(s)]
        return sessionHome(r.proto, r.externalPort, r.remoteAddress, r.remotePort)
    }

    @inline(__always)
    func mappingHome(of m: Int32) -> Int {
        let r = mappings[Int(m)]
        return mappingHome(r.proto, r.internalAddress, r.internalPort)
    }

    // MARK: Session hash

    /// The index of the session with this key, or -1.
    func findSession(
        _ proto: NATProtocol, _ externalPort: UInt16, _ remoteAddress: UInt32, _ remotePort: UInt16
    ) -> Int32 {
        let p = proto.rawValue
        var i = sessionHome(p, externalPort, remoteAddress, remotePort)
        while true {
            // Safe: i ≤ slotMask; the table is at most half full, so the loop meets a 0.
            let slot = sessionSlots[i]
            if slot == 0 { return -1 }
            let s = Int32(truncatingIfNeeded: slot &- 1)  // Safe: slot ≥ 1.
            let r = sessions[Int(s)]
            if r.remoteAddress == remoteAddress && r.externalPort == externalPort && r.remotePort == remotePort
                && r.proto == p
            {
                return s
            }
            i = (i &+ 1) & slotMask
        }
    }

    /// Creates a session (its key must be absent) and puts it at the tail of its list.
    /// - Precondition: fewer than `capacity` sessions.
    func insertSession(
        mapping m: Int32, proto: NATProtocol, remoteAddress: UInt32, remotePort: UInt16, tcpState: NATTCPState,
        at t: Int64
    ) {
        precondition(state.pointee.freeSessionCount > 0, "NAT session records exhausted")
        state.pointee.freeSessionCount &-= 1  // Safe: > 0 checked above.
        let s = freeSessions[state.pointee.freeSessionCount]
        var r = NATSessionRecord()
        r.lastActivity = t
        r.remoteAddress = remoteAddress
        r.remotePort = remotePort
        r.mapping = m
        r.externalPort = mappings[Int(m)].externalPort
        r.proto = proto.rawValue
        r.tcpState = proto == .tcp ? tcpState.rawValue : 0
        r.timeoutClass = NATTable.timeoutClass(proto, tcpState).rawValue
        sessions[Int(s)] = r
        var i = sessionHome(of: s)
        while sessionSlots[i] != 0 { i = (i &+ 1) & slotMask }
        sessionSlots[i] = UInt32(s) &+ 1  // Safe: s < 2^28.
        append(s)
        mappings[Int(m)].sessionCount &+= 1
        state.pointee.sessionCount &+= 1
    }

    /// Removes session `s` from its list and the hash; frees its mapping when it was the last.
    func removeSession(_ s: Int32) {
        unlink(s)
        var i = sessionHome(of: s)
        let target = UInt32(s) &+ 1
        while sessionSlots[i] != target { i = (i &+ 1) & slotMask }
        NATTable.backwardShiftDelete(at: i, slots: sessionSlots, mask: slotMask) { self.sessionHome(of: $0) }
        let m = sessions[Int(s)].mapping
        sessions[Int(s)].mapping = -1
        freeSessions[state.pointee.freeSessionCount] = s
        state.pointee.freeSessionCount &+= 1
        state.pointee.sessionCount &-= 1
        mappings[Int(m)].sessionCount &-= 1
        if mappings[Int(m)].sessionCount == 0 { removeMapping(m) }
    }

    /// Empties slot `i` and moves later entries of its probe run back so that every entry stays
    /// reachable from its home slot (Knuth 6.4 Algorithm R).
    @inline(__always)
    static func backwardShiftDelete(
        at start: Int, slots: UnsafeMutablePointer<UInt32>, mask: Int, home: (Int32) -> Int
    ) {
        var hole = start
        var j = start
        while true {
            j = (j &+ 1) & mask
            let slot = slots[j]
            if slot == 0 { break }
            let k = home(Int32(truncatingIfNeeded: slot &- 1))
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j)
            if !stays {
                slots[hole] = slot
                hole = j
            }
        }
        slots[hole] = 0
    }

    // MARK: Mapping hash

    /// The index of the mapping of this internal endpoint, or -1.
    func findMapping(_ proto: NATProtocol, _ internalAddress: UInt32, _ internalPort: UInt16) -> Int32 {
        let p = proto.rawValue
        var i = mappingHome(p, internalAddress, internalPort)
        while true {
            // Safe: as in findSession.
            let slot = mappingSlots[i]
            if slot == 0 { return -1 }
            let m = Int32(truncatingIfNeeded: slot &- 1)
            let r = mappings[Int(m)]
            if r.internalAddress == internalAddress && r.internalPort == internalPort && r.proto == p { return m }
            i = (i &+ 1) & slotMask
        }
    }

    /// Creates a mapping holding `externalPort` (already marked in the bitmap) with no sessions.
    func insertMapping(
        _ proto: NATProtocol, _ internalAddress: UInt32, _ internalPort: UInt16, externalPort: UInt16
    )
        -> Int32
    {
        precondition(state.pointee.freeMappingCount > 0, "NAT mapping records exhausted")
        state.pointee.freeMappingCount &-= 1  // Safe: > 0 checked above.
        let m = freeMappings[state.pointee.freeMappingCount]
        var r = NATMappingRecord()
        r.internalAddress = internalAddress
        r.internalPort = internalPort
        r.externalPort = externalPort
        r.proto = proto.rawValue
        r.sessionCount = 0
        mappings[Int(m)] = r
        var i = mappingHome(of: m)
        while mappingSlots[i] != 0 { i = (i &+ 1) & slotMask }
        mappingSlots[i] = UInt32(m) &+ 1  // Safe: m < 2^28.
        state.pointee.mappingCount &+= 1
        return m
    }

    /// Removes mapping `m` (no sessions left) and releases its port.
    func removeMapping(_ m: Int32) {
        var i = mappingHome(of: m)
        let target = UInt32(m) &+ 1
        while mappingSlots[i] != target { i = (i &+ 1) & slotMask }
        NATTable.backwardShiftDelete(at: i, slots: mappingSlots, mask: slotMask) { self.mappingHome(of: $0) }
        let r = mappings[Int(m)]
        let proto = NATProtocol(rawValue: r.proto) ?? .udp
        setPort(proto, r.externalPort, taken: false)
        freeMappings[state.pointee.freeMappingCount] = m
        state.pointee.freeMappingCount &+= 1
        state.pointee.mappingCount &-= 1
    }

    // MARK: Ports

    @inline(__always)
    func isPortTaken(_ proto: NATProtocol, _ port: UInt16) -> Bool {
        // Safe: space index < 3, port >> 6 < 1024.
        portBitmap[proto.spaceIndex &* 1024 &+ Int(port >> 6)] & (1 << UInt64(port & 63)) != 0
    }

    @inline(__always)
    func setPort(_ proto: NATProtocol, _ port: UInt16, taken: Bool) {
        let w = proto.spaceIndex &* 1024 &+ Int(port >> 6)
        let bit: UInt64 = 1 << UInt64(port & 63)
        if taken { portBitmap[w] |= bit } else { portBitmap[w] &= ~bit }
    }

    /// Claims a free external port for a new mapping of `internalAddress`:`preferred`:
    /// `preferred` if it is in range and free, otherwise the first free port in range from a
    /// start the keyed hash of the endpoint picks; nil when every port of the range is taken.
    func allocatePort(_ proto: NATProtocol, _ internalAddress: UInt32, preferring preferred: UInt16) -> UInt16? {
        let lo = Int(portRange.lowerBound)
        let hi = Int(portRange.upperBound)
        if portRange.contains(preferred) && !isPortTaken(proto, preferred) {
            setPort(proto, preferred, taken: true)
            return preferred
        }
        // A start in [lo, hi] from the endpoint's hash (Lemire's multiply-shift, no modulo).
        let span = UInt64(hi - lo + 1)
        let key = UInt64(internalAddress) << 16 | UInt64(preferred)
        let hash = NATTable.mix(key, UInt64(proto.rawValue), portKey0, portKey1)
        let start = lo + Int(truncatingIfNeeded: hash.multipliedFullWidth(by: span).high)
        let firstWord = lo >> 6
        let lastWord = hi >> 6
        let base = proto.spaceIndex &* 1024
        var w = start >> 6
        let startBit = UInt64(start & 63)
        // The start word is visited twice: first its bits from `startBit` up, at the end the rest.
        for step in 0...(lastWord - firstWord + 1) {
            var free = ~portBitmap[base + w]
            // Keep only the bits of ports inside the range.
            if w == firstWord { free &= ~UInt64(0) << UInt64(lo & 63) }
            if w == lastWord { free &= ~UInt64(0) >> UInt64(63 - (hi & 63)) }
            if step == 0 {
                free &= ~UInt64(0) << startBit
            } else if w == start >> 6 {
                free &= startBit == 0 ? 0 : ~(~UInt64(0) << startBit)
            }
            if free != 0 {
                let port = UInt16(truncatingIfNeeded: w << 6 | free.trailingZeroBitCount)
                setPort(proto, port, taken: true)
                return port
            }
            w = w == lastWord ? firstWord : w + 1
        }
        return nil
    }
}

// MARK: - Warming the lines of a chunk

/// A packet whose NAT records `warm()` should bring into the cache.
@usableFromInline
struct NATWarmKey {
    /// `NATProtocol.rawValue`.
    @usableFromInline var proto: UInt8 = 0
    /// True: an outbound key (internal endpoint → mapping → session); false: an inbound key
    /// (external port → session → mapping).
    @usableFromInline var outbound: Bool = false
    /// Outbound: the internal port; inbound: the external port.
    @usableFromInline var port: UInt16 = 0
    @usableFromInline var remotePort: UInt16 = 0
    /// Outbound: the internal address.
    @usableFromInline var address: UInt32 = 0
    @usableFromInline var remoteAddress: UInt32 = 0
    @usableFromInline init() {}
}

extension NATTable {
    /// Keys per `warm()` pass.
    static let warmCapacity = 256

    /// Queues an outbound packet's key (as `outbound(...)` will look it up).
    @inline(__always)
    func warmOutbound(
        _ proto: NATProtocol, internalAddress: UInt32, internalPort: UInt16, remoteAddress: UInt32,
        remotePort: UInt16
    ) {
        let n = state.pointee.warmCount
        guard n < NATTable.warmCapacity else { return }
        // Safe: n < warmCapacity.
        warmKeys[n].proto = proto.rawValue
        warmKeys[n].outbound = true
        warmKeys[n].port = internalPort
        warmKeys[n].address = internalAddress
        warmKeys[n].remoteAddress = remoteAddress
        warmKeys[n].remotePort = proto == .icmp ? 0 : remotePort
        state.pointee.warmCount = n &+ 1
    }

    /// Queues an inbound packet's key (as `inbound(...)` will look it up).
    @inline(__always)
    func warmInbound(_ proto: NATProtocol, externalPort: UInt16, remoteAddress: UInt32, remotePort: UInt16) {
        let n = state.pointee.warmCount
        guard n < NATTable.warmCapacity else { return }
        // Safe: n < warmCapacity.
        warmKeys[n].proto = proto.rawValue
        warmKeys[n].outbound = false
        warmKeys[n].port = externalPort
        warmKeys[n].remoteAddress = remoteAddress
        warmKeys[n].remotePort = proto == .icmp ? 0 : remotePort
        state.pointee.warmCount = n &+ 1
    }

    /// Walks the chain of records each queued key will touch (mapping slot, mapping, session slot,
    /// session, its timeout-list neighbours), one level at a time over all keys, so that the
    /// cache misses of different packets overlap instead of being paid one after another when the
    /// packets are then processed (BENCHMARKS.md, "Engine per packet"). Reads only; follows only the home slot
    /// of each hash (a key further along its probe run is simply not warmed); clears the queue.
    func warm() {
        let n = state.pointee.warmCount
        state.pointee.warmCount = 0
        guard n > 0 else { return }
        var sink: UInt64 = 0
        // Level 1: outbound keys read their mapping slot; inbound keys already know their session home.
        for k in 0..<n {
            let key = warmKeys[k]
            if key.outbound {
                let slot = mappingSlots[mappingHome(key.proto, key.address, key.port)]
                warmSlots[k] = slot == 0 ? -1 : Int(slot &- 1)  // a mapping index
            } else {
                warmSlots[k] = sessionHome(key.proto, key.port, key.remoteAddress, key.remotePort)
            }
        }
        // Level 2: outbound keys read their mapping record and compute their session home.
        for k in 0..<n where warmKeys[k].outbound {
            let m = warmSlots[k]
            guard m >= 0 else { continue }
            let key = warmKeys[k]
            let r = mappings[m]  // Safe: a slot holds index + 1 of a live record, < capacity.
            warmSlots[k] =
                r.internalAddress == key.address && r.internalPort == key.port && r.proto == key.proto
                ? sessionHome(key.proto, r.externalPort, key.remoteAddress, key.remotePort) : -1
        }
        // Level 3: the session slots.
        for k in 0..<n {
            let home = warmSlots[k]
            guard home >= 0 else { continue }
            let slot = sessionSlots[home]  // Safe: home ≤ slotMask.
            warmSlots[k] = slot == 0 ? -1 : Int(slot &- 1)
        }
        // Level 4: the session records; remember a neighbour (touch rewrites both).
        for k in 0..<n {
            let s = warmSlots[k]
            guard s >= 0 else { continue }
            let r = sessions[s]  // Safe: a live session index.
            sink &+= UInt64(truncatingIfNeeded: r.lastActivity)
            warmSlots[k] = Int(r.previous)
            if r.next >= 0 { sink &+= UInt64(truncatingIfNeeded: sessions[Int(r.next)].lastActivity) }
            if !warmKeys[k].outbound, r.mapping >= 0 { sink &+= UInt64(mappings[Int(r.mapping)].internalAddress) }
        }
        // Level 5: the previous neighbours.
        for k in 0..<n {
            let p = warmSlots[k]
            guard p >= 0 else { continue }
            sink &+= UInt64(truncatingIfNeeded: sessions[p].lastActivity)  // Safe: list links are live indices.
        }
        state.pointee.warmSink &+= sink
    }
}

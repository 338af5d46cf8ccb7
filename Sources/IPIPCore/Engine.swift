/// Knobs of the engine that do not come from the cluster topology.
public struct EngineConfiguration: Sendable, Equatable {
    /// Outer TTL; 0 means "inherit" the inner TTL (Linux's `ttl 0`). Default 64, as VPP (ENC-10).
    public var outerTimeToLive: UInt8
    /// ICMP errors the engine may generate per second (token bucket, RFC 1812 §4.3.2.8).
    public var icmpRatePerSecond: Int
    /// Bucket depth: how many ICMP errors may leave back to back.
    public var icmpBurst: Int
    /// Verify the IPv4 header checksum of every input packet.
    public var verifyHeaderChecksums: Bool

    public init(outerTimeToLive: UInt8 = 64, icmpRatePerSecond: Int = 1000, icmpBurst: Int = 50,
                verifyHeaderChecksums: Bool = true) {
        self.outerTimeToLive = outerTimeToLive
        self.icmpRatePerSecond = icmpRatePerSecond
        self.icmpBurst = icmpBurst
        self.verifyHeaderChecksums = verifyHeaderChecksums
    }
}

/// The packet engine: a pure function of (topology, state, packet, time) → verdict, applied a
/// batch at a time. The live daemon, `ipipd replay` and the benchmarks all call this same code.
///
/// Egress pipeline (packets from local workloads, i.e. read from the TUN), per packet:
/// 1. validate the IPv4 header (version, IHL, lengths, checksum); trim link-layer padding;
/// 2. refuse TTL 0, martian sources and destinations, and workload-originated protocol 4;
/// 3. look the destination up in the topology's LPM table;
/// 4. outside every pool, a local block, or a remote block that needs no tunnel: forward natively;
///    in a pool without a block: drop + ICMP 3/1; a remote block that needs the tunnel: check
///    the loop rules (ENC-19/20), then the MTU: fits → write the outer header into the headroom;
///    too big with DF → drop + ICMP 3/4 with the tunnel MTU; too big without DF → fragment the
///    inner packet into the `generated` batch and encapsulate each fragment.
///
/// Output: each input slot gets a `PacketSide` (where it leaves, `.none` when dropped or consumed)
/// and a verdict; packets the engine creates (fragments, ICMP errors) are appended to `generated`
/// with the input index as their origin, in input order.
///
/// Threading: one engine per worker; not Sendable. The topology is swapped between batches by
/// `replaceTopology(_:)`. Memory: everything is allocated in `init`; the per-packet path
/// allocates nothing (no classes, arrays, strings or existentials are created per packet).
///
/// Hazards: the headroom of every input slot must be at least 20 bytes (PacketBatch guarantees
/// it); generated packets are bounded by `generated.capacity`, and a packet whose fragments do
/// not fit is dropped whole (`outputFull`) rather than sent in part.
public final class Engine {
    /// The compiled view of the cluster in use.
    public private(set) var topology: Topology
    /// The engine's own knobs.
    public let configuration: EngineConfiguration

    @usableFromInline let counters: UnsafeMutablePointer<UInt64>
    @usableFromInline let state: UnsafeMutablePointer<MutableState>

    @usableFromInline
    struct MutableState {
        /// Next IPv4 identification for packets we originate (outer headers, ICMP).
        var nextIdentification: UInt16 = 1
        /// ICMP token bucket, in billionths of a token.
        var icmpTokens: Int64 = 0
        /// Time of the last refill, ns since the epoch; `Int64.min` before the first.
        var icmpLastRefill: Int64 = .min
    }

    /// Creates an engine for a topology.
    public init(topology: Topology, configuration: EngineConfiguration = EngineConfiguration()) {
        self.topology = topology
        self.configuration = configuration
        counters = .allocate(capacity: CounterSlot.totalCount)
        counters.initialize(repeating: 0, count: CounterSlot.totalCount)
        state = .allocate(capacity: 1)
        state.initialize(to: MutableState())
    }

    deinit {
        counters.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// Installs a new topology; takes effect from the next batch.
    public func replaceTopology(_ topology: Topology) { self.topology = topology }

    /// A snapshot of all counters.
    public var counterSnapshot: EngineCounters { EngineCounters(counters) }

    @inline(__always) @usableFromInline
    func count(_ slot: CounterSlot, _ n: Int = 1) {
        counters[slot.rawValue] &+= UInt64(truncatingIfNeeded: n)
    }

    // MARK: Egress

    /// Runs every packet of `batch` through the egress path.
    /// - Parameters:
    ///   - batch: input packets (at least 20 bytes of headroom each); rewritten in place.
    ///   - generated: receives fragments and ICMP errors; emptied first.
    ///   - verdicts: receives one verdict per input slot; capacity ≥ `batch.count`.
    ///   The engine's clock is each packet's arrival time in the batch (`PacketBatch.time(of:)`).
    public func processEgress(_ batch: inout PacketBatch, generated: inout PacketBatch,
                              verdicts: inout VerdictBatch) {
        precondition(verdicts.capacity >= batch.count, "verdict batch smaller than the packet batch")
        generated.removeAll()
        let topology = self.topology
        for i in 0..<batch.count {
            let v = egress(i, in: &batch, generated: &generated, topology: topology, now: batch.time(of: i))
            verdicts[i] = v
        }
    }

    @inline(__always)
    func drop(_ reason: DropReason, length: Int, icmp: (UInt8, UInt8)? = nil) -> PacketVerdict {
        count(.droppedPackets)
        count(.droppedBytes, length)
        counters[CounterSlot.dropBase.rawValue &+ Int(reason.rawValue)] &+= 1
        return PacketVerdict(action: .dropped, dropReason: reason, outputCount: icmp == nil ? 0 : 1,
                             icmpType: icmp?.0, icmpCode: icmp?.1 ?? 0)
    }

    @inline(__always)
    static func isMartian(_ a: IPv4Address) -> Bool {
        a.isThisNetwork || a.isLoopback || a.isMulticast || a.isReserved
    }

    func egress(_ i: Int, in batch: inout PacketBatch, generated: inout PacketBatch,
                topology: Topology, now: Timestamp) -> PacketVerdict {
        batch.setSide(.none, of: i)
        let bytes = batch.packet(i)
        count(.egressPacketsIn)
        count(.egressBytesIn, bytes.count)

        let totalLength: Int
        switch IPv4Header.validate(UnsafeRawBufferPointer(bytes)) {
        case .notIPv4: return drop(.notIPv4, length: bytes.count)
        case .malformed: return drop(.malformedHeader, length: bytes.count)
        case .valid(_, let t): totalLength = t
        }
        if totalLength < bytes.count { batch.setLength(totalLength, of: i) }
        // Safe: validate() proved at least 20 bytes and a consistent IHL and total length.
        let header = IPv4Header(unchecked: bytes.baseAddress!)
        if configuration.verifyHeaderChecksums && !header.hasValidChecksum {
            return drop(.badHeaderChecksum, length: totalLength)
        }
        if header.timeToLive == 0 { return drop(.ttlExpired, length: totalLength) }
        let source = header.sourceAddress
        let destination = header.destinationAddress
        if Self.isMartian(source) { return drop(.invalidSource, length: totalLength) }
        if Self.isMartian(destination) { return drop(.invalidDestination, length: totalLength) }
        if header.protocolNumber == IPProtocolNumber.ipInIP { return drop(.nestedEncapsulation, length: totalLength) }

        guard let route = topology.route(for: destination) else {
            return forward(i, in: batch, length: totalLength)
        }
        switch route.kind {
        case .local:
            return forward(i, in: batch, length: totalLength)
        case .poolWithoutRoute:
            let sent = sendICMPError(about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                                     code: ICMPUnreachableCode.host, mtu: 0, origin: i, into: &generated,
                                     topology: topology, now: now)
            return drop(.noRoute, length: totalLength, icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.host) : nil)
        case .remoteWithoutAddress:
            let sent = sendICMPError(about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                                     code: ICMPUnreachableCode.host, mtu: 0, origin: i, into: &generated,
                                     topology: topology, now: now)
            return drop(.peerWithoutAddress, length: totalLength,
                        icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.host) : nil)
        case .vxlanPool:
            return drop(.vxlanPool, length: totalLength)
        case .remote:
            if !route.encapsulate { return forward(i, in: batch, length: totalLength) }
        }

        // Encapsulation.
        let node = topology.nodes[Int(route.nodeIndex)]
        guard let template = node.outerTemplate else { return drop(.peerWithoutAddress, length: totalLength) }
        if node.routeLoopsThroughTunnel { return drop(.peerRouteThroughTunnel, length: totalLength) }
        if source == topology.localAddress || source == template.destination {
            return drop(.sourceIsTunnelEndpoint, length: totalLength)
        }
        let mtu = topology.tunnelMTU
        if totalLength <= mtu {
            encapsulate(slot: i, of: batch, innerLength: totalLength, template: template, header: header)
            batch.setSide(.underlay, of: i)
            count(.encapsulatedPackets)
            count(.encapsulatedBytes, totalLength)
            count(.underlayPacketsOut)
            count(.underlayBytesOut, totalLength &+ 20)
            return PacketVerdict(action: .encapsulated, peer: template.destination, outputCount: 1)
        }
        if header.dontFragment {
            let sent = sendICMPError(about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                                     code: ICMPUnreachableCode.fragmentationNeeded, mtu: UInt16(truncatingIfNeeded: mtu),
                                     origin: i, into: &generated, topology: topology, now: now)
            return drop(.fragmentationNeeded, length: totalLength,
                        icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.fragmentationNeeded) : nil)
        }
        return fragmentAndEncapsulate(header: header, totalLength: totalLength, mtu: mtu, origin: i,
                                      template: template, into: &generated, now: now)
    }

    @inline(__always)
    func forward(_ i: Int, in batch: borrowing PacketBatch, length: Int) -> PacketVerdict {
        batch.setSide(.underlay, of: i)
        count(.forwardedPackets)
        count(.forwardedBytes, length)
        count(.underlayPacketsOut)
        count(.underlayBytesOut, length)
        return PacketVerdict(action: .forwarded, outputCount: 1)
    }

    @inline(__always)
    func takeIdentification() -> UInt16 {
        let id = state.pointee.nextIdentification
        state.pointee.nextIdentification = id &+ 1
        return id
    }

    /// Writes the outer header in front of the packet in slot `slot` (RFC 2003 §3.1, DESIGN.md §3):
    /// version 4, IHL 5, TOS copied whole from the inner header (DSCP copied; ECN copied, CE
    /// included: RFC 6040 normal mode), DF set, a fresh ID, TTL per configuration, protocol 4.
    @inline(__always)
    func encapsulate(slot: Int, of batch: borrowing PacketBatch, innerLength: Int, template: OuterHeaderTemplate,
                     header inner: IPv4Header) {
        let tos = inner.typeOfService
        let ttl = configuration.outerTimeToLive == 0 ? inner.timeToLive : configuration.outerTimeToLive
        let outerLength = UInt16(truncatingIfNeeded: innerLength &+ 20)
        let id = takeIdentification()
        let p = batch.prepend(20, to: slot)
        writeOuterHeader(at: p, template: template, tos: tos, ttl: ttl, totalLength: outerLength, identification: id)
    }

    @inline(__always)
    func writeOuterHeader(at p: UnsafeMutableRawPointer, template: OuterHeaderTemplate, tos: UInt8, ttl: UInt8,
                          totalLength: UInt16, identification: UInt16) {
        // Safe: the caller moved the packet start back by 20 bytes inside the slot's headroom.
        p.storeBytes(of: 0x45, as: UInt8.self)
        p.storeBytes(of: tos, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: totalLength.bigEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: identification.bigEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: IPv4Header.dontFragmentFlag.bigEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: ttl, toByteOffset: 8, as: UInt8.self)
        p.storeBytes(of: IPProtocolNumber.ipInIP, toByteOffset: 9, as: UInt8.self)
        p.storeBytes(of: template.source.rawValue.bigEndian, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: template.destination.rawValue.bigEndian, toByteOffset: 16, as: UInt32.self)
        let sum = template.constantSum &+ UInt32(tos) &+ UInt32(totalLength) &+ UInt32(identification)
            &+ UInt32(ttl) << 8
        p.storeBytes(of: (~InternetChecksum.fold(UInt64(sum))).bigEndian, toByteOffset: 10, as: UInt16.self)
    }

    /// ENC-16: splits the inner datagram into fragments that fit `mtu` (RFC 791 §3.2: offsets in
    /// 8-byte units, the first fragment keeps every option, later ones only options whose copy
    /// flag is set), then encapsulates each one. An inner packet that is itself a fragment keeps
    /// its offset base and its MF bit on the last piece.
    func fragmentAndEncapsulate(header: IPv4Header, totalLength: Int, mtu: Int, origin: Int,
                                template: OuterHeaderTemplate, into generated: inout PacketBatch,
                                now: Timestamp) -> PacketVerdict {
        let headerLength = header.headerLength
        let laterHeaderLength = Self.copiedOptionsHeaderLength(header)
        let firstData = (mtu &- headerLength) & ~7
        let laterData = (mtu &- laterHeaderLength) & ~7
        guard firstData >= 8, laterData >= 8 else { return drop(.cannotFragment, length: totalLength) }
        let payloadLength = totalLength &- headerLength
        let baseOffset = Int(header.fragmentOffset) &* 8
        let originalMoreFragments = header.moreFragments
        let start = generated.count
        var offset = 0
        var pieces = 0
        var outBytes = 0
        while offset < payloadLength {
            let first = offset == 0
            let h = first ? headerLength : laterHeaderLength
            let n = min(first ? firstData : laterData, payloadLength &- offset)
            let last = offset &+ n == payloadLength
            guard let dst = generated.appendSlot(length: h &+ n, origin: origin, time: now) else {
                generated.truncate(to: start)
                return drop(.outputFull, length: totalLength)
            }
            // Safe: the slot holds h + n bytes; the source ranges lie inside the validated datagram.
            if first {
                dst.copyMemory(from: header.base, byteCount: h)
            } else {
                Self.writeCopiedOptionsHeader(from: header, to: dst, headerLength: h)
            }
            dst.advanced(by: h).copyMemory(from: header.base.advanced(by: headerLength &+ offset), byteCount: n)
            let f = IPv4Header(unchecked: dst)
            f.totalLength = UInt16(truncatingIfNeeded: h &+ n)
            var flags = UInt16(truncatingIfNeeded: (baseOffset &+ offset) >> 3) & IPv4Header.fragmentOffsetMask
            if !last || originalMoreFragments { flags |= IPv4Header.moreFragmentsFlag }
            f.flagsAndFragmentOffset = flags
            f.updateChecksum()
            let slot = generated.count &- 1
            encapsulate(slot: slot, of: generated, innerLength: h &+ n, template: template, header: f)
            generated.setSide(.underlay, of: slot)
            pieces &+= 1
            outBytes &+= h &+ n &+ 20
            offset &+= n
        }
        count(.fragmentsCreated, pieces)
        count(.encapsulatedPackets)
        count(.encapsulatedBytes, totalLength)
        count(.underlayPacketsOut, pieces)
        count(.underlayBytesOut, outBytes)
        return PacketVerdict(action: .encapsulated, peer: template.destination,
                             outputCount: UInt16(truncatingIfNeeded: pieces))
    }

    /// The header length of non-first fragments: 20 plus the options whose copy flag is set,
    /// padded to 4 bytes.
    static func copiedOptionsHeaderLength(_ header: IPv4Header) -> Int {
        var n = 0
        forEachCopiedOption(header) { _, length in n &+= length }
        return 20 &+ ((n &+ 3) & ~3)
    }

    static func writeCopiedOptionsHeader(from header: IPv4Header, to dst: UnsafeMutableRawPointer, headerLength: Int) {
        dst.copyMemory(from: header.base, byteCount: 20)
        var at = 20
        forEachCopiedOption(header) { offset, length in
            dst.advanced(by: at).copyMemory(from: header.base.advanced(by: offset), byteCount: length)
            at &+= length
        }
        // Pad with End of Option List.
        while at < headerLength {
            dst.storeBytes(of: 0, toByteOffset: at, as: UInt8.self)
            at &+= 1
        }
        dst.storeBytes(of: 0x40 | UInt8(truncatingIfNeeded: headerLength >> 2), as: UInt8.self)
    }

    /// Calls `body(offset, length)` for each option with the copy flag (RFC 791 §3.1). Malformed
    /// option lists end the walk (the packet is still forwarded; only copies are affected).
    @inline(__always)
    static func forEachCopiedOption(_ header: IPv4Header, _ body: (Int, Int) -> Void) {
        let end = header.headerLength
        var at = 20
        while at < end {
            let type = header.base.load(fromByteOffset: at, as: UInt8.self)
            if type == 0 { break }  // End of Option List
            if type == 1 { at &+= 1; continue }  // No Operation, never copied
            guard at &+ 1 < end else { break }
            let length = Int(header.base.load(fromByteOffset: at &+ 1, as: UInt8.self))
            guard length >= 2, at &+ length <= end else { break }
            if type & 0x80 != 0 { body(at, length) }
            at &+= length
        }
    }

    // MARK: ICMP errors

    /// Takes one token from the ICMP bucket, refilled from the packet clock.
    @inline(__always)
    func takeICMPToken(now: Timestamp) -> Bool {
        let rate = Int64(configuration.icmpRatePerSecond)
        let capacity = Int64(configuration.icmpBurst) &* 1_000_000_000
        guard rate > 0, capacity > 0 else { return false }
        let t = now.totalNanoseconds
        var s = state.pointee
        if s.icmpLastRefill == .min {
            s.icmpTokens = capacity
        } else if t > s.icmpLastRefill {
            // Clamp the elapsed time so the multiplication cannot overflow.
            let elapsed = min(t &- s.icmpLastRefill, capacity / rate &+ 1)
            s.icmpTokens = min(capacity, s.icmpTokens &+ elapsed &* rate)
        }
        s.icmpLastRefill = max(s.icmpLastRefill, t)
        let ok = s.icmpTokens >= 1_000_000_000
        if ok { s.icmpTokens &-= 1_000_000_000 }
        state.pointee = s
        return ok
    }

    /// Builds an ICMP error about `offending` toward its source, into `generated` (side `.tun`).
    /// Follows RFC 1812 §4.3.2.7: never about an ICMP error, a non-first fragment, or a packet
    /// to/from a broadcast, multicast or invalid address; quotes as much of the offending datagram
    /// as fits in 576 bytes; rate-limited. Returns whether one was generated.
    func sendICMPError(about offending: IPv4Header, length: Int, type: UInt8, code: UInt8, mtu: UInt16, origin: Int,
                       into generated: inout PacketBatch, topology: Topology, now: Timestamp) -> Bool {
        if offending.fragmentOffset != 0 { return false }
        if Self.isMartian(offending.sourceAddress) || Self.isMartian(offending.destinationAddress) { return false }
        let headerLength = offending.headerLength
        if offending.protocolNumber == IPProtocolNumber.icmp {
            // An ICMP packet too short to show its type is treated as an error message: say nothing.
            guard length >= headerLength &+ 1 else { return false }
            if ICMPHeader.isError(type: offending.base.load(fromByteOffset: headerLength, as: UInt8.self)) { return false }
        }
        guard takeICMPToken(now: now) else {
            count(.icmpRateLimited)
            return false
        }
        let quote = min(length, 576 &- 28)
        let total = 28 &+ quote
        guard let p = generated.appendSlot(length: total, origin: origin, time: now) else { return false }
        // Safe: the slot holds `total` bytes: 20 (IP) + 8 (ICMP) + quote.
        let ip = IPv4Header(unchecked: p)
        p.storeBytes(of: 0x45, as: UInt8.self)
        // Precedence "internetwork control", as Linux marks the ICMP errors it sends.
        ip.typeOfService = 0xC0
        ip.totalLength = UInt16(truncatingIfNeeded: total)
        ip.identification = takeIdentification()
        ip.flagsAndFragmentOffset = 0
        ip.timeToLive = 64
        ip.protocolNumber = IPProtocolNumber.icmp
        ip.sourceAddress = topology.icmpSourceAddress
        ip.destinationAddress = offending.sourceAddress
        ip.updateChecksum()
        let icmp = ICMPHeader(unchecked: p.advanced(by: 20))
        icmp.type = type
        icmp.code = code
        icmp.checksum = 0
        icmp.identifier = 0
        icmp.sequenceOrMTU = mtu
        p.advanced(by: 28).copyMemory(from: offending.base, byteCount: quote)
        icmp.checksum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: p.advanced(by: 20), count: 8 &+ quote))
        generated.setSide(.tun, of: generated.count &- 1)
        count(.icmpErrorsSent)
        count(.tunPacketsOut)
        count(.tunBytesOut, total)
        return true
    }
}

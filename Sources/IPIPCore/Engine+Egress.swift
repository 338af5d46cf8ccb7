extension Engine {
    // MARK: Egress

    /// Runs every packet of `batch` through the egress path.
    /// - Parameters:
    ///   - batch: input packets (at least 20 bytes of headroom each); rewritten in place.
    ///   - generated: receives fragments and ICMP errors; emptied first.
    ///   - verdicts: receives one verdict per input slot; capacity ≥ `batch.count`.
    ///   The engine's clock is each packet's arrival time in the batch (`PacketBatch.time(of:)`).
    public func processEgress(
        _ batch: inout PacketBatch, generated: inout PacketBatch,
        verdicts: inout VerdictBatch
    ) {
        process(.egress, &batch, generated: &generated, verdicts: &verdicts)
    }

    /// Looks up the destinations of packets `start..<end` in one batched pass, so that the cache
    /// misses of independent lookups overlap instead of being paid one after another (the LPM
    /// table of 10k routes is larger than L2; see BENCHMARKS.md). Packets too short to carry an
    /// IPv4 header look up 0.0.0.0; they are dropped before the result is used.
    @inline(__always)
    func lookUpDestinations(of batch: borrowing PacketBatch, from start: Int, to end: Int, in topology: Topology) {
        for i in start..<end {
            let p = batch.packet(i)
            // Safe: the destination is read only when 20 bytes are present.
            lookupAddresses[i &- start] =
                p.count >= IPv4Header.minimumByteCount
                ? IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
                : .any
        }
        topology.table.lookup(
            UnsafeBufferPointer(start: lookupAddresses, count: end &- start),
            into: UnsafeMutableBufferPointer(start: lookupRoutes, count: end &- start),
            absent: Self.noRoute)
    }

    /// Queues the packets of `start..<end` that may be SNATed (no route: the destination is outside
    /// every pool and block; TCP, UDP or ICMP echo request, not a fragment) and warms their NAT
    /// records in one pass, so that the table's cache misses overlap across the chunk. Only reads;
    /// a packet that turns out not to be translated costs one wasted probe.
    @inline(__always)
    func warmOutboundNAT(of batch: borrowing PacketBatch, from start: Int, to end: Int, nat: NATTable) {
        for i in start..<end where lookupRoutes[i &- start] == Self.noRoute {
            guard let f = Self.peekNATFields(UnsafeRawBufferPointer(batch.packet(i))) else { continue }
            switch f.proto {
            case .tcp, .udp:
                nat.warmOutbound(
                    f.proto, internalAddress: f.source, internalPort: f.sourcePort,
                    remoteAddress: f.destination, remotePort: f.destinationPort)
            case .icmp where f.icmpType == ICMPType.echoRequest:
                nat.warmOutbound(
                    .icmp, internalAddress: f.source, internalPort: f.icmpIdentifier,
                    remoteAddress: f.destination, remotePort: 0)
            default:
                continue
            }
        }
        nat.warm()
    }

    func egress(
        _ i: Int, in batch: inout PacketBatch, generated: inout PacketBatch,
        topology: Topology, pathMTUs: PathMTUTable, nat: NATTable, routeIndex: UInt32,
        now: Timestamp
    ) -> PacketVerdict {
        batch.setSide(.none, of: i)
        let layout: Segmenter.Layout?
        switch takeOffload(of: i, in: batch) {
        case .success(let l):
            layout = l
        case .failure:
            let n = batch.packet(i).count
            count(.egressPacketsIn)
            count(.egressBytesIn, n)
            return drop(.invalidOffload, length: n)
        }
        let bytes = batch.packet(i)
        count(.egressPacketsIn, state.pointee.segments)
        count(.egressBytesIn, segmentedBytes(bytes.count, headers: state.pointee.segmentHeaderBytes))

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
        if Int(header.fragmentOffset) &* 8 &+ totalLength &- header.headerLength > 65535 {
            return drop(.invalidFragment, length: totalLength)
        }
        let source = header.sourceAddress
        let destination = header.destinationAddress
        if Self.isMartian(source) { return drop(.invalidSource, length: totalLength) }
        if Self.isMartian(destination) { return drop(.invalidDestination, length: totalLength) }
        if header.protocolNumber == IPProtocolNumber.ipInIP { return drop(.nestedEncapsulation, length: totalLength) }

        guard routeIndex != Self.noRoute else {
            // Outside every pool and block: SNAT for natOutgoing sources, else native.
            if sourceNeedsSNAT(source, topology: topology) {
                return translateOutbound(
                    i, in: batch, header: header, totalLength: totalLength, topology: topology,
                    nat: nat, generated: &generated, now: now)
            }
            return forward(i, in: batch, length: totalLength)
        }
        let route = topology.routes[Int(routeIndex)]
        switch route.kind {
        case .local:
            return forward(i, in: batch, length: totalLength)
        case .poolWithoutRoute:
            let sent = sendICMPError(
                about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                code: ICMPUnreachableCode.host, mtu: 0, origin: i, into: &generated,
                topology: topology, now: now)
            return drop(
                .noRoute, length: totalLength,
                icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.host) : nil)
        case .remoteWithoutAddress:
            let sent = sendICMPError(
                about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                code: ICMPUnreachableCode.host, mtu: 0, origin: i, into: &generated,
                topology: topology, now: now)
            return drop(
                .peerWithoutAddress, length: totalLength,
                icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.host) : nil)
        case .vxlanPool:
            return drop(.vxlanPool, length: totalLength)
        case .remote:
            if !route.encapsulate { return forward(i, in: batch, length: totalLength) }
        }

        // Encapsulation.
        // Fields read in place: a copy of the node would retain its name.
        guard let template = topology.nodes[Int(route.nodeIndex)].outerTemplate else {
            return drop(.peerWithoutAddress, length: totalLength)
        }
        if topology.nodes[Int(route.nodeIndex)].routeLoopsThroughTunnel {
            return drop(.peerRouteThroughTunnel, length: totalLength)
        }
        if source == topology.localAddress || source == template.destination {
            return drop(.sourceIsTunnelEndpoint, length: totalLength)
        }
        var mtu = topology.tunnelMTU
        let nodeIndex = Int(route.nodeIndex)
        let learned = pathMTUs.mtu[nodeIndex]
        if learned != 0 {
            // ENC-17: a learned path MTU (outer size) lowers the tunnel MTU until it expires.
            if now.totalNanoseconds < pathMTUs.expiry[nodeIndex] {
                mtu = min(mtu, Int(learned) &- Topology.encapsulationOverhead)
            } else {
                pathMTUs.mtu[nodeIndex] = 0
            }
        }
        // A super-packet fits when its largest segment does.
        let segmentLength = layout.map { $0.headerLength &+ Int(batch.offload(of: i).segmentSize) } ?? totalLength
        if segmentLength <= mtu {
            let segments = state.pointee.segments
            encapsulate(
                slot: i, of: batch, innerLength: totalLength, template: template, header: header,
                identifications: segments)
            batch.setSide(.underlay, of: i)
            countAction(.encapsulated, bytes: totalLength)
            count(.underlayPacketsOut, segments)
            count(.underlayBytesOut, segmentedBytes(totalLength &+ 20, headers: state.pointee.segmentHeaderBytes &+ 20))
            countPeer(nodeIndex, egress: true, bytes: totalLength)
            return PacketVerdict(
                action: .encapsulated, peer: template.destination,
                outputCount: UInt16(truncatingIfNeeded: segments))
        }
        // Segments too big for the tunnel (a learned path MTU below the TUN's): the sender is a
        // local stack that segments itself, so it is told the MTU whatever its DF bit; the
        // engine does not fragment segments of a super-packet (docs/decisions.md).
        if header.dontFragment || layout != nil {
            let sent = sendICMPError(
                about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                code: ICMPUnreachableCode.fragmentationNeeded, mtu: UInt16(truncatingIfNeeded: mtu),
                origin: i, into: &generated, topology: topology, now: now)
            return drop(
                .fragmentationNeeded, length: totalLength,
                icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.fragmentationNeeded) : nil)
        }
        let verdict = fragmentAndEncapsulate(
            header: header, totalLength: totalLength, mtu: mtu, origin: i,
            template: template, into: &generated, now: now)
        if verdict.action == .encapsulated { countPeer(nodeIndex, egress: true, bytes: totalLength) }
        return verdict
    }

    @inline(__always)
    func forward(_ i: Int, in batch: borrowing PacketBatch, length: Int) -> PacketVerdict {
        emitWhole(i, in: batch, side: .underlay, action: .forwarded, length: length)
    }

    /// Writes the outer header in front of the packet in slot `slot` (RFC 2003 §3.1):
    /// version 4, IHL 5, TOS copied whole from the inner header (DSCP copied; ECN copied, CE
    /// included: RFC 6040 normal mode), DF set, a fresh ID, TTL per configuration, protocol 4.
    /// A super-packet takes one fresh identification per segment (`identifications`); the
    /// segmenter numbers its segments' outer headers from the one written here.
    @inline(__always)
    func encapsulate(
        slot: Int, of batch: borrowing PacketBatch, innerLength: Int, template: OuterHeaderTemplate,
        header inner: IPv4Header, identifications: Int = 1
    ) {
        let tos = inner.typeOfService
        let ttl = configuration.outerTimeToLive == 0 ? inner.timeToLive : configuration.outerTimeToLive
        let outerLength = UInt16(truncatingIfNeeded: innerLength &+ 20)
        let id = takeIdentification(count: identifications)
        let p = batch.prepend(20, to: slot)
        writeOuterHeader(at: p, template: template, tos: tos, ttl: ttl, totalLength: outerLength, identification: id)
    }

    @inline(__always)
    func writeOuterHeader(
        at p: UnsafeMutableRawPointer, template: OuterHeaderTemplate, tos: UInt8, ttl: UInt8,
        totalLength: UInt16, identification: UInt16
    ) {
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
        let sum =
            template.constantSum &+ UInt32(tos) &+ UInt32(totalLength) &+ UInt32(identification)
            &+ UInt32(ttl) << 8
        p.storeBytes(of: (~InternetChecksum.fold(UInt64(sum))).bigEndian, toByteOffset: 10, as: UInt16.self)
    }

    /// ENC-16: splits the inner datagram into fragments that fit `mtu` (RFC 791 §3.2: offsets in
    /// 8-byte units, the first fragment keeps every option, later ones only options whose copy
    /// flag is set), then encapsulates each one. An inner packet that is itself a fragment keeps
    /// its offset base and its MF bit on the last piece.
    func fragmentAndEncapsulate(
        header: IPv4Header, totalLength: Int, mtu: Int, origin: Int,
        template: OuterHeaderTemplate, into generated: inout PacketBatch,
        now: Timestamp
    ) -> PacketVerdict {
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
        countAction(.encapsulated, bytes: totalLength)
        count(.underlayPacketsOut, pieces)
        count(.underlayBytesOut, outBytes)
        return PacketVerdict(
            action: .encapsulated, peer: template.destination,
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
            if type == 1 {
                at &+= 1
                continue
            }  // No Operation, never copied
            guard at &+ 1 < end else { break }
            let length = Int(header.base.load(fromByteOffset: at &+ 1, as: UInt8.self))
            guard length >= 2, at &+ length <= end else { break }
            if type & 0x80 != 0 { body(at, length) }
            at &+= length
        }
    }

}

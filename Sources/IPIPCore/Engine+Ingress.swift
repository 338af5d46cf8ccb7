/// The ingress path: packets arriving on the underlay for this node.
///
/// Order of checks for IP-in-IP (CVE-2020-10136, RFC 2003 §3 and RFC 6040 §4):
/// 1. the cheapest look at the outer header (20 bytes, version 4) to read protocol and addresses;
/// 2. protocol 4 to an address that is not this node's IP → `ipip_not_for_us`; from a source
///    outside the peer set → `ipip_unknown_peer`. Both before any other work, silently, with no
///    state touched (DEC-02, DEC-03, SEC-T1, SEC-T9);
/// 3. full outer validation (DEC-01), outer fragments dropped (DEC-04);
/// 4. inner validation (DEC-05): IPv4, IHL, lengths, checksum; nesting refused (ENC-21); martian or
///    local inner sources refused; LSRR/SSRR refused (DEC-11); TTL 0 refused (DEC-06);
/// 5. the inner destination must be a local workload or the local tunnel address (DEC-09), and the
///    inner source must belong to the sending peer: its blocks, its tunnel address, or its node IP;
///    for an `externalNodesCIDRList` sender, only its own address (DEC-10);
/// 6. ECN per RFC 6040's decapsulation table (DEC-07), the inner checksum patched incrementally;
/// 7. the outer header is stripped in place and the inner packet goes into the TUN.
/// Nothing decapsulated is ever re-encapsulated, translated, or sent to the underlay: the only
/// side a decapsulated packet can get is `.tun`.
///
/// Other packets to this node's IP: ICMP errors quoting one of our outer headers feed the per-peer
/// path MTU (ENC-17/18); replies to SNAT sessions are translated back (Engine+NAT.swift);
/// everything else is `unsolicited`. Packets to other addresses: `not_for_us`.
/// No ICMP is ever sent in answer to an underlay packet (DEC-12).
extension Engine {
    /// Runs every packet of `batch` (from the underlay) through the ingress path.
    /// - Parameters:
    ///   - batch: packets as received on the uplink (IPv4, link header removed); rewritten in place.
    ///   - generated: receives packets the engine creates; emptied first.
    ///   - verdicts: one verdict per input slot; capacity ≥ `batch.count`.
    public func processIngress(
        _ batch: inout PacketBatch, generated: inout PacketBatch,
        verdicts: inout VerdictBatch
    ) {
        process(.ingress, &batch, generated: &generated, verdicts: &verdicts)
    }

    /// Looks up the inner sources of the IP-in-IP packets among `start..<end` in one batched pass
    /// (as egress does for destinations): the source of a decapsulated packet comes from a remote
    /// block, spread over the LPM table, and these misses overlap when looked up together. A packet
    /// that is not IP-in-IP, or too short to hold an inner header, looks up 0.0.0.0; the result is
    /// used only after `decapsulate` has validated both headers, and it reads the same four bytes.
    @inline(__always)
    func lookUpInnerSources(of batch: borrowing PacketBatch, from start: Int, to end: Int, in topology: Topology) {
        for i in start..<end {
            let p = batch.packet(i)
            var address = IPv4Address.any
            if p.count >= IPv4Header.minimumByteCount, p[9] == IPProtocolNumber.ipInIP {
                let outerLength = Int(p[0] & 0x0F) &<< 2
                // Safe: read only when the inner source's four bytes lie within the packet.
                if outerLength >= IPv4Header.minimumByteCount, p.count >= outerLength &+ IPv4Header.minimumByteCount {
                    address = IPv4Address(
                        rawValue: UInt32(
                            bigEndian: UnsafeRawBufferPointer(p).loadUnaligned(
                                fromByteOffset: outerLength &+ 12, as: UInt32.self)))
                }
            }
            lookupAddresses[i &- start] = address
        }
        topology.table.lookup(
            UnsafeBufferPointer(start: lookupAddresses, count: end &- start),
            into: UnsafeMutableBufferPointer(start: lookupRoutes, count: end &- start),
            absent: Self.noRoute)
    }

    /// Queues the packets of `start..<end` that may be replies to SNAT sessions (to this node's
    /// IP; TCP, UDP or ICMP echo reply; not a fragment) and warms their NAT records in one pass
    /// (see `warmOutboundNAT`). Only reads.
    @inline(__always)
    func warmInboundNAT(
        of batch: borrowing PacketBatch, from start: Int, to end: Int, localAddress: IPv4Address,
        nat: NATTable
    ) {
        for i in start..<end {
            guard let f = Self.peekNATFields(UnsafeRawBufferPointer(batch.packet(i))),
                f.destination == localAddress.rawValue
            else { continue }
            switch f.proto {
            case .tcp, .udp:
                nat.warmInbound(
                    f.proto, externalPort: f.destinationPort, remoteAddress: f.source,
                    remotePort: f.sourcePort)
            case .icmp where f.icmpType == ICMPType.echoReply:
                nat.warmInbound(.icmp, externalPort: f.icmpIdentifier, remoteAddress: f.source, remotePort: 0)
            default:
                continue
            }
        }
        nat.warm()
    }

    func ingress(
        _ i: Int, in batch: inout PacketBatch, topology: Topology, pathMTUs: PathMTUTable, nat: NATTable,
        innerSourceRoute: UInt32, now: Timestamp
    ) -> PacketVerdict {
        batch.setSide(.none, of: i)
        if case .failure = takeOffload(of: i, in: batch) {
            let n = batch.packet(i).count
            count(.ingressPacketsIn)
            count(.ingressBytesIn, n)
            return drop(.invalidOffload, length: n)
        }
        let bytes = batch.packet(i)
        count(.ingressPacketsIn, state.pointee.segments)
        count(.ingressBytesIn, segmentedBytes(bytes.count, headers: state.pointee.segmentHeaderBytes))
        guard bytes.count >= IPv4Header.minimumByteCount else { return drop(.malformedHeader, length: bytes.count) }
        // Safe: at least 20 bytes, enough for the fixed header fields read before validation.
        let outer = IPv4Header(unchecked: bytes.baseAddress!)
        guard outer.version == 4 else { return drop(.notIPv4, length: bytes.count) }
        let destination = outer.destinationAddress
        let isTunnel = outer.protocolNumber == IPProtocolNumber.ipInIP
        var peer: UInt32 = 0
        if isTunnel {
            if destination != topology.localAddress { return drop(.ipipNotForUs, length: bytes.count) }
            guard let p = topology.peers.lookup(outer.sourceAddress) else {
                return drop(.ipipUnknownPeer, length: bytes.count)
            }
            peer = p
        } else if destination != topology.localAddress {
            return drop(.notForUs, length: bytes.count)
        }

        let totalLength: Int
        switch IPv4Header.validate(UnsafeRawBufferPointer(bytes)) {
        case .notIPv4: return drop(.notIPv4, length: bytes.count)
        case .malformed: return drop(.malformedHeader, length: bytes.count)
        case .valid(_, let t): totalLength = t
        }
        if totalLength < bytes.count { batch.setLength(totalLength, of: i) }
        if configuration.verifyHeaderChecksums && !outer.hasValidChecksum {
            return drop(.badHeaderChecksum, length: totalLength)
        }
        if isTunnel {
            if outer.isFragment { return drop(.outerFragment, length: totalLength) }
            return decapsulate(
                i, in: batch, outer: outer, totalLength: totalLength, peer: peer, topology: topology,
                innerSourceRoute: innerSourceRoute)
        }
        if outer.protocolNumber == IPProtocolNumber.icmp && isTunnelFeedback(outer, totalLength: totalLength) {
            return icmpFromUnderlay(outer, totalLength: totalLength, topology: topology, pathMTUs: pathMTUs, now: now)
        }
        return translateInbound(
            i, in: batch, header: outer, totalLength: totalLength, topology: topology, nat: nat,
            now: now)
    }

    // MARK: Decapsulation

    /// - Parameter innerSourceRoute: the route index of the inner source, looked up in the batch
    ///   pass (`lookUpInnerSources`), or `noRoute`.
    func decapsulate(
        _ i: Int, in batch: borrowing PacketBatch, outer: IPv4Header, totalLength: Int, peer: UInt32,
        topology: Topology, innerSourceRoute: UInt32
    ) -> PacketVerdict {
        let outerLength = outer.headerLength
        let available = totalLength &- outerLength
        guard available >= IPv4Header.minimumByteCount else { return drop(.innerMalformed, length: totalLength) }
        let inner = IPv4Header(unchecked: outer.base.advanced(by: outerLength))
        guard inner.version == 4 else { return drop(.innerNotIPv4, length: totalLength) }
        let innerHeaderLength = inner.headerLength
        let innerLength = Int(inner.totalLength)
        guard innerHeaderLength >= IPv4Header.minimumByteCount, innerLength >= innerHeaderLength,
            innerLength <= available
        else { return drop(.innerMalformed, length: totalLength) }
        // Safe from here: the inner header and its options lie within the validated outer datagram.
        if configuration.verifyHeaderChecksums && !inner.hasValidChecksum {
            return drop(.innerBadChecksum, length: totalLength)
        }
        if inner.protocolNumber == IPProtocolNumber.ipInIP { return drop(.nestedEncapsulation, length: totalLength) }

        let innerSource = inner.sourceAddress
        let innerDestination = inner.destinationAddress
        let sourceRoute = innerSourceRoute == Self.noRoute ? nil : topology.routes[Int(innerSourceRoute)]
        if Self.isMartian(innerSource) || innerSource == topology.localAddress || sourceRoute?.kind == .local {
            return drop(.innerSourceInvalid, length: totalLength)
        }
        guard !Self.isMartian(innerDestination), topology.route(for: innerDestination)?.kind == .local else {
            return drop(.innerDestinationNotLocal, length: totalLength)
        }
        // DEC-10: the inner source must be the sender's own: its node IP, or an address routed to it
        // (its blocks and tunnel address). An external node may only send as itself.
        let outerSource = outer.sourceAddress
        let fromPeer: Bool
        if peer == Topology.externalPeer {
            fromPeer = innerSource == outerSource
        } else {
            fromPeer = innerSource == outerSource || (sourceRoute.map { Int($0.nodeIndex) == Int(peer) } ?? false)
        }
        guard fromPeer else { return drop(.innerSourceNotFromPeer, length: totalLength) }
        if Self.hasSourceRoute(inner) { return drop(.sourceRouted, length: totalLength) }
        if inner.timeToLive == 0 { return drop(.ttlExpired, length: totalLength) }

        // DEC-07: RFC 6040 §4.2 decapsulation.
        let innerECN = inner.ecn
        let outerECN = outer.ecn
        guard let ecn = Self.decapsulatedECN(inner: innerECN, outer: outerECN) else {
            return drop(.ecnNotECTWithCE, length: totalLength)
        }
        if Self.isCurrentlyUnusedECN(inner: innerECN, outer: outerECN) { count(.ecnUnusedCombinations) }
        if ecn != innerECN {
            inner.setTypeOfServiceUpdatingChecksum((inner.typeOfService & 0xFC) | ecn.rawValue)
        }

        // Strip the outer header (and anything after the inner datagram) in place.
        batch.setLength(outerLength &+ innerLength, of: i)
        batch.removeFront(outerLength, of: i)
        batch.setSide(.tun, of: i)
        countAction(.decapsulated, bytes: totalLength)
        let segments = state.pointee.segments
        count(.tunPacketsOut, segments)
        count(.tunBytesOut, segmentedBytes(innerLength, headers: state.pointee.segmentHeaderBytes &- outerLength))
        if peer != Topology.externalPeer { countPeer(Int(peer), egress: false, bytes: totalLength) }
        return PacketVerdict(
            action: .decapsulated, peer: outerSource, outputCount: UInt16(truncatingIfNeeded: segments))
    }

    /// RFC 6040 §4.2, Figure 4: the ECN field leaving the decapsulator for (inner, outer), or nil
    /// for the one combination that must be dropped (Not-ECT inside, CE outside).
    @inlinable
    public static func decapsulatedECN(inner: ECN, outer: ECN) -> ECN? {
        switch (inner, outer) {
        case (.notECT, .ce): return nil
        case (.notECT, _): return .notECT
        case (_, .ce): return .ce
        case (.ce, _): return .ce
        case (.ect0, .ect1): return .ect1
        default: return inner
        }
    }

    /// The (!!!) and (!) cells of RFC 6040 Figure 4: combinations no compliant pair produces,
    /// counted so an operator can see a broken or hostile peer.
    @inlinable
    public static func isCurrentlyUnusedECN(inner: ECN, outer: ECN) -> Bool {
        switch (inner, outer) {
        case (.notECT, .ect0), (.notECT, .ect1), (.notECT, .ce), (.ect1, .ect0), (.ce, .ect1): return true
        default: return false
        }
    }

    /// Whether the header carries Loose (131) or Strict (137) Source and Record Route.
    static func hasSourceRoute(_ header: IPv4Header) -> Bool {
        let end = header.headerLength
        var at = 20
        while at < end {
            let type = header.base.load(fromByteOffset: at, as: UInt8.self)
            if type == 0 { return false }
            if type == 1 {
                at &+= 1
                continue
            }
            if type == 0x83 || type == 0x89 { return true }
            guard at &+ 1 < end else { return false }
            let length = Int(header.base.load(fromByteOffset: at &+ 1, as: UInt8.self))
            guard length >= 2 else { return false }
            at &+= length
        }
        return false
    }

    // MARK: ICMP from the underlay

    /// An ICMP error quoting an IP-in-IP packet: feedback about the tunnel, not about a NAT flow.
    @inline(__always)
    func isTunnelFeedback(_ ip: IPv4Header, totalLength: Int) -> Bool {
        let hl = ip.headerLength
        guard ip.fragmentOffset == 0,
            totalLength &- hl >= ICMPHeader.minimumByteCount &+ IPv4Header.minimumByteCount
        else { return false }
        let icmp = ICMPHeader(unchecked: ip.base.advanced(by: hl))
        guard ICMPHeader.isError(type: icmp.type) else { return false }
        let quoted = IPv4Header(unchecked: icmp.base.advanced(by: ICMPHeader.minimumByteCount))
        return quoted.version == 4 && quoted.protocolNumber == IPProtocolNumber.ipInIP
    }

    /// ICMP to this node's IP. An error quoting one of our outer headers (source us, protocol 4,
    /// destination a peer node) is tunnel feedback: frag-needed lowers that peer's path MTU
    /// (ENC-17; values below `minimumPathMTU` are raised to it, ENC-18); other errors are taken
    /// in without effect (Linux counts them, nobody relays them). Anything quoting a tunnel packet
    /// we did not send is `icmp_not_about_our_tunnel` (SEC-T11).
    func icmpFromUnderlay(
        _ ip: IPv4Header, totalLength: Int, topology: Topology, pathMTUs: PathMTUTable,
        now: Timestamp
    ) -> PacketVerdict {
        let hl = ip.headerLength
        guard totalLength &- hl >= ICMPHeader.minimumByteCount &+ IPv4Header.minimumByteCount, ip.fragmentOffset == 0
        else {
            return drop(.unsolicited, length: totalLength)
        }
        let icmp = ICMPHeader(unchecked: ip.base.advanced(by: hl))
        guard ICMPHeader.isError(type: icmp.type) else { return drop(.unsolicited, length: totalLength) }
        let quoted = IPv4Header(unchecked: icmp.base.advanced(by: ICMPHeader.minimumByteCount))
        guard quoted.version == 4, quoted.protocolNumber == IPProtocolNumber.ipInIP else {
            return drop(.unsolicited, length: totalLength)
        }
        guard quoted.sourceAddress == topology.localAddress,
            let node = topology.peers.lookup(quoted.destinationAddress), node != Topology.externalPeer
        else { return drop(.icmpNotAboutOurTunnel, length: totalLength) }
        if icmp.type == ICMPType.destinationUnreachable && icmp.code == ICMPUnreachableCode.fragmentationNeeded,
            lowerPathMTU(toNode: Int(node), reported: Int(icmp.sequenceOrMTU), now: now)
        {
            count(.pathMTUUpdates)
        }
        countAction(.consumed, bytes: totalLength)
        return PacketVerdict(action: .consumed, peer: quoted.destinationAddress)
    }
}

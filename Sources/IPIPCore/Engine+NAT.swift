/// SNAT for `natOutgoing` pools (RFC 4787, 5382, 5508; docs/decisions.md, "SNAT (natOutgoing)").
///
/// When: egress, the destination lies in no pool and no block, and the source lies in a pool with
/// `natOutgoing` (disabled pools count). The new source is this node's IP. The session state is
/// `NATTable`'s (endpoint-independent mapping, address-and-port-dependent filtering, port
/// preservation inside `natPortRange`, bounded, timeouts); this file rewrites packets:
/// - TCP and UDP: source address and port; ICMP echo requests: source address and identifier;
/// - ICMP errors a workload sends about a translated flow: the outer source and the embedded
///   (quoted) destination endpoint, so the remote sees its own packet as it sent it (NAT-14);
/// - the way back (`processIngress`): TCP, UDP and echo replies to (node IP, external port) that
///   match a live session get their destination translated back and go into the TUN; ICMP
///   errors quoting a translated packet get the outer destination and the quoted source restored.
/// Every checksum is patched incrementally (RFC 1624 eqn. 3): IPv4 headers, the TCP/UDP
/// pseudo-header and port, ICMP over every changed word; a UDP checksum of 0 (none) stays 0, and
/// a computed 0 is sent as 0xFFFF (RFC 768).
///
/// A reply (or an ICMP error) whose workload address is not local in the current topology is
/// dropped as `inner_destination_not_local`, as a decapsulated packet would be.
/// Not translated (dropped as `nat_untranslatable`): fragments (no ports after the first one;
/// there is no reassembly), protocols other than TCP, UDP and ICMP echo, and ICMP errors about
/// flows without a session. Table full or ports exhausted: dropped with a counter and a
/// rate-limited ICMP 3/13 to the workload (NAT-16); existing sessions are not affected.
extension Engine {
    /// Whether egress traffic from `source` to outside every pool is translated.
    @inline(__always)
    func sourceNeedsSNAT(_ source: IPv4Address, topology: Topology) -> Bool {
        guard let r = topology.table.lookup(source) else { return false }
        let pool = topology.routes[Int(r)].poolIndex
        return pool >= 0 && topology.pools[Int(pool)].natOutgoing
    }

    /// Where a transport's ports and checksum live, for the three protocols the NAT handles.
    @usableFromInline
    struct TransportLayout {
        var proto: NATProtocol
        /// Offset of the port (or ICMP identifier) that names our side of the flow.
        var localPortOffset: Int
        /// Offset of the remote side's port (-1 for ICMP: none).
        var remotePortOffset: Int
        var checksumOffset: Int
        /// Whether the checksum covers the IPv4 pseudo-header (TCP, UDP).
        var pseudoHeader: Bool
        /// The bytes needed to read the ports and the checksum.
        var minimumLength: Int
    }

    /// The layout of a transport header as sent by the workload side (`outbound`: our side is the
    /// source) or as received from the remote (`!outbound`: our side is the destination).
    @inline(__always)
    static func layout(protocolNumber: UInt8, outbound: Bool) -> TransportLayout? {
        switch protocolNumber {
        case IPProtocolNumber.tcp:
            return TransportLayout(
                proto: .tcp, localPortOffset: outbound ? 0 : 2, remotePortOffset: outbound ? 2 : 0,
                checksumOffset: 16, pseudoHeader: true, minimumLength: 20)
        case IPProtocolNumber.udp:
            return TransportLayout(
                proto: .udp, localPortOffset: outbound ? 0 : 2, remotePortOffset: outbound ? 2 : 0,
                checksumOffset: 6, pseudoHeader: true, minimumLength: 8)
        case IPProtocolNumber.icmp:
            return TransportLayout(
                proto: .icmp, localPortOffset: 4, remotePortOffset: -1, checksumOffset: 2,
                pseudoHeader: false, minimumLength: 8)
        default:
            return nil
        }
    }

    /// What the NAT warming passes read of a packet, straight from its bytes.
    struct NATFields {
        var proto: NATProtocol
        var source: UInt32
        var destination: UInt32
        /// TCP/UDP ports (the first and second 16-bit words of the transport header).
        var sourcePort: UInt16
        var destinationPort: UInt16
        /// ICMP type and echo identifier.
        var icmpType: UInt8
        var icmpIdentifier: UInt16
    }

    /// The NAT key fields of an unfragmented IPv4 TCP, UDP or ICMP packet with at least 8 transport
    /// bytes; nil for anything else. No validation beyond what makes the reads safe: the warming
    /// passes only use the result to bring cache lines in, and the engine validates later.
    @inline(__always)
    static func peekNATFields(_ p: UnsafeRawBufferPointer) -> NATFields? {
        guard p.count >= IPv4Header.minimumByteCount, p[0] >> 4 == 4 else { return nil }
        let hl = Int(p[0] & 0x0F) &<< 2
        // Safe: every read below is within hl + 8 ≤ count bytes.
        guard hl >= IPv4Header.minimumByteCount, p.count >= hl &+ 8,
            UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) & 0x3FFF == 0,
            let proto = NATProtocol(rawValue: p[9])
        else { return nil }
        return NATFields(
            proto: proto,
            source: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
            destination: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)),
            sourcePort: UInt16(bigEndian: p.loadUnaligned(fromByteOffset: hl, as: UInt16.self)),
            destinationPort: UInt16(bigEndian: p.loadUnaligned(fromByteOffset: hl &+ 2, as: UInt16.self)),
            icmpType: p[hl],
            icmpIdentifier: UInt16(bigEndian: p.loadUnaligned(fromByteOffset: hl &+ 4, as: UInt16.self)))
    }

    @inline(__always)
    static func load16(_ p: UnsafeMutableRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    static func store16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Patches a transport checksum: UDP's "no checksum" 0 stays 0 and a computed 0 becomes 0xFFFF.
    @inline(__always)
    static func patchTransportChecksum(
        _ l4: UnsafeMutableRawPointer, _ layout: TransportLayout,
        _ adjustment: ChecksumAdjustment
    ) {
        let old = load16(l4, layout.checksumOffset)
        if layout.proto == .udp && old == 0 { return }
        var new = adjustment.applied(to: old)
        if layout.proto == .udp && new == 0 { new = 0xFFFF }
        store16(l4, layout.checksumOffset, new)
    }

    /// The transport fields a NAT lookup needs, read once for either direction.
    struct NATFlowFields {
        var layout: TransportLayout
        var l4: UnsafeMutableRawPointer
        /// Our side's port (or ICMP identifier): the internal one outbound, the external inbound.
        var localPort: UInt16
        /// The remote side's port; 0 for ICMP.
        var remotePort: UInt16
        /// TCP flags; 0 for the others.
        var tcpFlags: UInt8
    }

    /// What a packet offers the NAT.
    enum NATFlow {
        /// A flow the table can look up.
        case flow(NATFlowFields)
        /// An ICMP error: its quoted packet is translated instead.
        case icmpError
        /// A fragment: never translated (no ports to read).
        case fragment
        /// Another protocol, a truncated transport header, or an ICMP message that is neither an
        /// error nor the echo of this direction (request outbound, reply inbound).
        case untranslatable
    }

    /// The prelude both directions share: fragment check, transport layout and length, the ICMP
    /// type, TCP flags and the two ports.
    @inline(__always)
    static func natFlow(_ header: IPv4Header, totalLength: Int, outbound: Bool) -> NATFlow {
        if header.isFragment { return .fragment }
        let hl = header.headerLength
        let l4 = header.base.advanced(by: hl)
        guard let layout = layout(protocolNumber: header.protocolNumber, outbound: outbound),
            totalLength &- hl >= layout.minimumLength
        else { return .untranslatable }
        var flags: UInt8 = 0
        if layout.proto == .icmp {
            let type = l4.load(as: UInt8.self)
            if ICMPHeader.isError(type: type) { return .icmpError }
            guard type == (outbound ? ICMPType.echoRequest : ICMPType.echoReply) else { return .untranslatable }
        } else if layout.proto == .tcp {
            flags = l4.load(fromByteOffset: 13, as: UInt8.self)
        }
        let remotePort = layout.remotePortOffset >= 0 ? load16(l4, layout.remotePortOffset) : 0
        return .flow(
            NATFlowFields(
                layout: layout, l4: l4, localPort: load16(l4, layout.localPortOffset),
                remotePort: remotePort, tcpFlags: flags))
    }

    // MARK: Egress: workload → outside

    func translateOutbound(
        _ i: Int, in batch: borrowing PacketBatch, header: IPv4Header, totalLength: Int,
        topology: Topology, nat: NATTable, generated: inout PacketBatch,
        now: Timestamp
    ) -> PacketVerdict {
        let f: NATFlowFields
        switch Self.natFlow(header, totalLength: totalLength, outbound: true) {
        case .flow(let fields): f = fields
        case .icmpError:
            return translateOutboundICMPError(
                i, in: batch, header: header, totalLength: totalLength,
                topology: topology, nat: nat, now: now)
        case .fragment, .untranslatable: return drop(.natUntranslatable, length: totalLength)
        }
        let layout = f.layout
        let l4 = f.l4
        let source = header.sourceAddress
        let internalPort = f.localPort
        let result = nat.outbound(
            layout.proto, internalAddress: source, internalPort: internalPort,
            remoteAddress: header.destinationAddress, remotePort: f.remotePort,
            tcpFlags: f.tcpFlags, now: now)
        switch result.status {
        case .existing, .created:
            break
        case .tableFull, .portsExhausted:
            let sent = sendICMPError(
                about: header, length: totalLength, type: ICMPType.destinationUnreachable,
                code: ICMPUnreachableCode.administrativelyProhibited, mtu: 0, origin: i,
                into: &generated, topology: topology, now: now)
            return drop(
                result.status == .tableFull ? .natTableFull : .natPortsExhausted, length: totalLength,
                icmp: sent ? (ICMPType.destinationUnreachable, ICMPUnreachableCode.administrativelyProhibited) : nil)
        case .refused:
            return drop(.natUntranslatable, length: totalLength)
        }
        let external = topology.localAddress
        var adjustment = ChecksumAdjustment()
        if layout.pseudoHeader { adjustment.replace(source.rawValue, with: external.rawValue) }
        adjustment.replace(internalPort, with: result.externalPort)
        Self.store16(l4, layout.localPortOffset, result.externalPort)
        Self.patchTransportChecksum(l4, layout, adjustment)
        header.setSourceAddressUpdatingChecksum(external)
        return emitWhole(i, in: batch, side: .underlay, action: .translated, length: totalLength)
    }

    /// A workload's ICMP error about a packet it received through the NAT (the quoted packet runs
    /// remote → workload): the outer source and the quoted destination become (node IP, external
    /// port) again (RFC 5508 REQ-3, NAT-14).
    func translateOutboundICMPError(
        _ i: Int, in batch: borrowing PacketBatch, header: IPv4Header, totalLength: Int,
        topology: Topology, nat: NATTable, now: Timestamp
    ) -> PacketVerdict {
        let hl = header.headerLength
        let icmp = header.base.advanced(by: hl)
        guard let q = Self.quotedFlow(icmp: icmp, icmpLength: totalLength &- hl, ourSideIsSource: false) else {
            return drop(.natUntranslatable, length: totalLength)
        }
        let internalAddress = header.sourceAddress
        guard q.quoted.destinationAddress == internalAddress,
            let externalPort = nat.peekOutbound(
                q.layout.proto, internalAddress: internalAddress, internalPort: q.localPort,
                remoteAddress: q.quoted.sourceAddress, remotePort: q.remotePort, now: now)
        else { return drop(.natUntranslatable, length: totalLength) }
        let external = topology.localAddress
        Self.rewriteQuoted(q, icmp: icmp, ourAddress: external, ourPort: externalPort, ourSideIsSource: false)
        header.setSourceAddressUpdatingChecksum(external)
        return emitWhole(i, in: batch, side: .underlay, action: .translated, length: totalLength)
    }

    // MARK: Ingress: outside → workload

    /// A packet to this node's IP that is not IP-in-IP and not tunnel feedback: a reply to a
    /// translated flow, or nothing we asked for.
    func translateInbound(
        _ i: Int, in batch: borrowing PacketBatch, header: IPv4Header, totalLength: Int,
        topology: Topology, nat: NATTable, now: Timestamp
    ) -> PacketVerdict {
        let f: NATFlowFields
        switch Self.natFlow(header, totalLength: totalLength, outbound: false) {
        case .flow(let fields): f = fields
        case .icmpError:
            return translateInboundICMPError(
                i, in: batch, header: header, totalLength: totalLength,
                topology: topology, nat: nat, now: now)
        case .fragment: return drop(.natUntranslatable, length: totalLength)
        case .untranslatable: return drop(.unsolicited, length: totalLength)
        }
        let layout = f.layout
        let l4 = f.l4
        let externalPort = f.localPort
        guard
            let target = nat.inbound(
                layout.proto, externalPort: externalPort, remoteAddress: header.sourceAddress,
                remotePort: f.remotePort, tcpFlags: f.tcpFlags, now: now)
        else { return drop(.unsolicited, length: totalLength) }
        guard Self.isLocalWorkload(target.internalAddress, topology: topology) else {
            return drop(.innerDestinationNotLocal, length: totalLength)
        }
        var adjustment = ChecksumAdjustment()
        if layout.pseudoHeader {
            adjustment.replace(header.destinationAddress.rawValue, with: target.internalAddress.rawValue)
        }
        adjustment.replace(externalPort, with: target.internalPort)
        Self.store16(l4, layout.localPortOffset, target.internalPort)
        Self.patchTransportChecksum(l4, layout, adjustment)
        header.setDestinationAddressUpdatingChecksum(target.internalAddress)
        return emitWhole(i, in: batch, side: .tun, action: .untranslated, length: totalLength)
    }

    /// Whether the TUN may get a packet for `address`: it routes to this node (a local block or
    /// the tunnel address), as for a decapsulated packet (DEC-09). A mapping's workload address
    /// may not: its source was in a natOutgoing pool but not local (a workload sending as another
    /// node's address), or its block moved to another node since the flow started. Found by the
    /// `engine` fuzz target (Tests/Fixtures/fuzz/engine/crashes/nat-reply-to-remote-workload).
    @inline(__always)
    static func isLocalWorkload(_ address: IPv4Address, topology: Topology) -> Bool {
        topology.route(for: address)?.kind == .local
    }

    /// An ICMP error from the outside quoting one of our translated packets (node IP, external
    /// port → remote): the outer destination and the quoted source become the workload's again.
    func translateInboundICMPError(
        _ i: Int, in batch: borrowing PacketBatch, header: IPv4Header, totalLength: Int,
        topology: Topology, nat: NATTable, now: Timestamp
    ) -> PacketVerdict {
        let hl = header.headerLength
        let icmp = header.base.advanced(by: hl)
        guard let q = Self.quotedFlow(icmp: icmp, icmpLength: totalLength &- hl, ourSideIsSource: true),
            q.quoted.sourceAddress == topology.localAddress,
            let target = nat.peekInbound(
                q.layout.proto, externalPort: q.localPort,
                remoteAddress: q.quoted.destinationAddress, remotePort: q.remotePort, now: now)
        else { return drop(.unsolicited, length: totalLength) }
        guard Self.isLocalWorkload(target.internalAddress, topology: topology) else {
            return drop(.innerDestinationNotLocal, length: totalLength)
        }
        Self.rewriteQuoted(
            q, icmp: icmp, ourAddress: target.internalAddress, ourPort: target.internalPort,
            ourSideIsSource: true)
        header.setDestinationAddressUpdatingChecksum(target.internalAddress)
        return emitWhole(i, in: batch, side: .tun, action: .untranslated, length: totalLength)
    }

    // MARK: Quoted packets in ICMP errors

    struct QuotedFlow {
        var quoted: IPv4Header
        var layout: TransportLayout
        /// The quoted transport header.
        var l4: UnsafeMutableRawPointer
        /// Bytes of the quoted transport header present in the error (RFC 792 promises 8).
        var l4Available: Int
        var localPort: UInt16
        var remotePort: UInt16
    }

    /// Parses the packet quoted by an ICMP error. `ourSideIsSource`: the quoted packet was sent
    /// by our side (so our port is its source port); otherwise it was sent to our side.
    static func quotedFlow(icmp: UnsafeMutableRawPointer, icmpLength: Int, ourSideIsSource: Bool) -> QuotedFlow? {
        guard icmpLength >= ICMPHeader.minimumByteCount &+ IPv4Header.minimumByteCount else { return nil }
        let quoted = IPv4Header(unchecked: icmp.advanced(by: ICMPHeader.minimumByteCount))
        let available = icmpLength &- ICMPHeader.minimumByteCount
        let qhl = quoted.headerLength
        guard quoted.version == 4, qhl >= IPv4Header.minimumByteCount, available >= qhl &+ 8,
            quoted.fragmentOffset == 0,
            let layout = Self.layout(protocolNumber: quoted.protocolNumber, outbound: ourSideIsSource)
        else { return nil }
        let l4 = quoted.base.advanced(by: qhl)
        if layout.proto == .icmp {
            // Only echo flows are tracked: our side sent requests, the remote sent replies.
            let type = l4.load(as: UInt8.self)
            guard type == (ourSideIsSource ? ICMPType.echoRequest : ICMPType.echoReply) else { return nil }
        }
        let localPort = load16(l4, layout.localPortOffset)
        let remotePort = layout.remotePortOffset >= 0 ? load16(l4, layout.remotePortOffset) : 0
        return QuotedFlow(
            quoted: quoted, layout: layout, l4: l4, l4Available: available &- qhl,
            localPort: localPort, remotePort: remotePort)
    }

    /// Rewrites our side's endpoint in a quoted packet and patches, incrementally, the quoted IPv4
    /// checksum, the quoted transport checksum when it was quoted, and the ICMP checksum over all
    /// of it (RFC 5508 REQ-3).
    static func rewriteQuoted(
        _ q: QuotedFlow, icmp: UnsafeMutableRawPointer, ourAddress: IPv4Address,
        ourPort: UInt16, ourSideIsSource: Bool
    ) {
        var outer = ChecksumAdjustment()
        let oldAddress = ourSideIsSource ? q.quoted.sourceAddress : q.quoted.destinationAddress
        let oldHeaderChecksum = q.quoted.headerChecksum
        if ourSideIsSource {
            q.quoted.setSourceAddressUpdatingChecksum(ourAddress)
        } else {
            q.quoted.setDestinationAddressUpdatingChecksum(ourAddress)
        }
        outer.replace(oldAddress.rawValue, with: ourAddress.rawValue)
        outer.replace(oldHeaderChecksum, with: q.quoted.headerChecksum)

        let oldPort = q.localPort
        store16(q.l4, q.layout.localPortOffset, ourPort)
        outer.replace(oldPort, with: ourPort)
        if q.l4Available >= q.layout.checksumOffset &+ 2 {
            var inner = ChecksumAdjustment()
            if q.layout.pseudoHeader { inner.replace(oldAddress.rawValue, with: ourAddress.rawValue) }
            inner.replace(oldPort, with: ourPort)
            let oldChecksum = load16(q.l4, q.layout.checksumOffset)
            patchTransportChecksum(q.l4, q.layout, inner)
            outer.replace(oldChecksum, with: load16(q.l4, q.layout.checksumOffset))
        }
        let icmpHeader = ICMPHeader(unchecked: icmp)
        icmpHeader.checksum = outer.applied(to: icmpHeader.checksum)
    }
}

/// Every reason the engine drops a packet. Each has a counter and a stable name that logs,
/// verdict files and metrics use; never rename a case's `name`, add new ones at the end.
public enum DropReason: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// The version nibble is not 4 (IPv6 and anything else from the TUN).
    case notIPv4 = 1
    /// IHL below 5, total length below the header or beyond the bytes received.
    case malformedHeader
    /// The IPv4 header checksum does not verify.
    case badHeaderChecksum
    /// TTL 0 on arrival: the host already used the last hop (RFC 2003 §3.1).
    case ttlExpired
    /// The source is 0.0.0.0/8, 127.0.0.0/8, multicast or reserved: never forwarded (RFC 1812 §5.3.7).
    case invalidSource
    /// The destination is 0.0.0.0/8, 127.0.0.0/8, multicast or reserved/broadcast.
    case invalidDestination
    /// The destination is inside a pool but in no known block: nowhere to send it (ICMP 3/1 sent).
    case noRoute
    /// The destination's block belongs to a node without an IPv4 address.
    case peerWithoutAddress
    /// The destination is in a pool with VXLAN enabled, which this dataplane does not route.
    case vxlanPool
    /// A workload sent IP protocol 4 itself; nesting is refused (ENC-21, SEC-T10).
    case nestedEncapsulation
    /// The source is this node's or the chosen peer's endpoint address (RFC 2003 §3.2, ENC-19).
    case sourceIsTunnelEndpoint
    /// The peer's own address routes through the tunnel (ENC-20).
    case peerRouteThroughTunnel
    /// Too big for the tunnel with DF set: dropped, ICMP 3/4 with the tunnel MTU sent (ENC-15).
    case fragmentationNeeded
    /// Too big with DF clear, but the header leaves no room for 8 bytes of data per fragment.
    case cannotFragment
    /// The buffer for generated packets (fragments, ICMP) was full.
    case outputFull
    /// Underlay: IP-in-IP whose outer destination is not this node's IP (DEC-02).
    case ipipNotForUs
    /// Underlay: IP-in-IP from a source outside the peer set (DEC-03, CVE-2020-10136).
    case ipipUnknownPeer
    /// Underlay: a fragmented outer packet (we and Linux always send DF; DEC-04).
    case outerFragment
    /// Underlay: the inner packet is shorter than an IPv4 header, has a bad IHL or total length (DEC-05).
    case innerMalformed
    /// Underlay: the inner IPv4 header checksum does not verify (DEC-05).
    case innerBadChecksum
    /// Underlay: the inner packet is not IPv4 (DEC-05).
    case innerNotIPv4
    /// Underlay: the inner source is martian or one of this node's own addresses (DEC-05).
    case innerSourceInvalid
    /// Underlay: the inner source does not belong to the sending peer (DEC-10, spoofing).
    case innerSourceNotFromPeer
    /// Underlay: the inner destination is not a local workload (DEC-09, the open-relay case); also
    /// a reply to a translated flow whose workload address is not (or no longer) local.
    case innerDestinationNotLocal
    /// Underlay: the inner packet carries a loose or strict source route option (DEC-11).
    case sourceRouted
    /// Underlay: Not-ECT inner with CE outer: RFC 6040 §4.2 says drop (DEC-07).
    case ecnNotECTWithCE
    /// Underlay: not IP-in-IP and not addressed to this node's IP.
    case notForUs
    /// Underlay: addressed to this node but matching no NAT session or tunnel (unsolicited).
    case unsolicited
    /// Underlay: an ICMP error about a tunnel packet we did not send (ENC-18, forged PTB).
    case icmpNotAboutOurTunnel
    /// SNAT: the session table is full (NAT-16); ICMP 3/13 sent.
    case natTableFull
    /// SNAT: no external port is free (NAT-16); ICMP 3/13 sent.
    case natPortsExhausted
    /// SNAT: a protocol or packet the NAT cannot translate (not TCP, UDP or ICMP echo; a fragment).
    case natUntranslatable
    /// A fragment whose offset plus payload passes 65,535 bytes: no datagram can be reassembled
    /// from it (RFC 791), and re-fragmenting it would wrap the 13-bit offset (found by fuzzing).
    case invalidFragment
    /// Segmentation offload metadata (from a TUN or packet-socket virtio header, or a capture of
    /// link type 147) that does not describe the packet: an unsupported GSO type, a transport
    /// other than the one announced, inconsistent lengths, or more than
    /// `SegmentationOffload.maximumSegmentCount` segments.
    case invalidOffload

    /// The stable snake_case name used in verdicts, logs and metrics.
    public var name: String {
        switch self {
        case .notIPv4: "not_ipv4"
        case .malformedHeader: "malformed_header"
        case .badHeaderChecksum: "bad_header_checksum"
        case .ttlExpired: "ttl_expired"
        case .invalidSource: "invalid_source"
        case .invalidDestination: "invalid_destination"
        case .noRoute: "no_route"
        case .peerWithoutAddress: "peer_without_address"
        case .vxlanPool: "vxlan_pool"
        case .nestedEncapsulation: "nested_encapsulation"
        case .sourceIsTunnelEndpoint: "source_is_tunnel_endpoint"
        case .peerRouteThroughTunnel: "peer_route_through_tunnel"
        case .fragmentationNeeded: "fragmentation_needed"
        case .cannotFragment: "cannot_fragment"
        case .outputFull: "output_full"
        case .ipipNotForUs: "ipip_not_for_us"
        case .ipipUnknownPeer: "ipip_unknown_peer"
        case .outerFragment: "outer_fragment"
        case .innerMalformed: "inner_malformed"
        case .innerBadChecksum: "inner_bad_checksum"
        case .innerNotIPv4: "inner_not_ipv4"
        case .innerSourceInvalid: "inner_source_invalid"
        case .innerSourceNotFromPeer: "inner_source_not_from_peer"
        case .innerDestinationNotLocal: "inner_destination_not_local"
        case .sourceRouted: "source_routed"
        case .ecnNotECTWithCE: "ecn_not_ect_with_ce"
        case .notForUs: "not_for_us"
        case .unsolicited: "unsolicited"
        case .icmpNotAboutOurTunnel: "icmp_not_about_our_tunnel"
        case .natTableFull: "nat_table_full"
        case .natPortsExhausted: "nat_ports_exhausted"
        case .natUntranslatable: "nat_untranslatable"
        case .invalidFragment: "invalid_fragment"
        case .invalidOffload: "invalid_offload"
        }
    }

    public var description: String { name }
}

/// What happened to one input packet.
public enum VerdictAction: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// Dropped; `PacketVerdict.dropReason` says why.
    case dropped = 0
    /// Wrapped in an outer IPv4 header (protocol 4) and sent to a peer on the underlay.
    case encapsulated
    /// Sent on natively, without encapsulation (CrossSubnet same subnet, Never, outside all pools).
    case forwarded
    /// Underlay: IP-in-IP from a peer, unwrapped and delivered into the TUN.
    case decapsulated
    /// Egress: source-NATed to the node IP (natOutgoing) and sent on natively.
    case translated
    /// Underlay: a reply to a NATed flow, translated back and delivered into the TUN.
    case untranslated
    /// Underlay: control information taken in (a valid ICMP frag-needed about our tunnel); nothing emitted.
    case consumed

    /// The stable name used in verdicts and metrics.
    public var name: String {
        switch self {
        case .dropped: "dropped"
        case .encapsulated: "encapsulated"
        case .forwarded: "forwarded"
        case .decapsulated: "decapsulated"
        case .translated: "translated"
        case .untranslated: "untranslated"
        case .consumed: "consumed"
        }
    }

    public var description: String { name }
}

/// The engine's decision about one input packet.
public struct PacketVerdict: Sendable, Equatable {
    /// What happened.
    public var action: VerdictAction
    /// Why it was dropped (`nil` unless `action == .dropped`).
    public var dropReason: DropReason?
    /// The outer destination (the peer node IP) when encapsulated, else 0.0.0.0.
    public var peer: IPv4Address
    /// Number of packets emitted for this input (fragments count one each; ICMP errors included).
    public var outputCount: UInt16
    /// The ICMP error generated toward the sender, as (type, code), if any.
    public var icmpType: UInt8?
    /// ICMP code, meaningful when `icmpType` is set.
    public var icmpCode: UInt8

    /// A verdict with the given action and nothing emitted.
    @inlinable
    public init(
        action: VerdictAction, dropReason: DropReason? = nil, peer: IPv4Address = .any,
        outputCount: UInt16 = 0, icmpType: UInt8? = nil, icmpCode: UInt8 = 0
    ) {
        self.action = action
        self.dropReason = dropReason
        self.peer = peer
        self.outputCount = outputCount
        self.icmpType = icmpType
        self.icmpCode = icmpCode
    }
}

import IPIPCore
import Pcap

#if canImport(Glibc)
import Glibc
#endif

/// What `ipipd gen` is asked to generate.
public struct GeneratorOptions: Sendable {
    /// IP total length of data packets.
    public enum Size: Sendable, Equatable, CustomStringConvertible {
        case fixed(Int)
        /// 7:4:1 of 64, 576 and 1500 bytes.
        case imix

        public init?(_ text: String) {
            if text == "imix" {
                self = .imix
                return
            }
            guard let n = Int(text), n >= 64, n <= 9000 else { return nil }
            self = .fixed(n)
        }
        public var description: String {
            switch self {
            case .fixed(let n): "\(n)"
            case .imix: "imix"
            }
        }
    }

    public var flows = 1000
    /// Remote nodes (the local node is one more).
    public var nodes = 20
    /// External (non-pool) destination addresses.
    public var external = 100
    /// Relative weights of TCP, UDP and ICMP echo flows.
    public var mix: (tcp: Int, udp: Int, icmp: Int) = (60, 30, 10)
    public var size = Size.imix
    /// Share of flows that go to external addresses (SNAT by natOutgoing).
    public var natShare = 0.3
    /// Packets in both captures together (a target: a TCP flow has at least 7).
    public var packets = 100_000
    public var seed: UInt64 = 1
    /// When above 1: every TCP data burst is that many full-sized segments: one super-packet on
    /// the TUN side (a TSO read, marked with its segment size) and that many MTU-sized segments
    /// in a row on the underlay (what the coalescer merges). 2…44 (64 KiB of payload at most).
    public var superPackets = 0

    public init() {}

    /// Parses `tcp=60,udp=30,icmp=10` (missing protocols weigh 0).
    public static func parseMix(_ text: String) -> (tcp: Int, udp: Int, icmp: Int)? {
        var m = (tcp: 0, udp: 0, icmp: 0)
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=")
            guard kv.count == 2, let v = Int(kv[1]), v >= 0 else { return nil }
            switch kv[0] {
            case "tcp": m.tcp = v
            case "udp": m.udp = v
            case "icmp": m.icmp = v
            default: return nil
            }
        }
        return m.tcp + m.udp + m.icmp > 0 ? m : nil
    }
}

/// A generated packet and the capture time it is stamped with.
public struct GeneratedPacket: Sendable, Equatable {
    public var time: Timestamp
    public var bytes: [UInt8]
    /// `.tcp` with its segment size for a super-packet (`GeneratorOptions.superPackets`).
    public var offload: SegmentationOffload = .none
}

/// The output of the generator: both captures, the manifests, and what the engine must do with it.
public struct GeneratedTraffic: Sendable {
    /// Packets from local workloads (the TUN side), in time order.
    public var tun: [GeneratedPacket] = []
    /// Packets arriving on the uplink (IP-in-IP from peers, replies to SNATed flows), in time order.
    public var underlay: [GeneratedPacket] = []
    /// Calico manifests (YAML) of the topology: pool, nodes, block affinities.
    public var manifests = ""
    /// The node the captures are for.
    public var localNode = "node-0"
    /// Flows per protocol and kind.
    public var flowCounts: [String: Int] = [:]
    /// The verdicts a replay must give: encapsulated (TUN, pool destinations), translated (TUN,
    /// external), decapsulated (underlay IP-in-IP), untranslated (underlay SNAT replies).
    public var expected: [VerdictAction: Int] = [:]
}

/// `ipipd gen`: synthetic workload traffic for a generated Calico topology.
///
/// Topology: one IPv4 pool 10.128.0.0/12 (`ipipMode: Always`, `natOutgoing: true`, blocks /26);
/// `node-0` (10.0.0.1/16, block 10.128.0.0/26) is the local node, `node-1`…`node-N` have node IPs
/// 10.0.0.2… and blocks 10.128.0.64/26…; block address .1 is a node's tunnel address, .2–.63 its
/// workloads. External destinations are 198.18.0.1… (RFC 2544's benchmarking range).
///
/// Flows: each picks a protocol by the mix weights and, with probability `natShare`, an external
/// destination (else a workload of a random remote node); the source is a random local workload.
/// TCP: SYN, SYN-ACK, ACK, data alternating out and in, FIN, FIN-ACK, ACK (control segments are
/// 40 bytes; a flow has at least one data segment). UDP and ICMP echo: request, reply, request…
/// Flows start at random in the first second; their packets are 200 µs apart (the segments of a
/// `superPackets` burst 1 µs apart, back to back as after a TSO send).
///
/// Sizes are IP total lengths of data packets; toward pool destinations they are capped at the
/// tunnel MTU (1480 = 1500 − 20, the MTU Calico gives workload interfaces), so the outer packet
/// is at most 1500 bytes; toward external destinations they are not capped.
///
/// Replies on the underlay side: pool flows come back IP-in-IP from the peer's node IP to the
/// local node IP; SNAT flows come back to the local node IP at the external port. That port is
/// known without running the engine: SNAT flows' source ports (and echo identifiers) are
/// distinct per protocol and inside the NAT port range (61000–65535), and the engine keeps a
/// source port that is in range and free (NATTable port assignment rule). So at most 4536 SNAT
/// flows per protocol; more is an error.
///
/// Determinism: SplitMix64 from the seed drives every choice; the same options give the same
/// bytes. Every IPv4, TCP, UDP and ICMP checksum is valid.
public enum TrafficGenerator {
    public static let localNodeAddress = IPv4Address(10, 0, 0, 1)
    static let poolBase: UInt32 = 0x0A80_0000  // 10.128.0.0/12
    static let externalBase: UInt32 = 0xC612_0000  // 198.18.0.0/15
    public static let natPortRange: ClosedRange<UInt16> = NATTable.defaultPortRange
    static let tunnelMTU = 1480
    static let startSeconds: Int64 = 1_764_000_000
    static let gapMicroseconds = 200

    public static let maximumNodes = (1 << 14) - 2
    public static let maximumExternal = (1 << 17) - 2

    static func nodeAddress(_ i: Int) -> IPv4Address { IPv4Address(rawValue: 0x0A00_0001 &+ UInt32(i)) }
    static func block(_ i: Int) -> UInt32 { poolBase &+ UInt32(i) &* 64 }

    public enum Failure: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self {
            case .invalid(let s): s
            }
        }
    }

    enum Proto { case tcp, udp, icmp }

    public static func generate(_ o: GeneratorOptions) throws(Failure) -> GeneratedTraffic {
        guard o.flows >= 1 else { throw .invalid("--flows must be at least 1") }
        guard o.nodes >= 1, o.nodes <= maximumNodes else { throw .invalid("--nodes must be 1…\(maximumNodes)") }
        guard o.natShare >= 0, o.natShare <= 1 else { throw .invalid("--nat-share must be 0…1") }
        guard o.natShare == 0 || (o.external >= 1 && o.external <= maximumExternal) else {
            throw .invalid("--external must be 1…\(maximumExternal) when --nat-share is above 0")
        }
        guard o.packets >= o.flows else { throw .invalid("--packets must be at least --flows") }
        guard o.superPackets == 0 || (2...44).contains(o.superPackets) else {
            throw .invalid("--super-packets must be 2…44")
        }

        var rng = SplitMix64(seed: o.seed)
        var out = GeneratedTraffic()
        out.manifests = manifests(nodes: o.nodes)
        // SNAT flows get distinct in-range ports per protocol, in a shuffled order.
        var natPorts: [[UInt16]] = (0..<3).map { _ in Array(natPortRange) }
        for k in 0..<3 {
            for i in stride(from: natPorts[k].count - 1, to: 0, by: -1) { natPorts[k].swapAt(i, rng.below(i + 1)) }
        }
        var natUsed = [0, 0, 0]
        let weightTotal = o.mix.tcp + o.mix.udp + o.mix.icmp
        let local = localNodeAddress
        var tun: [(t: Int64, f: Int, p: [UInt8], o: SegmentationOffload)] = []
        var underlay: [(t: Int64, f: Int, p: [UInt8], o: SegmentationOffload)] = []
        tun.reserveCapacity(o.packets / 2 + o.flows)
        underlay.reserveCapacity(o.packets / 2 + o.flows)

        for f in 0..<o.flows {
            let budget = o.packets / o.flows + (f < o.packets % o.flows ? 1 : 0)
            let w = rng.below(weightTotal)
            let proto: Proto = w < o.mix.tcp ? .tcp : (w < o.mix.tcp + o.mix.udp ? .udp : .icmp)
            let nat = rng.unit() < o.natShare
            let source = IPv4Address(rawValue: block(0) &+ 2 &+ UInt32(rng.below(62)))
            let peer = 1 + rng.below(o.nodes)
            let destination =
                nat
                ? IPv4Address(rawValue: externalBase &+ 1 &+ UInt32(rng.below(o.external)))
                : IPv4Address(rawValue: block(peer) &+ 2 &+ UInt32(rng.below(62)))
            let k = proto == .tcp ? 0 : (proto == .udp ? 1 : 2)
            let sourcePort: UInt16
            if nat {
                guard natUsed[k] < natPorts[k].count else {
                    throw .invalid(
                        "more than \(natPorts[k].count) SNAT flows of one protocol: the NAT port range "
                            + "\(natPortRange.lowerBound)–\(natPortRange.upperBound) cannot keep every source port "
                            + "(lower --flows or --nat-share)")
                }
                sourcePort = natPorts[k][natUsed[k]]
                natUsed[k] += 1
            } else {
                sourcePort = proto == .icmp ? UInt16(1 + rng.below(65535)) : UInt16(32768 + rng.below(61000 - 32768))
            }
            let destinationPort: UInt16 =
                switch proto {
                case .tcp: [80, 443, 8080, 5432, 6379][rng.below(5)]
                // No DNS port: filler payloads would not parse as DNS.
                case .udp: [443, 123, 8125, 9001, 10001][rng.below(5)]
                case .icmp: 0
                }
            let name = (proto == .tcp ? "tcp" : proto == .udp ? "udp" : "icmp") + (nat ? " snat" : " pool")
            out.flowCounts[name, default: 0] += 1

            let start = Int64(rng.below(1_000_000))
            var ident = UInt16(truncatingIfNeeded: rng.next())
            let replyIdent = UInt16(truncatingIfNeeded: rng.next())
            let maxSize = nat ? Int.max : tunnelMTU
            func dataSize() -> Int {
                let s: Int
                switch o.size {
                case .fixed(let n): s = n
                case .imix:
                    let r = rng.below(12)
                    s = r < 7 ? 64 : (r < 11 ? 576 : 1500)
                }
                return min(s, maxSize)
            }
            var step: Int64 = 0
            /// Microseconds since the flow's start: 200 µs between packets, 1 µs between the
            /// segments of a burst (they arrive back to back, as after a TSO send).
            var clock: Int64 = 0
            var last: Int64 = 0
            // `outbound`: from the workload (TUN side); else the reply (underlay side).
            // A super-packet (`offload`) takes `segments` identifications and counts as many.
            func emit(
                outbound: Bool, transport: [UInt8], protocolNumber: UInt8, offload: SegmentationOffload = .none,
                segments: Int = 1, backToBack: Bool = false
            ) {
                let t: Int64
                if backToBack {
                    t = last + 1
                } else {
                    t = start + clock
                    clock += Int64(gapMicroseconds)
                }
                last = t
                step += 1
                if outbound {
                    ident &+= 1
                    tun.append(
                        (
                            t, f,
                            ipv4(
                                source: source, destination: destination, protocolNumber: protocolNumber,
                                ttl: 63, identification: ident, payload: transport), offload
                        ))
                    ident &+= UInt16(truncatingIfNeeded: segments &- 1)
                    out.expected[nat ? .translated : .encapsulated, default: 0] += segments
                } else if nat {
                    underlay.append(
                        (
                            t, f,
                            ipv4(
                                source: destination, destination: local, protocolNumber: protocolNumber,
                                ttl: 52, identification: replyIdent &+ UInt16(truncatingIfNeeded: step),
                                payload: transport), .none
                        ))
                    out.expected[.untranslated, default: 0] += 1
                } else {
                    let inner = ipv4(
                        source: destination, destination: source, protocolNumber: protocolNumber, ttl: 63,
                        identification: replyIdent &+ UInt16(truncatingIfNeeded: step), payload: transport)
                    underlay.append(
                        (
                            t, f,
                            ipv4(
                                source: nodeAddress(peer), destination: local, protocolNumber: 4, ttl: 64,
                                identification: replyIdent &+ UInt16(truncatingIfNeeded: step) &+ 0x8000,
                                payload: inner), .none
                        ))
                    out.expected[.decapsulated, default: 0] += 1
                }
            }
            // The reply's addresses as the workload sees them: for SNAT the engine rewrites the
            // destination back; the transport checksum is computed for what is on the wire.
            let replyDestination = nat ? local : source

            switch proto {
            case .tcp:
                var clientSeq = UInt32(truncatingIfNeeded: rng.next())
                var serverSeq = UInt32(truncatingIfNeeded: rng.next())
                let data = max(1, budget - 6)
                func segment(
                    outbound: Bool, flags: UInt8, payload: Int, offload: SegmentationOffload = .none,
                    segments: Int = 1, backToBack: Bool = false
                ) {
                    let s =
                        outbound
                        ? tcp(
                            source: source, destination: destination, sourcePort: sourcePort,
                            destinationPort: destinationPort,
                            seq: clientSeq, ack: serverSeq, flags: flags, payload: payload)
                        : tcp(
                            source: destination, destination: replyDestination, sourcePort: destinationPort,
                            destinationPort: sourcePort, seq: serverSeq, ack: clientSeq, flags: flags, payload: payload)
                    emit(
                        outbound: outbound, transport: s, protocolNumber: 6, offload: offload, segments: segments,
                        backToBack: backToBack)
                    let advance = UInt32(payload) &+ (flags & 0x03 != 0 ? 1 : 0)  // SYN and FIN count one
                    if outbound { clientSeq &+= advance } else { serverSeq &+= advance }
                }
                segment(outbound: true, flags: 0x02, payload: 0)  // SYN
                segment(outbound: false, flags: 0x12, payload: 0)  // SYN-ACK
                segment(outbound: true, flags: 0x10, payload: 0)  // ACK
                if o.superPackets > 1 {
                    // Bulk: a TSO super-packet out, a run of full segments back (MSS of the MTU the
                    // data travels at: the tunnel's, or 1500 natively).
                    let n = o.superPackets
                    let mss = (nat ? 1500 : tunnelMTU) - 40
                    for i in 0..<data {
                        if i % 2 == 0 {
                            segment(
                                outbound: true, flags: 0x18, payload: n * mss,
                                offload: SegmentationOffload(kind: .tcp, segmentSize: UInt16(mss)), segments: n)
                        } else {
                            for k in 0..<n {
                                segment(
                                    outbound: false, flags: k == n - 1 ? 0x18 : 0x10, payload: mss, backToBack: k > 0)
                            }
                        }
                    }
                } else {
                    for i in 0..<data { segment(outbound: i % 2 == 0, flags: 0x18, payload: dataSize() - 40) }
                }
                segment(outbound: true, flags: 0x11, payload: 0)  // FIN-ACK
                segment(outbound: false, flags: 0x11, payload: 0)  // FIN-ACK
                segment(outbound: true, flags: 0x10, payload: 0)  // ACK
            case .udp:
                for i in 0..<budget {
                    let outbound = i % 2 == 0
                    let size = dataSize() - 28
                    let s =
                        outbound
                        ? udp(
                            source: source, destination: destination, sourcePort: sourcePort,
                            destinationPort: destinationPort, payload: size)
                        : udp(
                            source: destination, destination: replyDestination, sourcePort: destinationPort,
                            destinationPort: sourcePort, payload: size)
                    emit(outbound: outbound, transport: s, protocolNumber: 17)
                }
            case .icmp:
                for i in 0..<budget {
                    emit(
                        outbound: i % 2 == 0,
                        transport: echo(
                            reply: i % 2 == 1, identifier: sourcePort,
                            sequence: UInt16(truncatingIfNeeded: i / 2 + 1), payload: dataSize() - 28),
                        protocolNumber: 1)
                }
            }
        }
        // Time order; within the same microsecond, flow order, then generation order (stable).
        func ordered(_ list: [(t: Int64, f: Int, p: [UInt8], o: SegmentationOffload)]) -> [GeneratedPacket] {
            list.enumerated().sorted { a, b in
                (a.element.t, a.element.f, a.offset) < (b.element.t, b.element.f, b.offset)
            }
            .map { e in
                let t = e.element.t
                return GeneratedPacket(
                    time: Timestamp(seconds: startSeconds + t / 1_000_000, nanoseconds: UInt32(t % 1_000_000) * 1000),
                    bytes: e.element.p, offload: e.element.o)
            }
        }
        out.tun = ordered(tun)
        out.underlay = ordered(underlay)
        return out
    }

    /// Writes the captures (raw IPv4 pcap; a capture holding super-packets gets link type 147,
    /// each record behind its virtio header as a TUN with TSO reads it) and the manifests.
    public static func write(
        _ traffic: GeneratedTraffic, out: String, underlayOut: String?, manifestsOut: String?
    ) throws {
        func dump(_ packets: [GeneratedPacket], _ path: String) throws {
            let virtio = packets.contains { $0.offload != .none }
            let w = try PcapWriter(path: path, linkType: virtio ? .virtioNet : .raw)
            var record = [UInt8](repeating: 0, count: 65536 + VirtioNetHeader.byteCount)
            for p in packets {
                guard virtio else {
                    p.bytes.withUnsafeBytes { w.write($0, timestamp: p.time) }
                    continue
                }
                let header =
                    p.offload.isSegmented
                    ? VirtioNetHeader(
                        flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 40,
                        gsoSize: p.offload.segmentSize, checksumStart: 20, checksumOffset: 16)
                    : VirtioNetHeader()
                record.withUnsafeMutableBytes { r in
                    header.store(to: r.baseAddress!)
                    p.bytes.withUnsafeBytes {
                        (r.baseAddress! + VirtioNetHeader.byteCount).copyMemory(
                            from: $0.baseAddress!, byteCount: $0.count)
                    }
                    w.write(
                        UnsafeRawBufferPointer(rebasing: r[0..<(VirtioNetHeader.byteCount + p.bytes.count)]),
                        timestamp: p.time)
                }
            }
            try w.close()
        }
        try dump(traffic.tun, out)
        if let u = underlayOut { try dump(traffic.underlay, u) }
        if let m = manifestsOut {
            guard let f = fopen(m, "w") else {
                throw Failure.invalid("cannot write \(m): \(String(cString: strerror(errno)))")
            }
            fputs(traffic.manifests, f)
            guard fclose(f) == 0 else {
                throw Failure.invalid("cannot write \(m): \(String(cString: strerror(errno)))")
            }
        }
    }

    static func manifests(nodes: Int) -> String {
        var s = """
            # Generated by ipipd gen: pool 10.128.0.0/12 (Always, natOutgoing), node-0 is local.
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata:
              name: gen-pool
            spec:
              cidr: 10.128.0.0/12
              blockSize: 26
              ipipMode: Always
              natOutgoing: true

            """
        for i in 0...nodes {
            let b = IPv4Address(rawValue: block(i))
            s += """
                ---
                apiVersion: projectcalico.org/v3
                kind: Node
                metadata:
                  name: node-\(i)
                spec:
                  bgp:
                    ipv4Address: \(nodeAddress(i))/16
                    ipv4IPIPTunnelAddr: \(IPv4Address(rawValue: block(i) + 1))
                ---
                apiVersion: projectcalico.org/v3
                kind: BlockAffinity
                metadata:
                  name: node-\(i)-\(b.description.replacingDots())-26
                spec:
                  state: confirmed
                  node: node-\(i)
                  cidr: \(b)/26

                """
        }
        return s
    }

    // MARK: Packet building (PacketBuilder; payloads are its deterministic filler)

    static func ipv4(
        source: IPv4Address, destination: IPv4Address, protocolNumber: UInt8, ttl: UInt8,
        identification: UInt16, payload: [UInt8]
    ) -> [UInt8] {
        PacketBuilder(
            source: source, destination: destination, protocolNumber: protocolNumber, ttl: ttl,
            identification: identification, payload: payload
        ).bytes()
    }

    static func tcp(
        source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
        seq: UInt32, ack: UInt32, flags: UInt8, payload: Int
    ) -> [UInt8] {
        PacketBuilder.tcp(
            source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
            sequence: seq, acknowledgment: ack, flags: flags, payload: PacketBuilder.filler(count: payload, offset: 20))
    }

    static func udp(
        source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
        payload: Int
    ) -> [UInt8] {
        PacketBuilder.udp(
            source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
            payload: PacketBuilder.filler(count: payload, offset: 8))
    }

    static func echo(reply: Bool, identifier: UInt16, sequence: UInt16, payload: Int) -> [UInt8] {
        PacketBuilder.icmpEcho(
            reply: reply, identifier: identifier, sequence: sequence,
            payload: PacketBuilder.filler(count: payload, offset: 8))
    }
}

extension String {
    fileprivate func replacingDots() -> String { String(map { $0 == "." ? "-" : $0 }) }
}

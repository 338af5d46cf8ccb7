import IPIPCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What must hold after every batch, whatever the input bytes.
///
/// Per input slot `i` and its verdict:
/// - `outputCount` = (1 if the slot itself leaves, side ≠ `.none`) + (generated packets with origin `i`);
/// - `dropReason` is set exactly when the action is `.dropped`, and a dropped slot does not leave;
/// - every emitted packet (in-place slot with a side, every generated slot) is a valid IPv4 datagram:
///   ≥ 20 bytes, version 4, 20 ≤ IHL·4 ≤ length, total length = emitted length, header checksum valid;
///   an IP-in-IP packet's inner datagram is valid too;
/// - egress: a packet leaving on the underlay with protocol 4 has outer source = this node's IP and
///   destination = a peer node's IP (the verdict's `peer`), and is ≤ tunnel MTU + 20 bytes;
///   fragments of one input cover its payload exactly, in order, with the original bytes, MF on
///   every piece but the last (which keeps the original's MF), offsets continuing the original's;
///   ICMP errors go to the TUN, come from the ICMP source address, and are ≤ 576 bytes;
///   a translated (SNAT) packet leaves on the underlay from this node's IP;
/// - ingress: nothing ever leaves on the underlay, nothing is generated (DEC-12), and a
///   decapsulated packet is addressed to a local workload or tunnel address.
/// Generated slots: origins in `0..<batch.count`, nondecreasing, each with a side.
public enum FuzzInvariants {
    public struct Violation: Sendable, CustomStringConvertible {
        /// The input slot concerned.
        public var slot: Int
        /// A short stable name of the broken invariant (see `Kind`), for `IPIP_FUZZ_IGNORE`.
        public var kind: String
        public var message: String
        public var description: String { "[\(kind)] slot \(slot): \(message)" }
    }

    /// The invariant names.
    public enum Kind {
        public static let outputCount = "output-count"
        public static let verdict = "verdict"
        public static let invalidDatagram = "invalid-datagram"
        public static let outerHeader = "outer-header"
        public static let tunnelMTU = "tunnel-mtu"
        public static let fragments = "fragments"
        public static let fragmentOffset = "fragment-offset"
        public static let icmpError = "icmp-error"
        public static let ingressUnderlay = "ingress-underlay"
        public static let ingressGenerated = "ingress-generated"
        public static let decapsulatedDestination = "decapsulated-destination"
        public static let generatedSlots = "generated-slots"
        public static let inputBatch = "input-batch"
        public static let nat = "nat"
    }

    public static func check(
        ingress: Bool, batch: borrowing PacketBatch, generated: borrowing PacketBatch,
        verdicts: borrowing VerdictBatch, topology: Topology
    ) -> [Violation] {
        var out: [Violation] = []
        func fail(_ slot: Int, _ kind: String, _ message: String) {
            out.append(Violation(slot: slot, kind: kind, message: message))
        }

        let n = batch.count
        var generatedPerInput = [Int](repeating: 0, count: n)
        var lastOrigin = 0
        if ingress && generated.count != 0 {
            fail(0, Kind.ingressGenerated, "ingress generated \(generated.count) packets")
        }
        for g in 0..<generated.count {
            let o = generated.origin(of: g)
            guard o >= 0 && o < n else {
                fail(0, Kind.generatedSlots, "generated[\(g)] has origin \(o) outside 0..<\(n)")
                continue
            }
            if o < lastOrigin { fail(o, Kind.generatedSlots, "generated[\(g)] origin \(o) after origin \(lastOrigin)") }
            lastOrigin = o
            generatedPerInput[o] += 1
            let side = generated.side(of: g)
            let p = UnsafeRawBufferPointer(generated.packet(g))
            if side == .none { fail(o, Kind.generatedSlots, "generated[\(g)] has no side") }
            if let problem = datagramProblem(p) {
                fail(o, Kind.invalidDatagram, "generated[\(g)] (\(side)) is not a valid datagram: \(problem)")
                continue
            }
            if ingress && side == .underlay {
                fail(o, Kind.ingressUnderlay, "generated[\(g)] from the ingress path leaves on the underlay")
            }
            if side == .underlay {
                checkEncapsulated(p, slot: o, what: "generated[\(g)]", peer: verdicts[o].peer, topology: topology, fail)
            } else if side == .tun {
                if p[9] != IPProtocolNumber.icmp {
                    fail(o, Kind.icmpError, "generated[\(g)] to the TUN is protocol \(p[9]), not ICMP")
                }
                if p.count > 576 { fail(o, Kind.icmpError, "generated ICMP error of \(p.count) bytes > 576") }
                if address(p, 12) != topology.icmpSourceAddress {
                    fail(
                        o, Kind.icmpError,
                        "generated ICMP error from \(address(p, 12)), not \(topology.icmpSourceAddress)")
                }
            }
        }

        for i in 0..<n {
            let v = verdicts[i]
            let side = batch.side(of: i)
            let inPlace = side == .none ? 0 : 1
            if Int(v.outputCount) != inPlace + generatedPerInput[i] {
                fail(
                    i, Kind.outputCount,
                    "verdict \(v.action) outputCount \(v.outputCount) but \(inPlace) in place + \(generatedPerInput[i]) generated"
                )
            }
            if (v.action == .dropped) != (v.dropReason != nil) {
                fail(i, Kind.verdict, "action \(v.action) with dropReason \(v.dropReason.map { "\($0)" } ?? "nil")")
            }
            if v.action == .dropped && side != .none {
                fail(i, Kind.verdict, "dropped (\(v.dropReason!)) but leaves on \(side)")
            }
            let p = UnsafeRawBufferPointer(batch.packet(i))
            if side != .none, let problem = datagramProblem(p) {
                fail(
                    i, Kind.invalidDatagram, "emitted (\(side), \(v.action)) packet is not a valid datagram: \(problem)"
                )
                continue
            }
            if ingress {
                if side == .underlay {
                    fail(i, Kind.ingressUnderlay, "ingress packet leaves on the underlay (\(v.action))")
                }
                if side == .tun {
                    let d = address(p, 16)
                    if topology.route(for: d)?.kind != .local {
                        fail(i, Kind.decapsulatedDestination, "decapsulated packet to non-local \(d)")
                    }
                }
            } else {
                if v.action == .translated {
                    if side != .underlay {
                        fail(i, Kind.nat, "translated packet leaves on \(side), not the underlay")
                    } else if address(p, 12) != topology.localAddress {
                        fail(i, Kind.nat, "translated packet from \(address(p, 12)), not \(topology.localAddress)")
                    }
                }
                if side == .underlay && p[9] == IPProtocolNumber.ipInIP {
                    checkEncapsulated(p, slot: i, what: "egress packet", peer: v.peer, topology: topology, fail)
                }
                if v.action == .encapsulated && side == .none && generatedPerInput[i] > 0 {
                    checkFragments(of: p, slot: i, generated: generated, fail)
                }
            }
        }
        return out
    }

    /// Why `p` is not a valid IPv4 datagram, or nil.
    public static func datagramProblem(_ p: UnsafeRawBufferPointer) -> String? {
        guard p.count >= 20 else { return "\(p.count) bytes < 20" }
        guard p[0] >> 4 == 4 else { return "version \(p[0] >> 4)" }
        let hl = Int(p[0] & 0x0F) * 4
        guard hl >= 20 && hl <= p.count else { return "header length \(hl) for \(p.count) bytes" }
        let total = Int(p[2]) << 8 | Int(p[3])
        guard total == p.count else { return "total length \(total) ≠ emitted length \(p.count)" }
        guard InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: p[0..<hl])) == 0xFFFF else {
            return "bad header checksum"
        }
        return nil
    }

    static func address(_ p: UnsafeRawBufferPointer, _ o: Int) -> IPv4Address {
        IPv4Address(p[o], p[o + 1], p[o + 2], p[o + 3])
    }

    static func checkEncapsulated(
        _ p: UnsafeRawBufferPointer, slot: Int, what: String, peer: IPv4Address,
        topology: Topology, _ fail: (Int, String, String) -> Void
    ) {
        guard p[9] == IPProtocolNumber.ipInIP else {
            fail(slot, Kind.outerHeader, "\(what) on the underlay is protocol \(p[9]), not IP-in-IP")
            return
        }
        let source = address(p, 12)
        let destination = address(p, 16)
        if source != topology.localAddress {
            fail(slot, Kind.outerHeader, "\(what): outer source \(source) is not \(topology.localAddress)")
        }
        let isPeer = topology.nodes.indices.contains {
            $0 != topology.localNodeIndex && topology.nodes[$0].address == destination
        }
        if !isPeer { fail(slot, Kind.outerHeader, "\(what): outer destination \(destination) is not a peer node") }
        if destination != peer {
            fail(slot, Kind.outerHeader, "\(what): outer destination \(destination) but verdict peer \(peer)")
        }
        if p.count > topology.tunnelMTU + 20 {
            fail(slot, Kind.tunnelMTU, "\(what): \(p.count) bytes > tunnel MTU \(topology.tunnelMTU) + 20")
        }
        let hl = Int(p[0] & 0x0F) * 4
        if let problem = datagramProblem(UnsafeRawBufferPointer(rebasing: p[hl...])) {
            fail(slot, Kind.invalidDatagram, "\(what): inner datagram invalid: \(problem)")
        }
    }

    /// The fragments (generated, origin `slot`, each IP-in-IP) must rebuild `original` exactly.
    static func checkFragments(
        of original: UnsafeRawBufferPointer, slot: Int, generated: borrowing PacketBatch,
        _ fail: (Int, String, String) -> Void
    ) {
        guard original.count >= 20 else { return }
        let hl = Int(original[0] & 0x0F) * 4
        guard hl >= 20 && hl <= original.count else { return }
        let payload = original.count - hl
        let flags = UInt16(original[6]) << 8 | UInt16(original[7])
        let base = Int(flags & IPv4Header.fragmentOffsetMask) * 8
        let originalMF = flags & IPv4Header.moreFragmentsFlag != 0
        var covered = 0
        var indices: [Int] = []
        for g in 0..<generated.count where generated.origin(of: g) == slot { indices.append(g) }
        for (k, g) in indices.enumerated() {
            let outer = UnsafeRawBufferPointer(generated.packet(g))
            guard outer.count >= 40, datagramProblem(outer) == nil else { return }  // reported elsewhere
            let f = UnsafeRawBufferPointer(rebasing: outer[(Int(outer[0] & 0x0F) * 4)...])
            guard datagramProblem(f) == nil else { return }
            let fhl = Int(f[0] & 0x0F) * 4
            let ff = UInt16(f[6]) << 8 | UInt16(f[7])
            let offset = Int(ff & IPv4Header.fragmentOffsetMask) * 8
            let mf = ff & IPv4Header.moreFragmentsFlag != 0
            let last = k == indices.count - 1
            if offset != base + covered {
                fail(
                    slot, base + covered > 65535 ? Kind.fragmentOffset : Kind.fragments,
                    "fragment \(k) of \(indices.count) has offset \(offset), expected \(base) + \(covered) = \(base + covered)"
                )
                return
            }
            if mf != (last ? originalMF : true) {
                fail(
                    slot, Kind.fragments,
                    "fragment \(k) of \(indices.count): MF \(mf), expected \(last ? originalMF : true)")
                return
            }
            let data = f.count - fhl
            guard covered + data <= payload else {
                fail(slot, Kind.fragments, "fragments carry more than the \(payload)-byte payload")
                return
            }
            if data > 0, memcmp(f.baseAddress! + fhl, original.baseAddress! + hl + covered, data) != 0 {
                fail(slot, Kind.fragments, "fragment \(k) bytes differ from the original payload at \(covered)")
                return
            }
            covered += data
        }
        if covered != payload { fail(slot, Kind.fragments, "fragments carry \(covered) of \(payload) payload bytes") }
    }
}

import CIPIPLinux
import IPIPCore

/// The classic BPF program that makes the uplink capture take exactly the dataplane's packets.
///
/// Every packet load is relative to the network header (`SKF_NET_OFF + k`, written `[net+k]`
/// below), so the program means the same whether the socket sees frames from their link-layer
/// header (`SOCK_RAW`, as the capture opens it for `PACKET_VNET_HDR`) or from the network header
/// (`SOCK_DGRAM`), and whatever the link layer is. The socket is bound to `ETH_P_ALL` (see
/// `UplinkCapture` for why), so the program first checks the frame's protocol (the ancillary
/// load `SKF_AD_PROTOCOL`, `skb->protocol`) is IPv4. It accepts, when the destination is `nodeAddress`:
/// - (a) IP protocol 4 (IP-in-IP), fragments included (the engine counts and drops outer fragments);
/// - (b) TCP or UDP, first fragment or unfragmented, with the destination port in `natPortRange`
///   (replies to SNATed flows);
/// - (c) ICMP, first fragment or unfragmented, either an echo reply (type 0) whose identifier is
///   in `natPortRange` (SNATed pings) or an error of type 3, 11 or 12 — all of them: the engine
///   decides whether an error is about a tunnel or a NAT flow; the host still gets its copy.
///
/// Everything else is rejected (return 0), and so are packets too short for a load (the kernel
/// returns 0 for an out-of-bounds load). Accepted packets are kept whole (return 262144).
///
/// ```
///     ldh  [SKF_AD_OFF+SKF_AD_PROTOCOL]   ; EtherType of the frame
///     jeq  #0x0800, , reject
///     ld   [net+16]             ; destination address
///     jeq  #node, proto, reject
/// proto:
///     ldb  [net+9]              ; protocol
///     jeq  #4, accept           ; (a)
///     jeq  #6, ports
///     jeq  #17, ports
///     jeq  #1, icmp, reject
/// ports:                        ; (b)
///     ldh  [net+6]
///     jset #0x1fff, reject      ; non-first fragment: no transport header
///     ldxb 4*([net+0]&0xf)      ; X = IPv4 header length
///     ldh  [x+net+2]            ; destination port
///     jge  #low, , reject
///     jgt  #high, reject, accept
/// icmp:                         ; (c)
///     ldh  [net+6]
///     jset #0x1fff, reject
///     ldxb 4*([net+0]&0xf)
///     ldb  [x+net+0]            ; ICMP type
///     jeq  #0, echo
///     jeq  #3, accept
///     jeq  #11, accept
///     jeq  #12, accept, reject
/// echo:
///     ldh  [x+net+4]            ; identifier
///     jge  #low, , reject
///     jgt  #high, reject, accept
/// accept: ret #262144
/// reject: ret #0
/// ```
public struct CaptureFilter: Sendable, Equatable {
    /// The local node address: the only destination accepted.
    public var nodeAddress: IPv4Address
    /// The SNAT port range (Felix `natPortRange`): TCP/UDP destination ports and echo identifiers.
    public var natPortRange: ClosedRange<UInt16>

    /// Creates a filter description.
    public init(nodeAddress: IPv4Address, natPortRange: ClosedRange<UInt16>) {
        self.nodeAddress = nodeAddress
        self.natPortRange = natPortRange
    }

    /// The snap length returned for accepted packets (whole packet).
    public static let acceptByteCount: UInt32 = 262_144

    // Classic BPF opcodes (linux/bpf_common.h, linux/filter.h): class | size | mode / op | source.
    static let ldAbsW: UInt16 = 0x00 | 0x00 | 0x20  // BPF_LD | BPF_W | BPF_ABS
    static let ldAbsH: UInt16 = 0x00 | 0x08 | 0x20  // BPF_LD | BPF_H | BPF_ABS
    static let ldAbsB: UInt16 = 0x00 | 0x10 | 0x20  // BPF_LD | BPF_B | BPF_ABS
    static let ldIndH: UInt16 = 0x00 | 0x08 | 0x40  // BPF_LD | BPF_H | BPF_IND
    static let ldIndB: UInt16 = 0x00 | 0x10 | 0x40  // BPF_LD | BPF_B | BPF_IND
    static let ldxMSH: UInt16 = 0x01 | 0x10 | 0xa0  // BPF_LDX | BPF_B | BPF_MSH
    static let jeqK: UInt16 = 0x05 | 0x10  // BPF_JMP | BPF_JEQ | BPF_K
    static let jgtK: UInt16 = 0x05 | 0x20  // BPF_JMP | BPF_JGT | BPF_K
    static let jgeK: UInt16 = 0x05 | 0x30  // BPF_JMP | BPF_JGE | BPF_K
    static let jsetK: UInt16 = 0x05 | 0x40  // BPF_JMP | BPF_JSET | BPF_K
    static let retK: UInt16 = 0x06 | 0x00  // BPF_RET | BPF_K

    /// `SKF_AD_OFF + SKF_AD_PROTOCOL` (linux/filter.h): loads `skb->protocol` in host order.
    static let ancillaryProtocol = UInt32(bitPattern: -0x1000 + 0)
    /// `SKF_NET_OFF` (linux/filter.h): a load at `SKF_NET_OFF + k` reads byte `k` of the network header.
    static let networkOffset: Int32 = -0x100000

    /// The operand `k` that loads byte `offset` of the network header.
    static func net(_ offset: Int32) -> UInt32 { UInt32(bitPattern: networkOffset + offset) }

    /// The program, ready for `SO_ATTACH_FILTER`.
    public func program() -> [sock_filter] {
        var a = Assembler()
        let low = UInt32(natPortRange.lowerBound)
        let high = UInt32(natPortRange.upperBound)
        a.emit(Self.ldAbsH, k: Self.ancillaryProtocol)
        a.emit(Self.jeqK, k: 0x0800, false: "reject")
        a.emit(Self.ldAbsW, k: Self.net(16))
        a.emit(Self.jeqK, k: nodeAddress.rawValue, true: "proto", false: "reject")
        a.label("proto")
        a.emit(Self.ldAbsB, k: Self.net(9))
        a.emit(Self.jeqK, k: 4, true: "accept")
        a.emit(Self.jeqK, k: 6, true: "ports")
        a.emit(Self.jeqK, k: 17, true: "ports")
        a.emit(Self.jeqK, k: 1, true: "icmp", false: "reject")
        a.label("ports")
        a.emit(Self.ldAbsH, k: Self.net(6))
        a.emit(Self.jsetK, k: 0x1fff, true: "reject")
        a.emit(Self.ldxMSH, k: Self.net(0))
        a.emit(Self.ldIndH, k: Self.net(2))
        a.emit(Self.jgeK, k: low, false: "reject")
        a.emit(Self.jgtK, k: high, true: "reject", false: "accept")
        a.label("icmp")
        a.emit(Self.ldAbsH, k: Self.net(6))
        a.emit(Self.jsetK, k: 0x1fff, true: "reject")
        a.emit(Self.ldxMSH, k: Self.net(0))
        a.emit(Self.ldIndB, k: Self.net(0))
        a.emit(Self.jeqK, k: 0, true: "echo")
        a.emit(Self.jeqK, k: 3, true: "accept")
        a.emit(Self.jeqK, k: 11, true: "accept")
        a.emit(Self.jeqK, k: 12, true: "accept", false: "reject")
        a.label("echo")
        a.emit(Self.ldIndH, k: Self.net(4))
        a.emit(Self.jgeK, k: low, false: "reject")
        a.emit(Self.jgtK, k: high, true: "reject", false: "accept")
        a.label("accept")
        a.emit(Self.retK, k: Self.acceptByteCount)
        a.label("reject")
        a.emit(Self.retK, k: 0)
        return a.assemble()
    }
}

/// A two-pass classic BPF assembler: jumps name labels, resolved to the 8-bit forward offsets
/// classic BPF uses (nil = fall through to the next instruction).
struct Assembler {
    private var code: [(opcode: UInt16, k: UInt32, jt: String?, jf: String?)] = []
    private var labels: [String: Int] = [:]

    mutating func emit(_ opcode: UInt16, k: UInt32, true jt: String? = nil, false jf: String? = nil) {
        code.append((opcode, k, jt, jf))
    }

    mutating func label(_ name: String) {
        precondition(labels[name] == nil, "label \(name) defined twice")
        labels[name] = code.count
    }

    func assemble() -> [sock_filter] {
        code.enumerated().map { index, instruction in
            func offset(_ label: String?) -> UInt8 {
                guard let label else { return 0 }
                guard let target = labels[label] else { preconditionFailure("undefined label \(label)") }
                let distance = target - (index + 1)
                precondition(distance >= 0 && distance <= 255, "classic BPF jumps forward by 0…255")
                return UInt8(distance)
            }
            return sock_filter(
                code: instruction.opcode, jt: offset(instruction.jt), jf: offset(instruction.jf), k: instruction.k)
        }
    }
}

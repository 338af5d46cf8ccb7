import CIPIPLinux
import IPIPCore
import Testing

@testable import IPIPLinux

/// A classic BPF interpreter for the instructions `CaptureFilter` uses, written from the kernel's
/// documentation (Documentation/networking/filter.rst) rather than from the assembler, so the
/// test checks the program's meaning and not its encoding. Loads past the end return 0 (reject),
/// as the kernel does.
func runClassicBPF(_ program: [sock_filter], on packet: [UInt8], etherType: UInt16 = 0x0800) -> UInt32 {
    var a: UInt32 = 0
    var x: UInt32 = 0
    var pc = 0
    // The packet starts at its network header, so SKF_NET_OFF-relative loads read from 0.
    func load(_ raw: Int, _ size: Int) -> UInt32? {
        let offset = raw < 0 && raw >= Int(SKF_NET_OFF) ? raw - Int(SKF_NET_OFF) : raw
        guard offset >= 0, offset + size <= packet.count else { return nil }
        return packet[offset..<offset + size].reduce(0) { $0 << 8 | UInt32($1) }
    }
    while pc < program.count {
        let i = program[pc]
        pc += 1
        let cls = i.code & 0x07
        switch cls {
        case 0x00:  // BPF_LD
            let size = [0x00: 4, 0x08: 2, 0x10: 1][Int(i.code & 0x18)]!
            let mode = i.code & 0xe0
            let offset: Int
            switch mode {
            case 0x20 where i.k == UInt32(bitPattern: SKF_AD_OFF + SKF_AD_PROTOCOL):  // ancillary: skb->protocol
                a = UInt32(etherType)
                continue
            case 0x20: offset = Int(Int32(bitPattern: i.k))  // BPF_ABS
            case 0x40: offset = Int(x) + Int(Int32(bitPattern: i.k))  // BPF_IND
            default:
                Issue.record("unsupported ld mode \(mode)")
                return 0
            }
            guard let v = load(offset, size) else { return 0 }
            a = v
        case 0x01:  // BPF_LDX
            guard i.code == 0xb1 else {
                Issue.record("unsupported ldx \(i.code)")
                return 0
            }
            guard let v = load(Int(Int32(bitPattern: i.k)), 1) else { return 0 }
            x = (v & 0x0f) * 4
        case 0x05:  // BPF_JMP, K source only
            let taken: Bool
            switch i.code & 0xf0 {
            case 0x00:
                pc += Int(i.k)
                continue
            case 0x10: taken = a == i.k
            case 0x20: taken = a > i.k
            case 0x30: taken = a >= i.k
            case 0x40: taken = a & i.k != 0
            default:
                Issue.record("unsupported jump \(i.code)")
                return 0
            }
            pc += Int(taken ? i.jt : i.jf)
        case 0x06:  // BPF_RET | BPF_K
            return i.k
        default:
            Issue.record("unsupported class \(cls)")
            return 0
        }
    }
    Issue.record("program fell off its end")
    return 0
}

let node = IPv4Address(10, 0, 0, 1)
let other = IPv4Address(10, 0, 0, 2)
let natPorts: ClosedRange<UInt16> = 40000...40999

/// Builds an IPv4 header (+ options) followed by `payload`.
func ipv4(
    source: IPv4Address = other,
    destination: IPv4Address = node,
    protocol proto: UInt8,
    payload: [UInt8],
    fragmentField: UInt16 = 0x4000,
    optionWords: Int = 0
) -> [UInt8] {
    // Option bytes: two NOPs then 0x9c74 (40052, inside the test's NAT range), so a program that
    // ignored the header length would read a NAT port at offset 22.
    var p = PacketBuilder(
        source: source, destination: destination, protocolNumber: proto, identification: 0, payload: payload)
    p.flagsAndOffset = fragmentField
    p.options = Array(repeating: [1, 1, 0x9c, 0x74] as [UInt8], count: optionWords).flatMap { $0 }
    return p.bytes()
}

func ports(_ source: UInt16, _ destination: UInt16, extra: Int = 4) -> [UInt8] {
    [UInt8(source >> 8), UInt8(source & 0xff), UInt8(destination >> 8), UInt8(destination & 0xff)]
        + [UInt8](repeating: 0, count: extra)
}

func icmp(type: UInt8, code: UInt8 = 0, identifier: UInt16 = 0) -> [UInt8] {
    [type, code, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff), 0, 1] + [UInt8](repeating: 0, count: 28)
}

struct FilterCase: CustomTestStringConvertible, Sendable {
    var name: String
    var packet: [UInt8]
    var accepted: Bool
    var etherType: UInt16 = 0x0800
    var testDescription: String { name }
}

let filterCases: [FilterCase] = [
    .init(
        name: "IPIP to the node", packet: ipv4(protocol: 4, payload: ipv4(protocol: 17, payload: ports(1, 2))),
        accepted: true),
    .init(
        name: "IPIP to another address",
        packet: ipv4(destination: other, protocol: 4, payload: [UInt8](repeating: 0, count: 28)), accepted: false),
    .init(
        name: "IPIP outer fragment to the node (engine counts it)",
        packet: ipv4(protocol: 4, payload: [0, 0], fragmentField: 0x0010), accepted: true),
    .init(name: "UDP to the lowest NAT port", packet: ipv4(protocol: 17, payload: ports(53, 40000)), accepted: true),
    .init(name: "UDP to the highest NAT port", packet: ipv4(protocol: 17, payload: ports(53, 40999)), accepted: true),
    .init(name: "UDP below the NAT range", packet: ipv4(protocol: 17, payload: ports(53, 39999)), accepted: false),
    .init(name: "UDP above the NAT range", packet: ipv4(protocol: 17, payload: ports(53, 41000)), accepted: false),
    .init(
        name: "UDP source port in the range does not count", packet: ipv4(protocol: 17, payload: ports(40500, 53)),
        accepted: false),
    .init(name: "TCP to a NAT port", packet: ipv4(protocol: 6, payload: ports(443, 40500, extra: 16)), accepted: true),
    .init(name: "TCP to port 22", packet: ipv4(protocol: 6, payload: ports(40500, 22, extra: 16)), accepted: false),
    .init(
        name: "TCP to a NAT port, header with options",
        packet: ipv4(protocol: 6, payload: ports(443, 40500, extra: 16), optionWords: 2), accepted: true),
    .init(
        name: "TCP to port 22 behind options whose bytes look like a NAT port",
        packet: ipv4(protocol: 6, payload: ports(443, 22, extra: 16), optionWords: 1), accepted: false),
    .init(
        name: "UDP first fragment (MF, offset 0) to a NAT port",
        packet: ipv4(protocol: 17, payload: ports(53, 40001), fragmentField: 0x2000), accepted: true),
    .init(
        name: "UDP non-first fragment whose bytes look like a NAT port",
        packet: ipv4(protocol: 17, payload: ports(53, 40001), fragmentField: 0x0001), accepted: false),
    .init(
        name: "UDP to a NAT port on another address",
        packet: ipv4(destination: other, protocol: 17, payload: ports(53, 40001)), accepted: false),
    .init(name: "UDP truncated before the port", packet: ipv4(protocol: 17, payload: [0, 53, 0x9c]), accepted: false),
    .init(
        name: "echo reply, identifier in range", packet: ipv4(protocol: 1, payload: icmp(type: 0, identifier: 40123)),
        accepted: true),
    .init(
        name: "echo reply, identifier outside range",
        packet: ipv4(protocol: 1, payload: icmp(type: 0, identifier: 1234)), accepted: false),
    .init(
        name: "echo request, identifier in range", packet: ipv4(protocol: 1, payload: icmp(type: 8, identifier: 40123)),
        accepted: false),
    .init(name: "destination unreachable", packet: ipv4(protocol: 1, payload: icmp(type: 3, code: 4)), accepted: true),
    .init(name: "time exceeded", packet: ipv4(protocol: 1, payload: icmp(type: 11)), accepted: true),
    .init(name: "parameter problem", packet: ipv4(protocol: 1, payload: icmp(type: 12)), accepted: true),
    .init(name: "redirect", packet: ipv4(protocol: 1, payload: icmp(type: 5)), accepted: false),
    .init(
        name: "ICMP error to another address", packet: ipv4(destination: other, protocol: 1, payload: icmp(type: 3)),
        accepted: false),
    .init(
        name: "ICMP non-first fragment", packet: ipv4(protocol: 1, payload: icmp(type: 3), fragmentField: 0x0003),
        accepted: false),
    .init(name: "GRE to the node", packet: ipv4(protocol: 47, payload: [0, 0, 8, 0]), accepted: false),
    .init(name: "empty packet", packet: [], accepted: false),
    .init(
        name: "IPIP bytes in an IPv6 frame (EtherType 0x86dd)", packet: ipv4(protocol: 4, payload: [0]),
        accepted: false, etherType: 0x86DD),
    .init(
        name: "IPIP bytes in an ARP frame", packet: ipv4(protocol: 4, payload: [0]), accepted: false, etherType: 0x0806),
    .init(
        name: "header cut at the destination", packet: Array(ipv4(protocol: 4, payload: []).prefix(18)), accepted: false
    ),
]

@Suite("CaptureFilter")
struct CaptureFilterTests {
    @Test("accepts exactly the dataplane's packets", arguments: filterCases)
    func table(_ row: FilterCase) {
        let program = CaptureFilter(nodeAddress: node, natPortRange: natPorts).program()
        let verdict = runClassicBPF(program, on: row.packet, etherType: row.etherType)
        #expect((verdict != 0) == row.accepted)
        if row.accepted { #expect(verdict == CaptureFilter.acceptByteCount) }
    }

    @Test("a one-port range accepts that port only")
    func singlePort() {
        let program = CaptureFilter(nodeAddress: node, natPortRange: 50000...50000).program()
        #expect(runClassicBPF(program, on: ipv4(protocol: 17, payload: ports(1, 50000))) != 0)
        #expect(runClassicBPF(program, on: ipv4(protocol: 17, payload: ports(1, 50001))) == 0)
        #expect(runClassicBPF(program, on: ipv4(protocol: 17, payload: ports(1, 49999))) == 0)
    }

    @Test("opcodes match the kernel headers")
    func opcodes() {
        #expect(CaptureFilter.ldAbsW == UInt16(BPF_LD | BPF_W | BPF_ABS))
        #expect(CaptureFilter.ldIndB == UInt16(BPF_LD | BPF_B | BPF_IND))
        #expect(CaptureFilter.ldxMSH == UInt16(BPF_LDX | BPF_B | BPF_MSH))
        #expect(CaptureFilter.jsetK == UInt16(BPF_JMP | BPF_JSET | BPF_K))
        #expect(CaptureFilter.retK == UInt16(BPF_RET | BPF_K))
    }

    @Test("every jump lands inside the program and it ends in returns")
    func wellFormed() {
        let program = CaptureFilter(nodeAddress: node, natPortRange: 1...65535).program()
        for (i, instruction) in program.enumerated() where instruction.code & 0x07 == 0x05 {
            #expect(i + 1 + Int(instruction.jt) < program.count)
            #expect(i + 1 + Int(instruction.jf) < program.count)
        }
        #expect(program.last?.code == CaptureFilter.retK)
    }
}

import Testing

@testable import IPIPCore

@Suite("Header views")
struct HeaderViewTests {
    @Test("IPv4 setters round-trip and keep the checksum valid")
    func ipv4RoundTrip() {
        var bytes = PacketBuilder().bytes()
        bytes.withUnsafeMutableBytes { b in
            let h = IPv4Header(validating: b)!
            #expect(h.version == 4 && h.headerLength == 20 && h.totalLength == 52)
            #expect(h.hasValidChecksum)
            h.setTimeToLiveUpdatingChecksum(7)
            #expect(h.timeToLive == 7 && h.hasValidChecksum)
            h.setSourceAddressUpdatingChecksum(ip("10.9.8.7"))
            #expect(h.sourceAddress == ip("10.9.8.7") && h.hasValidChecksum)
            h.setDestinationAddressUpdatingChecksum(ip("1.2.3.4"))
            #expect(h.destinationAddress == ip("1.2.3.4") && h.hasValidChecksum)
            h.setTypeOfServiceUpdatingChecksum(0xBB)
            #expect(h.typeOfService == 0xBB && h.dscp == 0x2E && h.ecn == .ce && h.hasValidChecksum)
            h.identification = 0xBEEF
            h.flagsAndFragmentOffset = IPv4Header.moreFragmentsFlag | 5
            h.updateChecksum()
            #expect(h.identification == 0xBEEF && h.moreFragments && !h.dontFragment && h.fragmentOffset == 5)
            #expect(h.isFragment && h.hasValidChecksum)
            h.protocolNumber = 6
            #expect(h.protocolNumber == 6)
        }
    }

    @Test(
        "IPv4 validation",
        arguments: [
            ("valid", PacketBuilder().bytes(), true),
            ("empty", [], false),
            ("19 bytes", Array(PacketBuilder().bytes().prefix(19)), false),
            ("IHL 4", [0x44] + Array(PacketBuilder().bytes().dropFirst()), false),
            ("total beyond buffer", Array(PacketBuilder().bytes().prefix(40)), false),
            ("version 6", [0x65] + Array(PacketBuilder().bytes().dropFirst()), false),
        ])
    func ipv4Validation(_ name: String, _ bytes: [UInt8], _ valid: Bool) {
        var b = bytes
        b.withUnsafeMutableBytes { #expect((IPv4Header(validating: $0) != nil) == valid, "\(name)") }
    }

    @Test("UDP, TCP and ICMP views validate lengths and round-trip their fields")
    func transport() {
        var udp: [UInt8] = [0x9C, 0x40, 0x00, 0x35, 0x00, 0x0C, 0x12, 0x34, 1, 2, 3, 4]
        udp.withUnsafeMutableBytes { b in
            let u = UDPHeader(validating: b)!
            #expect(u.sourcePort == 40000 && u.destinationPort == 53 && u.length == 12 && u.checksum == 0x1234)
            u.sourcePort = 1
            u.destinationPort = 2
            u.checksum = 0
            #expect(u.sourcePort == 1 && u.destinationPort == 2 && u.checksum == 0)
            #expect(UDPHeader(validating: UnsafeMutableRawBufferPointer(rebasing: b[0..<7])).map { _ in true } == nil)
            u.length = 100
            #expect(UDPHeader(validating: b).map { _ in true } == nil)
        }
        var tcp = [UInt8](repeating: 0, count: 24)
        tcp[0] = 0x01
        tcp[1] = 0xBB
        tcp[12] = 0x60
        tcp[13] = TCPHeader.syn | TCPHeader.ack
        tcp.withUnsafeMutableBytes { b in
            let t = TCPHeader(validating: b)!
            #expect(t.sourcePort == 443 && t.headerLength == 24 && t.flags == 0x12)
            t.checksum = 0xABCD
            #expect(t.checksum == 0xABCD)
            b[12] = 0x70  // 28 bytes: beyond the buffer
            #expect(TCPHeader(validating: b).map { _ in true } == nil)
        }
        var icmp: [UInt8] = [3, 4, 0, 0, 0, 0, 0x05, 0xC8]
        icmp.withUnsafeMutableBytes { b in
            let i = ICMPHeader(validating: b)!
            #expect(i.type == 3 && i.code == 4 && i.sequenceOrMTU == 1480)
            #expect(ICMPHeader.isError(type: i.type) && !ICMPHeader.isError(type: ICMPType.echoRequest))
            #expect(ICMPHeader(validating: UnsafeMutableRawBufferPointer(rebasing: b[0..<7])).map { _ in true } == nil)
        }
    }
}

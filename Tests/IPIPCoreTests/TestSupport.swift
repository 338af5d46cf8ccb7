import IPIPTestSupport

@testable import IPIPCore

func ip(_ s: String) -> IPv4Address { IPv4Address(s)! }
func prefix(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }

/// Builds IPv4 datagrams for tests (header checksum filled in).
struct PacketBuilder {
    var source = ip("192.168.0.10")
    var destination = ip("192.168.1.20")
    var protocolNumber: UInt8 = IPProtocolNumber.udp
    var ttl: UInt8 = 63
    var tos: UInt8 = 0
    var dontFragment = true
    var moreFragments = false
    var fragmentOffset: UInt16 = 0
    var identification: UInt16 = 0x1234
    var options: [UInt8] = []
    var payload: [UInt8] = Array(repeating: 0xAB, count: 32)

    func bytes() -> [UInt8] {
        let ihl = 5 + options.count / 4
        let total = ihl * 4 + payload.count
        var b = [UInt8](repeating: 0, count: 20)
        b[0] = 0x40 | UInt8(ihl)
        b[1] = tos
        b[2] = UInt8(total >> 8)
        b[3] = UInt8(total & 0xFF)
        b[4] = UInt8(identification >> 8)
        b[5] = UInt8(identification & 0xFF)
        var flags = fragmentOffset
        if dontFragment { flags |= 0x4000 }
        if moreFragments { flags |= 0x2000 }
        b[6] = UInt8(flags >> 8)
        b[7] = UInt8(flags & 0xFF)
        b[8] = ttl
        b[9] = protocolNumber
        let s = source.octets
        let d = destination.octets
        b[12] = s.0
        b[13] = s.1
        b[14] = s.2
        b[15] = s.3
        b[16] = d.0
        b[17] = d.1
        b[18] = d.2
        b[19] = d.3
        b += options
        let c = b.withUnsafeBytes { InternetChecksum.checksum($0) }
        b[10] = UInt8(c >> 8)
        b[11] = UInt8(c & 0xFF)
        return b + payload
    }
}

/// The example cluster of the README as a spec.
func exampleSpec(mode: EncapsulationMode = .always, local: String = "node-a") -> TopologySpec {
    ExampleCluster.spec(mode: mode, local: local)
}

/// Wraps an inner datagram in an outer IPv4 header (as a peer would send it).
func encapsulated(
    _ inner: [UInt8], from source: String, to destination: String, tos: UInt8 = 0,
    dontFragment: Bool = true, moreFragments: Bool = false
) -> [UInt8] {
    var o = PacketBuilder()
    o.source = ip(source)
    o.destination = ip(destination)
    o.protocolNumber = IPProtocolNumber.ipInIP
    o.tos = tos
    o.ttl = 64
    o.dontFragment = dontFragment
    o.moreFragments = moreFragments
    o.payload = inner
    return o.bytes()
}

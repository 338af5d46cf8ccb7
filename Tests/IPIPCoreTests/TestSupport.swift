import IPIPTestSupport

@testable import IPIPCore

func ip(_ s: String) -> IPv4Address { IPv4Address(s)! }
func prefix(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }

extension PacketBuilder {
    /// The tests' default datagram: UDP from a1 (192.168.0.10) to b1 (192.168.1.20), TTL 63 (as
    /// the host hands it to the TUN), DF, 32 bytes of 0xAB.
    init() {
        self.init(
            source: ip("192.168.0.10"), destination: ip("192.168.1.20"), ttl: 63,
            payload: Array(repeating: 0xAB, count: 32))
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

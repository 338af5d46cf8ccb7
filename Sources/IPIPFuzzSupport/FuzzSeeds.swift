import IPIPCore

/// Seed programs for the corpus (`ipip-fuzz --write-seeds DIR` writes them; the committed copies
/// live in Tests/Fixtures/fuzz/). One per path worth reaching: encapsulation, fragmentation,
/// frag-needed, decapsulation, path MTU learning then use, native forwarding, external nodes,
/// topology swaps, and raw-mode packets.
public enum FuzzSeeds {
    /// Record header: direction and clock step.
    static func h(ingress: Bool, step: UInt8 = 1) -> UInt8 { (ingress ? 0x80 : 0) | step }

    /// A template record.
    static func t(
        ingress: Bool = false, step: UInt8 = 1, src: UInt8, dst: UInt8, proto: UInt8 = 0, flags: UInt8 = 0x08,
        tos: UInt8 = 0x08, length: Int = 64, outer: UInt8 = 0, icmp: UInt8 = 0, d7: UInt8 = 0
    ) -> [UInt8] {
        [
            h(ingress: ingress, step: step), dst << 4 | src, flags | proto, tos, UInt8(length >> 8),
            UInt8(length & 0xFF),
            outer, icmp, d7,
        ]
    }

    /// A raw record.
    static func r(ingress: Bool = false, step: UInt8 = 1, _ bytes: [UInt8]) -> [UInt8] {
        [h(ingress: ingress, step: step), UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
    }

    /// The datagram a descriptor builds (for raw seeds).
    static func packet(ingress: Bool, _ d: FuzzDescriptor) -> [UInt8] {
        var out: [UInt8] = []
        d.build(ingress: ingress, payload: UnsafeRawBufferPointer(start: nil, count: 0), into: &out)
        return out
    }

    /// (file name, program bytes).
    public static var all: [(name: String, bytes: [UInt8])] {
        let template: UInt8 = 0x10
        let smallMTU: UInt8 = 0x08
        let external: UInt8 = 0x04
        return [
            (
                "seed-egress-encapsulate",
                [template]
                    + t(src: 3, dst: 4) + t(src: 3, dst: 5) + t(src: 3, dst: 7) + t(src: 3, dst: 9) + t(src: 3, dst: 14)
            ),
            (
                "seed-egress-fragment",
                [template | smallMTU]
                    + t(src: 3, dst: 4, flags: 0, length: 1400) + t(src: 3, dst: 5, flags: 0x80, length: 700)
                    + t(src: 3, dst: 4, flags: 0x10, length: 900)
            ),
            (
                "seed-egress-frag-needed",
                [template | smallMTU | 0x80]
                    + t(src: 3, dst: 4, flags: 0x08, length: 1000) + t(src: 3, dst: 5, flags: 0x08, length: 1000)
                    + t(src: 3, dst: 5, flags: 0x08, length: 1000)
                    + t(step: 30, src: 3, dst: 5, flags: 0x08, length: 1000)
            ),
            (
                "seed-ingress-decapsulate",
                [template]
                    + t(ingress: true, src: 4, dst: 3, outer: 0) + t(ingress: true, src: 5, dst: 3, outer: 1)
                    + t(ingress: true, src: 7, dst: 6, outer: 0, d7: 0)
                    + t(ingress: true, src: 4, dst: 3, tos: 0x0A, outer: 0x60)
            ),
            (
                "seed-pmtu-learn-then-use",
                [template]
                    + t(ingress: true, src: 3, dst: 1, outer: 0x11, icmp: 0, d7: 0x80)
                    + t(src: 3, dst: 4, flags: 0, length: 1400) + t(src: 3, dst: 4, flags: 0x08, length: 1400)
                    + t(step: 100, src: 3, dst: 4, flags: 0x08, length: 1400)
            ),
            (
                "seed-crosssubnet-forward",
                [template | 0x01]
                    + t(src: 3, dst: 4) + t(src: 3, dst: 5) + t(ingress: true, src: 5, dst: 3, outer: 1)
            ),
            ("seed-never-forward", [template | 0x02] + t(src: 3, dst: 4) + t(src: 3, dst: 9)),
            (
                "seed-rich-topology",
                [template | 0x03]
                    + t(src: 3, dst: 10) + t(src: 3, dst: 11) + t(src: 3, dst: 12) + t(src: 3, dst: 13)
                    + t(ingress: true, src: 11, dst: 3, outer: 7)
            ),
            (
                "seed-external-node",
                [template | external]
                    + t(ingress: true, src: 9, dst: 3, outer: 2) + t(ingress: true, src: 4, dst: 3, outer: 2)
            ),
            (
                "seed-topology-swap",
                [template]
                    + t(ingress: true, src: 3, dst: 2, outer: 0x10, icmp: 0, d7: 0x80)
                    + [0x7F, 0x08] + t(src: 3, dst: 5, flags: 0, length: 1200) + [0x7F, 0x02] + t(src: 3, dst: 5)
            ),
            (
                "seed-raw-both-directions",
                [0x00]
                    + r(packet(ingress: false, FuzzDescriptor(0x43, 0x08, 0x08, 0, 40, 0, 0, 0)))
                    + r(ingress: true, packet(ingress: true, FuzzDescriptor(0x34, 0x08, 0x08, 0, 40, 0, 0, 0)))
                    + r(ingress: true, packet(ingress: true, FuzzDescriptor(0x13, 0x08, 0x08, 0, 40, 0x10, 0, 0x80)))
                    + r(packet(ingress: false, FuzzDescriptor(0x43, 0x00, 0x08, 0x05, 0xDC, 0, 0, 0)))
            ),
        ]
    }
}

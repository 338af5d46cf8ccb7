import Testing

@testable import IPIPCore

struct AddressParseCase: CustomTestStringConvertible, Sendable {
    let name: String
    let text: String
    let expected: UInt32?
    var testDescription: String { name }
}

struct PrefixCase: CustomTestStringConvertible, Sendable {
    let name: String
    let a: String
    let b: String
    let aContainsB: Bool
    let overlaps: Bool
    var testDescription: String { name }
}

@Suite("IPv4 addresses and prefixes")
struct AddressTests {
    static let parseCases: [AddressParseCase] = [
        .init(name: "plain", text: "192.168.1.20", expected: 0xC0A8_0114),
        .init(name: "zero", text: "0.0.0.0", expected: 0),
        .init(name: "broadcast", text: "255.255.255.255", expected: 0xFFFF_FFFF),
        .init(name: "leading zeros are decimal", text: "010.001.000.009", expected: 0x0A01_0009),
        .init(name: "octet above 255", text: "256.1.1.1", expected: nil),
        .init(name: "three octets", text: "1.2.3", expected: nil),
        .init(name: "five octets", text: "1.2.3.4.5", expected: nil),
        .init(name: "empty octet", text: "1..3.4", expected: nil),
        .init(name: "trailing dot", text: "1.2.3.4.", expected: nil),
        .init(name: "four digits", text: "1.2.3.0004", expected: nil),
        .init(name: "sign", text: "+1.2.3.4", expected: nil),
        .init(name: "space", text: " 1.2.3.4", expected: nil),
        .init(name: "empty", text: "", expected: nil),
        .init(name: "ipv6", text: "fe80::1", expected: nil),
    ]

    @Test("parse", arguments: parseCases)
    func parse(_ c: AddressParseCase) {
        #expect(IPv4Address(c.text)?.rawValue == c.expected)
        if let e = c.expected {
            // Canonical text round-trips.
            let a = IPv4Address(rawValue: e)
            #expect(IPv4Address(a.description) == a)
        }
    }

    @Test("canonical text")
    func canonical() {
        #expect(IPv4Address("010.001.000.009")!.description == "10.1.0.9")
        #expect(IPv4Prefix("10.1.2.3/8")!.network.description == "10.0.0.0/8")
        #expect(IPv4Prefix("10.1.2.3/8")!.isStrictlyMasked == false)
        #expect(IPv4Prefix("10.0.0.0/8")!.isStrictlyMasked)
    }

    @Test(
        "prefix parse",
        arguments: [
            ("10.0.0.0/8", true), ("0.0.0.0/0", true), ("1.2.3.4/32", true), ("1.2.3.4/33", false),
            ("1.2.3.4/", false), ("1.2.3.4/-1", false), ("1.2.3.4/08", true), ("1.2.3.4/123", false),
            ("1.2.3.4", false),
        ])
    func prefixParse(_ text: String, _ valid: Bool) {
        #expect((IPv4Prefix(text) != nil) == valid)
    }

    @Test("bare address as /32 when allowed")
    func bare() {
        #expect(IPv4Prefix("1.2.3.4", allowBareAddress: true) == IPv4Prefix(address: ip("1.2.3.4"), length: 32))
    }

    static let prefixCases: [PrefixCase] = [
        .init(name: "nested", a: "192.168.0.0/16", b: "192.168.1.0/26", aContainsB: true, overlaps: true),
        .init(name: "reverse nested", a: "192.168.1.0/26", b: "192.168.0.0/16", aContainsB: false, overlaps: true),
        .init(name: "disjoint", a: "10.0.0.0/8", b: "11.0.0.0/8", aContainsB: false, overlaps: false),
        .init(name: "identical", a: "10.0.0.0/8", b: "10.0.0.0/8", aContainsB: true, overlaps: true),
        .init(name: "default route", a: "0.0.0.0/0", b: "169.254.0.0/16", aContainsB: true, overlaps: true),
        .init(name: "adjacent", a: "10.0.0.0/25", b: "10.0.0.128/25", aContainsB: false, overlaps: false),
        .init(name: "host bits ignored", a: "10.1.2.3/8", b: "10.200.0.0/16", aContainsB: true, overlaps: true),
    ]

    @Test("contains and overlaps", arguments: prefixCases)
    func containsOverlaps(_ c: PrefixCase) {
        let a = prefix(c.a)
        let b = prefix(c.b)
        #expect(a.contains(b) == c.aContainsB)
        #expect(a.overlaps(b) == c.overlaps)
        #expect(b.overlaps(a) == c.overlaps)
    }

    @Test("first, last, mask, count")
    func ranges() {
        let p = prefix("192.168.1.77/26")
        #expect(p.first == ip("192.168.1.64"))
        #expect(p.last == ip("192.168.1.127"))
        #expect(p.mask == 0xFFFF_FFC0)
        #expect(p.addressCount == 64)
        #expect(IPv4Prefix.all.addressCount == 1 << 32)
        #expect(IPv4Prefix.all.mask == 0)
    }

    @Test("address classes")
    func classes() {
        #expect(ip("224.0.0.5").isMulticast)
        #expect(ip("127.0.0.1").isLoopback)
        #expect(ip("0.1.2.3").isThisNetwork)
        #expect(ip("255.255.255.255").isReserved)
        #expect(ip("169.254.1.1").isLinkLocal)
        #expect(!ip("192.168.1.1").isMulticast)
    }
}

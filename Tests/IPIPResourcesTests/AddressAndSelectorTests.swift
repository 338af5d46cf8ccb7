import Testing

@testable import IPIPResources

/// IPv6 text and its canonical form (nil: must not parse).
struct IPv6Case: CustomTestStringConvertible, Sendable {
    let text: String
    let canonical: String?
    var testDescription: String { text }
}

@Test(
    "IPv6 parsing and RFC 5952 text",
    arguments: [
        IPv6Case(text: "::", canonical: "::"),
        IPv6Case(text: "::1", canonical: "::1"),
        IPv6Case(text: "FD00:0:0:0:0:0:0:1", canonical: "fd00::1"),
        IPv6Case(text: "2001:db8:0:0:1:0:0:1", canonical: "2001:db8::1:0:0:1"),
        IPv6Case(text: "2001:0db8:0000:0001:0000:0000:0000:0000", canonical: "2001:db8:0:1::"),
        IPv6Case(text: "1:0:2:3:4:5:6:7", canonical: "1:0:2:3:4:5:6:7"),
        IPv6Case(text: "::ffff:10.0.0.1", canonical: "::ffff:a00:1"),
        IPv6Case(text: "1::2::3", canonical: nil),
        IPv6Case(text: "1:2:3:4:5:6:7:8:9", canonical: nil),
        IPv6Case(text: "12345::", canonical: nil),
        IPv6Case(text: ":1::", canonical: nil),
        IPv6Case(text: "1:", canonical: nil),
        IPv6Case(text: "fe80::1%eth0", canonical: nil),
        IPv6Case(text: "10.0.0.1", canonical: nil),
    ])
func ipv6Text(_ row: IPv6Case) {
    #expect(IPv6Address(row.text)?.description == row.canonical)
}

@Test func ipv6PrefixMaskingAndOverlap() throws {
    let prefix = try #require(IPv6Prefix("fd00::1/64"))
    #expect(!prefix.isStrictlyMasked)
    #expect(prefix.network.description == "fd00::/64")
    #expect(IPv6Prefix("fd00::/129") == nil)
    #expect(IPv6Prefix("fd00::") == nil)
    #expect(IPv6Prefix("fd00::", allowBareAddress: true)?.length == 128)
    #expect(try #require(IPv6Prefix("fe80::/16")).overlaps(.linkLocal))
    #expect(try #require(IPv6Prefix("fc00::/7")).overlaps(.linkLocal) == false)
    #expect(try #require(IPv6Prefix("::/0")).overlaps(.linkLocal))
}

/// A selector and whether Calico's grammar accepts it.
struct SelectorCase: CustomTestStringConvertible, Sendable {
    let selector: String
    let valid: Bool
    var testDescription: String { "\(selector.isEmpty ? "(empty)" : selector) → \(valid)" }
}

@Test(
    "selector syntax",
    arguments: [
        SelectorCase(selector: "", valid: true),
        SelectorCase(selector: "all()", valid: true),
        SelectorCase(selector: "has(kubernetes.io/hostname)", valid: true),
        SelectorCase(selector: "!has(edge)", valid: true),
        SelectorCase(selector: "zone == 'east'", valid: true),
        SelectorCase(selector: "zone != \"west\"", valid: true),
        SelectorCase(selector: "rack in {'r1', 'r2'}", valid: true),
        SelectorCase(selector: "rack not in {}", valid: true),
        SelectorCase(selector: "(a == 'x' || b == 'y') && !(c in {'z'})", valid: true),
        SelectorCase(selector: "name starts with 'node-' && name ends with \"-a\" && name contains 'x'", valid: true),
        SelectorCase(selector: "zone == east", valid: false),
        SelectorCase(selector: "has(zone", valid: false),
        SelectorCase(selector: "zone = 'east'", valid: false),
        SelectorCase(selector: "zone == 'east' &&", valid: false),
        SelectorCase(selector: "rack in {'r1' 'r2'}", valid: false),
        SelectorCase(selector: "zone == 'east", valid: false),
        SelectorCase(selector: "all() all()", valid: false),
        SelectorCase(selector: "a & b", valid: false),
    ])
func selectorSyntax(_ row: SelectorCase) {
    let accepted = (try? SelectorSyntax.check(row.selector)) != nil
    #expect(accepted == row.valid)
}

@Test func selectorReportsGlobal() throws {
    #expect(try SelectorSyntax.check("global()").usesGlobal)
    #expect(try SelectorSyntax.check("has(a) || global()").usesGlobal)
    #expect(try SelectorSyntax.check("all()").usesGlobal == false)
}

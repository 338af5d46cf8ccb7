import Foundation
import IPIPCore
import IPIPResources
import IPIPTestSupport
import Testing

@testable import IPIPOffline
@testable import Pcap

/// Where the committed fixtures live.
let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")
let repositoryRoot = ExampleCluster.repositoryRoot

struct GoldenCase: CustomTestStringConvertible, Sendable {
    let name: String
    let directory: URL
    let manifests: URL
    let input: URL
    /// Replay with `--offloads` (outputs of link type 147, the TUN side coalesced).
    var offloads = false
    var batchSize = 4
    /// Bad transport checksums the inputs carry on purpose (tshark must find exactly these).
    var corruptedSegments = 0
    /// Packets arriving on the underlay, when the case has them.
    var underlayInput: URL? {
        let u = directory.appendingPathComponent("underlay-input.pcap")
        return FileManager.default.fileExists(atPath: u.path) ? u : nil
    }
    var testDescription: String { name }

    static func named(_ name: String) -> GoldenCase {
        let d = fixturesDirectory.appendingPathComponent("golden").appendingPathComponent(name)
        return GoldenCase(
            name: name, directory: d, manifests: d.appendingPathComponent("manifests.yaml"),
            input: d.appendingPathComponent("input.pcap"))
    }

    /// The README example: examples/cluster.yaml and examples/workload-traffic.pcap.
    static let example = GoldenCase(
        name: "readme-example", directory: fixturesDirectory.appendingPathComponent("golden/readme-example"),
        manifests: repositoryRoot.appendingPathComponent("examples/cluster.yaml"),
        input: repositoryRoot.appendingPathComponent("examples/workload-traffic.pcap"))

    /// Super-packets both ways (scripts/make-fixtures.py `offload_case`), as the live daemon with a
    /// virtio-header TUN writes them, and the same inputs with every super-packet cut up.
    static let offloads: GoldenCase = {
        var c = named("offloads")
        c.offloads = true
        c.batchSize = 64
        c.corruptedSegments = 1
        return c
    }()
    static let offloadsSegmented: GoldenCase = {
        var c = named("offloads-segmented")
        c.batchSize = 64
        c.corruptedSegments = 1
        return c
    }()

    static let all: [GoldenCase] =
        ["always", "crosssubnet", "never", "edge-cases", "snat"].map(named)
        + [example, offloads, offloadsSegmented]
}

/// A captured packet read back for comparison.
struct CapturedPacket: Equatable {
    var time: Timestamp
    var bytes: [UInt8]
}

/// The records of a capture: network bytes, with the virtio header in front for link type 147.
func readCapture(_ path: String) throws -> [CapturedPacket] {
    let reader = try PcapReader(path: path)
    var out: [CapturedPacket] = []
    while let p = try reader.readNext({ CapturedPacket(time: $0.timestamp, bytes: Array($0.capturedBytes)) }) {
        out.append(p)
    }
    return out
}

/// Field-by-field description of an IPv4 packet (and its inner packet), for golden diffs.
func decodeFields(_ b: [UInt8]) -> [String] {
    guard b.count >= 20 else { return ["\(b.count) bytes: " + hex(b)] }
    func u16(_ o: Int) -> Int { Int(b[o]) << 8 | Int(b[o + 1]) }
    var lines = [
        "version \(b[0] >> 4) ihl \(b[0] & 0x0F)", "tos 0x\(String(b[1], radix: 16))", "total length \(u16(2))",
        "id 0x\(String(u16(4), radix: 16))", "flags/offset 0x\(String(u16(6), radix: 16))", "ttl \(b[8])",
        "protocol \(b[9])", "checksum 0x\(String(u16(10), radix: 16))",
        "source \(b[12]).\(b[13]).\(b[14]).\(b[15])", "destination \(b[16]).\(b[17]).\(b[18]).\(b[19])",
    ]
    let hl = Int(b[0] & 0x0F) * 4
    if b[9] == 4, b.count > hl { lines += decodeFields(Array(b[hl...])).map { "inner " + $0 } }
    lines.append("summary: " + b.withUnsafeBytes { PacketSummary.describe($0) })
    return lines
}

func hex(_ b: [UInt8]) -> String { b.prefix(96).map { String(format: "%02x", $0) }.joined(separator: " ") }

/// Describes the first difference between two captures, or nil when they are equal.
func firstDifference(expected: [CapturedPacket], actual: [CapturedPacket]) -> String? {
    for i in 0..<max(expected.count, actual.count) {
        guard i < expected.count else {
            return "packet \(i): unexpected extra packet\n" + decodeFields(actual[i].bytes).joined(separator: "\n")
        }
        guard i < actual.count else {
            return "packet \(i): missing\n" + decodeFields(expected[i].bytes).joined(separator: "\n")
        }
        if expected[i] != actual[i] {
            let e = decodeFields(expected[i].bytes)
            let a = decodeFields(actual[i].bytes)
            var s = "packet \(i) differs (time \(expected[i].time) vs \(actual[i].time)):\n"
            for k in 0..<max(e.count, a.count) {
                let l = k < e.count ? e[k] : "-"
                let r = k < a.count ? a[k] : "-"
                s += (l == r ? "    " : "  ≠ ") + "expected \(l)" + (l == r ? "" : "\n      actual   \(r)") + "\n"
            }
            s += "  expected hex: \(hex(expected[i].bytes))\n  actual hex:   \(hex(actual[i].bytes))"
            return s
        }
    }
    return nil
}

/// Runs a golden case; returns the paths of what it wrote.
func runReplay(
    _ c: GoldenCase, into dir: URL
) throws -> (out: String, underlay: String, tun: String, verdicts: String, summary: ReplaySummary) {
    let out = dir.appendingPathComponent("out.pcap").path
    let underlay = dir.appendingPathComponent("underlay.pcap").path
    let tun = dir.appendingPathComponent("tun.pcap").path
    let verdicts = dir.appendingPathComponent("verdicts.jsonl").path
    let topology = try ClusterLoader.topology(manifests: [c.manifests.path], node: "node-a")
    let engine = Engine(topology: topology)
    let replay = Replay(
        engine: engine,
        options: ReplayOptions(
            input: c.input.path, underlayInput: c.underlayInput?.path,
            output: out, underlayOutput: underlay,
            tunOutput: tun, verdicts: verdicts, batchSize: c.batchSize,
            offloads: c.offloads))
    let summary = try replay.run()
    return (out, underlay, tun, verdicts, summary)
}

func temporaryDirectory(_ name: String) throws -> URL {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("ipip-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
    return d
}

@Suite("Golden replays")
struct GoldenReplayTests {
    @Test("replay output matches the committed expected capture and verdicts", arguments: GoldenCase.all)
    func golden(_ c: GoldenCase) throws {
        let dir = try temporaryDirectory(c.name)
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runReplay(c, into: dir)
        let expectedPcap = c.directory.appendingPathComponent("expected.pcap")
        let expectedVerdicts = c.directory.appendingPathComponent("expected-verdicts.jsonl")
        if ProcessInfo.processInfo.environment["RECORD_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: c.directory, withIntermediateDirectories: true)
            _ = try? FileManager.default.removeItem(at: expectedPcap)
            _ = try? FileManager.default.removeItem(at: expectedVerdicts)
            try FileManager.default.copyItem(atPath: r.out, toPath: expectedPcap.path)
            try FileManager.default.copyItem(atPath: r.verdicts, toPath: expectedVerdicts.path)
            Issue.record(
                "RECORD_GOLDEN=1: rewrote \(expectedPcap.path) and its verdicts; review them and run again without it")
            return
        }
        let expected = try readCapture(expectedPcap.path)
        let actual = try readCapture(r.out)
        if let d = firstDifference(expected: expected, actual: actual) {
            Issue.record("\(c.name): \(d)")
        }
        let ev = try String(contentsOf: expectedVerdicts, encoding: .utf8).split(separator: "\n")
        let av = try String(contentsOfFile: r.verdicts, encoding: .utf8).split(separator: "\n")
        #expect(ev.count == av.count)
        for (k, (e, a)) in zip(ev, av).enumerated() where e != a {
            Issue.record("\(c.name): verdict line \(k + 1) differs\n  expected \(e)\n  actual   \(a)")
            break
        }
        // The per-side captures partition the combined one.
        let u = try readCapture(r.underlay)
        let t = try readCapture(r.tun)
        #expect(u.count + t.count == actual.count)
        #expect(u.count == r.summary.emittedUnderlay && t.count == r.summary.emittedTUN)
    }

    /// What the golden files say, checked directly (so a wrong recording cannot pass unnoticed).
    @Test("golden expectations per scenario")
    func expectations() throws {
        func verdicts(_ name: String) throws -> [[String: Any]] {
            let c = name == "readme-example" ? GoldenCase.example : GoldenCase.named(name)
            let text = try String(
                contentsOf: c.directory.appendingPathComponent("expected-verdicts.jsonl"), encoding: .utf8)
            return try text.split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
        }
        func actions(_ v: [[String: Any]]) -> [String] {
            v.map { ($0["verdict"] as! String) + (($0["reason"] as? String).map { ":" + $0 } ?? "") }
        }
        // mode cases: [same-subnet icmp, other-subnet icmp, same-subnet udp, other-subnet tcp, other-subnet tcp]
        #expect(actions(try verdicts("always")) == Array(repeating: "encapsulated", count: 5))
        #expect(
            actions(try verdicts("crosssubnet")) == [
                "forwarded", "encapsulated", "forwarded", "encapsulated", "encapsulated",
            ])
        #expect(actions(try verdicts("never")) == Array(repeating: "forwarded", count: 5))
        #expect(
            actions(try verdicts("edge-cases")) == [
                "dropped:no_route", "dropped:ttl_expired", "dropped:fragmentation_needed", "encapsulated",
                "encapsulated",
                "skipped:ipv6", "dropped:nested_encapsulation", "dropped:source_is_tunnel_endpoint", "translated",
                "forwarded", "encapsulated", "encapsulated", "dropped:fragmentation_needed", "encapsulated",
                "dropped:invalid_destination",
            ])
        // Offloads: TUN side [TCP super-packet to c1, ping, TCP super-packet to the outside, UDP
        // super-packet, checksum-partial segment, TCPv6 metadata on IPv4, segments too big], then
        // the underlay [7 IP-in-IP segments from node-b, the 4th corrupted; a GRO'd super-packet
        // from node-c; 3 UDP datagrams].
        let tunSide = [
            "encapsulated", "encapsulated", "translated", "encapsulated", "encapsulated",
            "dropped:invalid_offload", "dropped:fragmentation_needed",
        ]
        for name in ["offloads", "offloads-segmented"] {
            let v = try verdicts(name)
            #expect(actions(v) == tunSide + Array(repeating: "decapsulated", count: 11), "\(name)")
            func outputs(_ i: Int) -> [[String: Any]] { v[i]["outputs"] as! [[String: Any]] }
            #expect([0, 2, 3].map { outputs($0).count } == [4, 2, 3], "\(name): segments per super-packet")
            #expect(outputs(0).allSatisfy { ($0["length"] as? Int ?? 0) <= 1500 }, "\(name): no segment above the MTU")
            let merged = (7..<18).map { outputs($0).first?["merged_into"] as? Int }
            if name == "offloads" {
                // 0-2 coalesced, 3 (bad checksum) alone, 4-6 coalesced; the GRO packet whole; UDP 8-10.
                #expect(merged == [nil, 0, 0, nil, nil, 4, 4, nil, nil, 8, 8], "\(name): \(merged)")
                #expect(
                    outputs(7).first?["segment_size"] as? Int == 1400
                        && outputs(14).first?["segment_size"] as? Int == 1428)
                #expect(outputs(15).first?["segment_size"] as? Int == 800)
            } else {
                #expect(merged.allSatisfy { $0 == nil } && outputs(14).count == 3, "\(name): everything cut up")
            }
        }
        let edge = try verdicts("edge-cases")
        #expect((edge[2]["icmp"] as? [String: Int]) == ["type": 3, "code": 4])
        #expect(((edge[4]["outputs"] as? [Any])?.count) == 3)  // 3100-byte DF=0 packet → 3 fragments
        #expect((edge[0]["icmp"] as? [String: Int]) == ["type": 3, "code": 1])
    }

    @Test(
        "tshark decodes every golden capture: no malformed packets, valid IPv4 checksums inner and outer", .needsTshark)
    func tsharkDecodes() throws {
        guard let tshark = TestEnvironment.require(TestEnvironment.tshark, "tshark", package: "tshark") else { return }
        let dir = try temporaryDirectory("tshark")
        defer { try? FileManager.default.removeItem(at: dir) }
        for c in GoldenCase.all {
            let r = try runReplay(c, into: dir)
            let count = try readCapture(r.out).count
            var badTransport = 0
            let fields = try Processes.run(
                tshark,
                ["-r", r.out] + tsharkUserLinkType + [
                    "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                    "-o", "udp.check_checksum:TRUE", "-T", "fields",
                    "-e", "frame.number", "-e", "ip.checksum.status", "-e", "_ws.malformed",
                    "-e", "tcp.checksum.status", "-e", "udp.checksum.status",
                    "-e", "icmp.checksum.status",
                ]
            ).stdout
            let lines = fields.split(separator: "\n", omittingEmptySubsequences: true)
            #expect(lines.count == count, "\(c.name): tshark saw \(lines.count) frames, we wrote \(count)")
            for line in lines {
                let cols = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                // ip.checksum.status: 1 = good for every IPv4 header tshark verified (outer, inner, quoted).
                let statuses = cols.count > 1 ? cols[1].split(separator: ",").map(String.init) : []
                #expect(
                    !statuses.isEmpty && statuses.allSatisfy { $0 == "1" },
                    "\(c.name) frame \(cols[0]): checksum status \(statuses)")
                #expect(cols.count < 3 || cols[2].isEmpty, "\(c.name) frame \(cols[0]): malformed")
                // Transport checksums: never bad (0) but where the input was corrupted on purpose.
                // Quoted, truncated ones are "unverified" (2). A super-packet toward the TUN
                // carries the partial sum the kernel finishes (its segmented twin checks them).
                // In an ICMP error the TCP/UDP columns describe the quoted packet, whose checksum
                // is what the offending packet carried (a super-packet's partial sum): not ours.
                let quoted = cols.count > 5 && !cols[5].isEmpty
                if !c.offloads {
                    badTransport +=
                        cols.dropFirst(3).prefix(quoted ? 0 : 2).filter { $0.split(separator: ",").contains("0") }.count
                    if quoted && cols[5].split(separator: ",").contains("0") { badTransport += 1 }
                }
            }
            #expect(c.offloads || badTransport == c.corruptedSegments, "\(c.name): \(badTransport) bad L4 checksums")
            // The outer headers of encapsulated packets, decoded independently.
            let outer = try Processes.run(
                tshark,
                ["-r", r.underlay] + tsharkUserLinkType + [
                    "-Y", "ip.proto == 4", "-T", "fields",
                    "-e", "ip.version", "-e", "ip.hdr_len", "-e", "ip.flags.df", "-e", "ip.ttl",
                ]
            ).stdout
            for line in outer.split(separator: "\n") {
                let f = line.split(separator: "\t").map { $0.split(separator: ",").first.map(String.init) ?? "" }
                #expect(
                    f == ["4", "20", "1", "64"] || f == ["4", "20", "True", "64"], "\(c.name): outer header \(line)")
            }
        }
    }
}

extension GoldenReplayTests {
    /// Writes the given captures merged by time into one pcap.
    static func merge(_ captures: [[CapturedPacket]], into path: String) throws {
        let all = captures.flatMap { $0 }.enumerated().sorted {
            ($0.element.time, $0.offset) < ($1.element.time, $1.offset)
        }.map(\.element)
        let w = try PcapWriter(path: path, linkType: .raw)
        for p in all { p.bytes.withUnsafeBytes { w.write($0, timestamp: p.time) } }
        try w.close()
    }

    @Test(
        "SNAT both ways: the outside sees one TCP stream from the node IP, the workload one stream from itself",
        .needsTshark)
    func snatStreams() throws {
        guard let tshark = TestEnvironment.require(TestEnvironment.tshark, "tshark", package: "tshark") else { return }
        let c = GoldenCase.named("snat")
        let dir = try temporaryDirectory("snat-streams")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runReplay(c, into: dir)
        // Outside view: what we sent on the underlay + what the server sent us.
        let outside = dir.appendingPathComponent("outside.pcap").path
        try Self.merge([try readCapture(r.underlay), try readCapture(c.underlayInput!.path)], into: outside)
        // Workload view: what the workload sent + what we delivered into the TUN.
        let inside = dir.appendingPathComponent("inside.pcap").path
        try Self.merge([try readCapture(c.input.path), try readCapture(r.tun)], into: inside)
        for (name, path, address) in [("outside", outside, "10.0.0.1"), ("workload", inside, "192.168.0.10")] {
            let out = try Processes.run(
                tshark,
                [
                    "-r", path, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                    "-Y", "tcp", "-T", "fields", "-e", "tcp.stream", "-e", "ip.src", "-e", "ip.dst",
                    "-e", "tcp.checksum.status", "-e", "ip.checksum.status",
                    "-e", "tcp.analysis.flags",
                ]
            ).stdout
            let rows = out.split(separator: "\n").map {
                $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            }
            // The unsolicited SYN from 198.51.100.77 is in the outside view only, as its own stream.
            let flow = rows.filter {
                ($0[1] == address && $0[2] == "203.0.113.10") || ($0[2] == address && $0[1] == "203.0.113.10")
            }
            #expect(flow.count == 10, "\(name): \(rows)")
            #expect(Set(flow.map { $0[0] }).count == 1, "\(name): more than one TCP stream: \(flow)")
            #expect(flow.allSatisfy { $0[3] == "1" && $0[4] == "1" }, "\(name): checksums \(flow)")
            #expect(
                flow.allSatisfy { $0.count < 6 || $0[5].isEmpty },
                "\(name): tshark flags retransmissions or losses: \(flow)")
        }
        let verdicts = try String(contentsOfFile: r.verdicts, encoding: .utf8)
        #expect(verdicts.contains("\"verdict\":\"dropped\",\"reason\":\"unsolicited\""))
    }
}

/// tshark's decoding of link type 147 (a virtio header, then IP), for the offload captures.
let tsharkUserLinkType = ["-o", "uat:user_dlts:\"User 0 (DLT=147)\",\"ip\",\"10\",\"\",\"0\",\"\""]

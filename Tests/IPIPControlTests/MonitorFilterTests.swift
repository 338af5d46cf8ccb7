import IPIPCore
import Testing

@testable import IPIPControl

/// `ipipctl monitor`'s filters: parsed on both sides of the socket, bad tokens named.
@Suite("Monitor filters: parsing, the wire form, matching")
struct MonitorFilterTests {
    @Test(
        "a bad token is an error naming the flag and the token",
        arguments: [
            (["--reason"], ["ipip_unknown_peerx"], "--reason: unknown drop reason 'ipip_unknown_peerx'"),
            (["--reason"], ["no_route,"], "--reason: unknown drop reason ''"),
            (["--peer"], ["10.0.0.300"], "--peer: '10.0.0.300' is not an IPv4 address"),
            (["--host"], ["192.168.0.10,nope"], "--host: 'nope' is not an IPv4 address"),
            (["--port"], ["70000"], "--port: '70000' is not a port number (1…65535)"),
            (["--port"], ["0"], "--port: '0' is not a port number (1…65535)"),
            (["--port"], ["http"], "--port: 'http' is not a port number (1…65535)"),
        ])
    func badTokens(flag: [String], values: [String], message: String) {
        do {
            switch flag[0] {
            case "--reason": _ = try MonitorFilter.parse(reasons: values)
            case "--peer": _ = try MonitorFilter.parse(peers: values)
            case "--host": _ = try MonitorFilter.parse(hosts: values)
            default: _ = try MonitorFilter.parse(ports: values)
            }
            Issue.record("\(flag[0]) \(values) parsed")
        } catch {
            #expect(error.message.hasPrefix(message), "\(error.message)")
        }
    }

    @Test("repeated flags and comma lists add up; --reason implies --drops; duplicates collapse")
    func lists() throws {
        let f = try MonitorFilter.parse(
            reasons: ["ipip_unknown_peer,no_route", "no_route"], peers: ["10.0.0.2"],
            hosts: ["192.168.0.10", "10.0.0.9"],
            ports: ["80,443", "80"])
        #expect(f.dropsOnly)
        #expect(f.reasons == [.ipipUnknownPeer, .noRoute])
        #expect(f.hosts == [IPv4Address("192.168.0.10")!, IPv4Address("10.0.0.9")!])
        #expect(f.ports == [80, 443])
        #expect(f.ringMode == .dropsOnly)
        #expect(try MonitorFilter.parse().ringMode == .all)
        #expect(
            f.description
                == "--reason ipip_unknown_peer,no_route --peer 10.0.0.2 --host 192.168.0.10,10.0.0.9 --port 80,443")
    }

    @Test("the daemon parses the wire form back to the same filter, and refuses what a client should not send")
    func wire() throws {
        let f = try MonitorFilter.parse(drops: true, peers: ["10.0.0.2"], ports: ["53"])
        #expect(try MonitorFilter(wire: f.wire) == f)
        #expect(try MonitorFilter(wire: [:]) == MonitorFilter())
        for (bad, message) in [
            (["reasons": ["bogus"]] as [String: Any], "--reason: unknown drop reason 'bogus'"),
            (["ports": [99999]], "--port: '99999' is not a port number"),
            (["drops": "yes"], "monitor filter: 'drops' must be true or false"),
            (["hosts": "10.0.0.1"], "monitor filter: 'hosts' must be a list"),
            (["colour": ["red"]], "monitor filter: unknown field 'colour'"),
        ] {
            #expect(throws: ControlError.self) { try MonitorFilter(wire: bad) }
            do { _ = try MonitorFilter(wire: bad) } catch {
                #expect(error.message.hasPrefix(message), "\(error.message)")
            }
        }
    }

    /// An event of `bytes` as the daemon builds it.
    func event(
        _ bytes: [UInt8], egress: Bool, action: VerdictAction, reason: DropReason? = nil, peer: IPv4Address = .any
    ) -> MonitorEvent {
        let r = MonitorEventRecord(
            time: Timestamp(seconds: 100), length: UInt32(bytes.count), captured: UInt16(min(128, bytes.count)),
            egress: egress, action: action.rawValue, reason: reason?.rawValue ?? 0, peer: peer)
        return bytes.withUnsafeBytes {
            MonitorEvent(
                record: r, bytes: UnsafeRawBufferPointer(rebasing: $0[..<min(128, bytes.count)]), clockOffset: 0,
                localAddress: IPv4Address("10.0.0.1")!)
        }
    }

    var spoofed: MonitorEvent {
        let inner = PacketBuilder.icmpEcho(reply: false, identifier: 7, sequence: 1, payload: [1, 2, 3, 4])
        var i = PacketBuilder(
            source: IPv4Address("192.168.1.20")!, destination: IPv4Address("192.168.0.10")!,
            protocolNumber: IPProtocolNumber.icmp, payload: inner)
        i.ttl = 64
        let outer = PacketBuilder(
            source: IPv4Address("10.0.0.9")!, destination: IPv4Address("10.0.0.1")!,
            protocolNumber: IPProtocolNumber.ipInIP, payload: i.bytes())
        return event(outer.bytes(), egress: false, action: .dropped, reason: .ipipUnknownPeer)
    }

    var web: MonitorEvent {
        event(syn(from: 40000, to: 80, flags: 0x02), egress: true, action: .translated)
    }

    /// A TCP segment from a1 to the external server.
    func syn(from: UInt16, to: UInt16, flags: UInt8) -> [UInt8] {
        let s = IPv4Address("192.168.0.10")!
        let d = IPv4Address("198.51.100.10")!
        let tcp = PacketBuilder.tcp(
            source: s, destination: d, sourcePort: from, destinationPort: to, sequence: 1, acknowledgment: 0,
            flags: flags, payload: [])
        return PacketBuilder(source: s, destination: d, protocolNumber: IPProtocolNumber.tcp, payload: tcp).bytes()
    }

    @Test("the spoofed packet's line: outer and inner headers, the drop reason, the unknown sender as its peer")
    func summary() {
        let e = spoofed
        #expect(e.peer == IPv4Address("10.0.0.9"))
        #expect(
            e.summary == "10.0.0.9 > 10.0.0.1 ipip | 192.168.1.20 > 192.168.0.10 icmp echo request len \(e.length)")
        #expect(e.line.hasSuffix(" ingress dropped ipip_unknown_peer " + e.summary))
        #expect(web.summary.hasPrefix("192.168.0.10 > 198.51.100.10 tcp 40000 > 80 [S]"))
        // Encapsulated egress shows the outer header it got.
        let enc = event(
            PacketBuilder(source: IPv4Address("192.168.0.10")!, destination: IPv4Address("192.168.1.20")!).bytes(),
            egress: true, action: .encapsulated, peer: IPv4Address("10.0.0.2")!)
        #expect(enc.summary.hasPrefix("10.0.0.1 > 10.0.0.2 ipip | 192.168.0.10 > 192.168.1.20 udp"))
        // The wire form round-trips.
        let back = MonitorEvent(json: e.jsonObject)
        #expect(back?.line == e.line && back?.packet == e.packet && back?.reason == .ipipUnknownPeer)
    }

    @Test(
        "matching: each flag selects, flags combine with AND",
        arguments: [
            (MonitorFilter.Spec(drops: true), true, false),
            (.init(reasons: ["ipip_unknown_peer"]), true, false),
            (.init(reasons: ["no_route"]), false, false),
            (.init(peers: ["10.0.0.9"]), true, false),
            (.init(hosts: ["192.168.0.10"]), true, true),
            (.init(hosts: ["10.0.0.1"]), true, false),
            (.init(hosts: ["198.51.100.10"]), false, true),
            (.init(ports: ["80"]), false, true),
            (.init(ports: ["40000", "53"]), false, true),
            (.init(drops: true, hosts: ["198.51.100.10"]), false, false),
            (.init(), true, true),
        ])
    func matching(spec: MonitorFilter.Spec, spoofedMatches: Bool, webMatches: Bool) throws {
        let f = try MonitorFilter.parse(
            drops: spec.drops, reasons: spec.reasons, peers: spec.peers, hosts: spec.hosts, ports: spec.ports)
        #expect(f.matches(spoofed) == spoofedMatches, "\(f.description) on the spoofed packet")
        #expect(f.matches(web) == webMatches, "\(f.description) on the SYN")
    }

    @Test("headers of a capture cut short are read only as far as they go")
    func truncated() {
        let tcp = syn(from: 1, to: 2, flags: 0x10)
        for n in [0, 1, 19, 20, 22, 24, 33, 34] {
            let h = tcp.prefix(n).withUnsafeBytes { PacketHeaders($0) }
            #expect((h.outer != nil) == (n >= 20))
            #expect((h.destinationPort != nil) == (n >= 24))
            #expect((h.tcpFlags != nil) == (n >= 34))
        }
    }
}

extension MonitorFilter {
    /// A filter's flags, for table-driven tests.
    struct Spec: Sendable, CustomTestStringConvertible {
        var drops = false
        var reasons: [String] = []
        var peers: [String] = []
        var hosts: [String] = []
        var ports: [String] = []
        var testDescription: String {
            "drops=\(drops) reasons=\(reasons) peers=\(peers) hosts=\(hosts) ports=\(ports)"
        }
    }
}

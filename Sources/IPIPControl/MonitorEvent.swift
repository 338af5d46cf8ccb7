import Foundation
import IPIPCore

#if canImport(Glibc)
import Glibc
#endif

/// The headers of a captured packet's first bytes, read defensively: the bytes are a prefix
/// (`MonitorRing.capturedByteCount`) of a packet the engine may have refused, so every field is
/// read only when it lies within them, and nothing is assumed valid.
public struct PacketHeaders: Sendable, Equatable {
    /// One IPv4 header's addresses and protocol.
    public struct IP: Sendable, Equatable {
        public var source: IPv4Address
        public var destination: IPv4Address
        public var protocolNumber: UInt8
        /// Offset of the payload in the captured bytes.
        public var payloadOffset: Int
        /// Not the first fragment: no transport header follows.
        public var laterFragment: Bool
    }

    /// The first IPv4 header (the outer one of IP-in-IP); nil when the bytes are not IPv4.
    public var outer: IP?
    /// The inner header of an IP-in-IP packet.
    public var inner: IP?
    /// TCP/UDP ports of the innermost header, when captured.
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    /// ICMP type and code of the innermost header.
    public var icmp: (type: UInt8, code: UInt8)?
    /// TCP flags.
    public var tcpFlags: UInt8?

    public static func == (l: PacketHeaders, r: PacketHeaders) -> Bool {
        l.outer == r.outer && l.inner == r.inner && l.sourcePort == r.sourcePort
            && l.destinationPort == r.destinationPort && l.icmp?.type == r.icmp?.type
            && l.icmp?.code == r.icmp?.code && l.tcpFlags == r.tcpFlags
    }

    public init(_ b: UnsafeRawBufferPointer) {
        outer = Self.ip(b, at: 0)
        guard let o = outer else { return }
        var last = o
        if o.protocolNumber == IPProtocolNumber.ipInIP && !o.laterFragment, let i = Self.ip(b, at: o.payloadOffset) {
            inner = i
            last = i
        }
        guard !last.laterFragment else { return }
        let t = last.payloadOffset
        switch last.protocolNumber {
        case IPProtocolNumber.tcp, IPProtocolNumber.udp:
            if b.count >= t + 4 {
                sourcePort = UInt16(b[t]) << 8 | UInt16(b[t + 1])
                destinationPort = UInt16(b[t + 2]) << 8 | UInt16(b[t + 3])
            }
            if last.protocolNumber == IPProtocolNumber.tcp && b.count >= t + 14 { tcpFlags = b[t + 13] }
        case IPProtocolNumber.icmp:
            if b.count >= t + 2 { icmp = (b[t], b[t + 1]) }
        default:
            break
        }
    }

    static func ip(_ b: UnsafeRawBufferPointer, at o: Int) -> IP? {
        guard b.count >= o + 20, b[o] >> 4 == 4 else { return nil }
        let hl = Int(b[o] & 0x0F) * 4
        guard hl >= 20 else { return nil }
        func address(_ at: Int) -> IPv4Address {
            IPv4Address(
                rawValue: UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3]))
        }
        let offset = (UInt16(b[o + 6]) << 8 | UInt16(b[o + 7])) & 0x1FFF
        return IP(
            source: address(o + 12), destination: address(o + 16), protocolNumber: b[o + 9], payloadOffset: o + hl,
            laterFragment: offset != 0)
    }

    /// Every address in the headers (outer and inner, source and destination).
    public var addresses: [IPv4Address] {
        [outer?.source, outer?.destination, inner?.source, inner?.destination].compactMap { $0 }
    }

    /// `src > dst proto …` of one header, tcpdump-like.
    static func describe(
        _ ip: IP, ports: (UInt16?, UInt16?), icmp: (type: UInt8, code: UInt8)?, flags: UInt8?
    )
        -> String
    {
        var s = "\(ip.source) > \(ip.destination) "
        switch ip.protocolNumber {
        case IPProtocolNumber.tcp:
            s += "tcp"
            if let a = ports.0, let b = ports.1 { s += " \(a) > \(b)" }
            if let f = flags { s += " [\(HeaderNames.tcpFlags(f))]" }
        case IPProtocolNumber.udp:
            s += "udp"
            if let a = ports.0, let b = ports.1 { s += " \(a) > \(b)" }
        case IPProtocolNumber.icmp:
            s += "icmp"
            if let i = icmp { s += " " + HeaderNames.icmp(type: i.type, code: i.code) }
        case IPProtocolNumber.ipInIP: s += "ipip"
        default: s += "proto \(ip.protocolNumber)"
        }
        if ip.laterFragment { s += " (fragment)" }
        return s
    }

    /// The summary of the packet as it arrived, outer header first: `10.0.0.9 > 10.0.0.1 ipip |
    /// 192.168.1.20 > 192.168.0.10 icmp echo request`. `tunnel` wraps a packet that was sent
    /// encapsulated in the outer header it got (source, destination), so egress shows both too.
    public func summary(length: Int, tunnel: (IPv4Address, IPv4Address)? = nil) -> String {
        guard let o = outer else { return "not IPv4 (\(length) bytes)" }
        let ports = (sourcePort, destinationPort)
        var s: String
        if let i = inner {
            s =
                Self.describe(o, ports: (nil, nil), icmp: nil, flags: nil) + " | "
                + Self.describe(i, ports: ports, icmp: icmp, flags: tcpFlags)
        } else {
            s = Self.describe(o, ports: ports, icmp: icmp, flags: tcpFlags)
            if let t = tunnel { s = "\(t.0) > \(t.1) ipip | " + s }
        }
        return s + " len \(length)"
    }
}

/// One verdict the monitor shows: a ring record made readable. The daemon builds it from a
/// `MonitorEventRecord` and its captured bytes (wall-clock time, the peer resolved, the
/// summary), filters it, and sends `jsonObject`; `ipipctl monitor` decodes it again
/// (`init(json:)`) to print `line`, the JSON object, or a pcapng record.
public struct MonitorEvent: Sendable {
    /// Wall-clock time of the read.
    public var time: Timestamp
    public var egress: Bool
    public var action: VerdictAction
    public var reason: DropReason?
    /// The peer node: the verdict's, else the outer source of IP-in-IP from the uplink (a peer
    /// refused as unknown is still named).
    public var peer: IPv4Address?
    /// The packet's whole length.
    public var length: Int
    public var worker: Int
    /// Its first bytes as captured (at most `MonitorRing.capturedByteCount`).
    public var packet: [UInt8]
    /// The one-line description of its headers.
    public var summary: String

    /// The event of `record` with its `bytes`; `clockOffset` turns the loop's monotonic time into
    /// wall-clock time; `localAddress` is the outer source of what this node encapsulates.
    public init(
        record r: MonitorEventRecord, bytes: UnsafeRawBufferPointer, clockOffset: Int64, localAddress: IPv4Address
    ) {
        let wall = r.time.totalNanoseconds &+ clockOffset
        time = Timestamp(
            seconds: wall / 1_000_000_000,
            nanoseconds: UInt32(truncatingIfNeeded: ((wall % 1_000_000_000) + 1_000_000_000) % 1_000_000_000))
        egress = r.egress
        action = VerdictAction(rawValue: r.action) ?? .dropped
        reason = action == .dropped ? DropReason(rawValue: r.reason) : nil
        length = Int(r.length)
        worker = Int(r.worker)
        packet = Array(bytes)
        let headers = PacketHeaders(bytes)
        if r.peer != .any {
            peer = r.peer
        } else if !r.egress, let o = headers.outer, o.protocolNumber == IPProtocolNumber.ipInIP {
            peer = o.source
        } else {
            peer = nil
        }
        let tunnel = egress && action == .encapsulated && r.peer != .any ? (localAddress, r.peer) : nil
        summary = headers.summary(length: length, tunnel: tunnel)
    }

    /// The headers of `packet` (for filters).
    public var headers: PacketHeaders { packet.withUnsafeBytes { PacketHeaders($0) } }

    /// `12:00:01.123456 ingress dropped ipip_unknown_peer 10.0.0.9 > 10.0.0.1 ipip | …`, local time.
    public var line: String {
        var parts = [Self.clock(time), egress ? "egress" : "ingress", action.name]
        if let reason { parts.append(reason.name) }
        parts.append(summary)
        return parts.joined(separator: " ")
    }

    /// The wire form: what `ipipctl monitor -o json` prints, one object per line.
    public var jsonObject: [String: Any] {
        var o: [String: Any] = [
            "time": Self.rfc3339(time), "timestamp": time.description, "direction": egress ? "egress" : "ingress",
            "verdict": action.name, "length": length, "worker": worker, "summary": summary,
            "packet": Data(packet).base64EncodedString(),
        ]
        if let reason { o["reason"] = reason.name }
        if let peer { o["peer"] = peer.description }
        return o
    }

    /// Decodes the wire form; nil when a field is missing or wrong.
    public init?(json o: [String: Any]) {
        guard let ts = o["timestamp"] as? String, let time = Self.parseTimestamp(ts),
            let direction = o["direction"] as? String, direction == "egress" || direction == "ingress",
            let verdict = o["verdict"] as? String,
            let action = VerdictAction.allCases.first(where: { $0.name == verdict }),
            let length = o["length"] as? Int, let summary = o["summary"] as? String
        else { return nil }
        self.time = time
        egress = direction == "egress"
        self.action = action
        reason = (o["reason"] as? String).flatMap { r in DropReason.allCases.first { $0.name == r } }
        peer = (o["peer"] as? String).flatMap { IPv4Address($0) }
        self.length = length
        worker = o["worker"] as? Int ?? 0
        packet = (o["packet"] as? String).flatMap { Data(base64Encoded: $0) }.map { Array($0) } ?? []
        self.summary = summary
    }

    static func parseTimestamp(_ s: String) -> Timestamp? {
        let parts = s.split(separator: ".", maxSplits: 1)
        guard let secs = Int64(parts[0]) else { return nil }
        var nanos: UInt32 = 0
        if parts.count == 2 {
            let digits = String(parts[1].prefix(9))
            guard let n = UInt32(digits.padding(toLength: 9, withPad: "0", startingAt: 0)) else { return nil }
            nanos = n
        }
        return Timestamp(seconds: secs, nanoseconds: nanos)
    }

    /// `HH:MM:SS.uuuuuu` in local time (as tcpdump and cilium monitor print).
    static func clock(_ t: Timestamp) -> String {
        var seconds = time_t(t.seconds)
        var parts = tm()
        localtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let micro = String(t.nanoseconds / 1000)
        return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))."
            + String(repeating: "0", count: 6 - micro.count) + micro
    }

    /// RFC 3339 in UTC with microseconds.
    public static func rfc3339(_ t: Timestamp) -> String {
        var seconds = time_t(t.seconds)
        var p = tm()
        gmtime_r(&seconds, &p)
        func pad(_ v: Int32, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        let micro = String(t.nanoseconds / 1000)
        return "\(pad(p.tm_year + 1900, 4))-\(pad(p.tm_mon + 1, 2))-\(pad(p.tm_mday, 2))T"
            + "\(pad(p.tm_hour, 2)):\(pad(p.tm_min, 2)):\(pad(p.tm_sec, 2))."
            + String(repeating: "0", count: 6 - micro.count) + micro + "Z"
    }
}

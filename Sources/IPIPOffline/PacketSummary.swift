import IPIPCore

/// One-line, tcpdump-like descriptions of IPv4 packets for verdict files and test diffs.
/// Control-plane and tooling code: allocates strings freely.
public enum PacketSummary {
    /// Describes an IPv4 datagram: `src > dst proto details`, recursing once into IP-in-IP.
    public static func describe(_ bytes: UnsafeRawBufferPointer) -> String {
        guard case .valid(let hl, let total) = IPv4Header.validate(bytes) else {
            return bytes.isEmpty ? "empty" : "not a valid IPv4 header (\(bytes.count) bytes)"
        }
        // Safe: validate() proved `hl` and `total` lie within `bytes`.
        let h = IPv4Header(unchecked: UnsafeMutableRawPointer(mutating: bytes.baseAddress!))
        var s = "\(h.sourceAddress) > \(h.destinationAddress)"
        var flags: [String] = []
        if h.dontFragment { flags.append("DF") }
        if h.moreFragments { flags.append("MF") }
        if h.fragmentOffset != 0 { flags.append("off \(Int(h.fragmentOffset) * 8)") }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[hl..<total])
        let fragmentTail = h.fragmentOffset != 0
        switch h.protocolNumber {
        case IPProtocolNumber.ipInIP where !fragmentTail:
            s += " ipip [\(describe(payload))]"
        case IPProtocolNumber.icmp where !fragmentTail && payload.count >= 4:
            let type = payload[0]
            let code = payload[1]
            s += " icmp " + HeaderNames.icmp(type: type, code: code, separator: "-")
            if type == ICMPType.destinationUnreachable && code == ICMPUnreachableCode.fragmentationNeeded
                && payload.count >= 8
            {
                s += " mtu \(UInt16(payload[6]) << 8 | UInt16(payload[7]))"
            }
        case IPProtocolNumber.udp where !fragmentTail && payload.count >= 8:
            s += " udp \(u16(payload, 0)) > \(u16(payload, 2))"
        case IPProtocolNumber.tcp where !fragmentTail && payload.count >= 14:
            s += " tcp \(u16(payload, 0)) > \(u16(payload, 2)) [\(HeaderNames.tcpFlags(payload[13]))]"
        default:
            s += " proto \(h.protocolNumber)"
        }
        s += " len \(total) ttl \(h.timeToLive) tos 0x\(String(h.typeOfService, radix: 16))"
        if !flags.isEmpty { s += " " + flags.joined(separator: ",") }
        return s
    }

    static func u16(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { UInt16(b[o]) << 8 | UInt16(b[o + 1]) }
}

/// Minimal JSON string escaping for the verdict files.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

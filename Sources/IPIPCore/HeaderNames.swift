/// The short names packet summaries give ICMP messages and TCP flags, shared by replay's verdict
/// lines (`PacketSummary`) and the monitor's (`MonitorEvent`), so the two read the same packet
/// the same way.
public enum HeaderNames {
    /// `echo request`, `frag needed`, …; `separator` joins a name's words (replay's verdict
    /// files use `-`, the monitor a space). An unnamed message is `type T code C`.
    public static func icmp(type: UInt8, code: UInt8, separator: String = " ") -> String {
        let words: [String]
        switch (type, code) {
        case (0, _): words = ["echo", "reply"]
        case (8, _): words = ["echo", "request"]
        case (3, 0): words = ["net", "unreachable"]
        case (3, 1): words = ["host", "unreachable"]
        case (3, 3): words = ["port", "unreachable"]
        case (3, 4): words = ["frag", "needed"]
        case (3, 13): words = ["admin", "prohibited"]
        case (11, _): words = ["time", "exceeded"]
        default: return "type \(type) code \(code)"
        }
        return words.joined(separator: separator)
    }

    /// tcpdump's letters for the flags set (`S`, `F`, `R`, `P`, `.` for ACK), `none` for none.
    public static func tcpFlags(_ f: UInt8) -> String {
        var s = ""
        if f & 0x02 != 0 { s += "S" }
        if f & 0x01 != 0 { s += "F" }
        if f & 0x04 != 0 { s += "R" }
        if f & 0x08 != 0 { s += "P" }
        if f & 0x10 != 0 { s += "." }
        return s.isEmpty ? "none" : s
    }
}

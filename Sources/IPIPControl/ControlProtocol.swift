import Foundation

/// The language of ipipd's control socket (`ipipd run --control-socket`, default
/// `/run/ipipd/ipipd.sock`): line-delimited JSON over a unix stream socket.
///
/// 1. On connect the daemon sends its greeting, one line:
///    `{"ipipd":"control","protocol":1,"node":"node-a","pid":1234}`. A client that reads
///    anything else knows the socket is not ipipd's; one that reads another protocol number
///    knows the daemon is of another version. Both are told apart from "no daemon" (the connect
///    itself fails), which is what `ControlClient` reports.
/// 2. The client sends requests, one line each: `{"command":"status"}`,
///    `{"command":"record","out":"/abs/dir"}`, `{"command":"monitor","filter":{…}}`.
/// 3. The daemon answers each with one line: `{"ok":true,"result":…}` or
///    `{"ok":false,"error":"…"}`. After a successful `monitor`, the connection carries the
///    stream: `{"event":{…}}` lines, `{"lost":N}` when the count of events this client missed
///    grows, and `{"end":"…"}` when the daemon stops; the client ends it by closing.
///
/// Why JSON lines: `socat - UNIX-CONNECT:/run/ipipd/ipipd.sock` is a usable client, every
/// request and answer is one self-describing line, and the version check is one field.
public enum ControlProtocol {
    /// The greeting's identifying field (`"ipipd": "control"`).
    public static let greetingKey = "ipipd"
    public static let greetingValue = "control"
    /// The protocol this build speaks; bumped when a request or answer changes incompatibly.
    public static let version = 1
    /// The longest request line the daemon reads (longer: an error, and the connection closes).
    public static let maximumRequestByteCount = 64 << 10
    /// The default socket path (`--control-socket`, `ipipctl --socket`, `IPIPD_SOCKET`).
    public static let defaultSocketPath = "/run/ipipd/ipipd.sock"
    /// The environment variable both ipipd and ipipctl read for the socket path.
    public static let socketEnvironmentVariable = "IPIPD_SOCKET"

    /// The daemon's greeting line (newline included).
    public static func greeting(node: String, pid: Int32) -> String {
        line([greetingKey: greetingValue, "protocol": version, "node": node, "pid": Int(pid)])
    }

    /// One JSON object as a line: keys sorted (stable output for tests and diffs), newline ended.
    public static func line(_ object: [String: Any]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
            return "{\"ok\":false,\"error\":\"internal: an answer that is not JSON\"}\n"
        }
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// A successful answer whose result is `result` (anything JSONSerialization takes).
    public static func ok(_ result: Any = [String: Any]()) -> String { line(["ok": true, "result": result]) }

    /// A refused request.
    public static func error(_ message: String) -> String { line(["ok": false, "error": message]) }

    /// Parses one line as a JSON object; nil when it is not one.
    public static func object(_ line: some StringProtocol) -> [String: Any]? {
        guard let data = String(line).data(using: .utf8),
            let o = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? [String: Any]
        else { return nil }
        return o
    }

    /// Parses JSON text already known to be ours (an answer's `result` re-encoded, say).
    public static func jsonValue(_ text: String) -> Any? {
        guard let data = text.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
    }
}

/// A control-socket failure, worded for the operator (`ipipctl` prints it and exits 1).
public struct ControlError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

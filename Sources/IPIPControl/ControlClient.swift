import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A connection to ipipd's control socket, greeting checked (`ipipctl node status`, `monitor`,
/// `node record`).
///
/// `connect` tells the operator's three cases apart with a message naming the path: no daemon
/// (the path does not exist, or nothing listens: `ENOENT`, `ECONNREFUSED`), no permission (the
/// socket is root's, mode 0600), and a socket that is not ipipd's (it says something other than
/// the greeting, or nothing within `greetingTimeout`).
///
/// Not `Sendable`: one owner; blocking reads with timeouts (`poll`).
public final class ControlClient {
    public let path: String
    let fd: Int32
    var buffer: [UInt8] = []
    /// The daemon's greeting: its node name and pid.
    public private(set) var node = ""
    public private(set) var pid = 0

    /// Connects to `path` and checks the greeting.
    /// - Throws: `ControlError` with the operator's message.
    public init(path: String, greetingTimeout: Double = 2) throws(ControlError) {
        self.path = path
        fd = try Self.connect(path: path)
        do {
            try readGreeting(timeout: greetingTimeout)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    deinit { Glibc.close(fd) }

    static func connect(path: String) throws(ControlError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity, !path.isEmpty else {
            throw ControlError("control socket path '\(path)' is too long (at most \(capacity - 1) bytes) or empty")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if r != 0 {
            let e = errno
            Glibc.close(fd)
            switch e {
            case ENOENT:
                throw ControlError(
                    "no ipipd is running here: \(path) does not exist (ipipd run --control-socket PATH; ipipctl --socket PATH or \(ControlProtocol.socketEnvironmentVariable) chooses the socket)"
                )
            case ECONNREFUSED:
                throw ControlError(
                    "no ipipd is running here: nothing listens on \(path) (connection refused: a socket left by a stopped ipipd)"
                )
            case EACCES, EPERM:
                throw ControlError("permission denied: \(path) is root's control socket (mode 0600); run as root")
            case ENOTSOCK, ENOTDIR:
                throw ControlError("\(path) is not a socket, so not ipipd's control socket")
            default:
                throw ControlError("cannot connect to \(path): \(String(cString: strerror(e)))")
            }
        }
        return fd
    }

    func readGreeting(timeout: Double) throws(ControlError) {
        let line: String
        switch try readLine(timeout: timeout, limit: 4096) {
        case .line(let l): line = l
        case .timeout:
            throw ControlError(
                "\(path) is not ipipd's control socket: it sent no greeting within \(Self.seconds(timeout))")
        case .closed:
            throw ControlError("\(path) is not ipipd's control socket: it closed the connection without a greeting")
        }
        if let o = ControlProtocol.object(line), o["ok"] as? Bool == false, let e = o["error"] as? String {
            // ipipd's refusal instead of its greeting (it serves a handful of clients at once).
            throw ControlError("ipipd on \(path) refused the connection: \(e)")
        }
        guard let o = ControlProtocol.object(line),
            o[ControlProtocol.greetingKey] as? String == ControlProtocol.greetingValue
        else {
            throw ControlError(
                "\(path) is not ipipd's control socket: it answered \(Self.quoted(line)) instead of ipipd's greeting")
        }
        guard let version = o["protocol"] as? Int, version == ControlProtocol.version else {
            throw ControlError(
                "ipipd on \(path) speaks control protocol \(o["protocol"].map { "\($0)" } ?? "?"); this ipipctl speaks \(ControlProtocol.version): use the ipipctl of the same build"
            )
        }
        node = o["node"] as? String ?? ""
        pid = o["pid"] as? Int ?? 0
    }

    /// What one `readLine` found.
    public enum Read: Equatable {
        case line(String)
        case timeout
        case closed
    }

    /// The next line (without its newline), waiting at most `timeout` seconds (negative: forever).
    /// - Throws: when a line exceeds `limit` bytes or the read fails.
    public func readLine(timeout: Double, limit: Int = 16 << 20) throws(ControlError) -> Read {
        let deadline = timeout < 0 ? Double.infinity : Self.now() + timeout
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return .line(line)
            }
            if buffer.count > limit { throw ControlError("\(path): a line longer than \(limit) bytes") }
            let left = deadline - Self.now()
            if left <= 0 { return .timeout }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = left == .infinity ? Int32(-1) : Int32(min(left * 1000 + 1, 1_000_000))
            let r = poll(&p, 1, ms)
            if r < 0 {
                if errno == EINTR { return .timeout }
                throw ControlError("\(path): poll: \(String(cString: strerror(errno)))")
            }
            if r == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw ControlError("\(path): read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { return .closed }
            buffer.append(contentsOf: chunk[..<n])
        }
    }

    /// Sends one request line.
    public func send(_ request: [String: Any]) throws(ControlError) {
        let bytes = Array(ControlProtocol.line(request).utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw ControlError("\(path): send: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    /// Sends a request and waits for its answer: the `result` of `{"ok":true}`.
    /// - Throws: the daemon's `error` text, or a transport failure.
    public func request(_ request: [String: Any], timeout: Double = 30) throws(ControlError) -> Any {
        try send(request)
        return try readAnswer(timeout: timeout)
    }

    /// Reads one answer line and unwraps it.
    public func readAnswer(timeout: Double = 30) throws(ControlError) -> Any {
        switch try readLine(timeout: timeout) {
        case .timeout: throw ControlError("ipipd on \(path) did not answer within \(Self.seconds(timeout))")
        case .closed: throw ControlError("ipipd on \(path) closed the connection without an answer")
        case .line(let l):
            guard let o = ControlProtocol.object(l), let ok = o["ok"] as? Bool else {
                throw ControlError("ipipd on \(path) answered something that is not an answer: \(Self.quoted(l))")
            }
            guard ok else { throw ControlError(o["error"] as? String ?? "ipipd refused the request") }
            return o["result"] ?? [String: Any]()
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }

    /// At most 80 characters of what a foreign socket said, quoted, control characters escaped.
    static func quoted(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars.prefix(80) {
            out += u.value < 0x20 || u.value == 0x7F ? "\\u{\(String(u.value, radix: 16))}" : String(u)
        }
        return "\"" + out + (s.unicodeScalars.count > 80 ? "…" : "") + "\""
    }
}

import CIPIPLinux
import Glibc

/// A listening IPv4 TCP socket for the daemon's small HTTP endpoints (metrics, and later
/// health): bind, accept with a timeout, and blocking I/O with a per-connection deadline.
///
/// Not for the data path: it allocates, blocks, and serves one client at a time.
public final class TCPListener: @unchecked Sendable {
    let fd: Int32
    /// The port bound (the one asked for, or the kernel's pick for 0).
    public let port: UInt16

    /// Binds `host:port` (an IPv4 literal; port 0 = any free one) and listens.
    /// - Throws: `SystemCallError` naming the call, with `host:port` as detail.
    public init(host: String, port: UInt16, backlog: Int32 = 16) throws(SystemCallError) {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            throw SystemCallError(errno: EINVAL, call: "inet_pton", detail: "'\(host)' is not an IPv4 address")
        }
        let s = try Syscall.checked("socket(AF_INET, SOCK_STREAM)") {
            socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        var one: Int32 = 1
        _ = setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        do throws(SystemCallError) {
            _ = try Syscall.checked("bind", detail: "\(host):\(port)") {
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            _ = try Syscall.checked("listen", detail: "\(host):\(port)") { listen(s, backlog) }
        } catch {
            Syscall.close(s)
            throw error
        }
        var actual = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
        }
        fd = s
        self.port = UInt16(bigEndian: actual.sin_port)
    }

    deinit { Syscall.close(fd) }

    /// Waits up to `timeoutMilliseconds` for a client; nil when none came (or accept failed).
    public func accept(timeoutMilliseconds: Int32) -> TCPConnection? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMilliseconds) > 0 else { return nil }
        let c = Glibc.accept(fd, nil, nil)
        guard c >= 0 else { return nil }
        _ = fcntl(c, F_SETFD, FD_CLOEXEC)
        return TCPConnection(fd: c)
    }
}

/// One accepted client; closed when released.
public final class TCPConnection {
    let fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { Syscall.close(fd) }

    /// Sets the receive and send timeouts (a stalled client cannot hold the server).
    public func setTimeouts(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads until the bytes end with `terminator`, the peer closes, the timeout fires, or
    /// `limit` bytes have come.
    public func read(until terminator: [UInt8], limit: Int) -> [UInt8] {
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while request.count < limit {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            request += buffer[0..<n]
            if request.count >= terminator.count, request.suffix(terminator.count).elementsEqual(terminator) { break }
        }
        return request
    }

    /// Writes all of `bytes` (or as much as the peer takes before an error or the timeout).
    public func write(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            sent += n
        }
    }
}

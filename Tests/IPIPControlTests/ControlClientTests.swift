import Foundation
import IPIPTestSupport
import Testing

@testable import IPIPControl

#if canImport(Glibc)
import Glibc
#endif

/// A unix stream socket at `path` that accepts one connection, writes `says`, and waits for
/// the client to close; `listens: false` leaves only a stale socket file behind (a crashed
/// daemon's).
final class FakeSocketServer: @unchecked Sendable {
    let fd: Int32
    var thread: Thread?

    init(path: String, says: String?, listens: Bool = true) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard r == 0 else { throw ControlError("bind \(path): \(String(cString: strerror(errno)))") }
        guard listens else {
            close(fd)
            return
        }
        listen(fd, 1)
        let listening = fd
        let t = Thread {
            let c = accept(listening, nil, nil)
            guard c >= 0 else { return }
            if let says { _ = says.withCString { write(c, $0, strlen($0)) } }
            var b = [UInt8](repeating: 0, count: 64)
            _ = read(c, &b, 64)  // until the client closes
            close(c)
        }
        thread = t
        t.start()
    }

    deinit { close(fd) }
}

@Suite("Control client: no daemon, a stale socket, a socket that is not ipipd's, another protocol")
struct ControlClientTests {
    func expectError(_ path: String, timeout: Double = 2, _ message: String) {
        do {
            _ = try ControlClient(path: path, greetingTimeout: timeout)
            Issue.record("connected to \(path)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
            #expect(error.message.contains(path), "the message names the path: \(error.message)")
        }
    }

    @Test("no daemon: the path does not exist")
    func missing() {
        let dir = TempDir()
        defer { dir.cleanup() }
        expectError(dir.file("ipipd.sock"), "no ipipd is running here: \(dir.file("ipipd.sock")) does not exist")
    }

    @Test("no daemon: a stale socket nothing listens on (connection refused)")
    func stale() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        _ = try FakeSocketServer(path: dir.file("s"), says: nil, listens: false)
        expectError(dir.file("s"), "no ipipd is running here: nothing listens on")
    }

    @Test("a socket that answers something else is not ipipd's, and the message quotes what it said")
    func foreign() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let server = try FakeSocketServer(path: dir.file("s"), says: "SSH-2.0-OpenSSH_9.2\r\n")
        expectError(dir.file("s"), "is not ipipd's control socket: it answered \"SSH-2.0-OpenSSH_9.2\\u{d}\"")
        _ = server
    }

    @Test("a socket that says nothing is not ipipd's either (after the greeting timeout)")
    func silent() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let server = try FakeSocketServer(path: dir.file("s"), says: nil)
        expectError(dir.file("s"), timeout: 0.3, "is not ipipd's control socket: it sent no greeting within 0.3 s")
        _ = server
    }

    @Test("a regular file is not a socket")
    func regularFile() {
        let dir = TempDir()
        defer { dir.cleanup() }
        let path = dir.write("f", "hello\n")
        expectError(path, "connect")
    }

    @Test("ipipd of another protocol version: named, with the versions")
    func otherVersion() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let server = try FakeSocketServer(path: dir.file("s"), says: "{\"ipipd\":\"control\",\"protocol\":99}\n")
        expectError(dir.file("s"), "speaks control protocol 99; this ipipctl speaks \(ControlProtocol.version)")
        _ = server
    }

    @Test("ipipd's greeting: accepted, node and pid read")
    func greeting() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let server = try FakeSocketServer(path: dir.file("s"), says: ControlProtocol.greeting(node: "node-a", pid: 42))
        let c = try ControlClient(path: dir.file("s"))
        #expect(c.node == "node-a" && c.pid == 42)
        _ = server
    }
}

// Test support for the privileged netlink tests: a throwaway network namespace, `ip` for fixtures
// and independent checks, and a NetlinkSocket that lives inside the namespace.
//
// How the socket gets into the namespace: a netlink socket belongs to the network namespace of the
// thread that created it, for its whole life. So a dedicated thread enters the namespace with
// setns(2) on /var/run/netns/<name>, creates the socket and exits; the socket then works from any
// thread while the test's own threads (Swift Testing's pool) never change namespace. Glibc's
// setns is hidden behind _GNU_SOURCE and Swift does not import it, so it is looked up with dlsym.
import Foundation
import Glibc
import Synchronization
import Testing

@testable import IPIPLinux

/// A network namespace created with `ip netns add` and deleted when the value goes away.
final class TestNamespace: @unchecked Sendable {
    /// Whether privileged tests can run (root).
    static var isRoot: Bool { getuid() == 0 }

    private static let counter = Mutex(0)

    let name: String

    /// Creates `ipipnl-<pid>-<n>`; nil (with a printed reason) when that fails.
    init() throws {
        let n = Self.counter.withLock { (c: inout Int) -> Int in
            c += 1
            return c
        }
        name = "ipipnl-\(getpid())-\(n)"
        _ = try Self.run(["netns", "add", name])
        _ = try ip("link", "set", "lo", "up")
    }

    deinit {
        _ = try? Self.run(["netns", "delete", name])
    }

    struct CommandError: Error, CustomStringConvertible {
        var command: String
        var status: Int32
        var output: String
        var description: String { "`\(command)` exited with \(status): \(output)" }
    }

    /// Runs `ip <arguments>` and returns its standard output.
    static func run(_ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw CommandError(command: "ip " + arguments.joined(separator: " "), status: p.terminationStatus,
                               output: text + String(decoding: errData, as: UTF8.self))
        }
        return text
    }

    /// Runs `ip -n <namespace> <arguments>`.
    @discardableResult
    func ip(_ arguments: String...) throws -> String {
        try Self.run(["-n", name] + arguments)
    }

    /// A NetlinkSocket created inside the namespace (see the file header).
    func socket() throws -> NetlinkSocket {
        let path = "/var/run/netns/\(name)"
        let result = Mutex<Result<NetlinkSocket, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let r: Result<NetlinkSocket, any Error> = Result {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw NetlinkError(errno: errno, operation: "open", detail: path) }
                defer { close(fd) }
                typealias SetNS = @convention(c) (Int32, Int32) -> Int32
                guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else {
                    throw NetlinkError(errno: ENOSYS, operation: "dlsym", detail: "setns")
                }
                let setns = unsafeBitCast(symbol, to: SetNS.self)
                let cloneNewNet: Int32 = 0x4000_0000  // C: CLONE_NEWNET
                guard setns(fd, cloneNewNet) == 0 else {
                    throw NetlinkError(errno: errno, operation: "setns", detail: path)
                }
                return try NetlinkSocket()
            }
            result.withLock { $0 = r }
        }
        thread.start()
        done.wait()
        return try result.withLock { $0! }.get()
    }
}

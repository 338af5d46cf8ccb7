// The tests' one network namespace fixture.
//
// How code runs "inside" a namespace: `perform` starts a dedicated thread, moves that thread
// (only) into the namespace with setns(CLONE_NEWNET), runs the closure and lets the thread exit,
// so no thread of the test runner's pool ever changes namespace. Descriptors keep the namespace
// they were created in: a netlink socket, a TUN device or a capture created inside `perform` can
// then be used from any thread. Child processes inherit the calling thread's namespace, so `nft`
// spawned inside `perform` sees the namespace's tables; `ip` commands use `ip -n <name>`.
//
// Every namespace is deleted by the test that created it (`delete()`, or when the value goes
// away), even on failure; its veth ends, TUN devices and nftables tables disappear with it.
import CIPIPLinux
import Foundation
import IPIPLinux

/// A network namespace created with `ip netns add`, deleted by `delete()` or when released.
public final class NetworkNamespace: @unchecked Sendable {
    public let name: String
    private static let lock = NSLock()
    nonisolated(unsafe) private static var counter = 0
    private let deleted = NSLock()
    nonisolated(unsafe) private var isDeleted = false

    /// What a fixture step that failed said.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Creates `<prefix>-<tag>-<pid>-<n>` (`ipipt-...` by default) with its loopback up.
    public init(_ tag: String, prefix: String = "ipipt") throws {
        let n = Self.lock.withLock {
            Self.counter += 1
            return Self.counter
        }
        name = "\(prefix)-\(tag)-\(getpid())-\(n)"
        try Self.ip(["netns", "add", name])
        do { try ip("link", "set", "lo", "up") } catch {
            delete()
            throw error
        }
    }

    deinit { delete() }

    /// Deletes the namespace (and every device in it); a second call does nothing. Never throws:
    /// it runs in `defer`.
    public func delete() {
        let first = deleted.withLock { () -> Bool in
            defer { isDeleted = true }
            return !isDeleted
        }
        if first { _ = try? Self.ip(["netns", "delete", name]) }
    }

    /// Runs `ip -n <name> args…`; throws with its standard error on failure.
    @discardableResult
    public func ip(_ arguments: String...) throws -> String {
        try Self.ip(["-n", name] + arguments)
    }

    /// Runs `ip args…` in the test's own namespace.
    @discardableResult
    public static func ip(_ arguments: [String]) throws -> String {
        let result = try Processes.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw Failure(
                "ip \(arguments.joined(separator: " ")) exited with \(result.status): \(result.stderr)\(result.stdout)")
        }
        return result.stdout
    }

    /// Runs `body` on a new thread that has joined this namespace.
    public func perform<T>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        let path = "/var/run/netns/\(name)"
        let thread = Thread {
            defer { done.signal() }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                box.result = .failure(Failure("open \(path): errno \(errno)"))
                return
            }
            defer { close(fd) }
            guard cipl_setns_net(fd) == 0 else {
                box.result = .failure(Failure("setns \(path): errno \(errno)"))
                return
            }
            box.result = Result { try body() }
        }
        thread.start()
        done.wait()
        return try box.result!.get()
    }

    /// A NETLINK_ROUTE socket that belongs to this namespace.
    public func netlinkSocket() throws -> NetlinkSocket {
        try perform { try NetlinkSocket() }
    }
}

/// Carries a result out of the namespace's thread.
final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

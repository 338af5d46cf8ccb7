import Glibc

/// A system call failed: the call's name and the `errno` it left.
///
/// Thrown only for environment failures (a device that cannot be opened, a socket option the
/// kernel refuses). Per-packet failures of the batch calls (`ENOBUFS`, `EMSGSIZE`,
/// `EHOSTUNREACH`, …) are counted drops, and would-block is a result (`IOResult.wouldBlock`),
/// never an error.
///
/// The text is built lazily, in `description`: creating the error does not allocate.
public struct SystemCallError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The C `errno` value (for example `EPERM` = 1).
    public var errno: Int32
    /// The call that failed, for example `"ioctl(TUNSETIFF)"`.
    public var call: StaticString
    /// Optional context (a path, a device name); empty when there is none.
    public var detail: String

    /// Creates an error.
    /// - Parameters:
    ///   - errno: the `errno` value read right after the call.
    ///   - call: the call's name.
    ///   - detail: what it was applied to, if useful.
    public init(errno: Int32, call: StaticString, detail: String = "") {
        self.errno = errno
        self.call = call
        self.detail = detail
    }

    /// `call(detail): strerror (errno N)`.
    public var description: String {
        let message = String(cString: strerror(errno))
        let what = detail.isEmpty ? "\(call)" : "\(call) \(detail)"
        return "\(what): \(message) (errno \(errno))"
    }

    public static func == (lhs: SystemCallError, rhs: SystemCallError) -> Bool {
        lhs.errno == rhs.errno && "\(lhs.call)" == "\(rhs.call)" && lhs.detail == rhs.detail
    }
}

/// The outcome of a non-blocking call that did not fail: either it did something, or it would
/// have had to wait (C: `EAGAIN`/`EWOULDBLOCK`).
public enum IOResult<Value>: Equatable where Value: Equatable {
    /// The call completed with this value (bytes, messages, a descriptor).
    case processed(Value)
    /// The call would have blocked; nothing happened.
    case wouldBlock
}

extension IOResult: Sendable where Value: Sendable {}

// NetlinkError: what a failed rtnetlink exchange reports (typed errors carrying the
// errno and the call; the text is built lazily in `description`).
import Glibc

/// A failed netlink operation: the error number, the operation that failed and what it was about.
///
/// `errno` is either the C `errno` of a failed system call (`socket`, `sendto`, `recv`) or the
/// error the kernel answered in `NLMSG_ERROR` (`nlmsgerr.error`, negated back to a positive
/// errno). Malformed answers from the kernel are reported as `EPROTO`.
public struct NetlinkError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The positive error number, as in C `errno` (for example `EEXIST` = 17).
    public var errno: Int32
    /// The operation that failed: a system call name (`"socket"`, `"recv"`) or an rtnetlink
    /// request (`"RTM_NEWROUTE"`).
    public var operation: String
    /// What the operation was about (a route, a rule, a link), followed by the kernel's extended
    /// acknowledgement message when it sent one (`NETLINK_EXT_ACK`). May be empty.
    public var detail: String

    /// Creates an error.
    /// - Parameters:
    ///   - errno: The positive error number.
    ///   - operation: The system call or rtnetlink request that failed.
    ///   - detail: What it was about; may be empty.
    public init(errno: Int32, operation: String, detail: String = "") {
        self.errno = errno
        self.operation = operation
        self.detail = detail
    }

    /// `operation: strerror(errno) (errno N): detail`.
    public var description: String {
        let text = strerror(errno).map { String(cString: $0) } ?? "error"
        let head = "\(operation): \(text) (errno \(errno))"
        return detail.isEmpty ? head : "\(head): \(detail)"
    }

    /// True for "already there" answers (C: `EEXIST`), which idempotent adds accept.
    public var isAlreadyExists: Bool { errno == EEXIST }

    /// True for "not there" answers of deletes (C: `ESRCH`, `ENOENT`, `EADDRNOTAVAIL`), which
    /// idempotent deletes accept.
    public var isNotFound: Bool { errno == ESRCH || errno == ENOENT || errno == EADDRNOTAVAIL }

    /// A malformed message from the kernel (C: `EPROTO`).
    static func malformed(_ what: String) -> NetlinkError {
        NetlinkError(errno: EPROTO, operation: "parse", detail: what)
    }
}

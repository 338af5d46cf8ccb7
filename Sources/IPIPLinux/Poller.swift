import CIPIPLinux
import Glibc

/// Wakes a thread blocked in `Poller.wait` from another thread or from a signal handler.
///
/// An `eventfd` (non-blocking, close-on-exec) that a `Poller` always watches. `wake()` is one
/// `write(2)` of 8 bytes, which is async-signal-safe: call it from a `SIGTERM` handler to make
/// every worker loop return. The counter saturates; a wake while one is pending is merged.
///
/// Threading: `wake()` may be called from any thread at any time while the waker is alive.
/// The descriptor is closed in `deinit` only, so it can never be reused under a concurrent `wake()`.
public final class EventLoopWaker: Sendable {
    /// The eventfd.
    public let fd: Int32

    /// Creates the eventfd.
    /// - Throws: `SystemCallError` from `eventfd`.
    public init() throws(SystemCallError) {
        fd = try Syscall.makeEventFD(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
    }

    deinit { Syscall.close(fd) }

    /// Makes the next (or current) `Poller.wait` return with `woken == true`. Async-signal-safe;
    /// never fails (a saturated counter already means "woken").
    public func wake() {
        var one: UInt64 = 1
        // Safe: a plain write(2) on a valid eventfd; errors (EAGAIN at saturation) are ignored
        // because the waker is then already pending.
        _ = Glibc.write(fd, &one, 8)
    }

    /// Resets the counter so the next wait blocks again. Called by `Poller` when it reports a wake.
    public func reset() {
        var value: UInt64 = 0
        _ = Glibc.read(fd, &value, 8)
    }
}

/// Which descriptors `Poller.wait` found ready.
public struct Readiness: Sendable, Equatable {
    /// Bit `i` set: `fds[i]` is ready (readable or writable as asked, or has an error or hang-up
    /// to report, which the next read or write will return).
    public var ready: UInt64
    /// The waker fired: the loop should check its stop flag.
    public var woken: Bool

    /// Whether `fds[index]` is ready.
    @inlinable public func isReady(_ index: Int) -> Bool { index < 64 && ready & (1 << UInt64(index)) != 0 }
    /// Whether nothing happened before the timeout.
    @inlinable public var timedOut: Bool { ready == 0 && !woken }
}

/// A `poll(2)` over up to 63 descriptors plus a waker, with the `pollfd` array allocated once.
///
/// This is how worker loops stay cancellable while blocked: every descriptor is
/// non-blocking; a loop drains its descriptors until would-block, then waits here; `wake()`
/// from another thread or a signal handler makes the wait return at once.
///
/// Not thread-safe: one thread waits on a poller at a time (each worker owns its own).
public final class Poller: @unchecked Sendable {
    /// The waker this poller always watches.
    public let waker: EventLoopWaker
    /// The largest number of descriptors `wait` accepts.
    public let capacity: Int
    private let pollfds: UnsafeMutablePointer<pollfd>

    /// Creates a poller.
    /// - Parameters:
    ///   - waker: the waker to watch (share one waker between the pollers that must stop together).
    ///   - capacity: the most descriptors one `wait` is given (at most 63).
    public init(waker: EventLoopWaker, capacity: Int = 8) {
        precondition(capacity > 0 && capacity < 64, "a poller watches 1…63 descriptors")
        self.waker = waker
        self.capacity = capacity
        pollfds = .allocate(capacity: capacity + 1)
        pollfds.initialize(repeating: pollfd(fd: -1, events: 0, revents: 0), count: capacity + 1)
    }

    deinit { pollfds.deallocate() }

    /// Blocks until one of `fds` is ready, the waker fires or the timeout passes.
    /// - Parameters:
    ///   - fds: the descriptors, at most `capacity`.
    ///   - events: what to wait for on each: `POLLIN` (default) or `POLLOUT`.
    ///   - timeoutMilliseconds: -1 waits forever, 0 only checks.
    /// - Returns: the ready descriptors by index, and whether the waker fired (it is reset).
    ///   An interrupted wait (`EINTR`) returns early with nothing ready.
    /// - Throws: `SystemCallError` from `poll` (not `EINTR`).
    public func wait(
        fds: [Int32], events: Int16 = Int16(POLLIN), timeoutMilliseconds: Int32
    )
        throws(SystemCallError) -> Readiness
    {
        precondition(fds.count <= capacity, "more descriptors than the poller's capacity")
        for i in 0..<fds.count { pollfds[i] = pollfd(fd: fds[i], events: events, revents: 0) }
        pollfds[fds.count] = pollfd(fd: waker.fd, events: Int16(POLLIN), revents: 0)
        let count = try Syscall.poll(pollfds, fds.count + 1, timeoutMilliseconds)
        var readiness = Readiness(ready: 0, woken: false)
        guard count > 0 else { return readiness }
        for i in 0..<fds.count where pollfds[i].revents != 0 { readiness.ready |= 1 << UInt64(i) }
        if pollfds[fds.count].revents != 0 {
            readiness.woken = true
            waker.reset()
        }
        return readiness
    }

    /// Waits for one descriptor (no waker involved beyond the poller's own).
    /// - Returns: true when `fd` is ready, false on timeout, wake or interruption.
    public func wait(
        fd: Int32, events: Int16 = Int16(POLLIN), timeoutMilliseconds: Int32
    ) throws(SystemCallError)
        -> Bool
    {
        pollfds[0] = pollfd(fd: fd, events: events, revents: 0)
        pollfds[1] = pollfd(fd: waker.fd, events: Int16(POLLIN), revents: 0)
        let count = try Syscall.poll(pollfds, 2, timeoutMilliseconds)
        return count > 0 && pollfds[0].revents != 0
    }
}

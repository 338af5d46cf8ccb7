// Every libc call of the module, in one place.
//
// Rules:
// - `errno` is read immediately after the call, inside `Syscall.retrying`, before anything else
//   can run (a Swift runtime call, a deinit, an allocation may all clobber it).
// - `-1` with `EINTR` is retried (the call had no effect); `EAGAIN`/`EWOULDBLOCK` becomes
//   `.wouldBlock`; anything else is thrown as `SystemCallError` with the call's name.
// - `close` never retries: on Linux the descriptor is gone even when it reports `EINTR`.
// - Nothing here allocates on the paths the workers use per batch (read, write, sendmmsg,
//   recvmmsg, poll); the closures are non-escaping.
import CIPIPLinux
import Glibc

/// The module's system calls. Internal: the public API is the device and socket types.
enum Syscall {
    /// Runs `body` (one system call returning `-1` on failure), retrying on `EINTR`.
    /// - Returns: `.processed(result)` or `.wouldBlock` for `EAGAIN`.
    /// - Throws: `SystemCallError` with `errno` captured right after the call.
    @inline(__always)
    static func retrying<T: FixedWidthInteger>(
        _ call: StaticString,
        retryOnInterrupt: Bool = true,
        _ body: () -> T
    ) throws(SystemCallError) -> IOResult<T> {
        while true {
            let result = body()
            if result != -1 { return .processed(result) }
            let code = Glibc.errno
            if code == EINTR && retryOnInterrupt { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
            throw SystemCallError(errno: code, call: call)
        }
    }

    /// Like `retrying`, for calls where would-block cannot happen or is an error.
    @inline(__always)
    static func checked<T: FixedWidthInteger>(
        _ call: StaticString,
        detail: @autoclosure () -> String = "",
        _ body: () -> T
    ) throws(SystemCallError) -> T {
        while true {
            let result = body()
            if result != -1 { return result }
            let code = Glibc.errno
            if code == EINTR { continue }
            throw SystemCallError(errno: code, call: call, detail: detail())
        }
    }

    // MARK: descriptors

    @inline(never)
    static func open(_ path: String, flags: Int32, mode: mode_t = 0) throws(SystemCallError) -> Int32 {
        try checked("open", detail: path) { path.withCString { Glibc.open($0, flags, mode) } }
    }

    /// Closes `fd`. `EINTR` is ignored (the descriptor is released anyway on Linux); `EBADF`
    /// is a programmer error.
    @inline(never)
    static func close(_ fd: Int32) {
        let result = Glibc.close(fd)
        if result == -1 {
            let code = Glibc.errno
            precondition(code != EBADF, "close(\(fd)): bad file descriptor")
        }
    }

    @inline(never)
    static func read(
        _ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int
    ) throws(SystemCallError)
        -> IOResult<Int>
    {
        try retrying("read") { Glibc.read(fd, buffer, count) }
    }

    @inline(never)
    static func write(
        _ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int
    ) throws(SystemCallError)
        -> IOResult<Int>
    {
        try retrying("write") { Glibc.write(fd, buffer, count) }
    }

    @inline(never)
    static func ioctl(
        _ fd: Int32,
        _ request: UInt,
        _ argument: UnsafeMutableRawPointer,
        call: StaticString
    ) throws(SystemCallError) {
        _ = try checked(call) { Glibc.ioctl(fd, request, argument) }
    }

    @inline(never)
    static func fcntlSetFlags(_ fd: Int32, adding flags: Int32) throws(SystemCallError) {
        let current = try checked("fcntl(F_GETFL)") { Glibc.fcntl(fd, F_GETFL) }
        _ = try checked("fcntl(F_SETFL)") { Glibc.fcntl(fd, F_SETFL, current | flags) }
    }

    // MARK: sockets

    @inline(never)
    static func socket(_ domain: Int32, _ type: Int32, _ proto: Int32) throws(SystemCallError) -> Int32 {
        try checked("socket") { Glibc.socket(domain, type, proto) }
    }

    @inline(never)
    static func setsockopt<Value>(
        _ fd: Int32,
        _ level: Int32,
        _ name: Int32,
        _ value: Value,
        call: StaticString
    ) throws(SystemCallError) {
        var copy = value
        _ = try checked(call) {
            withUnsafeBytes(of: &copy) { Glibc.setsockopt(fd, level, name, $0.baseAddress, socklen_t($0.count)) }
        }
    }

    @inline(never)
    static func getsockopt<Value>(
        _ fd: Int32,
        _ level: Int32,
        _ name: Int32,
        _ value: inout Value,
        call: StaticString
    ) throws(SystemCallError) {
        var length = socklen_t(MemoryLayout<Value>.size)
        _ = try checked(call) {
            withUnsafeMutableBytes(of: &value) { Glibc.getsockopt(fd, level, name, $0.baseAddress, &length) }
        }
    }

    @inline(never)
    static func bind(_ fd: Int32, _ address: UnsafeRawPointer, _ length: Int) throws(SystemCallError) {
        _ = try checked("bind") {
            Glibc.bind(fd, address.assumingMemoryBound(to: sockaddr.self), socklen_t(length))
        }
    }

    @inline(never)
    static func sendmmsg(
        _ fd: Int32, _ vector: UnsafeMutablePointer<cipl_mmsghdr>, _ count: Int
    )
        throws(SystemCallError) -> IOResult<Int32>
    {
        try retrying("sendmmsg") { cipl_sendmmsg(fd, vector, UInt32(count), Int32(MSG_DONTWAIT)) }
    }

    @inline(never)
    static func recvmmsg(
        _ fd: Int32, _ vector: UnsafeMutablePointer<cipl_mmsghdr>, _ count: Int
    )
        throws(SystemCallError) -> IOResult<Int32>
    {
        try retrying("recvmmsg") { cipl_recvmmsg(fd, vector, UInt32(count), Int32(MSG_DONTWAIT), nil) }
    }

    @inline(never)
    static func interfaceIndex(_ name: String) throws(SystemCallError) -> Int32 {
        let index = name.withCString { if_nametoindex($0) }
        if index == 0 { throw SystemCallError(errno: Glibc.errno, call: "if_nametoindex", detail: name) }
        return Int32(bitPattern: index)
    }

    // MARK: waiting

    /// `poll`. `EINTR` returns 0 ready descriptors (the caller loops and recomputes its
    /// deadline) instead of retrying with the full timeout again.
    @inline(never)
    static func poll(
        _ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMilliseconds: Int32
    )
        throws(SystemCallError) -> Int
    {
        let result = Glibc.poll(fds, nfds_t(count), timeoutMilliseconds)
        if result >= 0 { return Int(result) }
        let code = Glibc.errno
        if code == EINTR { return 0 }
        throw SystemCallError(errno: code, call: "poll")
    }

    @inline(never)
    static func makeEventFD(_ initial: UInt32, _ flags: Int32) throws(SystemCallError) -> Int32 {
        try checked("eventfd") { eventfd(initial, flags) }
    }

    @inline(never)
    static func pipe() throws(SystemCallError) -> (read: Int32, write: Int32) {
        var fds: (Int32, Int32) = (-1, -1)
        _ = try checked("pipe2") {
            withUnsafeMutableBytes(of: &fds) { cipl_pipe_cloexec($0.baseAddress!.assumingMemoryBound(to: Int32.self)) }
        }
        return (fds.0, fds.1)
    }

    // MARK: processes

    /// `posix_spawn` of `path` with `arguments` (argv[0] included), the given standard
    /// descriptors dup'ed onto 0, 1 and 2, and the parent's environment.
    @inline(never)
    static func spawn(
        _ path: String,
        arguments: [String],
        standardInput: Int32,
        standardOutput: Int32,
        standardError: Int32
    ) throws(SystemCallError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, standardInput, 0)
        posix_spawn_file_actions_adddup2(&actions, standardOutput, 1)
        posix_spawn_file_actions_adddup2(&actions, standardError, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        // posix_spawn returns the error number instead of setting errno.
        let code = path.withCString { posix_spawn(&pid, $0, &actions, nil, argv, environ) }
        if code != 0 { throw SystemCallError(errno: code, call: "posix_spawn", detail: path) }
        return pid
    }

    /// Waits for `pid` and returns its exit status (128 + signal number when it was killed).
    @inline(never)
    static func wait(_ pid: pid_t) throws(SystemCallError) -> Int32 {
        var status: Int32 = 0
        _ = try checked("waitpid") { Glibc.waitpid(pid, &status, 0) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}

import Foundation
import IPIPControl
import IPIPCore
import IPIPLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's control socket, bound at start (before the daemon touches the host, so that a
/// second ipipd for the same node stops there instead of fighting over its routes).
///
/// Permissions: the socket is created with mode 0600 at `bind` itself (a socket's mode is set
/// with `fchmod` before `bind`, which Linux applies to the new inode), so it is never reachable
/// with looser permissions, not even for the moment between a `bind` and a `chmod`. A missing
/// directory is created with mode 0755. A socket left by a crashed run (nothing listens:
/// `ECONNREFUSED`) is replaced; one that answers is a start error, as is a path that exists and is
/// not a socket (never removed).
public final class ControlSocket: @unchecked Sendable {
    public let path: String
    let fd: Int32
    /// The inode bound, so that `close` removes only our own socket.
    let device: UInt64
    let inode: UInt64

    /// Binds and listens on `path`.
    /// - Throws: `DaemonError` naming the path and what is wrong.
    public init(path: String) throws {
        self.path = path
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !path.isEmpty, path.utf8.count < capacity else {
            throw DaemonError("--control-socket \(path): a unix socket path must be 1…\(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        try Self.makeDirectory(of: path)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw DaemonError(
                    "--control-socket \(path) exists and is not a socket: it is left alone; remove it or choose another path"
                )
            }
            // Someone listening? A live ipipd greets; anything that accepts is live.
            if let who = Self.liveListener(path) {
                throw DaemonError(
                    "--control-socket \(path): \(who) answers there; stop it, or give each ipipd its own --control-socket"
                )
            }
            unlink(path)
        }
        let s = socket(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { throw DaemonError("control socket: socket(): \(String(cString: strerror(errno)))") }
        // Mode before bind: the inode is created 0600 (minus the umask), never wider.
        guard fchmod(s, 0o600) == 0 else {
            let e = errno
            Glibc.close(s)
            throw DaemonError("control socket: fchmod: \(String(cString: strerror(e)))")
        }
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard r == 0, listen(s, 16) == 0 else {
            let e = errno
            Glibc.close(s)
            throw DaemonError("--control-socket \(path): cannot listen: \(String(cString: strerror(e)))")
        }
        guard stat(path, &st) == 0 else {
            Glibc.close(s)
            throw DaemonError("--control-socket \(path) vanished after bind")
        }
        fd = s
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// Closes the socket and removes its path if it is still the inode we bound.
    public func close() {
        var st = stat()
        if stat(path, &st) == 0, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode { unlink(path) }
        Glibc.close(fd)
    }

    /// Creates the socket's directory (and missing parents) with mode 0755.
    static func makeDirectory(of path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        var st = stat()
        if stat(directory, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw DaemonError("--control-socket \(path): \(directory) is not a directory")
            }
            return
        }
        try makeDirectory(of: directory)
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw DaemonError(
                "--control-socket \(path): cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        // Exactly 0755 whatever the umask (the socket itself carries the 0600).
        chmod(directory, 0o755)
    }

    /// Who answers on `path`, nil when nothing does (a stale socket).
    static func liveListener(_ path: String) -> String? {
        do {
            let c = try ControlClient(path: path, greetingTimeout: 1)
            return "a running ipipd (node \(c.node), pid \(c.pid))"
        } catch let e {
            if e.message.contains("no ipipd is running") { return nil }
            if e.message.contains("not ipipd's") { return "another program" }
            return "something (\(e.message))"
        }
    }
}

/// The control socket's server: one thread that accepts a handful of clients, answers their
/// requests (the commands the daemon registers: `status`, `record`, …) and streams verdicts to
/// the ones that asked for `monitor`, from the packet loops' `MonitorRing`s.
///
/// Bounded: at most `maximumClients` connections (one more gets an error line and is closed);
/// a request line is at most `ControlProtocol.maximumRequestByteCount`; every socket is
/// non-blocking, and a monitor client whose unsent output passes `maximumPendingBytes` loses
/// the events that do not fit, counted and reported to it (`{"lost":N}`): a client that stops
/// reading never blocks this thread, and this thread never blocks a packet loop (the rings
/// drop what it does not take in time).
///
/// Filters run here, on this thread, not in the packet loops: the loops only record (every
/// verdict, or only drops when every attached monitor asks for drops only).
///
/// Hazards: commands run on this thread, so a slow one (a fresh snapshot waits a moment for the
/// loops) delays the monitor streams by as much; nothing here may call back into the control
/// thread's state without its lock.
public final class ControlServer: @unchecked Sendable {
    /// A request handler: the request object in, a JSON-serialisable result out; a thrown
    /// error's description is the answer's `error`.
    public typealias Command = ([String: Any]) throws -> Any

    public static let maximumClients = 8
    public static let maximumPendingBytes = 1 << 20

    let socket: ControlSocket
    let node: String
    let rings: [MonitorRing]
    let commands: [String: Command]
    let localAddress: IPv4Address
    let stopped = Atomic<Bool>(false)
    var thread: Thread?

    final class Client {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var closeAfterFlush = false
        /// The client shut its sending side (`socat` at the end of its input): no more reads.
        var readClosed = false
        var monitor: Subscription?
        init(fd: Int32) { self.fd = fd }
    }

    struct Subscription {
        var filter: MonitorFilter
        /// Each ring's `lost` when this client attached.
        var lostAtAttach: [UInt64]
        /// Events that matched but did not fit the client's output.
        var dropped: UInt64 = 0
        var reported: UInt64 = 0
        func lost(_ rings: [MonitorRing]) -> UInt64 {
            var n = dropped
            for (i, r) in rings.enumerated() { n &+= r.lost &- lostAtAttach[i] }
            return n
        }
    }

    var clients: [Client] = []
    var mode: MonitorRing.Mode = .off

    /// - Parameters:
    ///   - rings: one per packet loop (empty: `monitor` is refused).
    ///   - commands: by name; `monitor` is the server's own.
    ///   - localAddress: the node IP (the outer source of what it encapsulates, for summaries).
    public init(
        socket: ControlSocket, node: String, rings: [MonitorRing], commands: [String: Command],
        localAddress: IPv4Address
    ) {
        self.socket = socket
        self.node = node
        self.rings = rings
        self.commands = commands
        self.localAddress = localAddress
    }

    /// Serves on a thread of its own (`ipipd-control`).
    public func start() {
        let t = Thread { [self] in serve() }
        t.name = "ipipd-control"
        thread = t
        t.start()
    }

    /// Stops serving: monitors get `{"end":…}`, every connection closes; waits for the thread.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        while let t = thread, !t.isFinished { MonotonicClock.sleep(seconds: 0.005) }
    }

    func serve() {
        var lastReport = MonotonicClock.seconds()
        while !stopped.load(ordering: .relaxed) {
            var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)]
            let polled = clients
            for c in polled {
                // A half-closed client is not read again (its end of input would be reported
                // readable forever); its hang-up still is (POLLHUP is always reported).
                let events = (c.readClosed ? 0 : Int16(POLLIN)) | (c.output.isEmpty ? 0 : Int16(POLLOUT))
                fds.append(pollfd(fd: c.fd, events: events, revents: 0))
            }
            let r = poll(&fds, nfds_t(fds.count), mode == .off ? 200 : 20)
            if r < 0 && errno != EINTR { break }
            for (i, c) in polled.enumerated() where fds[i + 1].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                receive(c, hangUp: fds[i + 1].revents & Int16(POLLHUP | POLLERR) != 0)
            }
            if fds[0].revents & Int16(POLLIN) != 0 { accept() }
            if mode != .off { drainRings() }
            let now = MonotonicClock.seconds()
            if now - lastReport >= 1 {
                lastReport = now
                reportLosses()
            }
            for c in clients { flush(c) }
            clients.removeAll { c in
                let done = c.closeAfterFlush && c.output.isEmpty
                if done { Glibc.close(c.fd) }
                return done
            }
            updateMode()
        }
        for c in clients {
            if c.monitor != nil {
                reportLosses()
                append(ControlProtocol.line(["end": "ipipd is stopping"]), to: c)
            }
            flush(c)
            Glibc.close(c.fd)
        }
        clients = []
        updateMode()
        socket.close()
    }

    func accept() {
        while true {
            let fd = Glibc.accept(socket.fd, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let c = Client(fd: fd)
            if clients.count >= Self.maximumClients {
                append(
                    ControlProtocol.error(
                        "ipipd serves at most \(Self.maximumClients) control clients at once; try again"), to: c)
                flush(c)
                Glibc.close(fd)
                continue
            }
            append(ControlProtocol.greeting(node: node, pid: getpid()), to: c)
            clients.append(c)
        }
    }

    /// Reads what `c` sent and answers its complete lines. `hangUp`: the peer is gone (poll
    /// said POLLHUP), as opposed to having only shut its sending side.
    func receive(_ c: Client, hangUp: Bool) {
        var chunk = [UInt8](repeating: 0, count: 16384)
        while !c.readClosed || hangUp {
            let n = chunk.withUnsafeMutableBytes { Glibc.recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 && !hangUp {
                // Half-closed: answer what it asked, then close (a monitor streams on until
                // the client goes away).
                c.readClosed = true
                break
            }
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                // The client went away (a monitor's Ctrl-C): forget it at once.
                c.output = []
                c.closeAfterFlush = true
                c.monitor = nil
                return
            }
            if n < 0 { break }
            c.input.append(contentsOf: chunk[..<n])
            if c.input.count > ControlProtocol.maximumRequestByteCount + 1 && !c.input.contains(10) {
                append(
                    ControlProtocol.error("request line longer than \(ControlProtocol.maximumRequestByteCount) bytes"),
                    to: c)
                c.input = []
                c.closeAfterFlush = true
                return
            }
        }
        while let nl = c.input.firstIndex(of: 10), !c.closeAfterFlush {
            let line = String(decoding: c.input[..<nl], as: UTF8.self)
            c.input.removeSubrange(...nl)
            if line.allSatisfy({ $0 == " " || $0 == "\r" }) { continue }
            handle(line, from: c)
        }
        if c.readClosed && c.monitor == nil { c.closeAfterFlush = true }
    }

    func handle(_ line: String, from c: Client) {
        guard let request = ControlProtocol.object(line) else {
            append(
                ControlProtocol.error("not a JSON object: a request is one line such as {\"command\":\"status\"}"),
                to: c)
            return
        }
        guard let name = request["command"] as? String else {
            append(
                ControlProtocol.error("the request has no \"command\" string (such as {\"command\":\"status\"})"), to: c
            )
            return
        }
        if name == "monitor" {
            attachMonitor(request, c)
            return
        }
        guard let command = commands[name] else {
            let known = (Array(commands.keys) + ["monitor"]).sorted().joined(separator: ", ")
            append(ControlProtocol.error("unknown command '\(name)' (one of: \(known))"), to: c)
            return
        }
        do {
            append(ControlProtocol.ok(try command(request)), to: c)
        } catch {
            append(ControlProtocol.error("\(error)"), to: c)
        }
    }

    func attachMonitor(_ request: [String: Any], _ c: Client) {
        guard !rings.isEmpty else {
            append(ControlProtocol.error("this ipipd has no packet loops to monitor"), to: c)
            return
        }
        guard c.monitor == nil else {
            append(ControlProtocol.error("this connection already monitors"), to: c)
            return
        }
        let filter: MonitorFilter
        do {
            let raw: Any = request["filter"] ?? [String: Any]()
            guard let wire = raw as? [String: Any] else {
                throw ControlError("monitor: 'filter' must be an object")
            }
            filter = try MonitorFilter(wire: wire)
        } catch {
            append(ControlProtocol.error("\(error)"), to: c)
            return
        }
        if mode == .off { for r in rings { r.discardPending() } }
        c.monitor = Subscription(filter: filter, lostAtAttach: rings.map(\.lost))
        append(ControlProtocol.ok(["filter": filter.description, "workers": rings.count]), to: c)
        updateMode()
    }

    /// The rings record what the most demanding monitor needs.
    func updateMode() {
        var wanted = MonitorRing.Mode.off
        for c in clients {
            guard let m = c.monitor else { continue }
            if m.filter.ringMode == .all {
                wanted = .all
                break
            }
            wanted = .dropsOnly
        }
        guard wanted != mode else { return }
        if wanted == .off { drainRings() }
        mode = wanted
        for r in rings { r.mode = wanted }
    }

    func drainRings() {
        let monitors = clients.filter { $0.monitor != nil }
        // Wall clock minus monotonic clock: the loops stamp packets with the latter.
        var real = timespec()
        clock_gettime(CLOCK_REALTIME, &real)
        let mono = MonotonicClock.now()
        let offset =
            (Int64(real.tv_sec) - mono.seconds) * 1_000_000_000 + (Int64(real.tv_nsec) - Int64(mono.nanoseconds))
        let local = localAddress
        for ring in rings {
            ring.drain { record, bytes in
                guard !monitors.isEmpty else { return }
                let event = MonitorEvent(record: record, bytes: bytes, clockOffset: offset, localAddress: local)
                var line: String?
                for c in monitors where c.monitor!.filter.matches(event) {
                    if c.output.count > Self.maximumPendingBytes {
                        c.monitor!.dropped &+= 1
                        continue
                    }
                    if line == nil { line = ControlProtocol.line(["event": event.jsonObject]) }
                    append(line!, to: c)
                }
            }
        }
    }

    func reportLosses() {
        for c in clients {
            guard var m = c.monitor else { continue }
            let lost = m.lost(rings)
            if lost != m.reported {
                m.reported = lost
                c.monitor = m
                append(ControlProtocol.line(["lost": lost]), to: c)
            }
        }
    }

    func append(_ line: String, to c: Client) { c.output.append(contentsOf: line.utf8) }

    func flush(_ c: Client) {
        while !c.output.isEmpty {
            let n = c.output.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                c.output.removeFirst(n)
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
            c.output = []
            c.closeAfterFlush = true
            c.monitor = nil
            return
        }
    }
}

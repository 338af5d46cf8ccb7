import Foundation
import IPIPControl
import IPIPCore
import IPIPLinux
import IPIPTestSupport
import Testing

@testable import IPIPDataplane

#if canImport(Glibc)
import Glibc
#endif

/// The control socket of `Daemon.run()` on a `FakeHost` (no root): its mode, the status through
/// a refused reload, the command dispatch (`record` with and without a handler, unknown
/// commands, `monitor` without packet loops), a second daemon refused on a live socket, a stale
/// one replaced, and the socket gone after SIGTERM.
@Suite("Control socket on a fake host (no root)")
struct ControlSocketTests {
    func daemon(_ dir: TempDir, socket: String, script: [FakeHost.Step]) throws -> Daemon {
        let manifests = dir.write("cluster.yaml", try ExampleCluster.manifests())
        let host = FakeHost(uplinkAddress: IPv4Address("10.0.0.1")!, script: script)
        var options = DaemonOptions(node: "node-a")
        options.metricsPort = 0
        options.controlSocket = socket
        let (logger, _) = RecordingLogHandler.logger()
        return Daemon(options: options, source: ManifestSource(paths: [manifests]), logger: logger, host: host)
    }

    func status(_ socket: String) throws -> NodeStatus {
        let c = try ControlClient(path: socket)
        let result = try c.request(["command": "status"])
        return try JSONDecoder().decode(NodeStatus.self, from: JSONSerialization.data(withJSONObject: result))
    }

    func answer(_ socket: String, _ request: [String: Any]) -> String {
        do {
            let c = try ControlClient(path: socket)
            return "ok: \(try c.request(request))"
        } catch {
            return "error: \(error.message)"
        }
    }

    @Test(
        "status through a refused reload; record, unknown commands and monitor answered; the socket 0600 and gone at exit"
    )
    func lifecycle() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        // A directory that does not exist yet: created 0755.
        let socket = dir.file("run/ipipd.sock")
        var first: NodeStatus?
        var second: NodeStatus?
        var answers: [String] = []
        var mode: (socket: UInt32, directory: UInt32) = (0, 0)
        var d: Daemon!
        d = try daemon(
            dir, socket: socket,
            script: [
                { _ in
                    var st = stat()
                    stat(socket, &st)
                    var dst = stat()
                    stat(dir.file("run"), &dst)
                    mode = (st.st_mode & 0o7777, dst.st_mode & 0o7777)
                    first = try? status(socket)
                    _ = dir.write(
                        "cluster.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nspec: {cidr: nope}\n")
                    return [.hangup]
                },
                { _ in
                    second = try? status(socket)
                    answers.append(answer(socket, ["command": "record", "out": "/tmp/x"]))
                    answers.append(answer(socket, ["command": "record", "out": "relative"]))
                    d.recordHandler.withLock { $0 = { dir in "wrote \(dir)" } }
                    answers.append(answer(socket, ["command": "record", "out": "/tmp/x"]))
                    answers.append(answer(socket, ["command": "frobnicate"]))
                    answers.append(answer(socket, ["command": "monitor"]))
                    answers.append(answer(socket, ["verb": "status"]))
                    answers.append(answer(socket, ["command": 7]))
                    return [.terminate]
                },
            ])
        #expect(try d.run() == 0)
        #expect(mode.socket == 0o600 && mode.directory == 0o755, "modes \(mode)")
        let s = try #require(first)
        #expect(s.node == "node-a" && s.nodeIP == "10.0.0.1/24" && s.tunnel.mtu == 1480)
        #expect(s.topology.generation == 1 && s.topology.reloadErrors == 0)
        #expect(s.pools.map(\.ipipMode) == ["Always"] && s.pools[0].encapsulatedPeers == ["node-b", "node-c"])
        #expect(s.peers.map(\.name) == ["node-b", "node-c"] && s.peers.allSatisfy { $0.route == "ipip" })
        #expect(s.peers.first?.blocks == ["192.168.1.0/26"])
        let t = try #require(second)
        #expect(t.topology.reloadErrors == 1 && t.topology.generation == 1)
        #expect(t.topology.lastReloadError?.contains("cluster.yaml") == true, "\(t.topology)")
        #expect(
            answers == [
                "error: the flight recorder is off (start ipipd with --record-buffer SIZE)",
                "error: record: 'out' must be an absolute directory path",
                "ok: wrote /tmp/x",
                "error: unknown command 'frobnicate' (one of: monitor, record, status)",
                "error: this ipipd has no packet loops to monitor",
                "error: the request has no \"command\" string (such as {\"command\":\"status\"})",
                "error: the request has no \"command\" string (such as {\"command\":\"status\"})",
            ])
        #expect(access(socket, F_OK) != 0, "the socket is removed at exit")
    }

    /// What a one-shot client such as `socat` gets: connect, send `request`, shut the sending
    /// side, read to the end.
    func halfClosed(_ socket: String, _ request: String) -> String {
        let s = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { raw in for (i, b) in socket.utf8.enumerated() { raw[i] = b } }
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard r == 0 else { return "connect failed" }
        _ = request.withCString { write(s, $0, strlen($0)) }
        shutdown(s, Int32(SHUT_WR))
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(s, &buffer, buffer.count)
            if n <= 0 { break }
            out += buffer[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("a live socket is a start error (nothing on the host touched); a stale one is replaced; a file is left alone")
    func liveAndStale() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let socket = dir.file("ipipd.sock")
        var refused = ""
        var tooMany = ""
        var heldCount = 0
        var oneShot = ""
        let d = try daemon(
            dir, socket: socket,
            script: [
                { _ in
                    do {
                        _ = try ControlSocket(path: socket)
                        refused = "bound twice"
                    } catch {
                        refused = "\(error)"
                    }
                    oneShot = halfClosed(socket, "{\"command\":\"status\"}\n")
                    // Bounded: with the maximum connected, one more is refused, in words.
                    let held = (0..<ControlServer.maximumClients).compactMap { _ in try? ControlClient(path: socket) }
                    do {
                        _ = try ControlClient(path: socket)
                        tooMany = "connected"
                    } catch {
                        tooMany = "\(error)"
                    }
                    heldCount = held.count
                    return [.terminate]
                }
            ])
        #expect(try d.run() == 0)
        #expect(refused.contains("a running ipipd (node node-a, pid \(getpid())) answers there"), "\(refused)")
        #expect(heldCount == ControlServer.maximumClients)
        // socat's way: the request, end of input, and the answer still comes (then the end).
        let lines = oneShot.split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasPrefix("{\"ipipd\":\"control\""), "\(oneShot)")
        #expect(lines.last?.contains("\"ok\":true") == true && lines.last?.contains("\"node\":\"node-a\"") == true)
        #expect(
            tooMany.hasSuffix("refused the connection: ipipd serves at most 8 control clients at once; try again"),
            "\(tooMany)")
        // A stale socket (bound, never listened on, left behind): replaced.
        let s = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { raw in for (i, b) in socket.utf8.enumerated() { raw[i] = b } }
        _ = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        close(s)
        let replaced = try ControlSocket(path: socket)
        replaced.close()
        // A regular file under the name: refused, kept.
        let file = dir.write("not-a-socket", "keep me\n")
        #expect(throws: DaemonError.self) { _ = try ControlSocket(path: file) }
        #expect((try? String(contentsOfFile: file, encoding: .utf8)) == "keep me\n")
    }
}

/// The server's monitor path without a daemon: a ring it drains, a client that attaches, gets
/// the events its filter selects, and detaches by going away (the ring stops recording).
@Suite("Control server: monitor streams from a ring")
struct ControlServerMonitorTests {
    /// Waits (polling) until `condition` holds or 10 s pass; returns whether it held.
    func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<1000 {
            if condition() { return true }
            MonotonicClock.sleep(seconds: 0.01)
        }
        return condition()
    }

    @Test("attach sets the ring's mode from the filter; events arrive filtered; a closed client detaches")
    func stream() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let ring = MonitorRing(capacity: 64, batchCapacity: 4)
        let server = ControlServer(
            socket: try ControlSocket(path: dir.file("s")), node: "node-a", rings: [ring], commands: [:],
            localAddress: IPv4Address("10.0.0.1")!)
        server.start()
        defer { server.stop() }
        var client: ControlClient? = try ControlClient(path: dir.file("s"))
        let filter = try MonitorFilter.parse(drops: true)
        _ = try client!.request(["command": "monitor", "filter": filter.wire])
        #expect(eventually { ring.mode == .dropsOnly })
        // Two packets, one dropped: only the drop is recorded and sent.
        var batch = PacketBatch(capacity: 4)
        for source in ["192.168.0.10", "192.168.0.11"] {
            let p = PacketBuilder(source: IPv4Address(source)!, destination: IPv4Address("192.168.1.20")!).bytes()
            _ = p.withUnsafeBytes { batch.append(copying: $0, time: Timestamp(seconds: 5)) }
        }
        let verdicts = VerdictBatch(capacity: 4)
        verdicts[0] = PacketVerdict(action: .encapsulated, peer: IPv4Address("10.0.0.2")!)
        verdicts[1] = PacketVerdict(action: .dropped, dropReason: .noRoute)
        ring.stage(batch, egress: true)
        ring.commit(verdicts, count: 2, mode: ring.mode)
        guard case .line(let line) = try client!.readLine(timeout: 10) else {
            Issue.record("no event")
            return
        }
        let event = try #require(ControlProtocol.object(line)?["event"] as? [String: Any])
        #expect(event["reason"] as? String == "no_route")
        #expect((event["summary"] as? String)?.hasPrefix("192.168.0.11 > 192.168.1.20 udp") == true)
        client = nil  // the monitor goes away
        #expect(eventually { ring.mode == .off }, "the ring still records for a client that left")
    }
}

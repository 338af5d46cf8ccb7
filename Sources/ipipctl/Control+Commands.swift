import ArgumentParser
import Foundation
import IPIPControl
import IPIPCore
import Pcap

#if canImport(Glibc)
import Glibc
#endif

/// `--socket`, shared by the commands that talk to the local ipipd.
struct SocketOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "ipipd's control socket. Default: $IPIPD_SOCKET, else /run/ipipd/ipipd.sock.", valueName: "path"))
    var socket: String?

    var path: String {
        socket ?? ProcessInfo.processInfo.environment[ControlProtocol.socketEnvironmentVariable]
            ?? ControlProtocol.defaultSocketPath
    }

    /// Connects, or prints the reason and exits 1.
    func connect() throws -> ControlClient {
        do {
            return try ControlClient(path: path)
        } catch {
            fail(error.message)
        }
    }
}

/// Prints `ipipctl: message` on standard error and exits 1.
func fail(_ message: String) -> Never {
    emit("ipipctl: \(message)\n", to: 2)
    exit(1)
}

struct NodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Ask the local ipipd about its node (over its control socket).",
        subcommands: [NodeStatusCommand.self, NodeRecordCommand.self])
}

struct NodeStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "This node's dataplane: uplink, tunnel, topology, pools as applied, peers with their traffic, NAT.",
        discussion:
            "Counters are fresh (the packet loops publish them on request). Exit 1 when no ipipd answers on the socket."
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("table (default), json or yaml.", valueName: "format"))
    var output = "table"
    @OptionGroup var socket: SocketOptions

    func run() throws {
        guard let format = NodeStatus.Format(rawValue: output) else {
            fail("-o: unknown format '\(output)' (table, json or yaml)")
        }
        let client = try socket.connect()
        let status: NodeStatus
        do {
            let result = try client.request(["command": "status"])
            let data = try JSONSerialization.data(withJSONObject: result)
            status = try JSONDecoder().decode(NodeStatus.self, from: data)
        } catch let e as ControlError {
            fail(e.message)
        } catch {
            fail("the status from \(client.path) does not decode: \(error)")
        }
        emit(try status.rendered(format), to: 1)
    }
}

struct NodeRecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Have the flight recorder write what it holds into a directory (ipipd run --record-buffer).")

    @Option(help: ArgumentHelp("The directory to write (resolved here, sent as an absolute path).", valueName: "dir"))
    var out: String
    @OptionGroup var socket: SocketOptions

    func run() throws {
        let absolute =
            out.hasPrefix("/") ? out : FileManager.default.currentDirectoryPath + "/" + out
        let path = URL(fileURLWithPath: absolute).standardizedFileURL.path
        let client = try socket.connect()
        do {
            let result = try client.request(["command": "record", "out": path], timeout: 120)
            if let text = result as? String {
                emit(text.hasSuffix("\n") ? text : text + "\n", to: 1)
            } else {
                let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
                emit(String(decoding: data, as: UTF8.self) + "\n", to: 1)
            }
        } catch let e as ControlError {
            fail(e.message)
        }
    }
}

/// Set by SIGINT/SIGTERM: the monitor ends at its next look (within 0.2 s).
nonisolated(unsafe) var monitorInterrupted: sig_atomic_t = 0

struct MonitorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor",
        abstract: "Stream the local ipipd's verdicts live, one line per packet (like cilium monitor).",
        discussion: """
            Filters are applied in the daemon; different flags must all match, the values of one \
            flag (repeat it or give a comma list) are alternatives. Events the daemon could not \
            keep up with are counted and shown ("N events lost"). Ctrl-C ends it.
            """)

    @Flag(help: "Only dropped packets.")
    var drops = false
    @Option(
        name: .customLong("reason"),
        help: ArgumentHelp("Only drops for this reason (implies --drops).", valueName: "reason"))
    var reasons: [String] = []
    @Option(help: ArgumentHelp("Only packets to or from this peer node IP (the outer header).", valueName: "ip"))
    var peer: [String] = []
    @Option(
        help: ArgumentHelp(
            "Only packets with this address as an outer or inner source or destination.", valueName: "ip"))
    var host: [String] = []
    @Option(help: ArgumentHelp("Only packets with this inner TCP/UDP source or destination port.", valueName: "n"))
    var port: [String] = []
    @Option(
        name: .shortAndLong, help: ArgumentHelp("text (default) or json (one object per line).", valueName: "format"))
    var output = "text"
    @Option(
        name: .customShort("w"),
        help: ArgumentHelp(
            "Also write the packets (their captured first bytes) to a pcapng file, each with its verdict line as its comment.",
            valueName: "file.pcapng"))
    var write: String?
    @Option(help: ArgumentHelp("Stop after this many events.", valueName: "n"))
    var count: Int?
    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds"))
    var timeout: Double?
    @OptionGroup var socket: SocketOptions

    func run() throws {
        let filter: MonitorFilter
        do {
            filter = try MonitorFilter.parse(drops: drops, reasons: reasons, peers: peer, hosts: host, ports: port)
        } catch {
            fail("monitor: \(error.message)")
        }
        guard output == "text" || output == "json" else {
            fail("monitor: -o: unknown format '\(output)' (text or json)")
        }
        if let count, count < 1 { fail("monitor: --count must be at least 1") }
        if let timeout, !(timeout > 0) { fail("monitor: --timeout must be a positive number of seconds") }
        let client = try socket.connect()
        do {
            _ = try client.request(["command": "monitor", "filter": filter.wire], timeout: 10)
        } catch {
            fail(error.message)
        }
        var writer: PcapNGWriter?
        if let write {
            do {
                writer = try PcapNGWriter(
                    path: write, linkType: .raw, comment: "ipipctl monitor on \(client.node): \(filter.description)",
                    interfaceName: "ipipd verdicts (\(client.node))")
            } catch {
                fail("monitor: -w: \(error)")
            }
        }
        signal(SIGPIPE, SIG_IGN)
        signal(SIGINT) { _ in monitorInterrupted = 1 }
        signal(SIGTERM) { _ in monitorInterrupted = 1 }
        emit("monitoring \(client.node) (\(filter.description)); Ctrl-C to stop\n", to: 2)
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        var shown = 0
        var lost: UInt64 = 0
        var endedBy: String?
        loop: while monitorInterrupted == 0 {
            if let deadline, Date() >= deadline { break }
            let read: ControlClient.Read
            do {
                read = try client.readLine(timeout: 0.2)
            } catch {
                endedBy = error.message
                break
            }
            switch read {
            case .timeout:
                continue
            case .closed:
                endedBy = "ipipd closed the connection"
                break loop
            case .line(let l):
                guard let o = ControlProtocol.object(l) else { continue }
                if let e = o["event"] as? [String: Any], let event = MonitorEvent(json: e) {
                    let text: String
                    if output == "json" {
                        let data =
                            (try? JSONSerialization.data(
                                withJSONObject: e, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
                        text = String(decoding: data, as: UTF8.self)
                    } else {
                        text = event.line
                    }
                    if !writeOut(text + "\n") { break loop }
                    event.packet.withUnsafeBytes { writer?.write($0, timestamp: event.time, comment: event.line) }
                    shown += 1
                    if let count, shown >= count { break loop }
                } else if let n = o["lost"] as? Int {
                    lost = UInt64(n)
                    emit("\(lost) events lost\n", to: 2)
                } else if let end = o["end"] as? String {
                    endedBy = end
                    break loop
                }
            }
        }
        var failed = false
        if let writer {
            do { try writer.close() } catch {
                emit("ipipctl: monitor: -w: \(error)\n", to: 2)
                failed = true
            }
        }
        emit("\(shown) events shown, \(lost) events lost\(endedBy.map { "; \($0)" } ?? "")\n", to: 2)
        if failed { throw ExitCode(1) }
    }

    /// Writes to standard output; false once the reader went away (EPIPE: `| head`).
    func writeOut(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(1, buffer.baseAddress! + offset, buffer.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return false
                }
            }
            return true
        }
    }
}

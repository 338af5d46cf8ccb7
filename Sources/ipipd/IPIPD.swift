import ArgumentParser
import Foundation
import IPIPCore
import IPIPDataplane
import IPIPLinux
import IPIPOffline
import IPIPResources
import Logging

#if canImport(Glibc)
import Glibc
#endif

@main
struct IPIPD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipipd",
        abstract: "A userspace IP-in-IP dataplane with Calico's IPPool semantics.",
        subcommands: [Run.self, Replay.self, Bench.self, Gen.self, MetricNames.self]
    )
}

/// The captures `replay` and `bench` read, and the engine batch they are cut into.
struct CaptureInputOptions: ParsableArguments {
    @Option(
        name: .customLong("in"),
        help: ArgumentHelp("Capture of workload traffic, the TUN side (pcap or pcapng).", valueName: "capture"))
    var input: String

    @Option(
        name: .customLong("underlay-in"),
        help: ArgumentHelp(
            "Capture of packets arriving on the underlay, merged with --in by timestamp.", valueName: "capture"))
    var underlayInput: String?

    @Option(name: .long, help: "Packets per engine batch.")
    var batch: Int = 64

    func validate() throws {
        guard batch >= 1 && batch <= 4096 else { throw ValidationError("--batch must be 1…4096") }
    }
}

/// Options shared by every command that compiles a topology.
struct TopologyOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Calico manifests (file or directory; repeatable).", valueName: "path"))
    var manifests: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp("The name of the node this dataplane runs as (a Node resource).", valueName: "name"))
    var node: String

    @Option(
        name: .customLong("underlay-mtu"),
        help: "MTU of the underlay; the tunnel MTU is this − 20 unless FelixConfiguration ipipMTU says otherwise.")
    var underlayMTU: Int = 1500

    @Option(
        name: .customLong("outer-ttl"),
        help: ArgumentHelp("TTL of the outer header: 1…255, or 'inherit' to copy the inner TTL.", valueName: "ttl"))
    var outerTTL: String = "64"

    func validate() throws {
        guard !manifests.isEmpty else { throw ValidationError("give at least one --manifests path") }
        guard outerTTL == "inherit" || (UInt8(outerTTL).map { $0 > 0 } ?? false) else {
            throw ValidationError("--outer-ttl must be 1…255 or 'inherit', not '\(outerTTL)'")
        }
    }

    func engineConfiguration() -> EngineConfiguration {
        EngineConfiguration(outerTimeToLive: outerTTL == "inherit" ? 0 : UInt8(outerTTL)!)
    }

    /// Loads, validates and compiles; prints every problem and exits 1 on failure.
    func compile() throws -> Topology {
        do {
            let topology = try ClusterLoader.topology(manifests: manifests, node: node, underlayMTU: underlayMTU)
            for w in topology.warnings { printError("warning: \(w)") }
            return topology
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}

func printError(_ s: String) {
    var line = s + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a capture of workload traffic through the engine.",
        discussion: """
            Every IPv4 packet of --in is handled as if a local workload had sent it into the TUN \
            device of --node; every IPv4 packet of --underlay-in as if it had arrived on the node's \
            uplink. The two are merged by timestamp. What the engine emits is written with the input packet's timestamp: \
            all of it to --out, the underlay part to --underlay-out, what goes back into the TUN \
            (decapsulated packets, translated replies, ICMP errors) to --tun-out. --verdicts gets one JSON object per input packet. \
            Non-IPv4 packets are counted and skipped.
            """
    )

    @OptionGroup var topology: TopologyOptions

    @OptionGroup var captures: CaptureInputOptions

    @Option(name: .customLong("out"), help: ArgumentHelp("Everything emitted (pcap, raw IPv4).", valueName: "capture"))
    var output: String?

    @Option(name: .customLong("underlay-out"), help: ArgumentHelp("What goes to the underlay.", valueName: "capture"))
    var underlayOutput: String?

    @Option(name: .customLong("tun-out"), help: ArgumentHelp("What goes back into the TUN.", valueName: "capture"))
    var tunOutput: String?

    @Option(name: .long, help: ArgumentHelp("One JSON object per input packet.", valueName: "file"))
    var verdicts: String?

    @Flag(
        name: .long,
        help:
            "Write the TUN side as the live daemon's TUN (virtio headers, TSO/USO) takes it: packets toward it coalesced, super-packets whole; every output capture gets link type 147 (virtio_net_hdr + IPv4). Inputs of link type 147 mark super-packets either way."
    )
    var offloads = false

    @Flag(name: .shortAndLong, help: "Print no summary.")
    var quiet = false

    func run() throws {
        // A flight recording's cluster.yaml carries the live engine's state after the manifests:
        // preload it, replay, and compare with the live verdicts (docs/flight-recorder.md).
        let recording: (set: ResourceSet, states: [RecordedEngineState])?
        do {
            recording = try topology.manifests.count == 1 ? ClusterLoader.recording(path: topology.manifests[0]) : nil
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        if let recording { return try runRecording(recording) }
        let topo = try topology.compile()
        let engine = Engine(topology: topo, configuration: topology.engineConfiguration())
        let options = ReplayOptions(
            input: captures.input, underlayInput: captures.underlayInput, output: output,
            underlayOutput: underlayOutput,
            tunOutput: tunOutput,
            verdicts: verdicts, batchSize: captures.batch, offloads: offloads)
        let replay = IPIPOffline.Replay(engine: engine, options: options, progress: ProgressReporter(label: "replay"))
        do {
            let summary = try replay.run()
            if !quiet { print(summary.report(input: captures.input, node: topology.node, topology: topo)) }
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }
}

extension Replay {
    /// The replay of a flight recording: exit 0 when every live verdict is reproduced, 2 when
    /// some differ (each listed), 1 on an error.
    func runRecording(_ recording: (set: ResourceSet, states: [RecordedEngineState])) throws {
        do {
            let check = try RecordingCheck(states: recording.states, node: topology.node)
            let topo = try Topology.compile(
                ClusterLoader.spec(from: recording.set, node: topology.node, underlayMTU: check.underlayMTU))
            for w in topo.warnings { printError("warning: \(w)") }
            let engine = Engine(
                topology: topo,
                configuration: check.configuration(outerTimeToLive: topology.engineConfiguration().outerTimeToLive))
            do { try engine.preload(check.preloadState) } catch {
                throw ReplayError("\(topology.manifests[0]): the recorded engine state does not fit: \(error)")
            }
            let options = ReplayOptions(
                input: captures.input, underlayInput: captures.underlayInput, output: output,
                underlayOutput: underlayOutput, tunOutput: tunOutput, verdicts: verdicts, batchSize: captures.batch,
                offloads: offloads)
            let (summary, result) = try check.run(
                engine: engine, options: options, progress: ProgressReporter(label: "replay"))
            if !quiet {
                print(summary.report(input: captures.input, node: topology.node, topology: topo))
                let p = check.preloadState
                print(
                    "  recorded state:     \(p.natSessions.count) NAT sessions, \(p.pathMTUs.count) path MTUs preloaded (underlay MTU \(check.underlayMTU))"
                )
            }
            print(result.report(workers: check.states.count))
            if !result.differences.isEmpty { throw ExitCode(2) }
        } catch let e as ExitCode {
            throw e
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the dataplane on this host (root): TUN, uplink capture, raw socket, routes.",
        discussion: """
            Reads the Calico resources from --manifests, finds the uplink that holds the node's IP, \
            creates the TUN device, programs routes, policy rules, sysctls and an nftables table, and \
            moves packets until SIGTERM or SIGINT, when it removes everything it added. SIGHUP, or a \
            change of the manifests, reloads the topology without pausing traffic; SIGUSR1 logs a \
            one-line summary of the counters; SIGUSR2 writes a flight recording (--record-buffer) \
            into a new directory under --record-dir. Metrics: http://127.0.0.1:9091/metrics.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The name of this node (a Node resource).", valueName: "name"))
    var node: String

    @Option(name: .long, help: ArgumentHelp("Calico manifests (file or directory; repeatable).", valueName: "path"))
    var manifests: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The datastore instead of --manifests: sqlite[:PATH] (the default store of ipipctl), etcd[:URL[,URL...]] (Calico's etcd v3 layout) or manifests:PATH[,PATH]; also IPIPD_DATASTORE.",
            valueName: "store"))
    var datastore: String?

    @Option(
        name: .long,
        help: ArgumentHelp("The uplink; default: the interface holding the node IP.", valueName: "interface"))
    var uplink: String?

    @Option(name: .customLong("tun-name"), help: "The TUN device's name (not tunl0).")
    var tunName = "ipip0"

    @Option(name: .customLong("underlay-mtu"), help: "MTU of the underlay; default: the uplink's MTU.")
    var underlayMTU: Int?

    @Option(
        name: .customLong("outer-ttl"),
        help: ArgumentHelp("TTL of the outer header: 1…255, or 'inherit'.", valueName: "ttl"))
    var outerTTL: String = "64"

    @Option(
        name: .customLong("metrics-address"),
        help: ArgumentHelp("Prometheus metrics address host:port; 'off' disables.", valueName: "address"))
    var metricsAddress = "127.0.0.1:9091"

    @Option(
        name: .customLong("health-address"),
        help: ArgumentHelp(
            "Serve /liveness and /readiness on host:port (an IPv4 address), or 'off'; overrides FelixConfiguration healthEnabled, healthHost and healthPort (default: as FelixConfiguration says; Felix's defaults: off, localhost, 9099).",
            valueName: "address"))
    var healthAddress: String?

    @Option(name: .customLong("resync-interval"), help: "Seconds between reconcile passes.")
    var resyncInterval: Double = 10

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(name: .long, help: "Packets per batch.")
    var batch = 64

    @Option(
        name: .customLong("uplink-io"),
        help: ArgumentHelp(
            "How encapsulated packets leave: auto (the fastest that opens: xdp, packet, raw), xdp (AF_XDP), packet (AF_PACKET sendmmsg) or raw (raw IPv4 socket).",
            valueName: "method"))
    var uplinkIO = "auto"

    @Option(
        name: .customLong("uplink-rx"),
        help: ArgumentHelp(
            "How the uplink's packets are read: mmsg (recvmmsg, the default) or ring (a TPACKET_V2 ring: no system call per batch, but measured dearer in total: the kernel copies into the ring and ipipd out of it).",
            valueName: "mmsg|ring"))
    var uplinkRX = "mmsg"

    @Option(
        name: .customLong("tun-offloads"),
        help: ArgumentHelp(
            "on: the TUN carries virtio headers with TSO/USO super-packets; off: one plain packet per read and write.",
            valueName: "on|off"))
    var tunOffloads = "on"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Packet workers: threads with an engine, a TUN queue, a capture socket and a transmit path each; SNAT ports are split among them (see docs/decisions.md, Workers).",
            valueName: "n"))
    var workers = 1

    @Option(
        name: .customLong("nat-timeouts"),
        help: ArgumentHelp(
            "SNAT idle timeouts in seconds, any of udp=300,tcp-established=7440,tcp-transitory=240,icmp=60 (the defaults: RFC 4787, RFC 5382 and RFC 7857, RFC 5508).",
            valueName: "list"))
    var natTimeouts: String?

    @Option(
        name: .customLong("nat-secret-file"),
        help: ArgumentHelp(
            "The secret of SNAT's port choice, kept so that natOutgoing flows survive a restart (created when missing); 'off': a new secret at every start.",
            valueName: "path"))
    var natSecretFile = NATSecretFile.defaultPath

    @Option(
        name: .customLong("control-socket"),
        help: ArgumentHelp(
            "The unix socket of ipipctl node status, monitor and node record (root's, mode 0600; its directory is created 0755); 'off' disables. Default: $IPIPD_SOCKET, else /run/ipipd/ipipd.sock. Give each ipipd on a host its own.",
            valueName: "path"))
    var controlSocket: String?

    @Option(
        name: .customLong("spin-us"),
        help: ArgumentHelp(
            "After a batch, poll without sleeping for this many microseconds before blocking again (0: never spin).",
            valueName: "µs"))
    var spinMicroseconds = 0

    @Option(
        name: .customLong("record-buffer"),
        help: ArgumentHelp(
            "Flight recorder: keep the last SIZE bytes of both sides' input in memory (K, M, G or KiB, MiB, GiB; e.g. 64MiB), split evenly over workers and sides; SIGUSR2 writes it out (docs/flight-recorder.md). Off by default.",
            valueName: "size"))
    var recordBuffer: String?

    @Option(
        name: .customLong("record-dir"),
        help: ArgumentHelp(
            "Where SIGUSR2 writes a recording: a new directory <node>-<UTC time> inside this one.",
            valueName: "path"))
    var recordDirectory = "/var/lib/ipipd/recordings"

    @Flag(
        name: .long,
        help:
            "Open the resource source, load, validate and compile the topology for --node, print a summary and exit (0 when it would start, 1 with the error otherwise): no root, nothing on the host changes."
    )
    var check = false

    @Flag(
        name: .customLong("keep-uplink-gro"),
        help: ArgumentHelp(
            "Accepted for compatibility: ipipd no longer changes GRO/LRO on the uplink.", visibility: .hidden))
    var keepUplinkGRO = false

    func validate() throws {
        guard !manifests.isEmpty || datastore != nil || ProcessInfo.processInfo.environment["IPIPD_DATASTORE"] != nil
        else {
            throw ValidationError("give --manifests PATH, or --datastore (or IPIPD_DATASTORE)")
        }
        guard manifests.isEmpty || datastore == nil else {
            throw ValidationError("give either --manifests or --datastore, not both")
        }
        guard tunName != "tunl0", !tunName.isEmpty, tunName.utf8.count < 16 else {
            throw ValidationError("--tun-name must be 1…15 characters and not tunl0 (the kernel's ipip device)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown --log-level '\(logLevel)'")
        }
        guard outerTTL == "inherit" || (UInt8(outerTTL).map { $0 > 0 } ?? false) else {
            throw ValidationError("--outer-ttl must be 1…255 or 'inherit'")
        }
        guard resyncInterval >= 0.5 else { throw ValidationError("--resync-interval must be at least 0.5 s") }
        guard batch >= 1 && batch <= 1024 else { throw ValidationError("--batch must be 1…1024") }
        guard uplinkIO == "auto" || UplinkIOMethod(rawValue: uplinkIO) != nil else {
            throw ValidationError("--uplink-io must be auto, xdp, packet or raw, not '\(uplinkIO)'")
        }
        if let t = natTimeouts { _ = try Self.parseNATTimeouts(t) }
        if let h = healthAddress { _ = try Self.parseHealthAddress(h) }
        guard workers >= 1 && workers <= 64 else { throw ValidationError("--workers must be 1…64") }
        guard spinMicroseconds >= 0 && spinMicroseconds <= 1_000_000 else {
            throw ValidationError("--spin-us must be 0…1000000")
        }
        if let r = recordBuffer {
            let bytes: Int
            do { bytes = try RecordBufferSize.parse(r) } catch { throw ValidationError(error.description) }
            let least = RecordBufferSize.minimum(workers: workers)
            guard bytes >= least else {
                throw ValidationError(
                    "--record-buffer: \(r) is less than \(least >> 10)KiB, the least for \(workers) worker(s) (two rings each, each holding a 64 KiB super-packet)"
                )
            }
        }
        guard !recordDirectory.isEmpty else { throw ValidationError("--record-dir must not be empty") }
        guard uplinkRX == "ring" || uplinkRX == "mmsg" else {
            throw ValidationError("--uplink-rx must be ring or mmsg")
        }
        guard tunOffloads == "on" || tunOffloads == "off" else {
            throw ValidationError("--tun-offloads must be on or off")
        }
        if let c = controlSocket, c != "off", !c.hasPrefix("/") {
            throw ValidationError("--control-socket must be an absolute path or off, not '\(c)'")
        }
        if metricsAddress != "off" {
            guard let colon = metricsAddress.lastIndex(of: ":"),
                UInt16(metricsAddress[metricsAddress.index(after: colon)...]) != nil
            else {
                throw ValidationError("--metrics-address must be host:port or off")
            }
        }
    }

    /// `--health-address`: `off`, or `HOST:PORT` with an IPv4 literal (or `localhost`) and a port.
    static func parseHealthAddress(_ text: String) throws -> HealthEndpoint {
        if text == "off" { return .off }
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw ValidationError("--health-address must be host:port or off, not '\(text)'")
        }
        var host = String(text[..<colon])
        if host == "localhost" { host = "127.0.0.1" }
        guard IPv4Address(host) != nil else {
            throw ValidationError("--health-address: '\(host)' is not an IPv4 address (in '\(text)')")
        }
        return .listen(host: host, port: port)
    }

    /// `udp=S,tcp-established=S,tcp-transitory=S,icmp=S` (any subset) over the defaults.
    static func parseNATTimeouts(_ text: String) throws -> NATTimeouts {
        var t = NATTimeouts()
        for item in text.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, let v = Int64(kv[1]), v >= 1, v <= 86_400 * 7 else {
                throw ValidationError("--nat-timeouts: '\(item)' is not NAME=SECONDS with 1…604800 seconds")
            }
            switch kv[0] {
            case "udp": t.udp = v
            case "tcp-established": t.tcpEstablished = v
            case "tcp-transitory": t.tcpTransitory = v
            case "icmp": t.icmp = v
            default:
                throw ValidationError(
                    "--nat-timeouts: unknown timeout '\(kv[0])' (udp, tcp-established, tcp-transitory, icmp)")
            }
        }
        return t
    }

    func run() throws {
        Daemon.blockControlSignals()
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "ipipd")
        var options = DaemonOptions(node: node)
        options.uplink = uplink
        options.tunName = tunName
        options.underlayMTU = underlayMTU
        options.resyncSeconds = resyncInterval
        options.batchSize = batch
        options.uplinkIO = UplinkIOMethod(rawValue: uplinkIO)
        options.tunOffloads = tunOffloads == "on"
        options.workers = workers
        options.spinMicroseconds = spinMicroseconds
        if uplinkRX == "ring" { options.captureRingFrames = 8192 }
        if let r = recordBuffer { options.recordBufferBytes = try RecordBufferSize.parse(r) }
        options.recordDirectory = recordDirectory
        let socket =
            controlSocket ?? ProcessInfo.processInfo.environment["IPIPD_SOCKET"] ?? DaemonOptions.defaultControlSocket
        options.controlSocket = socket == "off" ? nil : socket
        // The seed of SNAT's port choice and hashing: the secret kept in --nat-secret-file, so a
        // restarted ipipd gives each workload endpoint the port it had; made from the system's
        // random generator (getrandom) when the file is created, or at every start with 'off'.
        var generator = SystemRandomNumberGenerator()
        var seed = generator.next()
        if natSecretFile != "off" {
            do {
                let kept = try NATSecretFile.load(path: natSecretFile, fresh: seed)
                seed = kept.secret
                logger.info("SNAT port secret \(kept.created ? "created in" : "read from") \(natSecretFile)")
            } catch {
                logger.warning("\(error); SNAT ports are chosen afresh, natOutgoing flows will not survive a restart")
            }
        }
        options.engine = EngineConfiguration(
            outerTimeToLive: outerTTL == "inherit" ? 0 : UInt8(outerTTL)!,
            natTimeouts: try natTimeouts.map(Self.parseNATTimeouts) ?? NATTimeouts(),
            natSeed: seed)
        if let h = healthAddress { options.health = try Self.parseHealthAddress(h) }
        if metricsAddress == "off" {
            options.metricsPort = 0
        } else {
            let colon = metricsAddress.lastIndex(of: ":")!
            options.metricsHost = String(metricsAddress[..<colon])
            options.metricsPort = UInt16(metricsAddress[metricsAddress.index(after: colon)...])!
        }
        do {
            let source: ResourceSource =
                manifests.isEmpty
                ? try DatastoreSource(option: datastore) : ManifestSource(paths: manifests)
            if check {
                let topology = try Daemon.check(source: source, options: options)
                for w in topology.warnings { logger.warning("\(w)") }
                print(
                    "ipipd: \(source.description): node \(node) \(topology.localAddress), \(topology.nodes.count) nodes, \(topology.pools.count) pools, tunnel MTU \(topology.tunnelMTU)"
                )
                return
            }
            let daemon = try Daemon(options: options, source: source, logger: logger)
            let status = try daemon.run()
            if status != 0 { throw ExitCode(status) }
        } catch let e as ExitCode {
            throw e
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }
}

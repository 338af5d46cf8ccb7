import IPIPCore
import IPIPLinux
import Synchronization

/// Everything `/metrics` reports, captured at one moment (the packet loop publishes one every
/// second, so the HTTP thread never reads the engine's counters while they change).
public struct MetricsSnapshot: Sendable {
    public var counters: EngineCounters?
    public var natSessions = 0
    public var natMappings = 0
    public var natPortsInRange = 0
    public var routesProgrammed = 0
    public var rulesProgrammed = 0
    public var reconcileErrors: UInt64 = 0
    public var reconciles: UInt64 = 0
    public var topologyReloads: UInt64 = 0
    public var topologyReloadErrors: UInt64 = 0
    public var ioDrops: [String: UInt64] = [:]
    /// Device counters: super-packets read and written, coalescing, frames per transmit path.
    public var ioCounters: [String: UInt64] = [:]
    /// The uplink transmit method in use (`--uplink-io`), once the daemon chose it.
    public var uplinkIO: String?
    /// With several workers, each worker's own snapshot (the fields above are their sum).
    public var workers: [MetricsSnapshot] = []
    /// Per peer node: packets and bytes encapsulated toward it and decapsulated from it, its
    /// learned path MTU (`Engine.peerCounterSnapshot`; workers' counts summed by peer IP).
    public var peers: [PeerCounters] = []

    public init() {}

    /// The Prometheus text exposition format (version 0.0.4).
    public func prometheusText() -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ labels: [(String, String)], _ value: UInt64) {
            let l = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\($0.1)\"" }.joined(separator: ",") + "}"
            out += "\(name)\(l) \(value)\n"
        }
        if let c = counters {
            family("ipipd_packets_total", "counter", "Input packets by direction and verdict.")
            family("ipipd_bytes_total", "counter", "Input bytes by verdict.")
            for a in VerdictAction.allCases {
                let direction: String
                switch a {
                case .encapsulated, .forwarded, .translated: direction = "egress"
                case .decapsulated, .untranslated, .consumed: direction = "ingress"
                case .dropped: direction = "any"
                }
                sample("ipipd_packets_total", [("direction", direction), ("verdict", a.name)], c.packets(a))
                sample("ipipd_bytes_total", [("direction", direction), ("verdict", a.name)], c.bytes(a))
            }
            family("ipipd_input_packets_total", "counter", "Packets handed to the engine, by direction.")
            sample("ipipd_input_packets_total", [("direction", "egress")], c.egressPacketsIn)
            sample("ipipd_input_packets_total", [("direction", "ingress")], c.ingressPacketsIn)
            family("ipipd_output_packets_total", "counter", "Packets the engine emitted, by side.")
            sample("ipipd_output_packets_total", [("side", "underlay")], c.underlayPacketsOut)
            sample("ipipd_output_packets_total", [("side", "tun")], c.tunPacketsOut)
            family("ipipd_output_bytes_total", "counter", "Bytes the engine emitted, by side.")
            sample("ipipd_output_bytes_total", [("side", "underlay")], c.underlayBytesOut)
            sample("ipipd_output_bytes_total", [("side", "tun")], c.tunBytesOut)
            family("ipipd_drops_total", "counter", "Dropped packets by reason.")
            for r in DropReason.allCases { sample("ipipd_drops_total", [("reason", r.name)], c.drops[r] ?? 0) }
            family(
                "ipipd_super_packets_total", "counter",
                "Super-packets (TSO/GSO/GRO) the engine took whole; each also counts as its segments in the packet counters."
            )
            sample("ipipd_super_packets_total", [], c.superPacketsIn)
            family("ipipd_fragments_created_total", "counter", "Inner fragments made before encapsulation.")
            sample("ipipd_fragments_created_total", [], c.fragmentsCreated)
            family("ipipd_icmp_errors_sent_total", "counter", "ICMP errors generated.")
            sample("ipipd_icmp_errors_sent_total", [], c.icmpErrorsSent)
            family("ipipd_icmp_rate_limited_total", "counter", "ICMP errors suppressed by the rate limit.")
            sample("ipipd_icmp_rate_limited_total", [], c.icmpRateLimited)
            family(
                "ipipd_path_mtu_updates_total", "counter", "Valid frag-needed messages that lowered a peer's path MTU.")
            sample("ipipd_path_mtu_updates_total", [], c.pathMTUUpdates)
        }
        if peers.contains(where: { $0.egressPackets > 0 || $0.ingressPackets > 0 }) {
            // Peers with traffic only: a cluster of thousands of nodes would otherwise export
            // four zero series per node; a peer appears once something was counted.
            family(
                "ipipd_peer_packets_total", "counter",
                "Packets encapsulated toward (egress) or decapsulated from (ingress) each peer node, by node IP.")
            for p in peers where p.egressPackets > 0 || p.ingressPackets > 0 {
                sample(
                    "ipipd_peer_packets_total", [("peer", "\(p.address)"), ("direction", "egress")], p.egressPackets)
                sample(
                    "ipipd_peer_packets_total", [("peer", "\(p.address)"), ("direction", "ingress")], p.ingressPackets)
            }
            family(
                "ipipd_peer_bytes_total", "counter",
                "Bytes as they arrived (inner out, outer in) of the packets in ipipd_peer_packets_total.")
            for p in peers where p.egressPackets > 0 || p.ingressPackets > 0 {
                sample("ipipd_peer_bytes_total", [("peer", "\(p.address)"), ("direction", "egress")], p.egressBytes)
                sample("ipipd_peer_bytes_total", [("peer", "\(p.address)"), ("direction", "ingress")], p.ingressBytes)
            }
        }
        family("ipipd_nat_sessions", "gauge", "Live SNAT sessions.")
        sample("ipipd_nat_sessions", [], UInt64(natSessions))
        family("ipipd_nat_ports_in_use", "gauge", "External ports held by SNAT mappings.")
        sample("ipipd_nat_ports_in_use", [], UInt64(natMappings))
        family("ipipd_nat_ports_available", "gauge", "Ports in natPortRange, per protocol.")
        sample("ipipd_nat_ports_available", [], UInt64(natPortsInRange))
        family("ipipd_routes_programmed", "gauge", "Routes of ours in the kernel after the last reconcile.")
        sample("ipipd_routes_programmed", [], UInt64(routesProgrammed))
        family("ipipd_rules_programmed", "gauge", "Policy rules of ours in the kernel after the last reconcile.")
        sample("ipipd_rules_programmed", [], UInt64(rulesProgrammed))
        family("ipipd_reconciles_total", "counter", "Reconcile passes.")
        sample("ipipd_reconciles_total", [], reconciles)
        family("ipipd_reconcile_errors_total", "counter", "Failed route, rule or nftables operations.")
        sample("ipipd_reconcile_errors_total", [], reconcileErrors)
        family("ipipd_topology_reloads_total", "counter", "Topologies compiled and swapped in.")
        sample("ipipd_topology_reloads_total", [], topologyReloads)
        family(
            "ipipd_topology_reload_errors_total", "counter",
            "Reloads refused (invalid resources); the previous topology stays.")
        sample("ipipd_topology_reload_errors_total", [], topologyReloadErrors)
        if let uplinkIO {
            family("ipipd_uplink_io_info", "gauge", "The uplink transmit method in use (label method).")
            sample("ipipd_uplink_io_info", [("method", uplinkIO)], 1)
        }
        if !ioCounters.isEmpty {
            family(
                "ipipd_io_total", "counter",
                "Device-level counts: super-packets read and written, coalescing, frames per transmit path, next hops.")
            for (k, v) in ioCounters.sorted(by: { $0.key < $1.key }) { sample("ipipd_io_total", [("counter", k)], v) }
        }
        // The family is announced even before the first loss, so that the dashboard's and the
        // alerts' queries find it on every daemon (scripts/check-deploy, scripts/e2e-health).
        family("ipipd_io_drops_total", "counter", "Packets lost at the device or socket, by cause.")
        for (k, v) in ioDrops.sorted(by: { $0.key < $1.key }) { sample("ipipd_io_drops_total", [("cause", k)], v) }
        family(
            "ipipd_workers", "gauge", "Packet workers (threads with an engine, a TUN queue and a capture socket each).")
        sample("ipipd_workers", [], UInt64(max(1, workers.count)))
        if !workers.isEmpty {
            // Per worker: the same counts with a worker label, in families of their own, so
            // that summing a family never counts a packet twice.
            family(
                "ipipd_worker_input_packets_total", "counter", "Packets handed to each worker's engine, by direction.")
            for (w, p) in workers.enumerated() {
                guard let c = p.counters else { continue }
                sample(
                    "ipipd_worker_input_packets_total", [("worker", "\(w)"), ("direction", "egress")], c.egressPacketsIn
                )
                sample(
                    "ipipd_worker_input_packets_total", [("worker", "\(w)"), ("direction", "ingress")],
                    c.ingressPacketsIn)
            }
            family("ipipd_worker_packets_total", "counter", "Input packets by worker and verdict.")
            for (w, p) in workers.enumerated() {
                guard let c = p.counters else { continue }
                for a in VerdictAction.allCases {
                    sample("ipipd_worker_packets_total", [("worker", "\(w)"), ("verdict", a.name)], c.packets(a))
                }
            }
            family(
                "ipipd_worker_drops_total", "counter", "Dropped packets by worker and reason (reasons with drops only)."
            )
            for (w, p) in workers.enumerated() {
                guard let c = p.counters else { continue }
                for r in DropReason.allCases where (c.drops[r] ?? 0) > 0 {
                    sample("ipipd_worker_drops_total", [("worker", "\(w)"), ("reason", r.name)], c.drops[r] ?? 0)
                }
            }
            family(
                "ipipd_worker_nat_sessions", "gauge",
                "Live SNAT sessions per worker (each owns a slice of natPortRange).")
            for (w, p) in workers.enumerated() {
                sample("ipipd_worker_nat_sessions", [("worker", "\(w)")], UInt64(p.natSessions))
            }
            family(
                "ipipd_worker_io_total", "counter", "Device-level counts per worker, handoffs between workers included."
            )
            for (w, p) in workers.enumerated() {
                for (k, v) in p.ioCounters.sorted(by: { $0.key < $1.key }) {
                    sample("ipipd_worker_io_total", [("worker", "\(w)"), ("counter", k)], v)
                }
            }
            family(
                "ipipd_worker_io_drops_total", "counter",
                "Packets lost at the devices or in handoff queues, per worker.")
            for (w, p) in workers.enumerated() {
                for (k, v) in p.ioDrops.sorted(by: { $0.key < $1.key }) {
                    sample("ipipd_worker_io_drops_total", [("worker", "\(w)"), ("cause", k)], v)
                }
            }
        }
        return out
    }

    /// One line for SIGUSR1 and exit.
    public func summaryLine() -> String {
        guard let c = counters else { return "no packets yet" }
        var parts = VerdictAction.allCases.filter { c.packets($0) > 0 }.map { "\($0.name) \(c.packets($0))" }
        let drops = DropReason.allCases.filter { (c.drops[$0] ?? 0) > 0 }.map { "\($0.name) \(c.drops[$0]!)" }
        if !drops.isEmpty { parts.append("drops: " + drops.joined(separator: ", ")) }
        parts.append("nat sessions \(natSessions)")
        if workers.count > 1 {
            let per = workers.map { w in w.counters.map { "\($0.egressPacketsIn + $0.ingressPacketsIn)" } ?? "0" }
            parts.append("workers \(workers.count) (in: \(per.joined(separator: "/")))")
        }
        parts.append("routes \(routesProgrammed)")
        return "in: egress \(c.egressPacketsIn), ingress \(c.ingressPacketsIn); " + parts.joined(separator: "; ")
    }
}

/// A minimal HTTP/1.0 server for `GET /metrics` on one address (127.0.0.1:9091 by default,
/// Felix's port). One thread, one connection at a time, a 2-second I/O timeout per client: it
/// serves scrapes, not the public. The sockets are IPIPLinux's (`TCPListener`).
public final class MetricsServer: @unchecked Sendable {
    let listener: TCPListener
    public var port: UInt16 { listener.port }
    let render: @Sendable () -> String
    let stopped = Atomic<Bool>(false)

    /// Binds and listens; `port` 0 picks a free one (see `port`).
    /// - Throws: `DaemonError` saying which address could not be served.
    public init(host: String = "127.0.0.1", port: UInt16 = 9091, render: @escaping @Sendable () -> String) throws {
        do {
            listener = try TCPListener(host: host, port: port)
        } catch {
            throw DaemonError("metrics: cannot listen on \(host):\(port): \(error)")
        }
        self.render = render
    }

    /// Serves until `stop()`; run it on its own thread.
    public func serve() {
        while !stopped.load(ordering: .relaxed) {
            guard let c = listener.accept(timeoutMilliseconds: 200) else { continue }
            handle(c)
        }
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }

    func handle(_ c: TCPConnection) {
        c.setTimeouts(seconds: 2)
        let request = c.read(until: [13, 10, 13, 10], limit: 16384)
        c.write(Array(Self.response(to: request, render: render).utf8))
    }

    /// The whole HTTP response to a request's bytes.
    static func response(to request: [UInt8], render: () -> String) -> String {
        let line = String(decoding: request.prefix(while: { $0 != 13 && $0 != 10 }), as: UTF8.self)
        let parts = line.split(separator: " ")
        if parts.count >= 2, parts[0] == "GET", parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
            let body = render()
            return "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        }
        let body = "only GET /metrics is served here\n"
        return "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\r\n" + body
    }
}

extension PeerCounters {
    /// Two workers' peer lists added up by peer IP, in the first list's order, then the second's.
    static func combining(_ a: [PeerCounters], _ b: [PeerCounters]) -> [PeerCounters] {
        if a.isEmpty { return b }
        var out = a
        var index: [IPv4Address: Int] = [:]
        for (i, p) in out.enumerated() { index[p.address] = i }
        for p in b {
            if let i = index[p.address] {
                out[i].add(p)
            } else {
                index[p.address] = out.count
                out.append(p)
            }
        }
        return out
    }
}

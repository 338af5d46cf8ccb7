import Foundation
import Yams

/// What `ipipctl node status` shows: this node's dataplane as the daemon runs it, with fresh
/// counters. The daemon fills it (`Daemon.nodeStatus()`), sends it as the `status` command's
/// result, and ipipctl renders it as a table (the default), JSON or YAML (`-o`, calicoctl's
/// conventions: camelCase field names, two-space indents).
///
/// Every field is what the daemon knows or uses, not a fresh look at the kernel: the uplink's
/// offloads are how ipipd receives and transmits on it (the capture takes GRO/TSO super-packets
/// whole, ipipd changes none of the uplink's ethtool settings), the TUN's are what it negotiated.
public struct NodeStatus: Codable, Sendable, Equatable {
    /// Packets and bytes one way.
    public struct Traffic: Codable, Sendable, Equatable {
        public var packets: UInt64
        public var bytes: UInt64
        public init(packets: UInt64 = 0, bytes: UInt64 = 0) {
            self.packets = packets
            self.bytes = bytes
        }
    }

    /// The uplink and how ipipd uses it.
    public struct Uplink: Codable, Sendable, Equatable {
        public var name: String
        public var mtu: Int
        /// The transmit path(s) of encapsulated packets (`xdp`, `packet`, `raw`, `packet+raw`…).
        public var transmit: String
        /// How the capture reads the uplink.
        public var receive: String
        public init(name: String, mtu: Int, transmit: String, receive: String) {
            self.name = name
            self.mtu = mtu
            self.transmit = transmit
            self.receive = receive
        }
    }

    /// The TUN device.
    public struct Tunnel: Codable, Sendable, Equatable {
        public var name: String
        public var mtu: Int
        /// The node's `ipv4IPIPTunnelAddr`, if it has one.
        public var address: String?
        /// What the TUN negotiated (`virtio headers, offloads …`), or `none`.
        public var offloads: String
        public init(name: String, mtu: Int, address: String?, offloads: String) {
            self.name = name
            self.mtu = mtu
            self.address = address
            self.offloads = offloads
        }
    }

    /// A pool as this node applies it.
    public struct Pool: Codable, Sendable, Equatable {
        public var name: String
        public var cidr: String
        public var ipipMode: String
        public var vxlan: Bool
        public var natOutgoing: Bool
        public var disabled: Bool
        /// Peers whose blocks in this pool this node reaches through the tunnel.
        public var encapsulatedPeers: [String]
        /// Peers whose blocks in this pool it routes natively (CrossSubnet same subnet, Never).
        public var nativePeers: [String]
        public init(
            name: String, cidr: String, ipipMode: String, vxlan: Bool, natOutgoing: Bool, disabled: Bool,
            encapsulatedPeers: [String], nativePeers: [String]
        ) {
            self.name = name
            self.cidr = cidr
            self.ipipMode = ipipMode
            self.vxlan = vxlan
            self.natOutgoing = natOutgoing
            self.disabled = disabled
            self.encapsulatedPeers = encapsulatedPeers
            self.nativePeers = nativePeers
        }
    }

    /// Another node.
    public struct Peer: Codable, Sendable, Equatable {
        public var name: String
        public var nodeIP: String
        public var tunnelAddress: String?
        public var blocks: [String]
        /// How its blocks are reached: `ipip`, `native`, `ipip+native` (pools differ) or `none`.
        public var route: String
        /// The learned path MTU toward it (outer size), while one holds.
        public var pathMTU: Int?
        /// Encapsulated toward it / decapsulated from it.
        public var egress: Traffic
        public var ingress: Traffic
        public init(
            name: String, nodeIP: String, tunnelAddress: String?, blocks: [String], route: String, pathMTU: Int?,
            egress: Traffic, ingress: Traffic
        ) {
            self.name = name
            self.nodeIP = nodeIP
            self.tunnelAddress = tunnelAddress
            self.blocks = blocks
            self.route = route
            self.pathMTU = pathMTU
            self.egress = egress
            self.ingress = ingress
        }
    }

    /// SNAT (natOutgoing).
    public struct NAT: Codable, Sendable, Equatable {
        /// FelixConfiguration `natPortRange` as applied (`first-last`).
        public var portRange: String
        /// Ports in the range, per protocol (all workers together).
        public var portsAvailable: Int
        public var portsInUse: Int
        public var sessions: Int
        public init(portRange: String, portsAvailable: Int, portsInUse: Int, sessions: Int) {
            self.portRange = portRange
            self.portsAvailable = portsAvailable
            self.portsInUse = portsInUse
            self.sessions = sessions
        }
    }

    /// The topology in force and the reloads.
    public struct TopologyState: Codable, Sendable, Equatable {
        /// 1 at start, +1 for each topology swapped in.
        public var generation: Int
        /// When the running topology was swapped in (RFC 3339, UTC).
        public var changedAt: String
        public var reloads: UInt64
        public var reloadErrors: UInt64
        public var lastReloadError: String?
        public var lastReloadErrorAt: String?
        public var warnings: [String]
        public init(
            generation: Int, changedAt: String, reloads: UInt64, reloadErrors: UInt64, lastReloadError: String?,
            lastReloadErrorAt: String?, warnings: [String]
        ) {
            self.generation = generation
            self.changedAt = changedAt
            self.reloads = reloads
            self.reloadErrors = reloadErrors
            self.lastReloadError = lastReloadError
            self.lastReloadErrorAt = lastReloadErrorAt
            self.warnings = warnings
        }
    }

    public var node: String
    /// The node IP with its subnet (`spec.bgp.ipv4Address`).
    public var nodeIP: String
    public var pid: Int
    public var startedAt: String
    public var workers: Int
    public var uplink: Uplink
    public var tunnel: Tunnel
    public var topology: TopologyState
    public var pools: [Pool]
    public var peers: [Peer]
    public var nat: NAT

    public init(
        node: String, nodeIP: String, pid: Int, startedAt: String, workers: Int, uplink: Uplink, tunnel: Tunnel,
        topology: TopologyState, pools: [Pool], peers: [Peer], nat: NAT
    ) {
        self.node = node
        self.nodeIP = nodeIP
        self.pid = pid
        self.startedAt = startedAt
        self.workers = workers
        self.uplink = uplink
        self.tunnel = tunnel
        self.topology = topology
        self.pools = pools
        self.peers = peers
        self.nat = nat
    }

    // MARK: Rendering

    /// `-o` of `ipipctl node status`.
    public enum Format: String, CaseIterable, Sendable {
        case table, json, yaml
    }

    /// The status in `format`, newline-terminated.
    public func rendered(_ format: Format) throws -> String {
        switch format {
        case .json:
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            return String(decoding: try e.encode(self), as: UTF8.self) + "\n"
        case .yaml:
            return try YAMLEncoder().encode(self)
        case .table:
            return table()
        }
    }

    /// The human view: calicoctl node status's shape (a sentence, then bordered tables).
    public func table() -> String {
        var out =
            "ipipd is running on \(node) (pid \(pid), \(workers) worker\(workers == 1 ? "" : "s"), since \(startedAt)).\n\n"
        let nodeRows: [[String]] = [
            ["node", "\(node) \(nodeIP)"],
            ["uplink", "\(uplink.name), MTU \(uplink.mtu), transmit \(uplink.transmit)"],
            ["uplink receive", uplink.receive],
            ["tunnel", "\(tunnel.name), MTU \(tunnel.mtu)" + (tunnel.address.map { ", address \($0)" } ?? "")],
            ["tunnel offloads", tunnel.offloads],
            [
                "topology",
                "generation \(topology.generation), since \(topology.changedAt); \(topology.reloads) reloads, \(topology.reloadErrors) refused",
            ],
        ]
        var rows = nodeRows
        if let e = topology.lastReloadError {
            rows.append(["last reload error", "\(topology.lastReloadErrorAt ?? "?"): \(e)"])
        }
        for w in topology.warnings { rows.append(["warning", w]) }
        rows.append([
            "NAT",
            "ports \(nat.portRange) (\(nat.portsAvailable) per protocol), \(nat.portsInUse) in use, \(nat.sessions) sessions",
        ])
        out += Self.grid(["FIELD", "VALUE"], rows) + "\n"
        out += "IPv4 pools\n"
        if pools.isEmpty {
            out += "No IPv4 pools.\n\n"
        } else {
            out +=
                Self.grid(
                    ["NAME", "CIDR", "IPIP MODE", "NAT OUTGOING", "ENCAPSULATED TO", "NATIVE TO"],
                    pools.map { p in
                        [
                            p.name + (p.disabled ? " (disabled)" : ""), p.cidr,
                            p.vxlan ? "VXLAN (not routed)" : p.ipipMode,
                            p.natOutgoing ? "yes" : "no", Self.list(p.encapsulatedPeers), Self.list(p.nativePeers),
                        ]
                    }) + "\n"
        }
        out += "Peers\n"
        if peers.isEmpty {
            out += "No peers.\n"
        } else {
            out += Self.grid(
                [
                    "NAME", "NODE IP", "BLOCKS", "ROUTE", "PATH MTU", "EGRESS PKTS", "EGRESS BYTES", "INGRESS PKTS",
                    "INGRESS BYTES",
                ],
                peers.map { p in
                    [
                        p.name, p.nodeIP, Self.list(p.blocks), p.route, p.pathMTU.map(String.init) ?? "-",
                        "\(p.egress.packets)", "\(p.egress.bytes)", "\(p.ingress.packets)", "\(p.ingress.bytes)",
                    ]
                })
        }
        return out
    }

    static func list(_ items: [String]) -> String { items.isEmpty ? "-" : items.joined(separator: ",") }

    /// A bordered table, headers centred (as calicoctl node status prints them).
    static func grid(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) + "+" }.joined() + "\n"
        func centred(_ s: String, _ w: Int) -> String {
            let left = (w - s.count) / 2
            return String(repeating: " ", count: left) + s + String(repeating: " ", count: w - s.count - left)
        }
        func line(_ cells: [String], centre: Bool) -> String {
            "|"
                + cells.enumerated().map { i, c in
                    " " + (centre ? centred(c, widths[i]) : c + String(repeating: " ", count: widths[i] - c.count))
                        + " |"
                }.joined() + "\n"
        }
        var out = rule + line(header, centre: true) + rule
        for r in rows { out += line(r, centre: false) }
        return out + rule
    }
}

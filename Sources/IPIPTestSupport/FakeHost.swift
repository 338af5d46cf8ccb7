import IPIPCore
import IPIPDataplane
import IPIPLinux

/// A `DaemonHost` in memory, for running `Daemon.run()` in-process without root: routes and rules
/// in a `FakeRouting`, sysctls and nftables tables in dictionaries, a clock that moves only when
/// the daemon waits, and a script that plays the operator.
///
/// The script: each time the control loop waits for signals (once per `watchSeconds`), the clock
/// advances by that wait and the next step runs; the step may look at the host, change it behind
/// the daemon's back, change the resources, and returns the signals that "arrive". When the script
/// is used up the host sends SIGTERM, so a run always ends.
public final class FakeHost: DaemonHost {
    /// One turn of the control loop, as the operator sees it.
    public typealias Step = (FakeHost) -> [ControlSignal]

    /// The routes and rules.
    public let fakeRouting: FakeRouting
    /// The uplink `findUplink` reports, and the node address it holds.
    public var uplink: HostUplink
    public var uplinkAddress: IPv4Address
    /// Sysctl values by name; a name missing here reads as nil.
    public var sysctls: [String: String]
    /// Sysctls whose write fails.
    public var failingSysctls: Set<String> = []
    /// The nftables tables present, with what they were programmed with.
    public private(set) var firewall: [String: FirewallTable] = [:]
    /// Every `applyFirewall` and `removeFirewall`, in order ("apply ipipd", "remove ipipd").
    public private(set) var firewallOperations: [String] = []
    /// The tunnel device's configuration (`configureTunnel`), nil before.
    public private(set) var tunnel: (index: Int32, mtu: Int, address: IPv4Address?)?
    /// Every datapath opened, in order.
    public private(set) var datapaths: [FakePacketWorkers] = []
    /// Makes `openDatapath` fail (a missing TUN driver, say).
    public var datapathError: (any Error)?
    /// Makes `applyFirewall` fail (no nftables in the kernel, say) while set.
    public var firewallError: (any Error)?
    /// Called at the start of every `applyFirewall`: a test's way to look at the daemon in the
    /// middle of its start (after the load, before anything is programmed).
    public var beforeFirewall: (() -> Void)?
    /// The steps still to play.
    public var script: [Step]
    /// How many times the control loop waited.
    public private(set) var waits = 0
    /// The monotonic clock, in seconds.
    public private(set) var clock: Double = 1000

    /// What `applyFirewall` was given.
    public struct FirewallTable: Sendable, Equatable {
        public var uplink: String
        public var nodeAddress: IPv4Address
        public var natPortRange: ClosedRange<UInt16>

        public init(uplink: String, nodeAddress: IPv4Address, natPortRange: ClosedRange<UInt16>) {
            self.uplink = uplink
            self.nodeAddress = nodeAddress
            self.natPortRange = natPortRange
        }
    }

    /// A host whose uplink `eth0` (index 2, MTU 1500) holds `uplinkAddress`.
    public init(uplinkAddress: IPv4Address, routing: FakeRouting = FakeRouting(), script: [Step] = []) {
        fakeRouting = routing
        uplink = HostUplink(index: 2, name: "eth0", mtu: 1500)
        self.uplinkAddress = uplinkAddress
        sysctls = ["net.ipv4.ip_forward": "0", "net.ipv4.conf.all.rp_filter": "1"]
        self.script = script
    }

    /// The last datapath opened.
    public var datapath: FakePacketWorkers? { datapaths.last }

    /// Moves the clock on (the next resync or next-hop refresh comes due).
    public func advance(seconds: Double) { clock += seconds }

    /// Removes a table behind the daemon's back (`nft delete table`).
    public func dropFirewall(table: String) { firewall[table] = nil }

    public var routing: any RouteNetlink { fakeRouting }

    public func findUplink(name: String?, nodeAddress: IPv4Address) throws -> HostUplink {
        if let name, name != uplink.name { throw FakeHostError("uplink \(name) does not exist") }
        if name == nil, nodeAddress != uplinkAddress {
            throw FakeHostError("no interface holds the node IP \(nodeAddress); give --uplink")
        }
        return uplink
    }

    public func openDatapath(_ request: DatapathRequest) throws -> any DaemonDatapath {
        if let datapathError { throw datapathError }
        let d = FakePacketWorkers(workers: request.workers, tunIndex: 40 + Int32(datapaths.count)) { [unowned self] in
            self.clock
        }
        datapaths.append(d)
        return d
    }

    public func configureTunnel(index: Int32, mtu: Int, address: IPv4Address?) throws {
        tunnel = (index, mtu, address)
    }

    public func readSysctl(_ name: String) -> String? { sysctls[name] }

    public func writeSysctl(_ name: String, _ value: String) throws {
        if failingSysctls.contains(name) { throw FakeHostError("sysctl \(name): read-only file system") }
        sysctls[name] = value
    }

    public func applyFirewall(
        table: String, uplink: String, nodeAddress: IPv4Address, natPortRange: ClosedRange<UInt16>
    ) throws {
        beforeFirewall?()
        firewallOperations.append("apply \(table)")
        if let firewallError { throw firewallError }
        firewall[table] = FirewallTable(uplink: uplink, nodeAddress: nodeAddress, natPortRange: natPortRange)
    }

    public func removeFirewall(table: String) throws {
        firewallOperations.append("remove \(table)")
        firewall[table] = nil
    }

    public func waitForSignals(seconds: Double) -> [ControlSignal] {
        waits += 1
        clock += seconds
        guard !script.isEmpty else { return [.terminate] }
        return script.removeFirst()(self)
    }

    public func now() -> Double { clock }
}

/// What a `FakeHost` call throws.
public struct FakeHostError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The packet workers of a `FakeHost`: no threads, no packets; it records what the control loop
/// hands it.
public final class FakePacketWorkers: DaemonDatapath, @unchecked Sendable {
    public let workers: Int
    public let tunName = "ipip0"
    public let tunIndex: Int32
    public let tunOffloadDescription: String? = nil
    public let uplinkIO = "raw"
    /// The engines `start` was given (nil before).
    public private(set) var engines: [Engine]?
    /// Every topology published after the start, in order.
    public private(set) var published: [Topology] = []
    /// How many times the next hops were refreshed.
    public private(set) var nextHopRefreshes = 0
    /// Set to make the workers "fail" (the control loop stops with exit status 1).
    public var failure: String?
    public private(set) var stopped = false
    /// Whether the devices were closed (on every way out of `Daemon.run`).
    public private(set) var closed = false

    /// The host's clock (the heartbeats' time base).
    let clock: () -> Double

    init(workers: Int, tunIndex: Int32, clock: @escaping () -> Double) {
        self.workers = workers
        self.tunIndex = tunIndex
        self.clock = clock
    }

    /// The topology the workers run now: the last published, or the start's.
    public var topology: Topology? { published.last ?? engines?.first?.topology }

    public func start(engines: [Engine]) { self.engines = engines }

    /// Called by every publish, before it is recorded: a test's way to act in the middle of a
    /// reload (after the daemon read its source, before the reload ends).
    public var onPublish: ((Topology) -> Void)?

    public func publish(_ topology: Topology, previous: Topology) throws {
        onPublish?(topology)
        published.append(topology)
    }

    public func refreshNextHops(topology: Topology) { nextHopRefreshes += 1 }

    /// What `heartbeats()` reports: one value per worker in the host's clock (set by a test to
    /// play turning or stuck loops); nil: every worker has just turned, whenever asked.
    public var heartbeatValues: [Double]?
    /// The hangs asked for: (worker, seconds from then).
    public private(set) var hangs: [(worker: Int, after: Double)] = []

    public func heartbeats() -> [Double] { heartbeatValues ?? Array(repeating: clock(), count: workers) }

    public func simulateHang(worker: Int, afterSeconds seconds: Double) { hangs.append((worker, seconds)) }

    public func snapshot(fresh: Bool) -> MetricsSnapshot { MetricsSnapshot() }

    public func stop() { stopped = true }

    public func close() {
        stop()
        closed = true
    }
}

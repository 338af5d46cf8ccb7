import IPIPCore
import IPIPLinux

/// A control signal the daemon acts on.
public enum ControlSignal: Sendable, Equatable, CustomStringConvertible {
    /// SIGTERM and SIGINT: stop, removing everything the daemon added.
    case terminate, interrupt
    /// SIGHUP: reload the resources now.
    case hangup
    /// SIGUSR1: log a one-line summary.
    case user1
    /// SIGUSR2: write a flight recording (`--record-buffer`) into a new directory.
    case user2

    public var description: String {
        switch self {
        case .terminate: "SIGTERM"
        case .interrupt: "SIGINT"
        case .hangup: "SIGHUP"
        case .user1: "SIGUSR1"
        case .user2: "SIGUSR2"
        }
    }
}

/// The uplink: the interface that holds the node IP (or the one named).
public struct HostUplink: Sendable, Equatable {
    public var index: Int32
    public var name: String
    public var mtu: Int

    public init(index: Int32, name: String, mtu: Int) {
        self.index = index
        self.name = name
        self.mtu = mtu
    }
}

/// What the daemon asks of the host to build its packet workers' devices.
public struct DatapathRequest: Sendable {
    public var uplink: HostUplink
    /// The first topology (the node IP and NAT range the uplink capture filters on).
    public var topology: Topology
    public var workers: Int
    public var options: DaemonOptions
    /// The flight recorder whose rings the packet loops fill, when `--record-buffer` is on.
    public var recorder: FlightRecorder? = nil
}

/// Everything `Daemon` changes or reads on the host, so that its control loop (start, reload,
/// refused reload, resync repair, shutdown cleanup) runs on a real host (`LinuxHost`) or, in
/// tests without root, against in-memory fakes (Felix's dataplane-driver seam).
///
/// Called from the daemon's control thread only.
public protocol DaemonHost: AnyObject {
    /// The routing tables and rules the route reconciler keeps.
    var routing: any RouteNetlink { get }
    /// The uplink: the link called `name`, or (nil) the one holding `nodeAddress`.
    func findUplink(name: String?, nodeAddress: IPv4Address) throws -> HostUplink
    /// Creates the TUN and every device of the packet workers, not started yet.
    func openDatapath(_ request: DatapathRequest) throws -> any DaemonDatapath
    /// Brings the tunnel device up with `mtu` and gives it `address`/32 when there is one
    /// (idempotent).
    func configureTunnel(index: Int32, mtu: Int, address: IPv4Address?) throws
    /// The value of a sysctl (`net.ipv4.ip_forward`), nil when it cannot be read.
    func readSysctl(_ name: String) -> String?
    /// Sets a sysctl.
    func writeSysctl(_ name: String, _ value: String) throws
    /// Installs or refreshes the daemon's nftables table (idempotent).
    func applyFirewall(
        table: String, uplink: String, nodeAddress: IPv4Address, natPortRange: ClosedRange<UInt16>) throws
    /// Removes the daemon's nftables table; absent is fine.
    func removeFirewall(table: String) throws
    /// Waits up to `seconds` for control signals; returns those that came.
    func waitForSignals(seconds: Double) -> [ControlSignal]
    /// Seconds on a monotonic clock (resync and next-hop timers).
    func now() -> Double
}

/// The packet workers and their devices, as the control loop drives them.
public protocol DaemonDatapath: AnyObject, Sendable {
    /// The TUN device's name and interface index.
    var tunName: String { get }
    var tunIndex: Int32 { get }
    /// What the TUN negotiated ("virtio headers, offloads …"), nil without virtio headers.
    var tunOffloadDescription: String? { get }
    /// The transmit methods in use (`xdp`, `packet+raw`, …), for logs and metrics.
    var uplinkIO: String { get }
    /// Starts the workers, one engine each.
    func start(engines: [Engine])
    /// Hands a new topology to every worker (each installs it before its next batch) and
    /// re-filters the uplink capture when the node's NAT range changed.
    func publish(_ topology: Topology, previous: Topology) throws
    /// Reads the peers' next hops again and hands a changed table to the workers.
    func refreshNextHops(topology: Topology)
    /// The workers' counters added up (`fresh`: asks the workers for new ones first and waits a
    /// moment).
    func snapshot(fresh: Bool) -> MetricsSnapshot
    /// The first worker failure, if one failed.
    var failure: String? { get }
    /// Each worker's heartbeat: its packet loop's last turn in seconds of the monotonic clock
    /// (`DaemonHost.now()`), 0 before its first. Any thread may call it once `start` returned.
    func heartbeats() -> [Double]
    /// Makes worker `worker`'s packet loop hang `seconds` from now (Felix's
    /// `debugSimulateDataplaneHangAfter`, for testing liveness); after `start`.
    func simulateHang(worker: Int, afterSeconds seconds: Double)
    /// Stops the workers (idempotent); `snapshot(fresh: false)` still reports their last counters
    /// afterwards.
    func stop()
    /// Stops the workers if they run and closes every device (the TUN last goes with its routes).
    func close()
    /// The workers' monitor rings once started (`ipipctl monitor`), in worker order; empty when
    /// the datapath has none.
    var monitorRings: [MonitorRing] { get }
}

extension DaemonDatapath {
    public var monitorRings: [MonitorRing] { [] }
}

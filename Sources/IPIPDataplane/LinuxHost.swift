import Foundation
import IPIPCore
import IPIPLinux
import Logging

/// The daemon's host on Linux: rtnetlink, nftables, sysctls, the TUN and the uplink's sockets,
/// signals and the monotonic clock. Needs root (CAP_NET_ADMIN and CAP_NET_RAW).
public final class LinuxHost: DaemonHost {
    let netlink: NetlinkSocket
    let logger: Logger

    /// Opens a NETLINK_ROUTE socket in the current network namespace.
    public init(logger: Logger) throws {
        netlink = try NetlinkSocket()
        self.logger = logger
    }

    public var routing: any RouteNetlink { netlink }

    public func findUplink(name: String?, nodeAddress: IPv4Address) throws -> HostUplink {
        if let name {
            guard let link = try netlink.link(name: name) else { throw DaemonError("uplink \(name) does not exist") }
            return HostUplink(index: link.index, name: link.name, mtu: link.mtu)
        }
        guard let held = try netlink.interfaceHolding(address: nodeAddress) else {
            throw DaemonError("no interface holds the node IP \(nodeAddress); give --uplink")
        }
        return HostUplink(index: held.index, name: held.name, mtu: held.mtu)
    }

    public func configureTunnel(index: Int32, mtu: Int, address: IPv4Address?) throws {
        try netlink.setLink(index: index, up: true, mtu: mtu)
        if let address { try netlink.addAddress(IPv4Prefix(address: address, length: 32), index: index) }
    }

    public func readSysctl(_ name: String) -> String? { Sysctl.read(name) }

    public func writeSysctl(_ name: String, _ value: String) throws { try Sysctl.write(name, value) }

    public func applyFirewall(
        table: String, uplink: String, nodeAddress: IPv4Address, natPortRange: ClosedRange<UInt16>
    ) throws {
        try NFTables.apply(table: table, uplink: uplink, nodeAddress: nodeAddress, natPortRange: natPortRange)
    }

    public func removeFirewall(table: String) throws { try NFTables.remove(table: table) }

    public func waitForSignals(seconds: Double) -> [ControlSignal] {
        ControlSignals.wait(seconds: seconds).compactMap { n -> ControlSignal? in
            switch n {
            case SIGTERM: .terminate
            case SIGINT: .interrupt
            case SIGHUP: .hangup
            case SIGUSR1: .user1
            case SIGUSR2: .user2
            default: nil
            }
        }
    }

    public func now() -> Double { MonotonicClock.seconds() }

    public func openDatapath(_ request: DatapathRequest) throws -> any DaemonDatapath {
        try LinuxDaemonDatapath(request, netlink: netlink, logger: logger)
    }
}

/// The packet workers on Linux: one TUN queue (IFF_MULTI_QUEUE), one capture socket (one
/// PACKET_FANOUT group), one raw socket and one transmit path (AF_XDP on TX queue i, AF_PACKET,
/// or the raw socket alone) per worker, and the next-hop table they share.
final class LinuxDaemonDatapath: DaemonDatapath, @unchecked Sendable {
    let tun: TUNDevice
    let tunQueues: [TUNDevice]
    let raws: [RawIPv4Socket]
    let captures: [UplinkCapture]
    let datapaths: [LinuxDatapath]
    let options: DaemonOptions
    let recorder: FlightRecorder?
    let logger: Logger
    let tunName: String
    let tunIndex: Int32
    let uplinkIO: String
    // Control thread only.
    var nextHops: NextHopMonitor
    var workers: PacketWorkers<LinuxDatapath>?

    /// The capture's receive buffer: the kernel queues frames there while the packet loop is busy
    /// elsewhere (a TUN write, a transmit); at a few Gbit/s the 208 KiB default overflows within
    /// a millisecond and TCP sees losses (measured: 17,538 overruns in a 5 s iperf3 run).
    /// 16 MiB holds ~5,000 MTU-sized frames (the kernel counts each skb's truesize, ~3 KiB).
    static let captureReceiveBufferByteCount = 16 << 20

    init(_ request: DatapathRequest, netlink: NetlinkSocket, logger: Logger) throws {
        let options = request.options
        let uplink = request.uplink
        let workerCount = request.workers
        self.options = options
        recorder = request.recorder
        self.logger = logger
        // Every device opened so far is closed again if a later one fails.
        var opened: [() -> Void] = []
        var done = false
        defer { if !done { for close in opened.reversed() { close() } } }

        let tun = try TUNDevice(name: options.tunName, offloads: options.tunOffloads, multiQueue: workerCount > 1)
        opened.append { tun.close() }
        // One TUN queue per worker; the kernel keeps each flow on one queue.
        var tunQueues = [tun]
        for _ in 1..<workerCount {
            let q = try tun.attachQueue()
            opened.append { q.close() }
            tunQueues.append(q)
        }
        guard let tunIndex = try netlink.linkIndex(name: tun.name) else {
            throw DaemonError("TUN \(tun.name) vanished")
        }

        var raws: [RawIPv4Socket] = []
        for _ in 0..<workerCount {
            let r = try RawIPv4Socket(maximumBatchSize: 256)
            opened.append { r.close() }
            raws.append(r)
        }
        let hardware = try? UplinkCapture.hardwareAddress(interface: uplink.name)
        let isEthernet = hardware?.isEthernet ?? false
        // One capture socket per worker, in one PACKET_FANOUT group: the kernel deals the
        // uplink's flows out over them by a symmetric hash.
        let fanout: UInt16? = workerCount > 1 ? UInt16(truncatingIfNeeded: CurrentProcess.id) : nil
        var captures: [UplinkCapture] = []
        for _ in 0..<workerCount {
            let c = try Self.openCapture(
                uplink: uplink, ethernet: isEthernet, topology: request.topology,
                fanoutGroup: fanout, options: options, logger: logger)
            opened.append { c.close() }
            captures.append(c)
        }
        var datapaths: [LinuxDatapath] = []
        for w in 0..<workerCount {
            let transmit = try Self.openTransmitPath(
                uplink: uplink, ethernet: isEthernet, queue: w, wanted: options.uplinkIO)
            let datapath = try LinuxDatapath(
                tun: tunQueues[w], capture: captures[w], raw: raws[w], xdp: transmit.xdp,
                packet: transmit.packet, uplinkMAC: hardware?.address ?? .zero,
                underlayMTU: uplink.mtu)
            datapaths.append(datapath)
            let receive =
                captures[w].ringFrameCount > 0
                ? "a TPACKET_V2 ring of \(captures[w].ringFrameCount) frames" : "recvmmsg"
            let who = workerCount > 1 ? "worker \(w): " : ""
            logger.notice(
                "\(who)uplink \(uplink.name): transmit \(datapath.method) (\(transmit.reason)); receive AF_PACKET with virtio headers, \(receive)\(fanout == nil ? "" : " (fanout group \(fanout!))")"
            )
        }
        self.tun = tun
        self.tunQueues = tunQueues
        self.raws = raws
        self.captures = captures
        self.datapaths = datapaths
        tunName = tun.name
        self.tunIndex = tunIndex
        uplinkIO = Array(Set(datapaths.map(\.method.rawValue))).sorted().joined(separator: "+")
        nextHops = NextHopMonitor(datapaths: datapaths, uplinkIndex: uplink.index, netlink: netlink, logger: logger)
        done = true
    }

    var tunOffloadDescription: String? { tun.hasVirtioHeaders ? tun.offloadDescription : nil }

    func start(engines: [Engine]) {
        let w = PacketWorkers(
            ios: datapaths, engines: engines, batchSize: options.batchSize,
            spinMicroseconds: options.spinMicroseconds, recorders: recorder?.loops,
            monitorEvents: options.controlSocket == nil ? 0 : options.monitorEvents)
        workers = w
        w.start()
    }

    func publish(_ topology: Topology, previous: Topology) throws {
        workers?.publish(topology)
        if topology.natPortRange != previous.natPortRange || topology.localAddress != previous.localAddress {
            for c in captures {
                try c.setFilter(CaptureFilter(nodeAddress: topology.localAddress, natPortRange: topology.natPortRange))
            }
        }
    }

    func refreshNextHops(topology: Topology) { nextHops.refresh(topology: topology) }

    func snapshot(fresh: Bool) -> MetricsSnapshot {
        guard let workers else { return MetricsSnapshot() }
        if fresh {
            workers.refreshSnapshot()
            MonotonicClock.sleep(seconds: 0.02)
        }
        var s = workers.latestSnapshot()
        s.uplinkIO = uplinkIO
        return s
    }

    var failure: String? { workers?.failure }

    func heartbeats() -> [Double] {
        (workers?.loops ?? []).map { Double($0.heartbeat.load(ordering: .relaxed)) / 1e9 }
    }

    func simulateHang(worker: Int, afterSeconds seconds: Double) {
        guard let loops = workers?.loops, loops.indices.contains(worker) else { return }
        let now = PacketLoop<LinuxDatapath>.now().totalNanoseconds
        loops[worker].simulateHang(atNanoseconds: now + Int64(seconds * 1e9))
    }

    var monitorRings: [MonitorRing] { workers?.monitorRings ?? [] }

    func stop() {
        workers?.stop()
    }

    func close() {
        stop()
        for c in captures { c.close() }
        for r in raws { r.close() }
        for q in tunQueues.dropFirst() { q.close() }
        tun.close()
    }

    /// The uplink capture, with a receive ring unless asked not to or the kernel refuses one.
    static func openCapture(
        uplink: HostUplink, ethernet: Bool, topology: Topology, fanoutGroup: UInt16?,
        options: DaemonOptions, logger: Logger
    ) throws -> UplinkCapture {
        let filter = CaptureFilter(nodeAddress: topology.localAddress, natPortRange: topology.natPortRange)
        func open(ring: Int) throws -> UplinkCapture {
            try UplinkCapture(
                interfaceIndex: uplink.index, filter: filter, maximumBatchSize: options.batchSize,
                receiveBufferByteCount: captureReceiveBufferByteCount,
                linkHeaderLength: ethernet ? 14 : 0, ringFrameCount: ring, fanoutGroup: fanoutGroup)
        }
        guard options.captureRingFrames > 0 else { return try open(ring: 0) }
        do {
            return try open(ring: options.captureRingFrames)
        } catch {
            logger.warning("uplink \(uplink.name): no receive ring (\(error)); receiving with recvmmsg")
            return try open(ring: 0)
        }
    }

    /// Opens worker `queue`'s transmit path for encapsulated packets: the one asked for, or (nil)
    /// the fastest that opens here: AF_XDP (on the uplink's TX queue `queue`: one socket per
    /// queue), then AF_PACKET, then only the raw socket. Frame-writing paths need an Ethernet
    /// uplink. An explicit choice that cannot open is an error.
    static func openTransmitPath(
        uplink: HostUplink, ethernet: Bool, queue: Int, wanted: UplinkIOMethod?
    ) throws
        -> (xdp: XDPTransmitSocket?, packet: PacketTransmitSocket?, reason: String)
    {
        if wanted == .raw { return (nil, nil, "as asked") }
        guard ethernet else {
            if let wanted {
                throw DaemonError("--uplink-io \(wanted) needs an Ethernet uplink; \(uplink.name) is not one")
            }
            return (nil, nil, "\(uplink.name) has no Ethernet header: frames cannot be written")
        }
        var failures: [String] = []
        if wanted == nil || wanted == .xdp {
            // Frames hold the link header and one underlay packet: 2 KiB up to an MTU of 2034.
            let frame = uplink.mtu + 14 <= 2048 ? 2048 : 4096
            if uplink.mtu + 14 > 4096 {
                failures.append("xdp: MTU \(uplink.mtu) does not fit a 4 KiB AF_XDP frame")
            } else {
                do {
                    let x = try XDPTransmitSocket(interfaceIndex: uplink.index, queue: UInt32(queue), frameSize: frame)
                    return (
                        x, nil,
                        wanted == nil
                            ? "fastest available" + (x.largeBudget ? "" : ", 32 frames per sendto") : "as asked"
                    )
                } catch {
                    if wanted == .xdp {
                        throw queue == 0
                            ? error
                            : DaemonError(
                                "--uplink-io xdp: worker \(queue) needs TX queue \(queue) of \(uplink.name): \(error)")
                    }
                    failures.append("xdp queue \(queue): \(error)")
                }
            }
        }
        do {
            let p = try PacketTransmitSocket(interfaceIndex: uplink.index)
            return (nil, p, wanted == nil ? "AF_XDP unavailable: " + failures.joined(separator: "; ") : "as asked")
        } catch {
            if wanted == .packet { throw error }
            failures.append("packet: \(error)")
        }
        return (nil, nil, failures.joined(separator: "; "))
    }
}

/// Keeps the datapath's next-hop table current (control thread): on every refresh the peers'
/// routes and neighbour entries are read again; a table that differs from the last one is
/// published to the packet workers and the change logged.
struct NextHopMonitor {
    let datapaths: [LinuxDatapath]
    let uplinkIndex: Int32
    let netlink: NetlinkSocket
    let logger: Logger
    var last: NextHopTable?

    init(datapaths: [LinuxDatapath], uplinkIndex: Int32, netlink: NetlinkSocket, logger: Logger) {
        self.datapaths = datapaths
        self.uplinkIndex = uplinkIndex
        self.netlink = netlink
        self.logger = logger
    }

    mutating func refresh(topology: Topology) {
        let fast = datapaths.filter { $0.method != .raw }
        guard let first = fast.first else { return }
        let peers = topology.nodes.enumerated().compactMap { i, n in i == topology.localNodeIndex ? nil : n.address }
        let table: NextHopTable
        do {
            table = try NextHopTable.resolve(peers: peers, interfaceIndex: uplinkIndex, netlink: netlink)
        } catch {
            logger.error("next hops: \(error)")
            return
        }
        if let last, last.entries == table.entries, last.unresolved == table.unresolved { return }
        let resolved = table.entries.map { "\($0.peer) via \($0.nextHop) \($0.linkAddress)" }
        logger.info(
            "next hops (\(first.method)): \(table.entries.count) resolved\(resolved.isEmpty ? "" : ": " + resolved.prefix(8).joined(separator: ", ")), \(table.unresolved.count) through the kernel until resolved"
        )
        // A table of its own for each worker's transmit path: one shared object would have its
        // reference count written from every worker's core.
        for (i, d) in fast.enumerated() {
            d.publish(nextHops: i == 0 ? table : NextHopTable(entries: table.entries, unresolved: table.unresolved))
        }
        last = table
    }
}

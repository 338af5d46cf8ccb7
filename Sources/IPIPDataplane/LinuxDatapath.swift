import IPIPCore
import IPIPLinux
import Synchronization

/// The live devices behind the packet loop (docs/decisions.md, "Live mode" and "Offloads"):
/// - the TUN, opened with virtio headers and TSO/USO (`TUNDevice(offloads:)`): reads give
///   super-packets of up to 64 KiB, writes take the coalesced ones the loop builds;
/// - the uplink capture (`UplinkCapture`, `PACKET_VNET_HDR`): GRO'd and TSO super-packets and
///   checksum-partial packets arrive with their metadata, so the host's offloads stay as they are;
/// - the uplink transmit path (`UplinkIOMethod`): encapsulated packets to peers whose next hop
///   is resolved go out as link-layer frames through AF_XDP or an AF_PACKET socket; everything
///   else (native and translated packets, which need the kernel's routing, ICMP errors to the
///   host, packets to unresolved peers) through the raw IPv4 socket.
///
/// Output: every underlay packet is written once into a transmit buffer (an AF_XDP frame, a
/// staging slot for `sendmmsg`): a super-packet as its segments (`Segmenter`), an ordinary packet
/// as a copy; each buffer is flushed with one system call per batch. Order is kept per path.
///
/// Next hops: the control thread resolves peers (`NextHopTable.resolve`) and publishes a table
/// when it changes (`publish(nextHops:)`); the loop swaps it in before its next batch. Every
/// `nextHopConfirmSeconds` one packet per peer takes the raw socket anyway, so the kernel keeps
/// using, and so re-verifying, the neighbour entry the fast path copies (a next hop whose MAC
/// changes is noticed as it would be for the host's own traffic).
///
/// I/O losses are counted per cause (`ioDrops`) and never stop the loop; a failed `poll` or read
/// (a closed device) is thrown and ends it.
public final class LinuxDatapath: DatapathIO, @unchecked Sendable {
    let tun: TUNDevice
    let capture: UplinkCapture
    let raw: RawIPv4Socket
    let poller: Poller
    let fds: [Int32]
    var drops: [String: UInt64] = [:]

    /// The fast transmit path, when one is open.
    enum FastPath {
        case none
        case packet(PacketTransmitSocket)
        case xdp(XDPTransmitSocket)
    }
    let fast: FastPath
    /// The method in use for encapsulated packets.
    public let method: UplinkIOMethod
    let sourceMAC: MACAddress

    var rawStaging: PacketBatch
    var frameStaging: PacketBatch
    /// A packet too big for a staging slot (a native packet above the underlay MTU).
    var oversize: PacketBatch

    let pendingNextHops = Mutex<NextHopTable?>(nil)
    let nextHopGeneration = Atomic<Int>(0)
    var seenNextHopGeneration = 0
    var nextHops = NextHopTable.empty
    /// Per next-hop slot, when a packet last took the raw socket (ns).
    var confirmed: [Int64] = []
    /// How often each peer's traffic goes through the kernel once (see the type's description).
    public static let nextHopConfirmSeconds: Int64 = 5

    // Counters (packet thread only; read through `ioCounters` by the loop's snapshot).
    var framesFast: UInt64 = 0
    var framesRaw: UInt64 = 0
    var segmentsOut: UInt64 = 0

    /// - Parameters:
    ///   - method: the transmit method for encapsulated packets; `.xdp` and `.packet` need an
    ///     Ethernet uplink (`uplinkMAC`) and are given already opened, `.raw` needs nothing.
    ///   - underlayMTU: the uplink MTU (sizes the staging buffers).
    public init(
        tun: TUNDevice, capture: UplinkCapture, raw: RawIPv4Socket, xdp: XDPTransmitSocket? = nil,
        packet: PacketTransmitSocket? = nil, uplinkMAC: MACAddress = .zero, underlayMTU: Int = 1500
    ) throws {
        self.tun = tun
        self.capture = capture
        self.raw = raw
        if let xdp {
            fast = .xdp(xdp)
            method = .xdp
        } else if let packet {
            fast = .packet(packet)
            method = .packet
        } else {
            fast = .none
            method = .raw
        }
        sourceMAC = uplinkMAC
        poller = Poller(waker: try EventLoopWaker(), capacity: 4)
        fds = [tun.fd, capture.fd]
        let slot = max(2048, underlayMTU + 64)
        rawStaging = PacketBatch(capacity: 256, maximumPacketByteCount: slot)
        frameStaging = PacketBatch(capacity: 256, maximumPacketByteCount: slot + 14)
        oversize = PacketBatch(capacity: 1)
    }

    public var tunOffloads: TUNOffloadSupport {
        TUNOffloadSupport(tcp: tun.hasVirtioHeaders, udp: tun.hasVirtioHeaders && tun.acceptsUDPSegmentation)
    }

    /// Hands a new next-hop table to the packet loop (any thread).
    public func publish(nextHops table: NextHopTable) {
        pendingNextHops.withLock { $0 = table }
        nextHopGeneration.add(1, ordering: .releasing)
    }

    public func wait(timeoutMilliseconds: Int32) throws -> (tun: Bool, uplink: Bool) {
        let r = try poller.wait(fds: fds, timeoutMilliseconds: timeoutMilliseconds)
        return (r.isReady(0), r.isReady(1))
    }

    public func readTUN(into batch: inout PacketBatch, time: Timestamp) throws -> Int {
        try tun.readBatch(into: &batch, time: time)
    }

    public func readUplink(into batch: inout PacketBatch, time: Timestamp) throws -> Int {
        try capture.receiveBatch(into: &batch, time: time)
    }

    /// Where one packet goes out.
    enum Path { case fast(MACAddress), raw }

    public func sendUnderlay(_ batch: borrowing PacketBatch) -> Int {
        takeNextHops()
        var lost = 0
        let now = PacketLoop<LinuxDatapath>.now().totalNanoseconds
        for i in 0..<batch.count where batch.side(of: i) == .underlay {
            let p = UnsafeRawBufferPointer(batch.packet(i))
            guard p.count >= 20 else {
                count("underlay_malformed")
                lost &+= 1
                continue
            }
            let path = choosePath(p, now: now)
            let offload = batch.offload(of: i)
            if offload.isSegmented {
                guard let layout = Segmenter.layout(of: p, offload: offload) else {
                    count("underlay_malformed")
                    lost &+= 1
                    continue
                }
                let size = Int(offload.segmentSize)
                for k in 0..<layout.segmentCount {
                    let n = Segmenter.segmentLength(k, layout: layout, segmentSize: size)
                    guard let dst = frame(n, path) else {
                        lost &+= 1
                        continue
                    }
                    _ = Segmenter.writeSegment(k, of: p, layout: layout, offload: offload, to: dst)
                    commit(n, path)
                }
                segmentsOut &+= UInt64(truncatingIfNeeded: layout.segmentCount)
            } else {
                guard let dst = frame(p.count, path) else {
                    lost &+= 1
                    continue
                }
                dst.copyMemory(from: p.baseAddress!, byteCount: p.count)
                commit(p.count, path)
            }
        }
        return lost &+ flush()
    }

    /// The fast path for IP-in-IP to a peer with a resolved next hop (unless it is the peer's
    /// turn to go through the kernel once), the raw socket for anything else.
    @inline(__always)
    func choosePath(_ p: UnsafeRawBufferPointer, now: Int64) -> Path {
        if case .none = fast { return .raw }
        guard p[9] == IPProtocolNumber.ipInIP else { return .raw }
        let peer = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        let slot = nextHops.slot(for: peer)
        guard slot >= 0 else { return .raw }
        if now &- confirmed[slot] >= Self.nextHopConfirmSeconds &* 1_000_000_000 {
            confirmed[slot] = now
            return .raw
        }
        return .fast(nextHops.linkAddress(at: slot))
    }

    /// Room for an IP packet of `length` bytes on `path` (after the link header on the fast
    /// path); nil when there is none even after flushing (the packet is lost, and counted).
    @inline(__always)
    func frame(_ length: Int, _ path: Path) -> UnsafeMutableRawPointer? {
        switch path {
        case .fast(let mac):
            let f: UnsafeMutableRawPointer
            switch fast {
            case .xdp(let x):
                guard length + 14 <= x.maximumFrameByteCount else {
                    count("underlay_too_big")
                    return nil
                }
                // No free frame: counted by the socket (`underlay_xdp_no_frame`).
                guard let r = x.reserve() else { return nil }
                f = r
            case .packet(let s):
                var slot = frameStaging.appendSlot(length: length + 14)
                if slot == nil {
                    flushFrames(s)
                    slot = frameStaging.appendSlot(length: length + 14)
                }
                guard let slot else {
                    count("underlay_too_big")
                    return nil
                }
                f = slot
            case .none:
                return nil
            }
            mac.store(to: f)
            sourceMAC.store(to: f + 6)
            f.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 12, as: UInt16.self)
            return f + 14
        case .raw:
            if length > rawStaging.maximumPacketByteCount {
                flushRaw()
                oversize.removeAll()
                guard let slot = oversize.appendSlot(length: length) else {
                    count("underlay_too_big")
                    return nil
                }
                oversize.setSide(.underlay, of: 0)
                return slot
            }
            var slot = rawStaging.appendSlot(length: length)
            if slot == nil {
                flushRaw()
                slot = rawStaging.appendSlot(length: length)
            }
            guard let slot else { return nil }
            rawStaging.setSide(.underlay, of: rawStaging.count - 1)
            return slot
        }
    }

    @inline(__always)
    func commit(_ length: Int, _ path: Path) {
        switch path {
        case .fast:
            framesFast &+= 1
            if case .xdp(let x) = fast { x.submit(length: length + 14) }
        case .raw:
            framesRaw &+= 1
            if oversize.count > 0 {
                sendRaw(oversize)
                oversize.removeAll()
            }
        }
    }

    /// Sends everything staged; returns packets lost.
    func flush() -> Int {
        var lost = flushRaw()
        switch fast {
        case .xdp(let x): x.flush()
        case .packet(let s): lost &+= flushFrames(s)
        case .none: break
        }
        return lost
    }

    @discardableResult
    func flushRaw() -> Int {
        guard rawStaging.count > 0 else { return 0 }
        let lost = sendRaw(rawStaging)
        rawStaging.removeAll()
        return lost
    }

    @discardableResult
    func flushFrames(_ s: PacketTransmitSocket) -> Int {
        guard frameStaging.count > 0 else { return 0 }
        defer { frameStaging.removeAll() }
        do {
            let r = try s.send(frameStaging)
            if r.dropped > 0 { countReport(r, prefix: "underlay_packet") }
            return r.dropped
        } catch {
            count("underlay_packet_error", frameStaging.count)
            return frameStaging.count
        }
    }

    @discardableResult
    func sendRaw(_ b: borrowing PacketBatch) -> Int {
        do {
            let r = try raw.send(b, side: .underlay)
            if r.dropped > 0 { countReport(r, prefix: "underlay") }
            return r.dropped
        } catch {
            count("underlay_error")
            return 1
        }
    }

    func countReport(_ r: SendReport, prefix: String) {
        drops["\(prefix)_no_buffers", default: 0] &+= UInt64(r.noBuffers)
        drops["\(prefix)_unreachable", default: 0] &+= UInt64(r.unreachable)
        drops["\(prefix)_too_big", default: 0] &+= UInt64(r.tooBig)
        drops["\(prefix)_denied", default: 0] &+= UInt64(r.denied)
        drops["\(prefix)_malformed", default: 0] &+= UInt64(r.malformed)
        drops["\(prefix)_would_block", default: 0] &+= UInt64(r.wouldBlock)
    }

    @inline(__always)
    func count(_ cause: String, _ n: Int = 1) {
        drops[cause, default: 0] &+= UInt64(n)
    }

    /// Takes a newly published next-hop table (an atomic check per batch, a lock only on change).
    @inline(__always)
    func takeNextHops() {
        let g = nextHopGeneration.load(ordering: .acquiring)
        guard g != seenNextHopGeneration else { return }
        seenNextHopGeneration = g
        if let t = pendingNextHops.withLock({ p -> NextHopTable? in
            defer { p = nil }
            return p
        }) {
            nextHops = t
            confirmed = [Int64](repeating: 0, count: t.slotCount)
        }
    }

    public func writeTUN(_ batch: borrowing PacketBatch) -> Int {
        do {
            let r = try tun.write(batch, side: .tun)
            if r.dropped > 0 { drops["tun_write", default: 0] &+= UInt64(r.dropped) }
            return r.dropped
        } catch {
            drops["tun_error", default: 0] &+= 1
            return 1
        }
    }

    /// ICMP errors ipipd generates (3/4 with a learned path MTU, 3/1 no route, 3/13 NAT ports
    /// exhausted) come from the node's tunnel address. Written into the TUN, they would enter the
    /// host's input path with a source the host owns, and the host drops such packets as martians
    /// (`in_martian_src`). Sent through the raw socket they take the local output path instead, where
    /// a local source is what a locally generated packet has, and the host routes them to the
    /// workload (or back into the TUN toward a remote one).
    public func deliverGenerated(_ batch: borrowing PacketBatch) -> Int {
        do {
            let r = try raw.send(batch, side: .tun)
            if r.dropped > 0 { drops["generated_to_host", default: 0] &+= UInt64(r.dropped) }
            return r.dropped
        } catch {
            drops["generated_to_host_error", default: 0] &+= 1
            return 1
        }
    }

    public func wake() { poller.waker.wake() }

    /// Called from the packet loop once a second. PACKET_STATISTICS resets on read, so the
    /// capture's overruns are accumulated here.
    public var ioDrops: [String: UInt64] {
        if let s = try? capture.statistics(), s.drops > 0 {
            drops["uplink_capture_overrun", default: 0] &+= UInt64(s.drops)
        }
        if capture.truncated > 0 { drops["uplink_truncated"] = capture.truncated }
        if case .xdp(let x) = fast, x.exhausted > 0 { drops["underlay_xdp_no_frame"] = x.exhausted }
        return drops
    }

    /// What the devices did with super-packets and transmit paths (metrics).
    public var ioCounters: [String: UInt64] {
        var c: [String: UInt64] = [
            "tun_super_packet_reads": tun.superPacketReads,
            "tun_super_packet_writes": tun.superPacketWrites,
            "tun_segmented_writes": tun.segmentedWrites,
            "uplink_super_packets": capture.superPackets,
            "uplink_ring_copies": capture.ringCopies,
            "underlay_segments": segmentsOut,
            "underlay_frames_raw": framesRaw,
            "next_hops_resolved": UInt64(nextHops.entries.count),
            "next_hops_unresolved": UInt64(nextHops.unresolved.count),
        ]
        if method != .raw { c["underlay_frames_\(method.rawValue)"] = framesFast }
        if case .xdp(let x) = fast { c["underlay_xdp_sendto"] = x.kicks }
        return c
    }
}

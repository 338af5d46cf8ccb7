import IPIPCore
import IPIPLinux

/// The live devices behind the packet loop: packets from workloads come out of the TUN, packets
/// for the dataplane are taken from the uplink by an AF_PACKET capture with a BPF filter, and
/// everything for the underlay leaves through one raw IPv4 socket (DESIGN.md §4).
///
/// I/O losses are counted per cause (`ioDrops`) and never stop the loop; a failed `poll` or read
/// (a closed device) is thrown and ends it.
public final class LinuxDatapath: DatapathIO {
    let tun: TUNDevice
    let capture: UplinkCapture
    let raw: RawIPv4Socket
    let poller: Poller
    let fds: [Int32]
    var drops: [String: UInt64] = [:]

    public init(tun: TUNDevice, capture: UplinkCapture, raw: RawIPv4Socket) throws {
        self.tun = tun
        self.capture = capture
        self.raw = raw
        poller = Poller(waker: try EventLoopWaker(), capacity: 4)
        fds = [tun.fd, capture.fd]
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

    public func sendUnderlay(_ batch: borrowing PacketBatch) -> Int {
        do {
            let r = try raw.send(batch, side: .underlay)
            if r.dropped > 0 {
                drops["underlay_no_buffers", default: 0] &+= UInt64(r.noBuffers)
                drops["underlay_unreachable", default: 0] &+= UInt64(r.unreachable)
                drops["underlay_too_big", default: 0] &+= UInt64(r.tooBig)
                drops["underlay_denied", default: 0] &+= UInt64(r.denied)
                drops["underlay_malformed", default: 0] &+= UInt64(r.malformed)
                drops["underlay_would_block", default: 0] &+= UInt64(r.wouldBlock)
            }
            return r.dropped
        } catch {
            drops["underlay_error", default: 0] &+= 1
            return 1
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
        if let s = try? capture.statistics(), s.drops > 0 { drops["uplink_capture_overrun", default: 0] &+= UInt64(s.drops) }
        return drops
    }
}

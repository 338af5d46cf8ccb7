// Privileged tests: TUN, raw socket, uplink capture, in namespaces the tests create (see
// NetworkNamespaceFixture.swift). Skipped with a printed reason when not root or without `ip`.
import CIPIPLinux
import Glibc
import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPLinux

/// Reads from `read` until `match` accepts a packet or 2 s pass; returns the matching packet.
func waitForPacket(
    fd: Int32,
    read: (inout PacketBatch) throws -> Int,
    match: (ParsedIPv4) -> Bool
) throws -> ParsedIPv4? {
    var batch = PacketBatch(capacity: 16, maximumPacketByteCount: 2048)
    for _ in 0..<40 {
        guard waitReadable(fd, timeoutMilliseconds: 50) else { continue }
        batch.removeAll()
        _ = try read(&batch)
        for i in 0..<batch.count {
            if let p = ParsedIPv4(batch.bytes(i)), match(p) { return p }
        }
    }
    return nil
}

@Suite("Devices in network namespaces", .serialized, .needsRoot)
struct DeviceTests {
    @Test("TUN: a datagram routed to the TUN is read; a packet written into it reaches a socket")
    func tunReadWrite() throws {
        let ns = try NetworkNamespace("tun")
        defer { ns.delete() }
        let (tun, socket) = try ns.perform { (try TUNDevice(name: "ipipt%d", mtu: 1400), try UDPSocket()) }
        defer { tun.close() }
        #expect(tun.name.hasPrefix("ipipt") && tun.name != "ipipt%d", "the kernel expands %d: \(tun.name)")
        #expect(tun.index > 0)
        try ns.ip("addr", "add", "10.250.0.1/24", "dev", tun.name)
        try ns.ip("link", "set", tun.name, "up")
        #expect(try ns.ip("link", "show", tun.name).contains("mtu 1400"))

        let workload = IPv4Address(10, 250, 0, 2)
        try socket.send(Array("to the tun".utf8), to: workload, port: 9999)
        let read = try waitForPacket(fd: tun.fd, read: { try tun.readBatch(into: &$0, time: .zero) }) {
            $0.proto == 17 && $0.destination == workload && $0.destinationPort == 9999
        }
        let packet = try #require(read, "no UDP packet read from the TUN")
        #expect(Array(packet.udpPayload) == Array("to the tun".utf8))
        #expect(packet.source == IPv4Address(10, 250, 0, 1))

        // Reading lands packets at the headroom and honours the limit.
        try socket.send([1], to: workload, port: 9999)
        try socket.send([2], to: workload, port: 9999)
        var batch = PacketBatch(capacity: 8, maximumPacketByteCount: 2048, headroom: 64)
        _ = waitReadable(tun.fd, timeoutMilliseconds: 500)
        let n = try tun.readBatch(into: &batch, time: Timestamp(seconds: 7), limit: 1)
        #expect(n == 1 && batch.count == 1)
        #expect(batch.headroom(of: 0) == 64 && batch.time(of: 0) == Timestamp(seconds: 7) && batch.origin(of: 0) == 0)
        while try tun.readBatch(into: &batch, time: .zero, limit: 8) > 0 {}  // drain until would-block

        batch.removeAll()
        let reply = udpPacket(
            from: workload, 9999, to: IPv4Address(10, 250, 0, 1), socket.port, payload: Array("from the tun".utf8))
        batch.append(reply, side: .tun)
        batch.append(udpPacket(from: workload, 1, to: IPv4Address(10, 250, 0, 1), 2, payload: [0]), side: .underlay)
        batch.append([0x00, 0x01, 0x02], side: .tun)  // not IP: the kernel refuses it (EINVAL), counted
        let result = try tun.write(batch, side: .tun)
        #expect(result.written == 1 && result.dropped == 1)
        #expect(socket.receive(timeoutMilliseconds: 2000) == Array("from the tun".utf8))
    }

    @Test("raw socket: 100 hand-built UDP packets cross a veth in sendmmsg chunks, content intact")
    func rawSocketBatch() throws {
        let hosts = try TwoHosts(subnet: 251, tag: "raw")
        defer { hosts.delete() }
        let receiver = try hosts.b.perform {
            try UDPSocket(bindingTo: IPv4Address(10, 251, 0, 2), port: 7000, receiveBuffer: 1 << 20)
        }
        let raw = try hosts.a.perform { try RawIPv4Socket(maximumBatchSize: 32) }
        defer { raw.close() }

        func payload(_ i: Int) -> [UInt8] {
            Array("packet \(i) ".utf8) + (0..<i).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }
        }
        var batch = PacketBatch(capacity: 128, maximumPacketByteCount: 2048)
        for i in 0..<100 {
            batch.append(
                udpPacket(from: hosts.addressA, 6000, to: hosts.addressB, 7000, payload: payload(i)), side: .underlay)
            if i == 50 {
                batch.append(
                    udpPacket(from: hosts.addressA, 6000, to: hosts.addressB, 7000, payload: [9, 9]), side: .tun)
                batch.append([0x45, 0, 0], side: .underlay)  // shorter than a header: malformed
                // No route in namespace a: ENETUNREACH, counted, the rest still sent.
                batch.append(
                    udpPacket(from: hosts.addressA, 6000, to: IPv4Address(203, 0, 113, 9), 7000, payload: [1]),
                    side: .underlay)
            }
        }
        let report = try raw.send(batch)
        #expect(report.sent == 100)
        #expect(report.malformed == 1 && report.unreachable == 1 && report.dropped == 2)

        var seen = Set<Int>()
        while seen.count < 100, let datagram = receiver.receive(timeoutMilliseconds: 2000) {
            let text = String(decoding: datagram.prefix { $0 != UInt8(ascii: " ") }.dropFirst(0), as: UTF8.self)
            #expect(text == "packet")
            let rest = datagram.dropFirst(7)
            let number = Int(String(decoding: rest.prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)) ?? -1
            #expect(datagram == payload(number), "content of packet \(number)")
            seen.insert(number)
        }
        #expect(seen == Set(0..<100))
        #expect(receiver.receive(timeoutMilliseconds: 100) == nil, "the .tun packet must not be sent")
    }

    @Test("capture: takes IP-in-IP and NAT-port packets to the node, nothing else; setFilter swaps")
    func uplinkCapture() throws {
        let hosts = try TwoHosts(subnet: 252, tag: "cap")
        defer { hosts.delete() }
        let filter = CaptureFilter(nodeAddress: hosts.addressB, natPortRange: 40000...40099)
        let capture = try hosts.b.perform { try UplinkCapture(interface: "vb", filter: filter, maximumBatchSize: 8) }
        defer { capture.close() }
        let raw = try hosts.a.perform { try RawIPv4Socket() }
        let inner = udpPacket(from: IPv4Address(192, 168, 1, 1), 1, to: IPv4Address(192, 168, 2, 1), 2, payload: [7])

        var batch = PacketBatch(capacity: 16, maximumPacketByteCount: 2048)
        let a = hosts.addressA
        batch.append(ipv4(source: a, destination: hosts.addressB, protocol: 4, payload: inner), side: .underlay)
        batch.append(udpPacket(from: a, 53, to: hosts.addressB, 50000, payload: [1]), side: .underlay)  // port outside
        batch.append(udpPacket(from: a, 53, to: hosts.addressB, 40050, payload: [2]), side: .underlay)  // NAT port
        batch.append(ipv4(source: a, destination: hosts.strangerOnB, protocol: 4, payload: inner), side: .underlay)
        batch.append(
            ipv4(source: a, destination: hosts.addressB, protocol: 6, payload: ports(40000, 22, extra: 16)),
            side: .underlay)
        batch.append(ipv4(source: a, destination: hosts.addressB, protocol: 4, payload: inner), side: .underlay)
        #expect(try raw.send(batch).sent == 6)

        var received: [ParsedIPv4] = []
        var rx = PacketBatch(capacity: 4, maximumPacketByteCount: 2048)  // smaller than the queue: several calls
        for _ in 0..<20 where received.count < 3 {
            _ = waitReadable(capture.fd, timeoutMilliseconds: 100)
            rx.removeAll()
            let n = try capture.receiveBatch(into: &rx, time: Timestamp(seconds: 1))
            #expect(n == rx.count)
            for i in 0..<rx.count {
                #expect(rx.headroom(of: i) == PacketBatch.defaultHeadroom)
                received.append(try #require(ParsedIPv4(rx.bytes(i))))
            }
        }
        // Nothing else arrives (the kernel's ICMP replies go out and are ignored).
        rx.removeAll()
        _ = waitReadable(capture.fd, timeoutMilliseconds: 200)
        #expect(try capture.receiveBatch(into: &rx, time: .zero) == 0)
        #expect(received.count == 3)
        #expect(received.filter { $0.proto == 4 && $0.destination == hosts.addressB }.count == 2)
        #expect(received.contains { $0.proto == 4 && Array($0.payload) == inner })
        #expect(received.contains { $0.proto == 17 && $0.destinationPort == 40050 && $0.bytes.count == 20 + 8 + 1 })

        // Swap the filter: now only the stranger's address is the node.
        try capture.setFilter(CaptureFilter(nodeAddress: hosts.strangerOnB, natPortRange: 40000...40099))
        #expect(capture.filter.nodeAddress == hosts.strangerOnB)
        #expect(try raw.send(batch).sent == 6)
        received = []
        for _ in 0..<10 where received.isEmpty {
            _ = waitReadable(capture.fd, timeoutMilliseconds: 100)
            rx.removeAll()
            _ = try capture.receiveBatch(into: &rx, time: .zero)
            for i in 0..<rx.count { received.append(try #require(ParsedIPv4(rx.bytes(i)))) }
        }
        _ = waitReadable(capture.fd, timeoutMilliseconds: 200)
        rx.removeAll()
        _ = try capture.receiveBatch(into: &rx, time: .zero)
        for i in 0..<rx.count { received.append(try #require(ParsedIPv4(rx.bytes(i)))) }
        #expect(received.count == 1 && received.first?.destination == hosts.strangerOnB)
        let statistics = try capture.statistics()
        #expect(statistics.drops == 0)
    }

    @Test("sysctl: read and write in a namespace")
    func sysctl() throws {
        let ns = try NetworkNamespace("sysctl")
        defer { ns.delete() }
        try ns.perform {
            #expect(Sysctl.read("net.ipv4.ip_forward") == "0")
            try Sysctl.write("net.ipv4.ip_forward", "1")
            #expect(Sysctl.read("net.ipv4.ip_forward") == "1")
            #expect(Sysctl.read("net.ipv4.conf.lo.rp_filter") != nil)
            #expect(throws: SystemCallError.self) { try Sysctl.write("net.ipv4.no_such_knob", "1") }
        }
    }
}

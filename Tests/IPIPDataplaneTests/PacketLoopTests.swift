import Foundation
import IPIPCore
import IPIPResources
import IPIPTestSupport
import Synchronization
import Testing

@testable import IPIPDataplane

/// An in-memory DatapathIO: queues of packets to read, lists of what was sent.
final class FakeDatapath: DatapathIO, @unchecked Sendable {
    let lock = NSLock()
    var tunQueue: [[UInt8]] = []
    var uplinkQueue: [[UInt8]] = []
    var underlaySent: [[UInt8]] = []
    var tunWritten: [[UInt8]] = []
    let woken = Atomic<Bool>(false)

    func wait(timeoutMilliseconds: Int32) throws -> (tun: Bool, uplink: Bool) {
        for _ in 0..<Int(timeoutMilliseconds) {
            let r = lock.withLock { (!tunQueue.isEmpty, !uplinkQueue.isEmpty) }
            if r.0 || r.1 || woken.exchange(false, ordering: .relaxed) { return r }
            usleep(1000)
        }
        return (false, false)
    }

    func read(_ queue: inout [[UInt8]], into batch: inout PacketBatch, time: Timestamp) -> Int {
        var n = 0
        while !queue.isEmpty && !batch.isFull {
            let p = queue.removeFirst()
            p.withUnsafeBytes { _ = batch.append(copying: $0, time: time) }
            n += 1
        }
        return n
    }

    func readTUN(into batch: inout PacketBatch, time: Timestamp) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        return read(&tunQueue, into: &batch, time: time)
    }

    func readUplink(into batch: inout PacketBatch, time: Timestamp) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        return read(&uplinkQueue, into: &batch, time: time)
    }

    func collect(_ batch: borrowing PacketBatch, _ side: PacketSide) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for i in 0..<batch.count where batch.side(of: i) == side { out.append(Array(batch.packet(i))) }
        return out
    }

    func sendUnderlay(_ batch: borrowing PacketBatch) -> Int {
        let out = collect(batch, .underlay)
        lock.withLock { underlaySent += out }
        return 0
    }

    func writeTUN(_ batch: borrowing PacketBatch) -> Int {
        let out = collect(batch, .tun)
        lock.withLock { tunWritten += out }
        return 0
    }

    func wake() { woken.store(true, ordering: .relaxed) }
    var ioDrops: [String: UInt64] { [:] }
}

/// UDP 40000 → 8080 from a1 (192.168.0.10) to `destination`, no UDP checksum.
func examplePacket(to destination: String) -> [UInt8] {
    udpPacket(from: IPv4Address("192.168.0.10")!, 40000, to: IPv4Address(destination)!)
}

/// A UDP packet (8-byte header, no payload, no UDP checksum) with a valid header checksum.
func udpPacket(from source: IPv4Address, _ port: UInt16, to destination: IPv4Address) -> [UInt8] {
    PacketBuilder(
        source: source, destination: destination, ttl: 63, identification: 1,
        payload: PacketBuilder.udp(
            source: source, destination: destination, sourcePort: port, destinationPort: 8080, payload: [],
            checksum: false)
    ).bytes()
}

func exampleTopology(mode: String) throws -> Topology {
    let text = try ExampleCluster.manifests(mode: mode)
    let set = try IPIPResources.ResourceLoader.load(text: text, file: "cluster.yaml")
    return try Topology.compile(ClusterLoader.spec(from: set, node: "node-a", underlayMTU: 1500))
}

@Suite("Packet loop")
struct PacketLoopTests {
    func until(_ timeout: Double = 5, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if condition() { return true }
            usleep(2000)
        }
        return false
    }

    @Test("batches flow both ways, and a published topology takes over without stopping the loop")
    func flowAndSwap() throws {
        let io = FakeDatapath()
        let loop = PacketLoop(io: io, engine: Engine(topology: try exampleTopology(mode: "Always")))
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }

        io.lock.withLock { io.tunQueue.append(examplePacket(to: "192.168.1.20")) }
        #expect(until { io.lock.withLock { io.underlaySent.count == 1 } })
        #expect(io.lock.withLock { io.underlaySent[0][9] } == 4, "Always: IP-in-IP")

        loop.publish(try exampleTopology(mode: "Never"))
        // The loop keeps going: the next packet is routed natively under the new topology.
        var sawNative = false
        for _ in 0..<50 where !sawNative {
            io.lock.withLock { io.tunQueue.append(examplePacket(to: "192.168.1.20")) }
            usleep(20_000)
            sawNative = io.lock.withLock { io.underlaySent.last?[9] == 17 }
        }
        #expect(sawNative)

        // The way back: IP-in-IP from node-b arrives in the TUN without its outer header.
        var inner = examplePacket(to: "192.168.0.10")
        inner[12] = 192
        inner[13] = 168
        inner[14] = 1
        inner[15] = 20
        inner[16] = 192
        inner[17] = 168
        inner[18] = 0
        inner[19] = 10
        inner[10] = 0
        inner[11] = 0
        let c = inner[0..<20].withUnsafeBytes { InternetChecksum.checksum($0) }
        inner[10] = UInt8(c >> 8)
        inner[11] = UInt8(c & 0xFF)
        var outer: [UInt8] = [
            0x45, 0, UInt8((inner.count + 20) >> 8), UInt8((inner.count + 20) & 0xFF), 0, 2, 0x40, 0, 64, 4, 0, 0,
            10, 0, 0, 2, 10, 0, 0, 1,
        ]
        let oc = outer.withUnsafeBytes { InternetChecksum.checksum($0) }
        outer[10] = UInt8(oc >> 8)
        outer[11] = UInt8(oc & 0xFF)
        io.lock.withLock { io.uplinkQueue.append(outer + inner) }
        #expect(until { io.lock.withLock { io.tunWritten.contains(inner) } })

        loop.refreshSnapshot()
        #expect(until { (loop.latestSnapshot().counters?.packets(.decapsulated) ?? 0) == 1 })
        loop.stop()
        #expect(until { thread.isFinished })
    }
}

@Suite("Packet workers")
struct PacketWorkersTests {
    func until(_ timeout: Double = 5, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if condition() { return true }
            usleep(2000)
        }
        return false
    }

    /// A UDP packet from `source`:`port` to `destination`:8080.
    func udp(_ source: [UInt8], _ port: UInt16, to destination: [UInt8]) -> [UInt8] {
        udpPacket(
            from: IPv4Address(source[0], source[1], source[2], source[3]), port,
            to: IPv4Address(destination[0], destination[1], destination[2], destination[3]))
    }

    @Test("two workers: SNAT read on the wrong worker is handed to its owner both ways; topology reaches both")
    func handoff() throws {
        let topology = try exampleTopology(mode: "Always")
        let ios = [FakeDatapath(), FakeDatapath()]
        let engines = (0..<2).map { w in
            var c = EngineConfiguration()
            c.worker = WorkerShare(index: w, count: 2)
            return Engine(topology: topology, configuration: c)
        }
        let workers = PacketWorkers(ios: ios, engines: engines)
        workers.start()
        defer { workers.stop() }

        // Inside sources owned by each worker; each packet is read by the other one.
        var checked = Set<Int>()
        for last in UInt8(10)...UInt8(30) {
            let out = udp([192, 168, 0, last], 40000, to: [203, 0, 113, 10])
            let owner = out.withUnsafeBytes { engines[0].egressOwner($0) }
            guard owner >= 0, !checked.contains(owner) else { continue }
            checked.insert(owner)
            let other = 1 - owner
            ios[other].lock.withLock { ios[other].tunQueue.append(out) }
            #expect(until { ios[owner].lock.withLock { !ios[owner].underlaySent.isEmpty } }, "the owner sends it")
            let translated = ios[owner].lock.withLock { ios[owner].underlaySent.removeLast() }
            #expect(ios[other].lock.withLock { ios[other].underlaySent.isEmpty }, "the reader does not")
            #expect(Array(translated[12..<16]) == [10, 0, 0, 1], "source is the node IP")
            let external = UInt16(translated[20]) << 8 | UInt16(translated[21])
            #expect(engines[owner].nat.portRange.contains(external))
            // The reply arrives on the other worker's capture and reaches the workload through the owner.
            var reply = udp([203, 0, 113, 10], 8080, to: [10, 0, 0, 1])
            reply[20] = 0x1F
            reply[21] = 0x90
            reply[22] = UInt8(external >> 8)
            reply[23] = UInt8(external & 0xFF)
            ios[other].lock.withLock { ios[other].uplinkQueue.append(reply) }
            #expect(
                until { ios[owner].lock.withLock { !ios[owner].tunWritten.isEmpty } }, "the owner delivers the reply")
            let delivered = ios[owner].lock.withLock { ios[owner].tunWritten.removeLast() }
            #expect(Array(delivered[16..<20]) == [192, 168, 0, last] && delivered[22] == 0x9C && delivered[23] == 0x40)
        }
        #expect(checked.count == 2, "sources of both workers found")

        workers.refreshSnapshot()
        #expect(
            until {
                let s = workers.latestSnapshot()
                return s.workers.count == 2 && (s.counters?.packets(.translated) ?? 0) == 2
                    && (s.counters?.packets(.untranslated) ?? 0) == 2
                    && (s.ioCounters["handoff_sent"] ?? 0) == 4 && (s.ioCounters["handoff_received"] ?? 0) == 4
            })
        let text = workers.latestSnapshot().prometheusText()
        #expect(text.contains("ipipd_workers 2\n"))
        #expect(text.contains("ipipd_worker_packets_total{worker=\"0\",verdict=\"translated\"} 1\n"))
        #expect(text.contains("ipipd_worker_packets_total{worker=\"1\",verdict=\"translated\"} 1\n"))

        // A new topology reaches every worker (a packet already being read may still see the
        // old one: it is installed between batches, so keep sending until both route natively).
        workers.publish(try exampleTopology(mode: "Never"))
        var native = false
        for _ in 0..<100 where !native {
            for io in ios { io.lock.withLock { io.tunQueue.append(examplePacket(to: "192.168.1.20")) } }
            usleep(20_000)
            native = ios.allSatisfy { io in io.lock.withLock { io.underlaySent.last?[9] == 17 } }
        }
        #expect(native, "both route natively now")
    }
}

@Suite("Metrics and resource sources")
struct MetricsTests {
    @Test("GET /metrics serves the Prometheus text; other paths get 404")
    func server() throws {
        var snapshot = MetricsSnapshot()
        snapshot.natSessions = 7
        snapshot.routesProgrammed = 3
        let text = snapshot.prometheusText()
        #expect(text.contains("ipipd_nat_sessions 7\n") && text.contains("ipipd_routes_programmed 3\n"))
        let server = try MetricsServer(host: "127.0.0.1", port: 0) { text }
        let thread = Thread { server.serve() }
        thread.start()
        defer { server.stop() }
        func get(_ path: String) throws -> String {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(s) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = server.port.bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard r == 0 else { return "connect failed" }
            let req = Array("GET \(path) HTTP/1.0\r\nHost: x\r\n\r\n".utf8)
            _ = req.withUnsafeBytes { send(s, $0.baseAddress, $0.count, 0) }
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { recv(s, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                out += buf[0..<n]
            }
            return String(decoding: out, as: UTF8.self)
        }
        let ok = try get("/metrics")
        #expect(ok.hasPrefix("HTTP/1.0 200 OK") && ok.contains("ipipd_nat_sessions 7"))
        #expect(try get("/").hasPrefix("HTTP/1.0 404"))
    }

    @Test("the manifest source's change token changes when a manifest changes")
    func changeToken() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ipip-src-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("a.yaml")
        try "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\n"
            .write(to: file, atomically: true, encoding: .utf8)
        let source = ManifestSource(paths: [dir.path])
        let t1 = source.changeToken()
        #expect(try source.load().pools.count == 1)
        try "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.2.0.0/16}\n"
            .write(to: file, atomically: true, encoding: .utf8)
        #expect(source.changeToken() != t1)
        try "x: [".write(to: dir.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try source.load() }
    }
}

import Foundation
import IPIPCore
import IPIPResources
import IPIPTestSupport
import Pcap
import Testing

@testable import IPIPDataplane

@Suite("flight recorder: --record-buffer, recordings written from a running loop")
struct FlightRecorderTests {
    static let goodSizes: [(String, Int)] = [
        ("64MiB", 64 << 20), ("64M", 64 << 20), ("64mb", 64 << 20), ("512k", 512 << 10), ("1GiB", 1 << 30),
        ("2g", 2 << 30), ("1048576", 1 << 20), ("300B", 300), (" 8KiB ", 8 << 10),
    ]
    static let refusedSizes: [(String, String)] = [
        ("", "is not a size"), ("MiB", "is not a size"), ("-5M", "is not a size"), ("12XB", "unknown unit 'XB'"),
        ("1.5G", "unknown unit '.5G'"), ("65GiB", "more than 64GiB"), ("99999999999999999999G", "is not a size"),
    ]

    @Test("SIZE parses K/M/G and KiB/MiB/GiB as powers of 1024", arguments: goodSizes)
    func sizes(text: String, bytes: Int) throws {
        #expect(try RecordBufferSize.parse(text) == bytes)
    }

    @Test("a bad SIZE is an error naming it", arguments: refusedSizes)
    func badSizes(text: String, message: String) {
        #expect {
            _ = try RecordBufferSize.parse(text)
        } throws: { error in
            "\(error)".contains(message) && "\(error)".contains("--record-buffer")
        }
    }

    /// A loop over the in-memory datapath with a recorder, running on its own thread.
    struct RunningLoop {
        let io = FakeDatapath()
        let recorder: FlightRecorder
        let loop: PacketLoop<FakeDatapath>

        init(bytes: Int = 1 << 20) throws {
            recorder = FlightRecorder(totalBytes: bytes, workers: 1, batchSize: 64)
            loop = PacketLoop(io: io, engine: Engine(topology: try exampleTopology(mode: "Always")))
            loop.recorder = recorder.loops[0]
            let l = loop
            Thread { l.run() }.start()
        }

        func context() throws -> FlightRecorder.Context {
            let text = try ExampleCluster.manifests(mode: "Always")
            return FlightRecorder.Context(
                node: "node-a", manifests: text, natSecret: 0x5EED, underlayMTU: 1500,
                configurations: [EngineConfiguration()])
        }

        func until(_ condition: () -> Bool) -> Bool {
            for _ in 0..<2500 {
                if condition() { return true }
                usleep(2000)
            }
            return false
        }
    }

    @Test("a recording of a running loop: both captures with the live verdicts, cluster.yaml with the state")
    func recordingOfARunningLoop() throws {
        let r = try RunningLoop()
        defer { r.loop.stop() }
        r.io.lock.withLock {
            r.io.tunQueue.append(examplePacket(to: "192.168.1.20"))
            r.io.tunQueue.append(examplePacket(to: "192.168.200.1"))
        }
        #expect(r.until { r.io.lock.withLock { r.io.underlaySent.count == 1 } })
        // IP-in-IP from a host that is no node.
        var spoof = PacketBuilder(
            source: IPv4Address("198.51.100.10")!, destination: IPv4Address("10.0.0.1")!, ttl: 64,
            payload: examplePacket(to: "192.168.0.10"))
        spoof.protocolNumber = IPProtocolNumber.ipInIP
        r.io.lock.withLock { r.io.uplinkQueue.append(spoof.bytes()) }
        #expect(r.until { r.recorder.loops[0].underlay.count == 1 })
        let directory = TempDir()
        defer { directory.cleanup() }
        let target = directory.file("rec")
        let line = try r.recorder.write(to: target, context: try r.context())
        #expect(line.contains("2 TUN and 1 underlay packets"), "\(line)")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(names == ["rec"], "nothing beside the recording")
        let tun = try PcapNGBlockReader(path: target + "/tun.pcapng")
        #expect(tun.packets.map(\.comment) == ["encapsulated peer 10.0.0.2", "dropped no_route icmp 3/1"])
        #expect(tun.packets.allSatisfy { $0.linkType == 147 })
        #expect(Array(tun.packets[0].data.dropFirst(VirtioNetHeader.byteCount)) == examplePacket(to: "192.168.1.20"))
        let under = try PcapNGBlockReader(path: target + "/underlay.pcapng")
        #expect(under.packets.map(\.comment) == ["dropped ipip_unknown_peer"])
        // Wall-clock times: within a minute of now.
        let now = Int64(Date().timeIntervalSince1970)
        #expect(abs((tun.packets[0].timestamp?.seconds ?? 0) - now) < 60)
        let loaded = try #require(try ClusterLoader.recording(path: target + "/cluster.yaml"))
        #expect(loaded.set.nodes.count == 3)
        #expect(loaded.states.count == 1 && loaded.states[0].natSecret == 0x5EED)
        #expect(loaded.states[0].windowStart == (tun.packets[0].timestamp?.totalNanoseconds ?? 0))
        var st = stat()
        #expect(stat(target + "/tun.pcapng", &st) == 0 && st.st_mode & 0o777 == 0o600)

        // The loop records on after the dump; a second recording holds the packets of both.
        r.io.lock.withLock { r.io.tunQueue.append(examplePacket(to: "192.168.1.20")) }
        #expect(r.until { r.recorder.loops[0].tun.count == 3 })
        _ = try r.recorder.write(to: directory.file("again"), context: try r.context())
        #expect(try PcapNGBlockReader(path: directory.file("again") + "/tun.pcapng").packets.count == 3)
    }

    @Test("a target that exists and is not empty is refused before anything is written")
    func nonEmptyTargetRefused() throws {
        let r = try RunningLoop()
        defer { r.loop.stop() }
        let directory = TempDir()
        defer { directory.cleanup() }
        try FileManager.default.createDirectory(atPath: directory.file("rec"), withIntermediateDirectories: true)
        _ = directory.write("rec/notes.txt", "keep")
        #expect {
            _ = try r.recorder.write(to: directory.file("rec"), context: try r.context())
        } throws: { error in
            "\(error)".contains("is not empty (notes.txt)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.file("rec")) == ["notes.txt"])
    }

    @Test("a loop that is not running fails the recording with its worker number")
    func stoppedLoop() throws {
        let recorder = FlightRecorder(totalBytes: 1 << 20, workers: 1, batchSize: 64)
        let directory = TempDir()
        defer { directory.cleanup() }
        #expect {
            _ = try recorder.write(
                to: directory.file("rec"),
                context: .init(node: "n", manifests: "", natSecret: 1, underlayMTU: 1500, configurations: []),
                timeout: 0.2)
        } throws: { error in
            "\(error)".contains("packet worker 0 did not hand over its rings")
        }
        #expect(!FileManager.default.fileExists(atPath: directory.file("rec")))
    }

    @Test(
        "a full disk: the error names the file and the reason, nothing is left, not even a staging directory",
        .needsRoot)
    func fullDisk() throws {
        let r = try RunningLoop()
        defer { r.loop.stop() }
        for _ in 0..<40 {
            var big = PacketBuilder(
                source: IPv4Address("192.168.0.10")!, destination: IPv4Address("192.168.1.20")!, ttl: 63,
                payload: Array(repeating: 7, count: 1400))
            big.dontFragment = false
            r.io.lock.withLock { r.io.tunQueue.append(big.bytes()) }
        }
        #expect(r.until { r.recorder.loops[0].tun.count == 40 })
        let directory = TempDir()
        defer { directory.cleanup() }
        let mountPoint = directory.file("tiny")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try Processes.run("/bin/mount", ["-t", "tmpfs", "-o", "size=16k", "ipipd-test", mountPoint])
        try #require(mounted.status == 0, "mount tmpfs: \(mounted.stderr)")
        defer { _ = try? Processes.run("/bin/umount", [mountPoint]) }
        #expect {
            _ = try r.recorder.write(to: mountPoint + "/rec", context: try r.context())
        } throws: { error in
            "\(error)".contains("No space left on device") && "\(error)".contains("tun.pcapng")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: mountPoint) == [])
    }

    /// The project's allocation counter (libIPIPMallocCounter.so, preloaded by `ipipd bench`)
    /// over the recorder's per-batch work: one pass and four passes of the same captures cost
    /// the same allocations (the constant set-up), so a recorded packet allocates nothing.
    @Test("no allocation per packet with the recorder on (ipipd bench --record-buffer, allocation counter)")
    func allocationFree() throws {
        let ipipd = try #require(builtProgram("ipipd"), "build ipipd first (swift build)")
        let directory = TempDir()
        defer { directory.cleanup() }
        let gen = try Processes.run(
            ipipd,
            [
                "gen", "--out", directory.file("tun.pcap"), "--underlay-out", directory.file("under.pcap"),
                "--manifests-out", directory.file("m.yaml"), "--packets", "5000", "--nat-share", "0.3",
                "--super-packets", "4",
            ])
        try #require(gen.status == 0, "ipipd gen: \(gen.stderr)")
        func mallocs(passes: Int) throws -> (packets: Int, mallocs: Int) {
            let r = try Processes.run(
                ipipd,
                [
                    "bench", "--manifests", directory.file("m.yaml"), "--node", "node-0", "--in",
                    directory.file("tun.pcap"), "--underlay-in", directory.file("under.pcap"), "--iterations",
                    "\(passes)", "--record-buffer", "1MiB", "--json",
                ])
            try #require(r.status == 0, "ipipd bench: \(r.stderr)")
            let json = try #require(
                try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stdout)")
            let m = try #require(
                json["mallocs"] as? Int, "allocations not counted (libIPIPMallocCounter.so beside ipipd?)")
            return (json["packets"] as? Int ?? 0, m)
        }
        let one = try mallocs(passes: 1)
        let four = try mallocs(passes: 4)
        #expect(four.packets == 4 * one.packets && one.packets > 0)
        #expect(four.mallocs == one.mallocs, "allocations grew with the packets: \(one) → \(four)")
    }

    @Test("SIGUSR2's directory: <record-dir>/<node>-<UTC time to the millisecond>Z")
    func directoryRule() {
        let d = Daemon.recordingDirectory(
            in: "/var/lib/ipipd/recordings/", node: "node-a", at: Date(timeIntervalSince1970: 1_764_000_000.25))
        #expect(d == "/var/lib/ipipd/recordings/node-a-20251124T160000.250Z")
    }
}

/// A built executable of the package (beside the test bundle, or in .build/debug).
func builtProgram(_ name: String) -> String? {
    var candidates: [String] = []
    if let exe = Bundle.main.executableURL?.deletingLastPathComponent().path { candidates.append(exe + "/" + name) }
    candidates.append(Bundle.main.bundlePath + "/../" + name)
    candidates.append(ExampleCluster.repositoryRoot.path + "/.build/debug/" + name)
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

@Suite("flight recorder: the daemon's side")
struct DaemonRecorderTests {
    @Test("SIGUSR2 with the recorder off: the log says how to turn it on; the daemon runs on and stops cleanly")
    func sigusr2WithRecorderOff() throws {
        var signalled = false
        let run = try DaemonLifecycleTests.makeRun(script: [
            { _ in [.user2] },
            { _ in
                signalled = true
                return [.terminate]
            },
        ])
        #expect(run.daemon.recorder == nil)
        #expect(try run.daemon.run() == 0)
        #expect(signalled)
        #expect(
            run.log.contains(
                "SIGUSR2: the flight recorder is off: start ipipd run with --record-buffer SIZE (e.g. 64MiB)"))
    }

    @Test("--record-buffer is split evenly over the workers and, within each, over both sides")
    func split() throws {
        var options = DaemonOptions(node: "node-a")
        options.workers = 2
        options.recordBufferBytes = 4 << 20
        let (logger, _) = RecordingLogHandler.logger()
        let daemon = Daemon(
            options: options, source: ManifestSource(paths: []), logger: logger,
            host: FakeHost(uplinkAddress: IPv4Address("10.0.0.1")!))
        let recorder = try #require(daemon.recorder)
        #expect(recorder.loops.count == 2)
        #expect(recorder.bytesPerSide == 1 << 20)
        #expect(recorder.loops.allSatisfy { $0.tun.capacity == 1 << 20 && $0.underlay.capacity == 1 << 20 })
        #expect(throws: DaemonError.self) { _ = try daemon.writeRecording(to: "/nonexistent/rec") }
    }
}

import Foundation
import IPIPCore
import IPIPResources
import IPIPTestSupport
import Pcap
import Testing

@testable import IPIPOffline

/// The replay of a flight recording without a live daemon: a recording written by hand (two
/// pcapng files with verdict comments, the example cluster and a RecordedEngineState), replayed
/// through `RecordingCheck` as `ipipd replay` does.
@Suite struct RecordingCheckTests {
    static let t0: Int64 = 1_764_000_000_000_000_000
    static let node = IPv4Address("10.0.0.1")!
    static let workload = IPv4Address("192.168.0.10")!
    static let server = IPv4Address("198.51.100.10")!

    static func udp(_ s: IPv4Address, _ sp: UInt16, _ d: IPv4Address, _ dp: UInt16) -> [UInt8] {
        PacketBuilder(
            source: s, destination: d, ttl: 63, identification: 1,
            payload: PacketBuilder.udp(
                source: s, destination: d, sourcePort: sp, destinationPort: dp, payload: [], checksum: false)
        ).bytes()
    }

    /// Writes a capture of link type 147 (a zero virtio header before each packet) with comments.
    static func capture(_ path: String, _ packets: [([UInt8], Int64, String)]) throws {
        let w = try PcapNGWriter(path: path, linkType: .virtioNet)
        for (p, t, comment) in packets {
            let record = [UInt8](repeating: 0, count: VirtioNetHeader.byteCount) + p
            record.withUnsafeBytes {
                w.write(
                    $0, timestamp: Timestamp(seconds: t / 1_000_000_000, nanoseconds: UInt32(t % 1_000_000_000)),
                    comment: comment)
            }
        }
        try w.close()
    }

    struct Recording {
        let directory = TempDir()
        var cluster: String { directory.file("cluster.yaml") }
        var tun: String { directory.file("tun.pcapng") }
        var underlay: String { directory.file("underlay.pcapng") }

        /// A packet to node-b's workload, then a reply through a NAT session that is older than
        /// the recording (its request is not in it): live verdicts `encapsulated` and `untranslated`.
        init(sessions: [NATSessionState], replyComment: String = "untranslated") throws {
            try RecordingCheckTests.capture(
                tun,
                [
                    (
                        RecordingCheckTests.udp(workload, 40001, IPv4Address("192.168.1.20")!, 8080), t0 + 1_000,
                        "encapsulated peer 10.0.0.2"
                    )
                ])
            try RecordingCheckTests.capture(
                underlay, [(RecordingCheckTests.udp(server, 5400, node, 61000), t0 + 2_000, replyComment)])
            let state = RecordedEngineState(
                node: "node-a", worker: 0, workers: 1, windowStart: t0 + 1_000, natSecret: 0x5EED,
                state: EngineState(natSessions: sessions))
            _ = directory.write(
                "cluster.yaml", try ExampleCluster.manifests(mode: "Always") + state.yaml(first: true))
        }

        func check() throws -> RecordingCheck.Result {
            let loaded = try #require(try ClusterLoader.recording(path: cluster))
            let check = try RecordingCheck(states: loaded.states, node: "node-a")
            let topology = try Topology.compile(
                ClusterLoader.spec(from: loaded.set, node: "node-a", underlayMTU: check.underlayMTU))
            let engine = Engine(topology: topology, configuration: check.configuration(outerTimeToLive: 64))
            try engine.preload(check.preloadState)
            return try check.run(engine: engine, options: ReplayOptions(input: tun, underlayInput: underlay)).result
        }
    }

    static let session = NATSessionState(
        proto: .udp, internalAddress: workload, internalPort: 40000, externalPort: 61000, remoteAddress: server,
        remotePort: 5400, lastActivity: t0 - 5_000_000_000)

    @Test func theRecordedSessionReproducesTheReply() throws {
        let r = try Recording(sessions: [Self.session])
        defer { r.directory.cleanup() }
        let result = try r.check()
        #expect(result.reproduced == 2 && result.differences.isEmpty, "\(result.report(workers: 1))")
        #expect(result.report(workers: 1) == "recording check: 2 verdicts reproduced, 0 differ")
    }

    @Test func withoutItTheReplyDiffersAndTheReportSaysWhichAndWhy() throws {
        let r = try Recording(sessions: [])
        defer { r.directory.cleanup() }
        let result = try r.check()
        #expect(result.reproduced == 1)
        let d = try #require(result.differences.first)
        #expect(d.side == .underlay && d.index == 0 && d.live == "untranslated" && d.replay == "dropped unsolicited")
        #expect(d.time == Timestamp(seconds: 1_764_000_000, nanoseconds: 2_000))
        #expect(d.summary.hasPrefix("198.51.100.10 > 10.0.0.1 udp 5400 > 61000"), "\(d.summary)")
        #expect(d.reason?.contains("created before the recording and expired from the live table") == true)
        let report = result.report(workers: 1)
        #expect(
            report.hasPrefix(
                "recording check: 1 verdicts reproduced, 1 differ\n  underlay packet 0 at 1764000000.000002000"))
    }

    @Test func aSessionTheLiveTableDidNotHaveYetIsExplainedToo() throws {
        let r = try Recording(sessions: [Self.session], replyComment: "dropped unsolicited")
        defer { r.directory.cleanup() }
        let d = try #require(try r.check().differences.first)
        #expect(d.reason?.contains("created only later in the window") == true)
    }

    @Test func packetsWithoutAVerdictAreCountedNotCompared() throws {
        let r = try Recording(sessions: [Self.session], replyComment: "no verdict")
        defer { r.directory.cleanup() }
        let result = try r.check()
        #expect(result.uncompared == 1 && result.reproduced == 1 && result.differences.isEmpty)
    }

    @Test func stateOfAnotherNodeOrMissingWorkersIsRefused() throws {
        let s = RecordedEngineState(
            node: "node-b", worker: 0, workers: 1, windowStart: 0, natSecret: 1, state: EngineState())
        #expect {
            _ = try RecordingCheck(states: [s], node: "node-a")
        } throws: { e in "\(e)".contains("the recording is of node node-b, not --node node-a") }
        var w = s
        w.node = "node-a"
        w.workers = 2
        #expect {
            _ = try RecordingCheck(states: [w], node: "node-a")
        } throws: { e in "\(e)".contains("do not cover workers 0…1 once each") }
    }
}

import IPIPCore
import IPIPResources
import Pcap

/// `ipipd replay` of a flight recording (docs/flight-recorder.md): the engine is set up as the
/// live one was (its NAT secret, timeouts, ICMP share and underlay MTU, from the recording's
/// `RecordedEngineState`), the state from before the recording is preloaded, the captures are
/// replayed as any, and each packet's verdict is compared with the live verdict in its pcapng
/// comment.
///
/// Several workers: one engine replays the merged captures, preloaded with the union of the
/// workers' states (sessions, the longest-lived learned MTU per peer, worker 0's ICMP bucket at
/// the full rate). Verdicts match as long as they do not depend on which worker held what: SNAT
/// ports of sessions created in the window may differ (they come from one slice live, from the
/// whole range here), and so may verdicts that depend on a worker's share of the ICMP budget.
public struct RecordingCheck {
    public let states: [RecordedEngineState]
    public let node: String

    /// - Throws: `ReplayError` when the recording is of another node or its documents disagree.
    public init(states: [RecordedEngineState], node: String) throws {
        guard let first = states.first else { throw ReplayError("the recording holds no RecordedEngineState") }
        for s in states where s.node != node {
            throw ReplayError("the recording is of node \(s.node), not --node \(node): replay it with --node \(s.node)")
        }
        let workers = Set(states.map(\.worker))
        guard workers.count == states.count, workers == Set(0..<first.workers) else {
            throw ReplayError(
                "the recording's RecordedEngineState documents do not cover workers 0…\(first.workers - 1) once each")
        }
        self.states = states.sorted { $0.worker < $1.worker }
        self.node = node
    }

    /// The underlay MTU the live daemon ran with.
    public var underlayMTU: Int { states[0].underlayMTU }

    /// The engine configuration of the live daemon (one engine for all workers).
    public func configuration(outerTimeToLive: UInt8) -> EngineConfiguration {
        let s = states[0]
        var c = EngineConfiguration(
            outerTimeToLive: outerTimeToLive, icmpRatePerSecond: s.icmpRatePerSecond * s.workers,
            icmpBurst: s.icmpBurst * s.workers, natTimeouts: s.natTimeouts, natSeed: s.natSecret)
        c.worker = .single
        return c
    }

    /// The state to preload: worker 0's, or the union of all workers'.
    public var preloadState: EngineState {
        guard states.count > 1 else { return states[0].state }
        var s = states[0].state
        s.natSessions = states.flatMap(\.state.natSessions)
        var best: [IPv4Address: EngineState.PathMTU] = [:]
        for p in states.flatMap(\.state.pathMTUs) where (best[p.peer]?.expires ?? .min) < p.expires { best[p.peer] = p }
        s.pathMTUs = best.values.sorted { $0.peer.rawValue < $1.peer.rawValue }
        return s
    }

    /// One packet whose replayed verdict is not the live one.
    public struct Difference: Sendable {
        public var side: PacketDirection
        public var index: Int
        public var time: Timestamp?
        public var summary: String
        public var live: String
        public var replay: String
        public var reason: String?
    }

    /// The outcome of a check.
    public struct Result: Sendable {
        public var reproduced = 0
        public var differences: [Difference] = []
        /// Packets without a live verdict in their comment (not compared).
        public var uncompared = 0

        /// `N verdicts reproduced, M differ`, then one line per difference.
        public func report(workers: Int) -> String {
            var lines = ["recording check: \(reproduced) verdicts reproduced, \(differences.count) differ"]
            if uncompared > 0 { lines[0] += ", \(uncompared) without a live verdict" }
            if workers > 1 { lines[0] += " (\(workers) workers replayed as one engine)" }
            for d in differences {
                var l = "  \(d.side.rawValue) packet \(d.index)"
                if let t = d.time { l += " at \(t)" }
                l += " (\(d.summary)): live \"\(d.live)\", replay \"\(d.replay)\""
                if let r = d.reason { l += ": \(r)" }
                lines.append(l)
            }
            return lines.joined(separator: "\n")
        }
    }

    /// Replays `options` through `engine` (preloaded by the caller) and compares verdicts with the
    /// comments of the two captures.
    public func run(
        engine: Engine, options: ReplayOptions, progress: ProgressReporter? = nil
    ) throws -> (summary: ReplaySummary, result: Result) {
        var live: [PacketDirection: PcapNGBlockReader] = [:]
        do {
            live[.tun] = try PcapNGBlockReader(path: options.input)
            if let u = options.underlayInput {
                live[.underlay] = try PcapNGBlockReader(path: u)
            }
        } catch {
            throw ReplayError("\(error)")
        }
        var seen: [(PacketDirection, Int, PacketVerdict)] = []
        let replay = Replay(engine: engine, options: options, progress: progress)
        replay.verdictObserver = { seen.append(($0, $1, $2)) }
        let summary = try replay.run()
        var result = Result()
        let preloaded = preloadState
        for (side, index, verdict) in seen {
            guard let reader = live[side], index < reader.packets.count else { continue }
            let packet = reader.packets[index]
            guard let comment = packet.comment, !comment.hasPrefix("no verdict") else {
                result.uncompared += 1
                continue
            }
            let liveText = String(comment.split(separator: ";", maxSplits: 1).first ?? "")
                .trimmingCharacters(in: .whitespaces)
            let replayText = verdict.text
            if liveText == replayText {
                result.reproduced += 1
                continue
            }
            let ip = packet.linkType == 147 ? Array(packet.data.dropFirst(VirtioNetHeader.byteCount)) : packet.data
            let summaryText = ip.withUnsafeBytes { PacketSummary.describe($0) }
            result.differences.append(
                Difference(
                    side: side, index: index, time: packet.timestamp, summary: summaryText, live: liveText,
                    replay: replayText,
                    reason: Self.explain(live: liveText, replay: replayText, side: side, preloaded: preloaded)))
        }
        return (summary, result)
    }

    /// Why a verdict may differ, from the two verdicts and what the recording held.
    static func explain(live: String, replay: String, side: PacketDirection, preloaded: EngineState) -> String? {
        let liveWords = live.split(separator: " ")
        let replayWords = replay.split(separator: " ")
        if live == "untranslated" && replay.hasPrefix("dropped unsolicited") {
            return
                "a reply to a NAT session the recorded table does not hold: created before the recording and expired from the live table before the dump (\(preloaded.natSessions.count) sessions recorded)"
        }
        if live.hasPrefix("dropped unsolicited") && replay == "untranslated" {
            return
                "the recorded NAT table holds a session the live table created only later in the window (the dump holds sessions as they were at its end)"
        }
        if live.hasPrefix("dropped fragmentation_needed") || replay.hasPrefix("dropped fragmentation_needed") {
            return
                "path MTU state differs: a path MTU learned or expired in the window, or one learned before it and learned again in it (\(preloaded.pathMTUs.count) recorded)"
        }
        if liveWords.first == replayWords.first && liveWords.count > 1
            && (live.contains(" icmp ") != replay.contains(" icmp "))
        {
            return
                "the ICMP error budget differs (the live bucket was at most one batch older than the recording's first packet, or per worker)"
        }
        if live.hasPrefix("dropped nat_") || replay.hasPrefix("dropped nat_") {
            return "NAT table or port state differs from the live table's at that moment"
        }
        return nil
    }
}

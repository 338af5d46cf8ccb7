import IPIPCore
import Yams

/// The engine state a flight recording carries for one packet worker: what `Engine.preload`
/// needs so that `ipipd replay` starts where the live worker was (docs/flight-recorder.md).
public struct RecordedEngineState: Sendable, Equatable {
    /// The node the recording was made on.
    public var node: String
    /// Which worker of how many.
    public var worker: Int
    public var workers: Int
    /// The time of the worker's oldest recorded packet (the engine's clock, as in the captures).
    public var windowStart: Int64
    /// The SNAT secret (the engine's `natSeed`): new sessions in the recording get the ports
    /// they got live only with it.
    public var natSecret: UInt64
    /// The state, as `Engine.preload` takes it.
    public var state: EngineState
    /// The live engine's knobs that verdicts depend on: the underlay MTU the tunnel MTU came
    /// from, SNAT's timeouts, and this worker's share of the ICMP error rate.
    public var underlayMTU: Int
    public var natTimeouts: NATTimeouts
    public var icmpRatePerSecond: Int
    public var icmpBurst: Int

    public init(
        node: String, worker: Int, workers: Int, windowStart: Int64, natSecret: UInt64, state: EngineState,
        underlayMTU: Int = 1500, natTimeouts: NATTimeouts = NATTimeouts(), icmpRatePerSecond: Int = 1000,
        icmpBurst: Int = 50
    ) {
        self.node = node
        self.worker = worker
        self.workers = workers
        self.windowStart = windowStart
        self.natSecret = natSecret
        self.state = state
        self.underlayMTU = underlayMTU
        self.natTimeouts = natTimeouts
        self.icmpRatePerSecond = icmpRatePerSecond
        self.icmpBurst = icmpBurst
    }

    /// The kind of the document; `ResourceDecoder` does not know it, so `ipipd run` and
    /// `ipipctl validate` refuse a recording's cluster.yaml, and only `ipipd replay` reads it.
    public static let kind = "RecordedEngineState"
    public static let apiVersion = "ipipd.swift-ipip/v1"
    /// The line that starts the recorded state in a recording's cluster.yaml: everything before
    /// it is Calico manifests, everything after it `RecordedEngineState` documents.
    public static let marker =
        "--- # ipipd flight recorder: engine state before the recording (read by ipipd replay only)"

    // MARK: Encoding

    /// The YAML document (starting with `---`, the first one with `marker`).
    public func yaml(first: Bool) -> String {
        var s = (first ? Self.marker : "---") + "\n"
        s += "apiVersion: \(Self.apiVersion)\nkind: \(Self.kind)\n"
        s += "metadata:\n  name: \(node)-worker-\(worker)\n"
        s += "spec:\n  node: \(node)\n  worker: \(worker)\n  workers: \(workers)\n"
        s += "  windowStart: \"\(Self.time(windowStart))\"\n"
        s += "  natSecret: \"0x\(String(natSecret, radix: 16))\"\n"
        s += "  underlayMTU: \(underlayMTU)\n"
        s +=
            "  natTimeouts: {udp: \(natTimeouts.udp), tcpEstablished: \(natTimeouts.tcpEstablished), tcpTransitory: \(natTimeouts.tcpTransitory), icmp: \(natTimeouts.icmp)}\n"
        s += "  icmpRate: {perSecond: \(icmpRatePerSecond), burst: \(icmpBurst)}\n"
        let lastRefill = state.icmp.icmpLastRefill == .min ? "never" : Self.time(state.icmp.icmpLastRefill)
        s += "  icmp: {tokens: \(state.icmp.icmpTokens), lastRefill: \"\(lastRefill)\"}\n"
        s += "  nextIdentification: \(state.icmp.nextIdentification)\n"
        s += "  pathMTUs:" + (state.pathMTUs.isEmpty ? " []\n" : "\n")
        for p in state.pathMTUs {
            s += "  - {peer: \(p.peer), mtu: \(p.mtu), expires: \"\(Self.time(p.expires))\"}\n"
        }
        s += "  natSessions:" + (state.natSessions.isEmpty ? " []\n" : "\n")
        for n in state.natSessions {
            s +=
                "  - {protocol: \(Self.name(n.proto)), internal: \"\(n.internalAddress):\(n.internalPort)\", external: \(n.externalPort), remote: \"\(n.remoteAddress):\(n.remotePort)\", tcpState: \(Self.name(n.tcpState)), lastActivity: \"\(Self.time(n.lastActivity))\"}\n"
        }
        return s
    }

    /// `seconds.nnnnnnnnn`, as capture times are written.
    public static func time(_ ns: Int64) -> String {
        let s = ns >= 0 ? ns / 1_000_000_000 : (ns - 999_999_999) / 1_000_000_000
        return Timestamp(seconds: s, nanoseconds: UInt32(ns - s * 1_000_000_000)).description
    }

    static func name(_ p: NATProtocol) -> String {
        switch p {
        case .icmp: "icmp"
        case .tcp: "tcp"
        case .udp: "udp"
        }
    }

    static func name(_ s: NATTCPState) -> String {
        switch s {
        case .opening: "opening"
        case .established: "established"
        case .closing: "closing"
        case .reset: "reset"
        }
    }

    // MARK: Decoding

    /// Splits a recording's cluster.yaml at `marker`: the Calico manifests before it (unchanged,
    /// so their errors keep their lines) and the text after it, with the line it starts on.
    /// Nil when the text has no marker (ordinary manifests).
    public static func split(_ text: String) -> (manifests: String, state: String, firstLine: Int)? {
        var line = 1
        var index = text.startIndex
        while index < text.endIndex {
            let end = text[index...].firstIndex(of: "\n") ?? text.endIndex
            if text[index..<end] == Self.marker {
                return (String(text[..<index]), String(text[index...]), line)
            }
            line += 1
            index = end < text.endIndex ? text.index(after: end) : end
        }
        return nil
    }

    /// Decodes the documents after `marker` (`text` as `split` returns it, `firstLine` its line
    /// in `file`). Every problem is reported, as `file:line:column: RecordedEngineState(name)
    /// field: message`; nothing is returned when there is one.
    public static func decode(
        _ text: String, file: String, firstLine: Int
    ) throws(ResourceErrors) -> [RecordedEngineState] {
        var errors: [ResourceError] = []
        var out: [RecordedEngineState] = []
        let nodes: [Yams.Node]
        do {
            nodes = Array(try Yams.compose_all(yaml: text))
        } catch {
            throw ResourceErrors([
                ResourceError(
                    file: file, line: firstLine, column: 1, kind: kind, name: nil, field: "",
                    message: "not valid YAML: \(error)")
            ])
        }
        for document in nodes {
            // An empty document (the marker line alone) holds nothing.
            if let s = document.scalar, ["", "~", "null"].contains(s.string) { continue }
            var r = Reader(file: file, lineOffset: firstLine - 1, origin: document)
            if let d = r.document(document) { out.append(d) }
            errors += r.errors
        }
        if out.isEmpty && errors.isEmpty {
            errors.append(
                ResourceError(
                    file: file, line: firstLine, column: 1, kind: kind, name: nil, field: "",
                    message: "no \(kind) document after the recorder's marker line"))
        }
        guard errors.isEmpty else { throw ResourceErrors(errors) }
        return out
    }

    /// Reads one document, collecting every problem with its place.
    struct Reader {
        let file: String
        let lineOffset: Int
        let origin: Yams.Node
        var name: String?
        var errors: [ResourceError] = []

        init(file: String, lineOffset: Int, origin: Yams.Node) {
            self.file = file
            self.lineOffset = lineOffset
            self.origin = origin
        }

        mutating func fail(_ field: String, _ message: String, at node: Yams.Node?) {
            let mark = (node ?? origin).mark
            errors.append(
                ResourceError(
                    file: file, line: (mark?.line ?? 1) + lineOffset, column: mark?.column ?? 1,
                    kind: RecordedEngineState.kind, name: name, field: field, message: message))
        }

        mutating func string(_ node: Yams.Node?, _ field: String) -> String? {
            guard let node else {
                fail(field, "required field is missing", at: nil)
                return nil
            }
            guard let s = node.scalar?.string else {
                fail(field, "must be a scalar", at: node)
                return nil
            }
            return s
        }

        mutating func integer<T: FixedWidthInteger>(_ node: Yams.Node?, _ field: String, _: T.Type) -> T? {
            guard let s = string(node, field) else { return nil }
            guard let v = T(s) else {
                fail(field, "'\(s)' is not an integer in \(T.min)…\(T.max)", at: node)
                return nil
            }
            return v
        }

        mutating func time(_ node: Yams.Node?, _ field: String) -> Int64? {
            guard let s = string(node, field) else { return nil }
            let parts = s.split(separator: ".", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), let secs = Int64(parts[0]),
                parts.count == 1 || (parts[1].count <= 9 && parts[1].allSatisfy(\.isNumber) && !parts[1].isEmpty)
            else {
                fail(field, "'\(s)' is not a time SECONDS.NANOSECONDS", at: node)
                return nil
            }
            var frac = parts.count == 2 ? String(parts[1]) : "0"
            while frac.count < 9 { frac += "0" }
            let (ns, o1) = secs.multipliedReportingOverflow(by: 1_000_000_000)
            let (t, o2) = ns.addingReportingOverflow(Int64(frac)!)
            guard !o1 && !o2 else {
                fail(field, "'\(s)' is out of range", at: node)
                return nil
            }
            return t
        }

        mutating func endpoint(_ node: Yams.Node?, _ field: String) -> (IPv4Address, UInt16)? {
            guard let s = string(node, field) else { return nil }
            let parts = s.split(separator: ":")
            guard parts.count == 2, let a = IPv4Address(String(parts[0])), let p = UInt16(parts[1]) else {
                fail(field, "'\(s)' is not ADDRESS:PORT", at: node)
                return nil
            }
            return (a, p)
        }

        mutating func sequence(_ node: Yams.Node?, _ field: String) -> [Yams.Node] {
            guard let node else { return [] }
            guard let s = node.sequence else {
                fail(field, "must be a list", at: node)
                return []
            }
            return Array(s)
        }

        mutating func known(_ node: Yams.Node, _ field: String, _ keys: Set<String>) {
            guard let m = node.mapping else {
                fail(field, "must be a mapping", at: node)
                return
            }
            for (k, _) in m {
                let key = k.string ?? ""
                if !keys.contains(key) {
                    fail(field.isEmpty ? key : "\(field).\(key)", "unknown field", at: k)
                }
            }
        }

        mutating func document(_ d: Yams.Node) -> RecordedEngineState? {
            guard d.mapping != nil else {
                fail("", "a \(RecordedEngineState.kind) document must be a mapping", at: d)
                return nil
            }
            name = d["metadata"]?["name"]?.string
            known(d, "", ["apiVersion", "kind", "metadata", "spec"])
            if let k = string(d["kind"], "kind"), k != RecordedEngineState.kind {
                fail(
                    "kind", "'\(k)' after the recorder's marker line: only \(RecordedEngineState.kind) belongs there",
                    at: d["kind"])
            }
            if let v = string(d["apiVersion"], "apiVersion"), v != RecordedEngineState.apiVersion {
                fail("apiVersion", "'\(v)' is not \(RecordedEngineState.apiVersion)", at: d["apiVersion"])
            }
            guard let spec = d["spec"] else {
                fail("spec", "required field is missing", at: nil)
                return nil
            }
            known(
                spec, "spec",
                [
                    "node", "worker", "workers", "windowStart", "natSecret", "underlayMTU", "natTimeouts", "icmpRate",
                    "icmp",
                    "nextIdentification", "pathMTUs", "natSessions",
                ])
            let node = string(spec["node"], "spec.node")
            let worker = integer(spec["worker"], "spec.worker", Int.self)
            let workers = integer(spec["workers"], "spec.workers", Int.self)
            if let w = worker, let n = workers, !(n >= 1 && w >= 0 && w < n) {
                fail("spec.worker", "worker \(w) of \(n) workers", at: spec["worker"])
            }
            let start = time(spec["windowStart"], "spec.windowStart")
            var secret: UInt64?
            if let s = string(spec["natSecret"], "spec.natSecret") {
                let hex = s.hasPrefix("0x") ? String(s.dropFirst(2)) : s
                secret = UInt64(hex, radix: 16)
                if secret == nil { fail("spec.natSecret", "'\(s)' is not a 64-bit hex number", at: spec["natSecret"]) }
            }
            let underlayMTU = integer(spec["underlayMTU"], "spec.underlayMTU", Int.self)
            if let m = underlayMTU, !(576...65535).contains(m) {
                fail("spec.underlayMTU", "\(m) is outside 576…65535", at: spec["underlayMTU"])
            }
            var timeouts = NATTimeouts()
            if let t = spec["natTimeouts"] {
                known(t, "spec.natTimeouts", ["udp", "tcpEstablished", "tcpTransitory", "icmp"])
                for (key, path) in [
                    ("udp", \NATTimeouts.udp), ("tcpEstablished", \NATTimeouts.tcpEstablished),
                    ("tcpTransitory", \NATTimeouts.tcpTransitory), ("icmp", \NATTimeouts.icmp),
                ] {
                    if let v = integer(t[key], "spec.natTimeouts.\(key)", Int64.self) {
                        if v < 1 { fail("spec.natTimeouts.\(key)", "must be at least 1 second", at: t[key]) }
                        timeouts[keyPath: path] = v
                    }
                }
            } else {
                fail("spec.natTimeouts", "required field is missing", at: nil)
            }
            var rate = 1000
            var burst = 50
            if let r = spec["icmpRate"] {
                known(r, "spec.icmpRate", ["perSecond", "burst"])
                if let v = integer(r["perSecond"], "spec.icmpRate.perSecond", Int.self) { rate = v }
                if let v = integer(r["burst"], "spec.icmpRate.burst", Int.self) { burst = v }
            } else {
                fail("spec.icmpRate", "required field is missing", at: nil)
            }
            var scalars = EngineScalarState()
            if let icmp = spec["icmp"] {
                known(icmp, "spec.icmp", ["tokens", "lastRefill"])
                if let t = integer(icmp["tokens"], "spec.icmp.tokens", Int64.self) {
                    if t < 0 { fail("spec.icmp.tokens", "must not be negative", at: icmp["tokens"]) }
                    scalars.icmpTokens = t
                }
                if icmp["lastRefill"]?.string == "never" {
                    scalars.icmpLastRefill = .min
                } else if let t = time(icmp["lastRefill"], "spec.icmp.lastRefill") {
                    scalars.icmpLastRefill = t
                }
            } else {
                fail("spec.icmp", "required field is missing", at: nil)
            }
            if let n = integer(spec["nextIdentification"], "spec.nextIdentification", UInt16.self) {
                scalars.nextIdentification = n
            }
            var mtus: [EngineState.PathMTU] = []
            for (i, p) in sequence(spec["pathMTUs"], "spec.pathMTUs").enumerated() {
                let f = "spec.pathMTUs[\(i)]"
                known(p, f, ["peer", "mtu", "expires"])
                let peerText = string(p["peer"], "\(f).peer")
                let peer = peerText.flatMap { IPv4Address($0) }
                if let t = peerText, peer == nil { fail("\(f).peer", "'\(t)' is not an IPv4 address", at: p["peer"]) }
                let mtu = integer(p["mtu"], "\(f).mtu", Int.self)
                let expires = time(p["expires"], "\(f).expires")
                if let peer, let mtu, let expires {
                    mtus.append(EngineState.PathMTU(peer: peer, mtu: mtu, expires: expires))
                }
            }
            var sessions: [NATSessionState] = []
            for (i, n) in sequence(spec["natSessions"], "spec.natSessions").enumerated() {
                let f = "spec.natSessions[\(i)]"
                known(n, f, ["protocol", "internal", "external", "remote", "tcpState", "lastActivity"])
                var proto: NATProtocol?
                if let p = string(n["protocol"], "\(f).protocol") {
                    proto = ["icmp": .icmp, "tcp": .tcp, "udp": .udp][p]
                    if proto == nil { fail("\(f).protocol", "'\(p)' is not tcp, udp or icmp", at: n["protocol"]) }
                }
                let inside = endpoint(n["internal"], "\(f).internal")
                let external = integer(n["external"], "\(f).external", UInt16.self)
                let remote = endpoint(n["remote"], "\(f).remote")
                var tcp: NATTCPState? = .opening
                if let s = string(n["tcpState"], "\(f).tcpState") {
                    tcp = ["opening": .opening, "established": .established, "closing": .closing, "reset": .reset][s]
                    if tcp == nil {
                        fail("\(f).tcpState", "'\(s)' is not opening, established, closing or reset", at: n["tcpState"])
                    }
                }
                let last = time(n["lastActivity"], "\(f).lastActivity")
                if let proto, let inside, let external, let remote, let tcp, let last {
                    sessions.append(
                        NATSessionState(
                            proto: proto, internalAddress: inside.0, internalPort: inside.1, externalPort: external,
                            remoteAddress: remote.0, remotePort: remote.1, tcpState: tcp, lastActivity: last))
                }
            }
            guard let node, let worker, let workers, let start, let secret, let underlayMTU, errors.isEmpty else {
                return nil
            }
            return RecordedEngineState(
                node: node, worker: worker, workers: workers, windowStart: start, natSecret: secret,
                state: EngineState(pathMTUs: mtus, icmp: scalars, natSessions: sessions), underlayMTU: underlayMTU,
                natTimeouts: timeouts, icmpRatePerSecond: rate, icmpBurst: burst)
        }
    }
}

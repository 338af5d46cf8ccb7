/// The fuzz targets `ipip-fuzz --target NAME` selects, and the regression test replays.
///
/// A target turns arbitrary bytes into one call of product code and checks what must hold
/// afterwards. A trap (a failed precondition, an out-of-bounds index, an ASan report) is a crash;
/// a broken invariant is returned as a finding, which `ipip-fuzz` turns into a crash so libFuzzer
/// keeps the input. Each target's process-wide set-up (compiled topologies, the decoders'
/// tables) happens once, in `makeRunner()`; the per-input work is only what the input asks for.
public struct FuzzTarget: Sendable {
    /// The selector (`--target`, `IPIP_FUZZ_TARGET`) and the corpus folder name under
    /// `Tests/Fixtures/fuzz/`.
    public let name: String
    /// What the input is and what is checked.
    public let summary: String
    /// The longest input worth generating (libFuzzer's `-max_len`).
    public let maximumInputLength: Int
    let make: @Sendable () -> (UnsafeRawBufferPointer) -> [FuzzFinding]

    /// Sets up the target once; the result runs one input per call (one thread at a time).
    public func makeRunner() -> (UnsafeRawBufferPointer) -> [FuzzFinding] { make() }
}

/// A broken invariant: a short stable kind (for `IPIP_FUZZ_IGNORE`) and what happened.
public struct FuzzFinding: Sendable, CustomStringConvertible {
    /// A short stable name of the invariant.
    public var kind: String
    /// What was seen.
    public var message: String

    public init(kind: String, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "[\(kind)] \(message)" }
}

/// Every target, in the order `scripts/fuzz` runs them.
public enum FuzzTargets {
    public static let all: [FuzzTarget] = [
        FuzzTarget(
            name: "engine",
            summary: "a program of packets through one engine, both ways (FuzzProgram), checked by FuzzInvariants",
            maximumInputLength: 4096,
            make: {
                let session = FuzzSession()
                return { input in
                    session.run(input).map { FuzzFinding(kind: $0.kind, message: $0.description) }
                }
            }),
        FuzzTarget(
            name: "manifest",
            summary: "bytes as a manifest file: decode, validate, compile for every node, encode and decode again",
            maximumInputLength: 4096,
            make: { { ManifestFuzz.run($0) } }),
        FuzzTarget(
            name: "pcap",
            summary: "bytes as a pcap or pcapng file, read record by record through libpcap (PcapReader)",
            maximumInputLength: 8192,
            make: { { PcapFuzz.run($0) } }),
        FuzzTarget(
            name: "netlink",
            summary: "bytes as one rtnetlink datagram: messages, then each payload by its type (NetlinkDecoding)",
            maximumInputLength: 4096,
            make: { { NetlinkFuzz.run($0) } }),
        FuzzTarget(
            name: "etcd",
            summary: "bytes as an etcd JSON-gateway reply, watch stream or stored value (EtcdWire)",
            maximumInputLength: 4096,
            make: { { EtcdFuzz.run($0) } }),
    ]

    /// The target called `name`, or nil.
    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

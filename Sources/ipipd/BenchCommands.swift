import ArgumentParser
import IPIPCore
import IPIPDataplane
import IPIPLinux
import IPIPOffline

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the engine's throughput on captures held in memory.",
        discussion: """
            Loads --in (and --underlay-in) into memory once, merged by timestamp as replay does, then \
            replays them through one engine in a loop: each pass copies the packets into batches and \
            runs them through the same engine code as replay; outputs are counted, not written. NAT \
            state carries over between passes and timestamps advance by the capture's span each pass. \
            Reports packets/s, Gbit/s of input bytes, ns/packet, the verdict mix, and the allocation \
            calls made during the timed loop (counted by the allocation counter, \
            libIPIPMallocCounter.so beside the executable, which bench preloads into itself).
            """
    )

    @OptionGroup var topology: TopologyOptions

    @OptionGroup var captures: CaptureInputOptions

    @Option(name: .long, help: ArgumentHelp("Seconds to run (default 10 unless --iterations).", valueName: "seconds"))
    var duration: Double?

    @Option(name: .long, help: ArgumentHelp("Passes over the captures instead of --duration.", valueName: "n"))
    var iterations: Int?

    @Flag(
        name: .long,
        help:
            "Time the live daemon's output stage too: super-packets cut into segments, packets toward the TUN coalesced (as with a TUN with virtio headers)."
    )
    var offloads = false

    @Option(name: .long, help: "Worker threads, each with its own engine over its own share of the flows.")
    var workers = 1

    @Flag(name: .long, help: "Print one JSON object instead of the report.")
    var json = false

    @Option(
        name: .customLong("record-buffer"),
        help: ArgumentHelp(
            "Run the flight recorder as ipipd run --record-buffer SIZE does: every batch recorded and patched with its verdicts.",
            valueName: "size"))
    var recordBuffer: String?

    func validate() throws {
        guard workers >= 1 && workers <= 64 else { throw ValidationError("--workers must be 1…64") }
        if let r = recordBuffer {
            do { _ = try RecordBufferSize.parse(r) } catch { throw ValidationError(error.description) }
        }
        guard duration == nil || iterations == nil else {
            throw ValidationError("give --duration or --iterations, not both")
        }
        if let d = duration { guard d > 0 else { throw ValidationError("--duration must be positive") } }
        if let i = iterations { guard i >= 1 else { throw ValidationError("--iterations must be at least 1") } }
    }

    func run() throws {
        // Returns only when it did not re-execute this process with the counter preloaded.
        let preload = AllocationCounter.reexecutePreloaded()
        let mallocCount = AllocationCounter.reader()
        if mallocCount == nil && !json { printError("bench: allocations not counted (\(preload))") }
        let topo = try topology.compile()
        let engine = Engine(topology: topo, configuration: topology.engineConfiguration())
        var options = BenchOptions(input: captures.input, underlayInput: captures.underlayInput)
        options.batchSize = captures.batch
        options.iterations = iterations
        options.duration = duration ?? 10
        options.offloads = offloads
        options.workers = workers
        if let r = recordBuffer { options.recordBufferBytes = try RecordBufferSize.parse(r) }
        do {
            let bench = try IPIPOffline.Bench(
                engine: engine, options: options,
                progress: json ? nil : ProgressReporter(label: "bench"),
                mallocCount: mallocCount)
            let result = bench.run()
            if json {
                print(result.json(input: captures.input, underlayInput: captures.underlayInput, node: topology.node))
            } else {
                print(result.report(input: captures.input, node: topology.node))
            }
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Gen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate workload traffic and its replies for a generated Calico topology.",
        discussion: """
            Writes --out (packets from the local node's workloads) and --underlay-out (their replies: \
            IP-in-IP from the peers for pool traffic, replies to the node IP for natOutgoing traffic), \
            raw IPv4 pcap, and with --manifests-out the matching manifests (pool 10.128.0.0/12, \
            node-0 local, node-1…node-N remote, one /26 block each). Replay or bench them with \
            --node node-0. The same options and --seed give byte-identical files.
            """
    )

    @Option(
        name: .customLong("out"),
        help: ArgumentHelp("Capture of workload traffic (the TUN side).", valueName: "capture"))
    var output: String

    @Option(
        name: .customLong("underlay-out"),
        help: ArgumentHelp("Capture of the replies arriving on the underlay.", valueName: "capture"))
    var underlayOutput: String?

    @Option(
        name: .customLong("manifests-out"),
        help: ArgumentHelp("Calico manifests of the topology (YAML).", valueName: "file"))
    var manifestsOutput: String?

    @Option(name: .long, help: "Flows.")
    var flows = 1000

    @Option(name: .long, help: "Remote nodes (destinations of pool traffic).")
    var nodes = 20

    @Option(name: .long, help: "External destination addresses (natOutgoing traffic).")
    var external = 100

    @Option(name: .long, help: ArgumentHelp("Flow weights per protocol.", valueName: "tcp=60,udp=30,icmp=10"))
    var mix = "tcp=60,udp=30,icmp=10"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "IP total length of data packets: 64…9000 or imix (7:4:1 of 64/576/1500).", valueName: "size"))
    var size = "imix"

    @Option(name: .customLong("nat-share"), help: "Share of flows to external addresses (SNAT), 0…1.")
    var natShare = 0.3

    @Option(name: .long, help: "Packets in both captures together (each TCP flow has at least 7).")
    var packets = 100_000

    @Option(name: .long, help: "Seed of the generator.")
    var seed: UInt64 = 1

    @Option(
        name: .customLong("super-packets"),
        help: ArgumentHelp(
            "TCP data in bursts of N full segments (2…44): one TSO super-packet per burst on the TUN side (link type 147, virtio_net_hdr), N segments in a row on the underlay. 0: off.",
            valueName: "N"))
    var superPackets = 0

    func options() throws -> GeneratorOptions {
        var o = GeneratorOptions()
        o.flows = flows
        o.nodes = nodes
        o.external = external
        guard let m = GeneratorOptions.parseMix(mix) else {
            throw ValidationError("--mix must look like tcp=60,udp=30,icmp=10 (non-negative weights, not all 0)")
        }
        o.mix = m
        guard let s = GeneratorOptions.Size(size) else { throw ValidationError("--size must be 64…9000 or imix") }
        o.size = s
        o.natShare = natShare
        o.packets = packets
        o.seed = seed
        o.superPackets = superPackets
        return o
    }

    func validate() throws { _ = try options() }

    func run() throws {
        do {
            let traffic = try TrafficGenerator.generate(try options())
            try TrafficGenerator.write(traffic, out: output, underlayOut: underlayOutput, manifestsOut: manifestsOutput)
            if underlayOutput == nil {
                printError("note: no --underlay-out: the replies (\(traffic.underlay.count) packets) were not written")
            }
            let flows = traffic.flowCounts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(
                separator: ", ")
            let expected = VerdictAction.allCases.compactMap { a in traffic.expected[a].map { "\(a.name) \($0)" } }
                .joined(separator: ", ")
            print(
                "wrote \(output): \(traffic.tun.count) packets; \(underlayOutput ?? "(replies not written)"): "
                    + "\(traffic.underlay.count) packets\n  flows: \(flows)\n  expected verdicts (replay --node \(traffic.localNode)): \(expected)"
            )
        } catch let e as ValidationError {
            throw e
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }
}

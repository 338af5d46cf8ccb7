import Foundation
import IPIPCore
import IPIPResources
import IPIPTestSupport
import Testing

@testable import IPIPOffline

/// A generated capture on disk: both sides and the manifests.
struct GeneratedFiles {
    let directory: URL
    let traffic: GeneratedTraffic
    var tun: String { directory.appendingPathComponent("tun.pcap").path }
    var underlay: String { directory.appendingPathComponent("underlay.pcap").path }
    var manifests: String { directory.appendingPathComponent("manifests.yaml").path }

    init(_ options: GeneratorOptions, name: String = "gen") throws {
        directory = try temporaryDirectory(name)
        traffic = try TrafficGenerator.generate(options)
        try TrafficGenerator.write(
            traffic, out: directory.appendingPathComponent("tun.pcap").path,
            underlayOut: directory.appendingPathComponent("underlay.pcap").path,
            manifestsOut: directory.appendingPathComponent("manifests.yaml").path)
    }

    func engine() throws -> Engine {
        Engine(topology: try ClusterLoader.topology(manifests: [manifests], node: traffic.localNode))
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

func smallOptions(
    seed: UInt64 = 42, size: GeneratorOptions.Size = .imix, mix: (Int, Int, Int) = (60, 30, 10),
    natShare: Double = 0.3
) -> GeneratorOptions {
    var o = GeneratorOptions()
    o.flows = 300
    o.nodes = 7
    o.external = 12
    o.packets = 4000
    o.seed = seed
    o.size = size
    o.mix = mix
    o.natShare = natShare
    return o
}

@Suite("Generator")
struct GeneratorTests {
    @Test("the same seed gives byte-identical captures and manifests; another seed does not")
    func deterministic() throws {
        let a = try GeneratedFiles(smallOptions(seed: 9))
        let b = try GeneratedFiles(smallOptions(seed: 9))
        let c = try GeneratedFiles(smallOptions(seed: 10))
        defer { [a, b, c].forEach { $0.remove() } }
        for path in [\GeneratedFiles.tun, \.underlay, \.manifests] {
            let x = try Data(contentsOf: URL(fileURLWithPath: a[keyPath: path]))
            let y = try Data(contentsOf: URL(fileURLWithPath: b[keyPath: path]))
            #expect(x == y, "\(a[keyPath: path]) differs between two runs with seed 9")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: a.tun)) != Data(contentsOf: URL(fileURLWithPath: c.tun)))
    }

    @Test("SplitMix64 matches the reference sequence (seed 0)")
    func splitMix() {
        var g = SplitMix64(seed: 0)
        // First outputs of the reference C implementation (Vigna, splitmix64.c) seeded with 0.
        #expect(g.next() == 0xE220_A839_7B1D_CDAF)
        #expect(g.next() == 0x6E78_9E6A_A1B9_65F4)
    }

    @Test(
        "a generated capture replays with the generated verdicts and no drops",
        arguments: [GeneratorOptions.Size.fixed(64), .fixed(512), .fixed(1500), .imix])
    func replaysAsGenerated(size: GeneratorOptions.Size) throws {
        let g = try GeneratedFiles(smallOptions(size: size))
        defer { g.remove() }
        let summary = try Replay(engine: g.engine(), options: ReplayOptions(input: g.tun, underlayInput: g.underlay))
            .run()
        let c = try #require(summary.counters)
        #expect(summary.packetsIn == g.traffic.tun.count + g.traffic.underlay.count)
        for a in [VerdictAction.encapsulated, .translated, .decapsulated, .untranslated] {
            #expect(c.packets(a) == UInt64(g.traffic.expected[a] ?? 0), "\(a.name)")
            #expect(c.packets(a) > 0, "\(a.name): the mix should produce some")
        }
        #expect(c.packets(.forwarded) == 0)
        #expect(c.packets(.dropped) == 0, "drops: \(c.drops.filter { $0.value > 0 })")
        #expect(c.fragmentsCreated == 0 && c.icmpErrorsSent == 0)
        #expect(summary.emittedUnderlay == g.traffic.tun.count)
        #expect(summary.emittedTUN == g.traffic.underlay.count)
    }

    @Test(
        "super-packets: a TSO capture replays with its segments counted, cut up for the underlay, coalesced toward the TUN with --offloads"
    )
    func superPackets() throws {
        var o = smallOptions(mix: (1, 0, 0))
        o.superPackets = 20
        let g = try GeneratedFiles(o, name: "gen-super")
        defer { g.remove() }
        #expect(g.traffic.tun.contains { $0.offload == SegmentationOffload(kind: .tcp, segmentSize: 1440) })
        #expect(
            g.traffic.tun.contains { $0.offload == SegmentationOffload(kind: .tcp, segmentSize: 1460) },
            "SNAT flows: 1500-byte MTU")
        for offloads in [false, true] {
            let summary = try Replay(
                engine: g.engine(),
                options: ReplayOptions(
                    input: g.tun, underlayInput: g.underlay,
                    offloads: offloads)
            ).run()
            let c = try #require(summary.counters)
            for a in [VerdictAction.encapsulated, .translated, .decapsulated, .untranslated] {
                #expect(c.packets(a) == UInt64(g.traffic.expected[a] ?? 0), "\(a.name), offloads \(offloads)")
            }
            #expect(c.packets(.dropped) == 0, "drops: \(c.drops.filter { $0.value > 0 })")
            let supers = g.traffic.tun.filter { $0.offload.isSegmented }.count
            #expect(c.superPacketsIn == UInt64(supers))
            // Every super-packet leaves as its 20 segments.
            #expect(summary.emittedUnderlay == g.traffic.tun.count + 19 * supers)
            if offloads {
                #expect(
                    summary.emittedTUN < g.traffic.underlay.count / 4,
                    "runs of 20 segments coalesce: \(summary.emittedTUN) writes")
            } else {
                #expect(summary.emittedTUN == g.traffic.underlay.count)
            }
        }
        var bench = BenchOptions(input: g.tun, underlayInput: g.underlay)
        bench.iterations = 1
        bench.offloads = true
        let r = try Bench(engine: g.engine(), options: bench).run()
        let replay = try Replay(
            engine: g.engine(), options: ReplayOptions(input: g.tun, underlayInput: g.underlay, offloads: true)
        ).run()
        #expect(r.counters == replay.counters)
        #expect(
            r.emittedUnderlay == replay.emittedUnderlay && r.emittedTUN == replay.emittedTUN,
            "bench times what replay writes")
    }

    @Test("flow kinds follow the options: no SNAT at share 0, only UDP with udp=1")
    func options() throws {
        let noNAT = try TrafficGenerator.generate(smallOptions(natShare: 0))
        #expect(noNAT.expected[.translated] == nil && noNAT.expected[.untranslated] == nil)
        let udp = try TrafficGenerator.generate(smallOptions(mix: (0, 1, 0)))
        #expect(udp.flowCounts.keys.allSatisfy { $0.hasPrefix("udp") })
        // UDP flows alternate request and reply: 4000 packets over 300 flows.
        #expect(udp.tun.count + udp.underlay.count == 4000)
    }

    @Test("more SNAT flows of one protocol than the port range holds is an error")
    func tooManyNATFlows() {
        var o = smallOptions(mix: (1, 0, 0), natShare: 1)
        o.flows = 5000
        o.packets = 40000
        #expect(throws: TrafficGenerator.Failure.self) { try TrafficGenerator.generate(o) }
    }

    @Test("tshark decodes both generated captures: no malformed packets, every checksum valid", .needsTshark)
    func tsharkDecodes() throws {
        guard let tshark = TestEnvironment.require(TestEnvironment.tshark, "tshark", package: "tshark") else { return }
        let g = try GeneratedFiles(smallOptions())
        defer { g.remove() }
        for (path, count) in [(g.tun, g.traffic.tun.count), (g.underlay, g.traffic.underlay.count)] {
            let fields = try Processes.run(
                tshark,
                [
                    "-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                    "-o", "udp.check_checksum:TRUE", "-T", "fields",
                    "-e", "frame.number", "-e", "ip.checksum.status", "-e", "_ws.malformed",
                    "-e", "tcp.checksum.status", "-e", "udp.checksum.status",
                    "-e", "icmp.checksum.status",
                ]
            ).stdout
            let lines = fields.split(separator: "\n", omittingEmptySubsequences: true)
            #expect(lines.count == count, "\(path): tshark saw \(lines.count) frames, we wrote \(count)")
            for line in lines {
                let cols = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                let ip = cols[1].split(separator: ",")
                #expect(!ip.isEmpty && ip.allSatisfy { $0 == "1" }, "\(path) frame \(cols[0]): IP checksum \(cols[1])")
                #expect(cols[2].isEmpty, "\(path) frame \(cols[0]): malformed")
                // Exactly one transport checksum per packet, and it is good (1).
                let transport = cols.dropFirst(3).filter { !$0.isEmpty }
                #expect(transport == ["1"], "\(path) frame \(cols[0]): transport checksum \(cols)")
            }
        }
    }
}

@Suite("Bench")
struct BenchTests {
    @Test("bench processes iterations × capture packets with replay's verdict mix per pass")
    func totals() throws {
        let g = try GeneratedFiles(smallOptions(), name: "bench")
        defer { g.remove() }
        let replay = try Replay(engine: g.engine(), options: ReplayOptions(input: g.tun, underlayInput: g.underlay))
            .run()
        let once = try #require(replay.counters)
        var options = BenchOptions(input: g.tun, underlayInput: g.underlay)
        options.iterations = 3
        let result = try Bench(engine: g.engine(), options: options).run()
        let size = g.traffic.tun.count + g.traffic.underlay.count
        #expect(result.capturePackets == size)
        #expect(result.passes == 3)
        #expect(result.packets == 3 * size)
        #expect(result.bytes == 3 * (g.traffic.tun + g.traffic.underlay).reduce(0) { $0 + $1.bytes.count })
        let c = try #require(result.counters)
        for a in VerdictAction.allCases {
            #expect(c.packets(a) == 3 * once.packets(a), "\(a.name)")
        }
        #expect(result.emittedUnderlay == 3 * replay.emittedUnderlay)
        #expect(result.emittedTUN == 3 * replay.emittedTUN)
        #expect(result.mallocs == nil)
        #expect(result.seconds > 0 && result.packetsPerSecond > 0 && result.nanosecondsPerPacket > 0)
    }

    @Test("one pass of bench gives replay's counters, for every batch size")
    func batchSizes() throws {
        let g = try GeneratedFiles(smallOptions(seed: 3), name: "bench-batch")
        defer { g.remove() }
        let replay = try Replay(engine: g.engine(), options: ReplayOptions(input: g.tun, underlayInput: g.underlay))
            .run()
        for batch in [1, 7, 64, 256] {
            var options = BenchOptions(input: g.tun, underlayInput: g.underlay)
            options.iterations = 1
            options.batchSize = batch
            let result = try Bench(engine: g.engine(), options: options).run()
            #expect(result.counters == replay.counters, "batch \(batch)")
        }
    }

    @Test("workers split the flows: one pass on 2 or 3 workers gives replay's counters, NAT replies included")
    func workers() throws {
        let g = try GeneratedFiles(smallOptions(seed: 9), name: "bench-workers")
        defer { g.remove() }
        let replay = try Replay(engine: g.engine(), options: ReplayOptions(input: g.tun, underlayInput: g.underlay))
            .run()
        let once = try #require(replay.counters)
        #expect(once.packets(.translated) > 0 && once.packets(.untranslated) > 0, "the mix has NAT flows both ways")
        for workers in [2, 3] {
            var options = BenchOptions(input: g.tun, underlayInput: g.underlay)
            options.iterations = 1
            options.workers = workers
            let result = try Bench(engine: g.engine(), options: options).run()
            #expect(result.workers == workers)
            #expect(result.perWorker.count == workers)
            #expect(result.perWorker.reduce(0) { $0 + $1.packets } == result.packets)
            #expect(result.perWorker.allSatisfy { $0.packets > 0 }, "every worker got flows: \(result.perWorker)")
            #expect(result.packets == g.traffic.tun.count + g.traffic.underlay.count)
            let c = try #require(result.counters)
            for a in VerdictAction.allCases {
                #expect(c.packets(a) == once.packets(a), "\(workers) workers, \(a.name)")
            }
            #expect(result.emittedUnderlay == replay.emittedUnderlay)
            #expect(result.emittedTUN == replay.emittedTUN)
        }
    }

    @Test("more workers than flows: the workers without a share still start the others, and the totals hold")
    func emptyShares() throws {
        var small = smallOptions(seed: 4)
        small.flows = 3
        small.packets = 60
        let g = try GeneratedFiles(small, name: "bench-empty-shares")
        defer { g.remove() }
        var options = BenchOptions(input: g.tun, underlayInput: g.underlay)
        options.iterations = 2
        options.workers = 16
        let result = try Bench(engine: g.engine(), options: options).run()
        #expect(result.perWorker.count == 16)
        #expect(result.perWorker.contains { $0.packets == 0 }, "some worker has no flow: \(result.perWorker)")
        #expect(result.packets == 2 * (g.traffic.tun.count + g.traffic.underlay.count))
    }

    @Test("a duration run stops and reports consistent totals; JSON carries every number")
    func durationAndJSON() throws {
        let g = try GeneratedFiles(smallOptions(seed: 5), name: "bench-json")
        defer { g.remove() }
        var options = BenchOptions(input: g.tun, underlayInput: g.underlay)
        options.duration = 0.2
        let result = try Bench(engine: g.engine(), options: options).run()
        #expect(result.seconds >= 0.2 && result.seconds < 5)
        let c = try #require(result.counters)
        #expect(VerdictAction.allCases.reduce(0) { $0 + c.packets($1) } == UInt64(result.packets))
        let json = result.json(input: g.tun, underlayInput: g.underlay, node: "node-0")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in [
            "packets_per_second", "gbit_per_second", "ns_per_packet", "packets", "passes", "verdicts", "mallocs",
        ] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect((object["packets"] as? Int) == result.packets)
    }
}

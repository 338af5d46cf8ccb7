// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-ipip",
    products: [
        .library(name: "IPIPCore", targets: ["IPIPCore"]),
        .library(name: "Pcap", targets: ["Pcap"]),
        .library(name: "IPIPResources", targets: ["IPIPResources"]),
        .library(name: "IPIPDatastore", targets: ["IPIPDatastore"]),
        .library(name: "IPIPDataplane", targets: ["IPIPDataplane"]),
        .library(name: "IPIPOffline", targets: ["IPIPOffline"]),
        // The allocation counter, as a library `ipipd bench` preloads into itself (never linked).
        .library(name: "IPIPMallocCounter", type: .dynamic, targets: ["CMallocCounter"]),
        .executable(name: "ipipd", targets: ["ipipd"]),
        .executable(name: "ipipctl", targets: ["ipipctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // Pure core: addresses, headers, checksums, LPM trie, topology, engine. Stdlib only.
        .target(name: "IPIPCore"),
        // libpcap, as a system library.
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
        .target(name: "Pcap", dependencies: ["IPIPCore", "CPcap"]),
        // Calico resources: decoding with file:line:column errors, defaults, validation.
        .target(name: "IPIPResources", dependencies: ["IPIPCore", .product(name: "Yams", package: "Yams")]),
        // What etcd's JSON gateway sends, decoded (reply objects, key-values, watch messages, IPAM
        // values): Foundation only, so the `etcd` fuzz target links it without the HTTP stack.
        .target(name: "IPIPEtcdWire"),
        // The datastore: the store protocol, embedded SQLite (the default), etcd v3 in Calico's key
        // layout (through etcd's JSON gateway), read-only manifests, the --datastore/IPIPD_DATASTORE
        // parser, and calicoctl's verbs over a store.
        .target(
            name: "IPIPDatastore",
            dependencies: [
                "IPIPResources", "IPIPCore", "IPIPEtcdWire", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Every kernel call: TUN, raw and packet sockets, batch I/O, rtnetlink, nftables, sysctl.
        .target(name: "CIPIPLinux"),
        .target(name: "IPIPLinux", dependencies: ["IPIPCore", "CIPIPLinux"]),
        // The control socket's language, shared by ipipd and ipipctl: the greeting and request
        // lines, the client, monitor filters and events, the node status and its renderings.
        .target(name: "IPIPControl", dependencies: ["IPIPCore", .product(name: "Yams", package: "Yams")]),
        // The live daemon: control loop, packet workers, the Linux datapath, resource sources,
        // metrics, the control socket's server.
        .target(
            name: "IPIPDataplane",
            dependencies: [
                "IPIPCore", "IPIPResources", "IPIPDatastore", "IPIPLinux", "IPIPControl", "Pcap",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The offline tools over captures: replay, bench, gen, packet summaries, progress.
        .target(name: "IPIPOffline", dependencies: ["IPIPCore", "Pcap", "IPIPResources"]),
        // Counts allocation calls by interposing malloc. Built as a shared library only
        // (product IPIPMallocCounter): `ipipd bench` preloads it into a re-executed copy of
        // itself, so the production daemon never carries it (docs/decisions.md, "Bench and gen").
        .target(name: "CMallocCounter"),
        .executableTarget(
            name: "ipipd",
            dependencies: [
                "IPIPDataplane", "IPIPOffline", "IPIPLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fuzzing: the targets (engine program interpreter and invariants, manifests, captures,
        // netlink, etcd replies), shared by ipip-fuzz and the regression test, the libFuzzer
        // driver declaration, and the fuzz executable (docs/fuzzing.md). It links neither NIO nor
        // GRDB, so its optimised, sanitised build stays short.
        .target(
            name: "IPIPFuzzSupport", dependencies: ["IPIPCore", "IPIPResources", "Pcap", "IPIPLinux", "IPIPEtcdWire"]),
        .target(name: "CFuzz"),
        .executableTarget(name: "ipip-fuzz", dependencies: ["IPIPFuzzSupport", "CFuzz"]),
        // The CLI: resources, the datastore, the daemon's control socket (no netlink); Pcap for
        // `monitor -w` (its pcapng writer is Swift, but the module links libpcap).
        .executableTarget(
            name: "ipipctl",
            dependencies: [
                "IPIPCore", "IPIPResources", "IPIPDatastore", "IPIPControl", "Pcap",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // What the tests share: in-memory fakes of the host (routing), and helpers.
        .target(
            name: "IPIPTestSupport",
            dependencies: [
                "IPIPCore", "CIPIPLinux", "IPIPLinux", "IPIPDatastore", "IPIPDataplane",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "IPIPCoreTests", dependencies: ["IPIPCore", "IPIPTestSupport"]),
        .testTarget(name: "IPIPControlTests", dependencies: ["IPIPControl", "IPIPCore", "IPIPTestSupport"]),
        // Replays every fuzz target's seed corpus and past crashes (Tests/Fixtures/fuzz/<target>/).
        .testTarget(name: "IPIPFuzzTests", dependencies: ["IPIPFuzzSupport", "IPIPCore", "Pcap", "IPIPEtcdWire"]),
        .testTarget(name: "PcapTests", dependencies: ["Pcap", "IPIPCore", "IPIPTestSupport"]),
        .testTarget(name: "IPIPResourcesTests", dependencies: ["IPIPResources", "IPIPCore", "IPIPTestSupport"]),
        .testTarget(
            name: "IPIPDatastoreTests",
            dependencies: ["IPIPDatastore", "IPIPEtcdWire", "IPIPResources", "IPIPCore", "IPIPTestSupport"]),
        .testTarget(name: "IPIPLinuxTests", dependencies: ["IPIPLinux", "IPIPCore", "CIPIPLinux", "IPIPTestSupport"]),
        .testTarget(
            name: "IPIPDataplaneTests",
            dependencies: ["IPIPDataplane", "IPIPDatastore", "IPIPCore", "IPIPResources", "IPIPTestSupport"]
        ),
        .testTarget(
            name: "IPIPOfflineTests",
            dependencies: ["IPIPOffline", "IPIPCore", "Pcap", "IPIPResources", "IPIPTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-ipip",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "IPIPCore", targets: ["IPIPCore"]),
        .library(name: "Pcap", targets: ["Pcap"]),
        .library(name: "IPIPResources", targets: ["IPIPResources"]),
        .library(name: "IPIPDatastore", targets: ["IPIPDatastore"]),
        .library(name: "IPIPDataplane", targets: ["IPIPDataplane"]),
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
        // The datastore: the store protocol, embedded SQLite (the default), etcd v3 in Calico's key
        // layout (through etcd's JSON gateway), read-only manifests, the --datastore/IPIPD_DATASTORE
        // parser, and calicoctl's verbs over a store.
        .target(
            name: "IPIPDatastore",
            dependencies: [
                "IPIPResources", "IPIPCore", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Every kernel call: TUN, raw and packet sockets, batch I/O, rtnetlink, nftables, sysctl.
        .target(name: "CIPIPLinux"),
        .target(name: "IPIPLinux", dependencies: ["IPIPCore", "CIPIPLinux"]),
        // Wiring: topology compilation from resources, the replay driver, the live daemon.
        .target(
            name: "IPIPDataplane",
            dependencies: [
                "IPIPCore", "Pcap", "IPIPResources", "IPIPDatastore", "IPIPLinux",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Counts allocation calls for `ipipd bench` by interposing malloc; linked only into ipipd.
        .target(name: "CMallocCounter"),
        .executableTarget(
            name: "ipipd",
            dependencies: [
                "IPIPDataplane", "CMallocCounter", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fuzzing: the program interpreter and invariant checks (shared by ipip-fuzz and the
        // regression test), the libFuzzer driver declaration, and the fuzz executable.
        .target(name: "IPIPFuzzSupport", dependencies: ["IPIPCore"]),
        .target(name: "CFuzz"),
        .executableTarget(name: "ipip-fuzz", dependencies: ["IPIPCore", "IPIPFuzzSupport", "CFuzz"]),
        .executableTarget(
            name: "ipipctl",
            dependencies: [
                "IPIPResources", "IPIPDataplane", "IPIPDatastore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "IPIPCoreTests", dependencies: ["IPIPCore", "IPIPFuzzSupport"]),
        .testTarget(name: "PcapTests", dependencies: ["Pcap", "IPIPCore"]),
        .testTarget(name: "IPIPResourcesTests", dependencies: ["IPIPResources", "IPIPCore"]),
        .testTarget(name: "IPIPDatastoreTests", dependencies: ["IPIPDatastore", "IPIPResources", "IPIPCore"]),
        .testTarget(name: "IPIPLinuxTests", dependencies: ["IPIPLinux", "IPIPCore", "CIPIPLinux"]),
        .testTarget(
            name: "IPIPDataplaneTests",
            dependencies: ["IPIPDataplane", "IPIPCore", "Pcap", "IPIPResources"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

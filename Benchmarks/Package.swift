// swift-tools-version: 6.1
// Benchmarks live in their own package so that `swift build` / `swift test` of swift-ipip never
// compile the harness. Run from this directory:
//   swift package benchmark --no-progress --format markdown --path stdout
import PackageDescription

/// A benchmark executable under Benchmarks/<name>/ that uses IPIPCore.
func benchmarkTarget(_ name: String) -> Target {
    .executableTarget(
        name: name,
        dependencies: [
            .product(name: "Benchmark", package: "benchmark"),
            .product(name: "IPIPCore", package: "swift-ipip"),
        ],
        path: "Benchmarks/\(name)",
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}

let package = Package(
    name: "swift-ipip-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "swift-ipip", path: ".."),
        // The trait list drops the default RuntimeInterposer trait, whose dependency is not mirrored.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        benchmarkTarget("TrieBenchmarks"),
        benchmarkTarget("EngineBenchmarks"),
    ],
    swiftLanguageModes: [.v6]
)

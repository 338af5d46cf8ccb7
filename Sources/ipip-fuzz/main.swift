// ipip-fuzz: the libFuzzer driver of every fuzz target (FuzzTargets: engine, manifest, pcap,
// netlink, etcd), one per process.
//
//   ipip-fuzz --target NAME [libFuzzer flags] [corpus dirs | files]
//                                      (built with -sanitize=fuzzer; see scripts/fuzz); the target
//                                      may also come from IPIP_FUZZ_TARGET; default engine
//   ipip-fuzz --list                   prints the targets, their summaries and maximum lengths
//   ipip-fuzz --write-seeds DIR        writes the engine's FuzzSeeds into DIR
//   ipip-fuzz --replay [--trace] FILE...
//                                      runs engine programs without libFuzzer, prints violations
//                                      (and with --trace every verdict)
//
// Top-level code is @MainActor; the per-input work lives in FuzzEntry.swift.
import CFuzz
import Glibc
import IPIPFuzzSupport

var arguments = CommandLine.arguments
if arguments.count >= 2 && arguments[1] == "--list" {
    for t in FuzzTargets.all { print("\(t.name)\t\(t.maximumInputLength)\t\(t.summary)") }
    exit(0)
}
if arguments.count >= 3 && arguments[1] == "--write-seeds" {
    exit(writeSeeds(into: arguments[2]))
}
if arguments.count >= 2 && arguments[1] == "--replay" {
    let trace = arguments.count >= 3 && arguments[2] == "--trace"
    exit(replay(Array(arguments.dropFirst(trace ? 3 : 2)), trace: trace))
}
var name = getenv("IPIP_FUZZ_TARGET").map { String(cString: $0) } ?? "engine"
if arguments.count >= 3 && arguments[1] == "--target" {
    name = arguments[2]
    arguments.removeSubrange(1...2)
}
guard let target = FuzzTargets.named(name) else {
    print("ipip-fuzz: no target \(name); targets: \(FuzzTargets.all.map(\.name).joined(separator: ", "))")
    exit(2)
}
select(target)
// libFuzzer gets argv without --target NAME.
var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
var argc = CInt(arguments.count)
exit(
    cArguments.withUnsafeMutableBufferPointer { buffer in
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
        return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) }
    })

// ipip-fuzz: libFuzzer target over the engine (FuzzProgram: both directions, state, invariants).
//
//   ipip-fuzz [libFuzzer flags] [corpus dirs | files]   (built with -sanitize=fuzzer; see scripts/fuzz)
//   ipip-fuzz --write-seeds DIR                         writes FuzzSeeds into DIR
//   ipip-fuzz --replay [--trace] FILE...                runs files without libFuzzer, prints violations
//                                                       (and with --trace every verdict)
//
// Top-level code is @MainActor; the per-input work lives in FuzzEntry.swift.
import CFuzz
import Glibc

let arguments = CommandLine.arguments
if arguments.count >= 3 && arguments[1] == "--write-seeds" {
    exit(writeSeeds(into: arguments[2]))
}
if arguments.count >= 2 && arguments[1] == "--replay" {
    let trace = arguments.count >= 3 && arguments[2] == "--trace"
    exit(replay(Array(arguments.dropFirst(trace ? 3 : 2)), trace: trace))
}
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })

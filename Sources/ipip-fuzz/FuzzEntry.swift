import Glibc
import IPIPFuzzSupport

/// The selected target's per-input function, set up once before libFuzzer starts (libFuzzer calls
/// back on one thread).
nonisolated(unsafe) var runOne: ((UnsafeRawBufferPointer) -> [FuzzFinding])?

/// Invariant kinds to ignore (`IPIP_FUZZ_IGNORE=kind,kind`): known, reported bugs the fuzzer
/// should stop rediscovering so it can look for others. The regression test ignores nothing.
let ignoredKinds: Set<String> = {
    guard let v = getenv("IPIP_FUZZ_IGNORE") else { return [] }
    return Set(String(cString: v).split(separator: ",").map(String.init))
}()

/// Sets the target up (its process-wide state: compiled topologies, decoders).
func select(_ target: FuzzTarget) {
    runOne = target.makeRunner()
}

/// libFuzzer's per-input callback: runs the target, traps on the first broken invariant so
/// libFuzzer saves the input.
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var findings = runOne!(UnsafeRawBufferPointer(start: data, count: size))
    if !ignoredKinds.isEmpty { findings.removeAll { ignoredKinds.contains($0.kind) } }
    if !findings.isEmpty {
        for f in findings { print("invariant violated: \(f)") }
        preconditionFailure("invariant violated: \(findings[0])")
    }
    return 0
}

/// Writes every seed program into `directory`; returns the exit status.
func writeSeeds(into directory: String) -> Int32 {
    for seed in FuzzSeeds.all {
        let path = directory + "/" + seed.name
        guard let f = fopen(path, "wb") else {
            print("cannot open \(path)")
            return 1
        }
        let written = seed.bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        fclose(f)
        guard written == seed.bytes.count else {
            print("short write to \(path)")
            return 1
        }
        print("\(path): \(seed.bytes.count) bytes")
    }
    return 0
}

/// Runs each file through the program and prints its violations; 1 when any was found.
func replay(_ paths: [String], trace: Bool) -> Int32 {
    var status: Int32 = 0
    for path in paths {
        guard let bytes = readFile(path) else {
            print("\(path): cannot read")
            status = 1
            continue
        }
        let (violations, lines) = bytes.withUnsafeBytes { FuzzProgram.trace($0) }
        print("\(path): \(bytes.count) bytes, \(violations.count) violations")
        if trace { for l in lines { print("  \(l)") } }
        for v in violations { print("  \(v)") }
        if !violations.isEmpty { status = 1 }
    }
    return status
}

func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n == 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}

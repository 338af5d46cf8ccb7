/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny generator fully specified here, so a seed
/// gives the same sequence on every platform and Swift version (the standard library's default
/// generator promises neither). The project's one seeded generator: `ipipd gen`, the NAT port
/// choice's seed mixing, property tests, fuzz stand-ins and benchmark workloads.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The state; the next output is a function of it alone.
    public var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// Advances `state` by one step and returns the output (for callers that keep a bare word).
    @inlinable
    public static func step(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next 64 random bits.
    @inlinable
    public mutating func next() -> UInt64 { Self.step(&state) }

    /// A value in `0..<n` by Lemire's multiply-shift (what `ipipd gen` draws with; its tiny bias
    /// does not matter there and the sequence stays independent of the standard library).
    public mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(truncatingIfNeeded: UInt64(n).multipliedFullWidth(by: next()).high)
    }

    /// A value in `0..<bound` by remainder (what the tests and benchmarks draw with; kept apart
    /// from `below` so the sequences their seeds name stay the same).
    public mutating func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// The upper 32 bits of the next output.
    public mutating func nextUInt32() -> UInt32 { UInt32(truncatingIfNeeded: next() >> 32) }

    /// A value in `[0, 1)` with 53 random bits.
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

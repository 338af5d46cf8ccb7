#if canImport(Glibc)
import Glibc
#endif

/// A progress bar on standard error, shown only when standard error is a terminal and the work
/// takes more than a moment (half a second). Redrawn at most ten times a second.
public final class ProgressReporter {
    let label: String
    let start: Double
    var lastDraw: Double = 0
    var shown = false

    /// nil when standard error is not a terminal (piped, CI): then nothing is ever drawn.
    public init?(label: String) {
        guard isatty(2) == 1 else { return nil }
        self.label = label
        start = Self.now()
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Reports `done` out of `total` units (bytes), and the packets so far.
    public func update(done: Int, total: Int, packets: Int) {
        let t = Self.now()
        guard t - start > 0.5, t - lastDraw > 0.1 else { return }
        lastDraw = t
        shown = true
        let fraction = total > 0 ? min(0.99, Double(done) / Double(total)) : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "=", count: filled) + ">" + String(repeating: " ", count: width - filled)
        let rate = Double(packets) / (t - start)
        draw("\r\(label) [\(bar)] \(Int(fraction * 100))% \(packets) packets, \(Int(rate)) packets/s   ")
    }

    /// Clears the bar.
    public func finish(packets: Int) {
        guard shown else { return }
        draw("\r" + String(repeating: " ", count: 100) + "\r")
    }

    func draw(_ s: String) {
        var s = s
        s.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}

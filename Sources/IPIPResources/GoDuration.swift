/// Go's `time.ParseDuration` syntax, which Kubernetes' `metav1.Duration` fields (Calico's
/// `FelixConfiguration` durations among them) use when written as text: a sequence of decimal
/// numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`),
/// with an optional sign: `30s`, `1m30s`, `1.5h`, `300ms`; a bare `0` is zero.
public enum GoDuration {
    /// Why a text is not a duration.
    public struct Problem: Error, Equatable, Sendable {
        /// What is wrong, for an error message ("missing unit in duration").
        public var reason: String
    }

    /// The duration in seconds, or why `text` is not one.
    public static func seconds(_ text: String) -> Result<Double, Problem> {
        var bytes = Substring(text).unicodeScalars[...]
        var sign = 1.0
        if let first = bytes.first, first == "-" || first == "+" {
            if first == "-" { sign = -1 }
            bytes = bytes.dropFirst()
        }
        if String(bytes) == "0" { return .success(0) }
        guard !bytes.isEmpty else { return .failure(Problem(reason: "empty duration")) }
        var total = 0.0
        while !bytes.isEmpty {
            let number = bytes.prefix { ("0"..."9").contains($0) || $0 == "." }
            guard !number.isEmpty, number.contains(where: { $0 != "." }),
                number.filter({ $0 == "." }).count <= 1, let value = Double(String(number))
            else {
                return .failure(Problem(reason: "expected a number before each unit"))
            }
            bytes = bytes.dropFirst(number.count)
            let unit = String(bytes.prefix { !("0"..."9").contains($0) && $0 != "." })
            guard !unit.isEmpty else { return .failure(Problem(reason: "missing unit (ns, us, ms, s, m or h)")) }
            bytes = bytes.dropFirst(unit.unicodeScalars.count)
            guard let scale = units[unit] else {
                return .failure(Problem(reason: "unknown unit '\(unit)' (ns, us, ms, s, m or h)"))
            }
            total += value * scale
        }
        return .success(sign * total)
    }

    /// Seconds per unit.
    static let units: [String: Double] = [
        "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
    ]
}

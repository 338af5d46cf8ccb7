/// A point in time as the engine sees it: seconds and nanoseconds since the Unix epoch.
///
/// The engine never reads a clock itself. Live mode passes the monotonic-to-wall time of the
/// batch; replay passes each captured packet's timestamp, so timeouts replay exactly.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Whole seconds.
    public var seconds: Int64
    /// Nanoseconds, 0…999_999_999.
    public var nanoseconds: UInt32

    /// Creates a timestamp. - Precondition: `nanoseconds < 1_000_000_000`.
    @inlinable
    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        precondition(nanoseconds < 1_000_000_000, "nanoseconds out of range")
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// Nanoseconds since the epoch (saturating for dates past the year 2262).
    @inlinable
    public var totalNanoseconds: Int64 {
        let (s, o1) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if o1 { return seconds < 0 ? .min : .max }
        let (t, o2) = s.addingReportingOverflow(Int64(nanoseconds))
        return o2 ? .max : t
    }

    @inlinable
    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        (lhs.seconds, lhs.nanoseconds) < (rhs.seconds, rhs.nanoseconds)
    }

    /// `seconds.nnnnnnnnn`.
    public var description: String {
        var frac = String(nanoseconds)
        while frac.count < 9 { frac = "0" + frac }
        return "\(seconds).\(frac)"
    }

    /// The epoch.
    public static let zero = Timestamp(seconds: 0)
}

/// Why the live daemon could not start or apply a change: a message for the log and the
/// operator (which device, which address, what to do).
public struct DaemonError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

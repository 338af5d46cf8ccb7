import Logging
import Synchronization

/// A swift-log handler that keeps every message, for tests that check what a component logged.
public struct RecordingLogHandler: LogHandler {
    /// The messages so far, shared by every copy of the handler.
    public final class Store: Sendable {
        let lines = Mutex<[(Logger.Level, String)]>([])

        public init() {}

        /// Every message, as "level: text".
        public var messages: [String] { lines.withLock { $0.map { "\($0.0): \($0.1)" } } }

        /// True when a message contains `text`.
        public func contains(_ text: String) -> Bool { lines.withLock { $0.contains { $0.1.contains(text) } } }
    }

    public let store: Store
    public var logLevel: Logger.Level = .trace
    public var metadata: Logger.Metadata = [:]

    public init(store: Store) { self.store = store }

    /// A logger that records into a new store, and the store.
    public static func logger(label: String = "test") -> (Logger, Store) {
        let store = Store()
        return (Logger(label: label) { _ in RecordingLogHandler(store: store) }, store)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
        file: String, function: String, line: UInt
    ) {
        store.lines.withLock { $0.append((level, message.description)) }
    }
}

import Foundation

/// A fresh directory under the temporary directory, removed by `cleanup()`.
public struct TempDir: Sendable {
    public let path: String

    public init() {
        path = NSTemporaryDirectory() + "ipipd-store-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// The path of `name` inside.
    public func file(_ name: String) -> String { path + "/" + name }

    /// Writes `text` to `name` inside; returns its path.
    public func write(_ name: String, _ text: String) -> String {
        let p = file(name)
        _ = FileManager.default.createFile(atPath: p, contents: Data(text.utf8))
        return p
    }

    public func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

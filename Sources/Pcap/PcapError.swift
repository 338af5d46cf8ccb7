/// A failure to open, read or write a capture file.
///
/// Every error names the file, and read errors that concern one record also name its 0-based
/// packet index. Records before that index were already handed out by
/// ``PcapReader/readNext(_:)``.
public struct PcapError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a growable set of codes (compare with `==`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case open, corrupt, truncated, unsupportedLinkType, recordTooShort, write
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The file could not be opened or created (missing, no permission, …).
        public static let open = Code(.open)
        /// The file is not a pcap/pcapng capture, or a record header is invalid
        /// (for example a captured length larger than libpcap accepts).
        public static let corrupt = Code(.corrupt)
        /// The file ends in the middle of a record.
        public static let truncated = Code(.truncated)
        /// The capture's link-layer type is not one ``LinkType`` supports.
        public static let unsupportedLinkType = Code(.unsupportedLinkType)
        /// A record is shorter than its link-layer header (including any VLAN tags it announces).
        ///
        /// The reader has moved past the record: the next ``PcapReader/readNext(_:)`` continues
        /// with the following one.
        public static let recordTooShort = Code(.recordTooShort)
        /// Writing, flushing or closing an output capture failed (disk full, I/O error, …).
        public static let write = Code(.write)

        /// The code's name as written in Swift, for example `truncated`.
        public var description: String {
            switch value {
            case .open: "open"
            case .corrupt: "corrupt"
            case .truncated: "truncated"
            case .unsupportedLinkType: "unsupportedLinkType"
            case .recordTooShort: "recordTooShort"
            case .write: "write"
            }
        }
    }

    /// The kind of failure.
    public var code: Code
    /// The capture file's path, as given to the reader or writer.
    public var path: String
    /// The 0-based index of the record being read when the failure happened, if it concerns one.
    public var packetIndex: Int?
    /// What happened, without the path or index (often libpcap's own message).
    public var message: String

    /// Creates an error.
    /// - Parameters:
    ///   - code: The kind of failure.
    ///   - path: The capture file's path.
    ///   - packetIndex: The 0-based index of the record concerned, if any.
    ///   - message: What happened.
    public init(_ code: Code, path: String, packetIndex: Int? = nil, message: String) {
        self.code = code
        self.path = path
        self.packetIndex = packetIndex
        self.message = message
    }

    /// `path: packet index N: message`, or `path: message` when no record is concerned.
    public var description: String {
        if let packetIndex {
            return "\(path): packet index \(packetIndex): \(message)"
        }
        return "\(path): \(message)"
    }
}

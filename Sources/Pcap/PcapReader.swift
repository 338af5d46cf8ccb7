import CPcap
import Glibc
import IPIPCore

/// One record of a capture, lent by ``PcapReader/readNext(_:)`` for the duration of a closure.
///
/// - Warning: ``networkBytes`` and ``capturedBytes`` point into libpcap's read buffer. They are
///   valid only inside the closure that received the record: copy what you need, never store or
///   return the pointers.
public struct PcapRecord {
    /// The record's 0-based position in the file.
    public var index: Int
    /// When the packet was captured (nanosecond precision when the file has it).
    public var timestamp: Timestamp
    /// Bytes present in the file for this record, link header included.
    public var capturedLength: Int
    /// Length of the packet on the wire, link header included (≥ ``capturedLength`` when the
    /// capture was cut at the snapshot length).
    public var originalLength: Int
    /// The network-layer protocol, from the link-layer header.
    public var networkProtocol: NetworkProtocol
    /// The whole captured record, link header included.
    public var capturedBytes: UnsafeRawBufferPointer
    /// The network-layer bytes: ``capturedBytes`` after the link header and any VLAN tags.
    public var networkBytes: UnsafeRawBufferPointer
}

/// Reads pcap and pcapng captures through libpcap, one record at a time, without copying.
///
/// Timestamps come at nanosecond precision: libpcap scales microsecond files up. Supported link
/// types are the ones of ``LinkType``; others are refused when the file is opened.
///
/// Not `Sendable`: a reader has one owner (one task or thread) at a time.
///
/// ```swift
/// let reader = try PcapReader(path: "in.pcap")
/// while let length = try reader.readNext({ $0.networkBytes.count }) { … }
/// ```
public final class PcapReader {
    /// The path the capture was opened from (the name given to an in-memory one).
    public let path: String
    /// The capture's link-layer type.
    public let linkType: LinkType
    /// The capture's snapshot length: no record holds more bytes than this.
    public let snapshotLength: Int
    /// The index the next record will have, which is also the number of records read so far.
    public private(set) var nextIndex = 0

    private let handle: OpaquePointer
    private let framing: LinkFraming
    /// Set once the file itself failed (truncated, corrupt); every later read throws it again.
    private var failure: PcapError?
    /// The copy an in-memory capture is read from (freed after `pcap_close`), else nil.
    private let memory: UnsafeMutableRawBufferPointer?

    /// Opens a pcap or pcapng capture.
    ///
    /// - Parameter path: The file to read; `-` reads standard input (a libpcap convention).
    /// - Throws: `PcapError` with code `.open` if the file cannot be opened, `.corrupt` if it is
    ///   not a capture, `.unsupportedLinkType` (naming the `DLT_*` number and name) if its link
    ///   type is not one of ``LinkType``.
    public init(path: String) throws(PcapError) {
        self.path = path
        // libpcap reports "cannot open" and "not a capture" through the same NULL; open the file
        // once ourselves so that the two get different codes and errno's own text.
        if path != "-" {
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw PcapError(.open, path: path, message: "cannot open: \(String(cString: strerror(errno)))")
            }
            var status = stat()
            let isDirectory = fstat(fd, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR
            Glibc.close(fd)
            guard !isDirectory else { throw PcapError(.open, path: path, message: "cannot open: is a directory") }
        }
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        let opened = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer)
        guard let opened else {
            let message = errorBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw PcapError(.corrupt, path: path, message: "not a readable pcap or pcapng capture: \(message)")
        }
        memory = nil
        (handle, framing, linkType, snapshotLength) = try Self.inspect(opened, path: path)
    }

    /// Opens a capture held in memory (the `pcap` fuzz target; tests), read as a file would be.
    ///
    /// - Parameters:
    ///   - bytes: The whole capture, copied: the reader does not keep a reference to them.
    ///   - name: What errors call the capture, in place of a path.
    /// - Throws: `PcapError` as ``init(path:)`` does (`.open` only if the copy cannot be opened
    ///   as a stream).
    public init(bytes: UnsafeRawBufferPointer, name: String) throws(PcapError) {
        path = name
        // fmemopen refuses a zero-length buffer: an empty capture is one byte long with a
        // stream size of 0, and libpcap sees end-of-file at once.
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 8)
        if let base = bytes.baseAddress, bytes.count > 0 {
            copy.baseAddress!.copyMemory(from: base, byteCount: bytes.count)
        }
        guard let stream = fmemopen(copy.baseAddress, bytes.count, "rb") else {
            copy.deallocate()
            throw PcapError(.open, path: name, message: "cannot open: \(String(cString: strerror(errno)))")
        }
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        // Once opened, libpcap owns the stream (pcap_close closes it); a failed open leaves it to
        // us (pcap_open_offline closes its own file the same way). Leaking it cost 4 KB per
        // refused capture (found by the `pcap` fuzz target as an out-of-memory).
        let opened = pcap_fopen_offline_with_tstamp_precision(
            stream, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer)
        guard let opened else {
            fclose(stream)
            copy.deallocate()
            let message = errorBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw PcapError(.corrupt, path: name, message: "not a readable pcap or pcapng capture: \(message)")
        }
        memory = copy
        do {
            (handle, framing, linkType, snapshotLength) = try Self.inspect(opened, path: name)
        } catch {
            copy.deallocate()
            throw error
        }
    }

    /// Checks an opened capture's link type; closes it when the type is not supported.
    private static func inspect(
        _ opened: OpaquePointer, path: String
    ) throws(PcapError) -> (OpaquePointer, LinkFraming, LinkType, Int) {
        let dataLinkType = pcap_datalink(opened)
        guard let framing = LinkFraming(dataLinkType: dataLinkType), let linkType = LinkType(dataLinkType: dataLinkType)
        else {
            pcap_close(opened)
            throw PcapError(
                .unsupportedLinkType,
                path: path,
                message: "unsupported link type \(dataLinkType) (\(Self.linkTypeName(dataLinkType))); supported: "
                    + LinkType.allCases.map { "\($0.dataLinkType) (\($0))" }.joined(separator: ", ")
            )
        }
        return (opened, framing, linkType, Int(pcap_snapshot(opened)))
    }

    deinit {
        pcap_close(handle)
        memory?.deallocate()
    }

    /// Reads the next record and lends it to `body`.
    ///
    /// - Parameter body: Receives the record; its pointers are valid only during the call. It
    ///   cannot throw: return a `Result` or a flag when it can fail.
    /// - Returns: What `body` returned, or `nil` at the end of the file.
    /// - Throws: `PcapError` naming the file and the record's 0-based index: `.truncated` when
    ///   the file ends inside the record, `.corrupt` when its header is invalid (both final:
    ///   later calls throw the same error), `.recordTooShort` when the record is shorter than its
    ///   link header (not final: the next call reads the following record).
    public func readNext<R>(_ body: (PcapRecord) -> R) throws(PcapError) -> R? {
        if let failure { throw failure }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        let status = pcap_next_ex(handle, &header, &data)
        let index = nextIndex
        switch status {
        case 1:
            break
        case PCAP_ERROR_BREAK:
            return nil  // end of a savefile
        default:
            let message = String(cString: pcap_geterr(handle))
            // libpcap has one error status; its messages for a short read all say "truncated".
            let error = PcapError(
                message.contains("truncated") ? .truncated : .corrupt,
                path: path,
                packetIndex: index,
                message: message
            )
            failure = error
            throw error
        }
        nextIndex += 1
        // Safe: status 1 promises a header, and `caplen` bytes at `data` that stay valid until
        // the next pcap_next_ex/pcap_close on this handle, which cannot happen during `body`
        // (the class is not Sendable and `body` is not escaping).
        let packetHeader = header!.pointee
        let capturedLength = Int(packetHeader.caplen)
        let captured = UnsafeRawBufferPointer(start: data, count: capturedLength)
        switch framing.parse(captured) {
        case .tooShort(let needed, let what):
            throw PcapError(
                .recordTooShort,
                path: path,
                packetIndex: index,
                message: "record of \(capturedLength) bytes is too short for its \(what) (\(needed) bytes)"
            )
        case .network(let headerByteCount, let networkProtocol):
            let record = PcapRecord(
                index: index,
                timestamp: Self.timestamp(packetHeader.ts),
                capturedLength: capturedLength,
                originalLength: Int(packetHeader.len),
                networkProtocol: networkProtocol,
                capturedBytes: captured,
                // Safe: parse() returned a header length within `captured`.
                networkBytes: UnsafeRawBufferPointer(rebasing: captured[headerByteCount...])
            )
            return body(record)
        }
    }

    /// Converts a nanosecond-precision `timeval` (libpcap stores nanoseconds in `tv_usec`).
    ///
    /// A corrupt file can hold a fraction of a second or more; it carries into the seconds rather
    /// than trapping, and a negative one (impossible from libpcap's unsigned fields) clamps to 0.
    static func timestamp(_ time: timeval) -> Timestamp {
        let fraction = max(Int64(time.tv_usec), 0)
        return Timestamp(
            seconds: Int64(time.tv_sec) &+ fraction / 1_000_000_000,
            nanoseconds: UInt32(fraction % 1_000_000_000)
        )
    }

    /// libpcap's name for a `DLT_*` value, or `unknown` when it has none.
    static func linkTypeName(_ dataLinkType: Int32) -> String {
        guard let name = pcap_datalink_val_to_name(dataLinkType) else { return "unknown" }
        var text = "DLT_" + String(cString: name)
        if let description = pcap_datalink_val_to_description(dataLinkType) {
            text += ", " + String(cString: description)
        }
        return text
    }
}

import Glibc
import IPIPCore

/// Writes pcapng captures: one section, one interface, and enhanced packet blocks that may carry
/// a comment each (`opt_comment`), which is where `ipipctl monitor -w` and the flight recorder put
/// the engine's verdict for the packet. tshark shows it as `frame.comment`.
///
/// Written in Swift, not through libpcap (whose dumper cannot write comments): the format is a
/// sequence of little-endian blocks (section header, interface description, enhanced packets),
/// each padded to 32 bits and ending with its own length. Timestamps are in nanoseconds
/// (`if_tsresol` 9).
///
/// Atomic by default: the blocks go to a hidden temporary file beside `path`, which ``close()``
/// renames over `path` after everything reached the disk (`fsync`). When a write fails (a full
/// disk), ``close()`` throws and removes the temporary file, so nothing half-written ever sits
/// under the final name; `deinit` without a successful ``close()`` removes it as well. With
/// `atomic: false` (standard output, a FIFO) records go straight to `path`.
///
/// Not `Sendable`: a writer has one owner at a time; not for the packet path (it copies and may
/// block on the disk).
public final class PcapNGWriter {
    /// The final path of the capture.
    public let path: String
    public let linkType: LinkType
    public let snapshotLength: Int
    /// Where the blocks are written until ``close()`` (equal to `path` when not atomic).
    let writingPath: String
    let atomic: Bool
    private var file: UnsafeMutablePointer<FILE>?
    private var failed: Int32 = 0
    private var block: [UInt8] = []
    /// Records written so far.
    public private(set) var recordCount = 0

    /// Creates the capture and writes its section header and interface description.
    ///
    /// - Parameters:
    ///   - path: The capture to create; `-` writes standard output (never atomic).
    ///   - linkType: The link type of every record (raw IPv4, or virtio-net for super-packets).
    ///   - comment: The section's comment (`shb_comment`), if any: what the capture is.
    ///   - interfaceName: `if_name` of the one interface.
    ///   - application: `shb_userappl`.
    ///   - atomic: write to a temporary file and rename it over `path` on ``close()``.
    /// - Throws: `PcapError` `.open` when the file cannot be created.
    public init(
        path: String, linkType: LinkType = .raw, snapshotLength: Int = 262_144, comment: String? = nil,
        interfaceName: String? = nil, application: String = "ipipd", atomic: Bool = true
    ) throws(PcapError) {
        precondition((1...262_144).contains(snapshotLength), "snapshot length \(snapshotLength) out of 1…262144")
        self.path = path
        self.linkType = linkType
        self.snapshotLength = snapshotLength
        self.atomic = atomic && path != "-"
        if path == "-" {
            writingPath = path
            file = fdopen(dup(1), "w")
        } else if self.atomic {
            let slash = path.lastIndex(of: "/")
            let directory = slash.map { String(path[...$0]) } ?? ""
            let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
            writingPath = "\(directory).\(name).partial-\(getpid())"
            file = fopen(writingPath, "w")
        } else {
            writingPath = path
            file = fopen(path, "w")
        }
        guard file != nil else {
            throw PcapError(.open, path: path, message: "cannot create capture: \(String(cString: strerror(errno)))")
        }
        // Section header block: byte-order magic, version 1.0, section length unknown (-1).
        begin(type: 0x0A0D_0D0A)
        append32(0x1A2B_3C4D)
        append16(1)
        append16(0)
        append64(UInt64.max)
        if let comment { appendOption(1, Array(comment.utf8)) }
        appendOption(4, Array(application.utf8))
        endOptions()
        finish()
        // Interface description block: link type, snapshot length, name, nanosecond timestamps.
        begin(type: 1)
        append16(UInt16(truncatingIfNeeded: linkType.dataLinkType))
        append16(0)
        append32(UInt32(snapshotLength))
        if let interfaceName { appendOption(2, Array(interfaceName.utf8)) }
        appendOption(9, [9])
        endOptions()
        finish()
    }

    deinit {
        if let file {
            fclose(file)
            if atomic { unlink(writingPath) }
        }
    }

    /// Appends one enhanced packet block: `bytes` (cut to the snapshot length, the original
    /// length kept), its time, and an optional comment.
    /// - Precondition: the writer is not closed.
    public func write(_ bytes: UnsafeRawBufferPointer, timestamp: Timestamp, comment: String? = nil) {
        precondition(file != nil, "PcapNGWriter.write after close(): \(path)")
        let captured = min(bytes.count, snapshotLength)
        let nanoseconds = UInt64(max(0, timestamp.seconds)) &* 1_000_000_000 &+ UInt64(timestamp.nanoseconds)
        begin(type: 6)
        append32(0)  // interface 0
        append32(UInt32(truncatingIfNeeded: nanoseconds >> 32))
        append32(UInt32(truncatingIfNeeded: nanoseconds))
        append32(UInt32(captured))
        append32(UInt32(truncatingIfNeeded: bytes.count))
        block.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[..<captured]))
        pad()
        if let comment {
            appendOption(1, Array(comment.utf8))
            endOptions()
        }
        finish()
        recordCount += 1
    }

    /// Pushes buffered records to the file.
    /// - Throws: `PcapError` `.write` if any write so far failed (a full disk, say).
    public func flush() throws(PcapError) {
        guard let file else { return }
        if fflush(file) != 0 && failed == 0 { failed = errno }
        if ferror(file) != 0 && failed == 0 { failed = EIO }
        if failed != 0 {
            throw PcapError(.write, path: path, message: "cannot write capture: \(String(cString: strerror(failed)))")
        }
    }

    /// Flushes, syncs and closes the capture and, when atomic, renames it to `path`. Calling it
    /// again does nothing.
    /// - Throws: `PcapError` `.write` when anything failed; then no file is left at `path` by
    ///   this writer (an atomic writer removes its temporary file; a file that was at `path`
    ///   before stays as it was).
    public func close() throws(PcapError) {
        guard let f = file else { return }
        file = nil
        if fflush(f) != 0 && failed == 0 { failed = errno }
        if ferror(f) != 0 && failed == 0 { failed = EIO }
        if failed == 0 && atomic && fsync(fileno(f)) != 0 { failed = errno }
        if fclose(f) != 0 && failed == 0 { failed = errno }
        if failed == 0 && atomic && rename(writingPath, path) != 0 { failed = errno }
        if failed != 0 {
            if atomic { unlink(writingPath) }
            throw PcapError(.write, path: path, message: "cannot write capture: \(String(cString: strerror(failed)))")
        }
    }

    // MARK: Block assembly

    private func begin(type: UInt32) {
        block.removeAll(keepingCapacity: true)
        append32(type)
        append32(0)  // total length, set by finish()
    }

    private func finish() {
        let total = UInt32(block.count + 4)
        append32(total)
        withUnsafeBytes(of: total.littleEndian) { t in
            for k in 0..<4 { block[4 + k] = t[k] }
        }
        guard let file else { return }
        let written = block.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        if written != block.count && failed == 0 { failed = errno == 0 ? EIO : errno }
    }

    private func appendOption(_ code: UInt16, _ value: [UInt8]) {
        let n = min(value.count, Int(UInt16.max) - 3)
        append16(code)
        append16(UInt16(n))
        block.append(contentsOf: value[..<n])
        pad()
    }

    private func endOptions() {
        append16(0)
        append16(0)
    }

    private func pad() {
        while block.count % 4 != 0 { block.append(0) }
    }

    private func append16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { block.append(contentsOf: $0) } }
    private func append32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { block.append(contentsOf: $0) } }
    private func append64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { block.append(contentsOf: $0) } }
}

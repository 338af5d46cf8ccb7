import CPcap
import Glibc
import IPIPCore

/// Writes classic pcap captures (microsecond precision, the most widely readable format) through
/// libpcap.
///
/// Timestamps are rounded down to the microsecond. Records longer than the snapshot length are
/// cut to it, keeping their original length, as a capture would.
///
/// Errors of individual writes surface at ``flush()`` or ``close()`` (libpcap buffers through
/// stdio and reports nothing per record); `deinit` closes silently, so call ``close()`` to learn
/// whether everything reached the file. Not `Sendable`: a writer has one owner at a time.
public final class PcapWriter {
    /// The path the capture is written to.
    public let path: String
    /// The link-layer type written into the file header.
    public let linkType: LinkType
    /// The snapshot length written into the file header; longer records are cut to it.
    public let snapshotLength: Int

    private var handle: OpaquePointer?
    private var dumper: OpaquePointer?
    /// Link header + packet for ``writePacket(_:networkProtocol:timestamp:)``; grows, never shrinks.
    private var scratch = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    /// Creates (or truncates) a capture file and writes its header.
    ///
    /// - Parameters:
    ///   - path: The file to write; `-` writes standard output (a libpcap convention).
    ///   - linkType: The link-layer type of every record.
    ///   - snapshotLength: The largest record length kept, 1…262144 (libpcap's maximum).
    /// - Throws: `PcapError` with code `.open` if the file cannot be created.
    /// - Precondition: `snapshotLength` is in 1…262144.
    public init(path: String, linkType: LinkType = .raw, snapshotLength: Int = 262_144) throws(PcapError) {
        precondition((1...262_144).contains(snapshotLength), "snapshot length \(snapshotLength) out of 1…262144")
        self.path = path
        self.linkType = linkType
        self.snapshotLength = snapshotLength
        guard
            let opened = pcap_open_dead_with_tstamp_precision(
                linkType.dataLinkType,
                Int32(snapshotLength),
                UInt32(PCAP_TSTAMP_PRECISION_MICRO)
            )
        else {
            throw PcapError(.open, path: path, message: "pcap_open_dead failed (out of memory?)")
        }
        guard let dumper = pcap_dump_open(opened, path) else {
            let message = String(cString: pcap_geterr(opened))
            pcap_close(opened)
            throw PcapError(.open, path: path, message: "cannot create capture: \(message)")
        }
        handle = opened
        self.dumper = dumper
    }

    deinit {
        if let dumper { pcap_dump_close(dumper) }
        if let handle { pcap_close(handle) }
        scratch.deallocate()
    }

    /// Appends one record, written as given: for non-raw link types `bytes` starts with the
    /// link-layer header.
    ///
    /// - Parameters:
    ///   - bytes: The record; only its first ``snapshotLength`` bytes are kept.
    ///   - timestamp: The capture time, rounded down to the microsecond. Classic pcap stores
    ///     seconds as 32 bits unsigned: times outside 1970…2106 wrap, as in libpcap.
    /// - Precondition: the writer is not closed.
    public func write(_ bytes: UnsafeRawBufferPointer, timestamp: Timestamp) {
        guard let dumper else { preconditionFailure("PcapWriter.write after close(): \(path)") }
        var header = pcap_pkthdr()
        header.ts = timeval(
            tv_sec: Int(truncatingIfNeeded: timestamp.seconds),
            tv_usec: Int(timestamp.nanoseconds / 1000)
        )
        header.caplen = UInt32(min(bytes.count, snapshotLength))
        header.len = UInt32(truncatingIfNeeded: bytes.count)
        withUnsafePointer(to: header) { headerPointer in
            guard let base = bytes.baseAddress else {
                // An empty record: libpcap writes 0 bytes from the pointer but wants one.
                var empty: UInt8 = 0
                pcap_dump(UnsafeMutablePointer<UInt8>(dumper), headerPointer, &empty)
                return
            }
            // Safe: `base` points to `bytes.count` ≥ `caplen` readable bytes; pcap_dump only
            // reads them (its parameter is `const u_char *`) and does not keep the pointer.
            // The dumper is passed as `u_char *`, as pcap_dump's pcap_handler signature wants.
            pcap_dump(UnsafeMutablePointer<UInt8>(dumper), headerPointer, base.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// Appends one record, synthesising the link-layer header for the writer's link type.
    ///
    /// Ethernet: zero MAC addresses and the EtherType. SLL: packet type 0 (to us), ARPHRD 1,
    /// 6-byte zero address, the protocol. SLL2: the protocol, interface index 0, ARPHRD 1,
    /// packet type 0, 6-byte zero address. BSD loopback: family 2 (IPv4) or 24 (IPv6) in host
    /// byte order; OpenBSD loopback: the same in network order. Raw IP: no header.
    ///
    /// - Parameters:
    ///   - networkBytes: The network-layer packet.
    ///   - networkProtocol: What it is (`.other(n)` writes `n` as EtherType or family).
    ///   - timestamp: The capture time, rounded down to the microsecond.
    /// - Precondition: the writer is not closed; raw IP takes only IPv4/IPv6, loopback no ARP.
    public func writePacket(
        _ networkBytes: UnsafeRawBufferPointer,
        networkProtocol: NetworkProtocol,
        timestamp: Timestamp
    ) {
        let total = linkType.headerByteCount + networkBytes.count
        if scratch.count < total {
            scratch.deallocate()
            scratch = .allocate(byteCount: max(total, 2048), alignment: 16)
        }
        let headerByteCount = linkType.writeHeader(for: networkProtocol, into: scratch)
        // Safe: scratch holds at least headerByteCount + networkBytes.count bytes (grown above).
        UnsafeMutableRawBufferPointer(rebasing: scratch[headerByteCount..<total]).copyMemory(from: networkBytes)
        write(UnsafeRawBufferPointer(rebasing: scratch[..<total]), timestamp: timestamp)
    }

    /// Appends an IPv4 packet, synthesising the link-layer header as
    /// ``writePacket(_:networkProtocol:timestamp:)`` does.
    ///
    /// - Parameters:
    ///   - ipBytes: The IPv4 packet, from its IP header on.
    ///   - timestamp: The capture time, rounded down to the microsecond.
    /// - Precondition: the writer is not closed.
    public func writeIPv4Packet(_ ipBytes: UnsafeRawBufferPointer, timestamp: Timestamp) {
        writePacket(ipBytes, networkProtocol: .ipv4, timestamp: timestamp)
    }

    /// Pushes buffered records to the file.
    /// - Throws: `PcapError` `.write` if any write so far failed (for example, disk full).
    /// - Precondition: the writer is not closed.
    public func flush() throws(PcapError) {
        guard let dumper else { preconditionFailure("PcapWriter.flush after close(): \(path)") }
        try Self.flush(dumper, path: path)
    }

    /// Flushes and closes the file. Calling it again does nothing.
    /// - Throws: `PcapError` `.write` if any write so far failed; the file is closed anyway.
    public func close() throws(PcapError) {
        guard let dumper, let handle else { return }
        self.dumper = nil
        self.handle = nil
        defer {
            pcap_dump_close(dumper)
            pcap_close(handle)
        }
        try Self.flush(dumper, path: path)
    }

    private static func flush(_ dumper: OpaquePointer, path: String) throws(PcapError) {
        let flushFailed = pcap_dump_flush(dumper) != 0
        let savedErrno = errno
        // fflush fails only for what it writes now; an earlier fwrite failure (ENOSPC on a full
        // buffer) only sets the stream's error indicator.
        if flushFailed || ferror(pcap_dump_file(dumper)) != 0 {
            let reason = flushFailed ? String(cString: strerror(savedErrno)) : "an earlier write failed"
            throw PcapError(.write, path: path, message: "cannot write capture: \(reason)")
        }
    }
}

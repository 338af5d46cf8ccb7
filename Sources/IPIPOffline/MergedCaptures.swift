import IPIPCore
import Pcap

/// One capture, read one record ahead so two captures can be merged by timestamp.
final class LookaheadCapture {
    struct Record {
        var index: Int
        var timestamp: Timestamp
        var networkProtocol: NetworkProtocol
        var capturedLength: Int
        var bytes: [UInt8]
        /// From the record's virtio header (link type 147), else `.none`.
        var offload: SegmentationOffload
    }

    let reader: PcapReader
    let direction: PacketDirection
    private(set) var next: Record?
    /// The error that ended reading, reported after everything before it was processed.
    private(set) var failure: PcapError?

    init(path: String, direction: PacketDirection) throws {
        do { reader = try PcapReader(path: path) } catch { throw ReplayError(error.description) }
        self.direction = direction
        advance()
    }

    /// Takes the pending record and reads the one after it.
    func take() -> Record? {
        let r = next
        advance()
        return r
    }

    private func advance() {
        next = nil
        guard failure == nil else { return }
        do {
            let virtio = reader.linkType == .virtioNet
            next = try reader.readNext { r in
                var record = Record(
                    index: r.index, timestamp: r.timestamp, networkProtocol: r.networkProtocol,
                    capturedLength: r.capturedLength, bytes: Array(r.networkBytes), offload: .none)
                if virtio {
                    // Safe: the framing guaranteed the 10 header bytes.
                    let header = VirtioNetHeader(loadingFrom: r.capturedBytes.baseAddress!)
                    record.offload = record.bytes.withUnsafeMutableBytes {
                        SegmentationOffload.taking(header, packet: $0)
                    }
                }
                return record
            }
        } catch {
            failure = error
        }
    }
}

/// The workload capture and the underlay capture (when given) as one stream in timestamp order:
/// the order `ipipd replay` and `ipipd bench` both feed the engine in. A tie goes to the TUN side.
final class MergedCaptures {
    /// The TUN side first, then the underlay.
    let sources: [LookaheadCapture]

    init(input: String, underlayInput: String?) throws {
        var sources = [try LookaheadCapture(path: input, direction: .tun)]
        if let u = underlayInput { sources.append(try LookaheadCapture(path: u, direction: .underlay)) }
        self.sources = sources
    }

    /// The earliest pending record and the capture it came from; nil at the end of both (or at
    /// the first read error: see `failure`).
    func next() -> (LookaheadCapture, LookaheadCapture.Record)? {
        var pick: LookaheadCapture?
        for source in sources {
            guard let r = source.next else { continue }
            if let p = pick, let pending = p.next, pending.timestamp <= r.timestamp { continue }
            pick = source
        }
        guard let source = pick, let record = source.take() else { return nil }
        return (source, record)
    }

    /// The first error that ended a capture early, reported after everything before it.
    var failure: PcapError? { sources.lazy.compactMap(\.failure).first }
}

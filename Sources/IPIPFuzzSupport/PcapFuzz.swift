import IPIPCore
import Pcap

/// The `pcap` target: the input is a capture file (pcap or pcapng, any link type), read through
/// libpcap from memory (`PcapReader(bytes:name:)`) record by record until the end or a final error.
///
/// Invariants: a record's captured bytes are as many as its captured length, its network bytes
/// lie inside them, and indices count up from 0; every error names the capture, a read error the
/// index of the record being read; a short record is not final (the next read goes on); after a
/// final error (truncated, corrupt) the next read throws the same error again.
enum PcapFuzz {
    static let name = "fuzz.pcap"
    /// Records read at most (an 8 KiB input holds fewer).
    static let recordLimit = 4096

    static func run(_ input: UnsafeRawBufferPointer) -> [FuzzFinding] {
        var findings: [FuzzFinding] = []
        func fail(_ message: String) { findings.append(FuzzFinding(kind: "pcap", message: message)) }
        let reader: PcapReader
        do {
            reader = try PcapReader(bytes: input, name: name)
        } catch {
            if error.path != name { fail("open error names \(error.path), not \(name): \(error)") }
            if error.packetIndex != nil { fail("open error names a record: \(error)") }
            return findings
        }
        var expected = 0
        while expected < recordLimit {
            do {
                let record = try reader.readNext { r -> (Int, Bool, Bool) in
                    let inside =
                        r.networkBytes.count <= r.capturedBytes.count
                        && (r.networkBytes.count == 0
                            || (r.networkBytes.baseAddress! >= r.capturedBytes.baseAddress!
                                && r.networkBytes.baseAddress! + r.networkBytes.count
                                    <= r.capturedBytes.baseAddress! + r.capturedBytes.count))
                    return (r.index, inside, r.capturedBytes.count == r.capturedLength)
                }
                guard let (index, inside, lengthMatches) = record else { break }
                if index != expected { fail("record \(expected) reports index \(index)") }
                if !inside { fail("record \(index): network bytes outside the captured bytes") }
                if !lengthMatches { fail("record \(index): captured bytes differ from the captured length") }
                expected += 1
            } catch {
                if error.path != name { fail("read error names \(error.path), not \(name): \(error)") }
                if error.packetIndex != expected {
                    fail("read error of record \(expected) names \(String(describing: error.packetIndex))")
                }
                if error.code == .recordTooShort {
                    expected += 1
                    continue
                }
                // Final: the same error again.
                do {
                    _ = try reader.readNext { _ in 0 }
                    fail("a read after the final error \(error) succeeded")
                } catch let again {
                    if again.description != error.description { fail("final error \(error) then \(again)") }
                }
                break
            }
        }
        return findings
    }
}

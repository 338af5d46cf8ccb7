import Foundation
import IPIPCore
import Pcap

/// A record copied out of the reader's closure, for comparisons.
struct CopiedRecord: Equatable {
    var index: Int
    var timestamp: Timestamp
    var capturedLength: Int
    var originalLength: Int
    var networkProtocol: NetworkProtocol
    var capturedBytes: [UInt8]
    var networkBytes: [UInt8]

    init(_ record: PcapRecord) {
        index = record.index
        timestamp = record.timestamp
        capturedLength = record.capturedLength
        originalLength = record.originalLength
        networkProtocol = record.networkProtocol
        capturedBytes = Array(record.capturedBytes)
        networkBytes = Array(record.networkBytes)
    }
}

/// Reads every record until the end or the first error.
func readAll(_ reader: PcapReader) -> (records: [CopiedRecord], error: PcapError?) {
    var records: [CopiedRecord] = []
    do {
        while let record = try reader.readNext({ CopiedRecord($0) }) { records.append(record) }
    } catch {
        return (records, error)
    }
    return (records, nil)
}

/// A fresh directory under the system temp directory, removed by `removeDirectory()`.
struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("PcapTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    func write(_ bytes: [UInt8], to name: String) throws -> String {
        let path = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func removeDirectory() { try? FileManager.default.removeItem(at: url) }
}

extension PcapWriter {
    func write(_ bytes: [UInt8], timestamp: Timestamp) {
        bytes.withUnsafeBytes { write($0, timestamp: timestamp) }
    }

    func writePacket(_ bytes: [UInt8], networkProtocol: NetworkProtocol, timestamp: Timestamp) {
        bytes.withUnsafeBytes { writePacket($0, networkProtocol: networkProtocol, timestamp: timestamp) }
    }
}

/// Packet builders: valid enough for tshark to decode the fields the tests look at.
enum Packets {
    /// IPv4/UDP from `source` to 192.0.2.99, with a correct header checksum.
    static func ipv4(source: (UInt8, UInt8, UInt8, UInt8) = (10, 0, 0, 1), payloadByteCount: Int = 12) -> [UInt8] {
        let from = IPv4Address(source.0, source.1, source.2, source.3)
        let to = IPv4Address(192, 0, 2, 99)
        let payload = (0..<payloadByteCount).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        return PacketBuilder(
            source: from, destination: to,
            payload: PacketBuilder.udp(
                source: from, destination: to, sourcePort: 12345, destinationPort: 53, payload: payload, checksum: false
            )
        ).bytes()
    }

    /// IPv6, next header 59 (none), 2001:db8::1 → 2001:db8::2, `payloadByteCount` bytes after.
    static func ipv6(payloadByteCount: Int = 4) -> [UInt8] {
        var packet: [UInt8] = [0x60, 0, 0, 0, 0, UInt8(payloadByteCount), 59, 64]
        packet += [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        packet += [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [2]
        return packet + [UInt8](repeating: 0xAB, count: payloadByteCount)
    }

    /// An ARP request: who has 10.0.0.2, tell 10.0.0.1.
    static let arp: [UInt8] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
        0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1,
        0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ]

    static func bigEndian16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    static func littleEndian32(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
    static func bigEndian32(_ value: UInt32) -> [UInt8] { littleEndian32(value).reversed() }

    static let macs = [UInt8](repeating: 0xFF, count: 6) + [0x02, 0, 0, 0, 0, 1]

    static func ethernet(_ etherTypes: [UInt16], _ payload: [UInt8]) -> [UInt8] {
        // Each tag after the first EtherType: TCI (VLAN 100) + next EtherType.
        var frame = macs + bigEndian16(etherTypes[0])
        for etherType in etherTypes.dropFirst() { frame += [0x00, 0x64] + bigEndian16(etherType) }
        return frame + payload
    }

    static func linuxSLL(_ etherType: UInt16, _ payload: [UInt8]) -> [UInt8] {
        [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0] + bigEndian16(etherType) + payload
    }

    static func linuxSLL2(_ etherType: UInt16, _ payload: [UInt8]) -> [UInt8] {
        bigEndian16(etherType) + [0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0] + payload
    }
}

/// Hand-built capture files, for what the writer deliberately cannot produce.
enum CaptureFiles {
    struct Record {
        var seconds: UInt32
        var fraction: UInt32
        var data: [UInt8]
        var originalLength: UInt32? = nil
    }

    /// A classic pcap file; `nanosecond` picks the 0xA1B23C4D magic.
    static func classic(
        linkType: UInt32,
        nanosecond: Bool = false,
        bigEndian: Bool = false,
        snapshotLength: UInt32 = 262_144,
        records: [Record] = []
    ) -> [UInt8] {
        let u32 = bigEndian ? Packets.bigEndian32 : Packets.littleEndian32
        func u16(_ value: UInt16) -> [UInt8] {
            bigEndian ? Packets.bigEndian16(value) : Packets.bigEndian16(value).reversed()
        }
        var file = u32(nanosecond ? 0xA1B2_3C4D : 0xA1B2_C3D4) + u16(2) + u16(4) + u32(0) + u32(0)
        file += u32(snapshotLength) + u32(linkType)
        for record in records {
            file += u32(record.seconds) + u32(record.fraction) + u32(UInt32(record.data.count))
            file += u32(record.originalLength ?? UInt32(record.data.count)) + record.data
        }
        return file
    }

    /// A little-endian pcapng file: section header, one interface with nanosecond resolution
    /// (`if_tsresol` = 9), one enhanced packet block per record.
    static func pcapng(linkType: UInt16, records: [(nanosecondsSinceEpoch: UInt64, data: [UInt8])]) -> [UInt8] {
        let u32 = Packets.littleEndian32
        func u16(_ value: UInt16) -> [UInt8] { Packets.bigEndian16(value).reversed() }
        func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
            let length = UInt32(12 + body.count)
            return u32(type) + u32(length) + body + u32(length)
        }
        var file = block(0x0A0D_0D0A, u32(0x1A2B_3C4D) + u16(1) + u16(0) + [UInt8](repeating: 0xFF, count: 8))
        let tsresol: [UInt8] = u16(9) + u16(1) + [9, 0, 0, 0]
        file += block(1, u16(linkType) + u16(0) + u32(262_144) + tsresol + u16(0) + u16(0))
        for (time, data) in records {
            var body = u32(0) + u32(UInt32(time >> 32)) + u32(UInt32(truncatingIfNeeded: time))
            body += u32(UInt32(data.count)) + u32(UInt32(data.count)) + data
            body += [UInt8](repeating: 0, count: (4 - data.count % 4) % 4)
            file += block(6, body)
        }
        return file
    }
}

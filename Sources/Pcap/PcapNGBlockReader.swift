import Foundation
import IPIPCore

/// Reads a pcapng file block by block in Swift, for what libpcap does not hand out: the comment
/// (`opt_comment`) of each packet, where `PcapNGWriter`, the flight recorder and `ipipctl
/// monitor -w` put the engine's verdict. `ipipd replay` reads the packets themselves through
/// libpcap (`PcapReader`) and the comments here; both number packets the same way (enhanced and
/// simple packet blocks, 0-based, in file order), so index N here is index N there.
///
/// Handles: sections of either byte order (several sections in one file, too), interface
/// descriptions with `if_tsresol` (powers of 10 and of 2), enhanced packet blocks (options:
/// comments; several comments are joined by a newline), obsolete packet blocks, simple packet
/// blocks (no time, no comment); other block types are skipped. Every structural problem is an error naming the file,
/// the byte offset of the block and, inside a packet block, its packet index.
///
/// Reads the whole file into memory: for recordings and monitor captures (bounded by their
/// producers), not for multi-gigabyte traces.
public struct PcapNGBlockReader {
    /// One packet block.
    public struct Packet: Sendable, Equatable {
        /// 0-based, in file order (libpcap's numbering).
        public var index: Int
        /// The interface (of the packet's section) it was captured on.
        public var interface: Int
        public var linkType: Int
        /// Nil for a simple packet block.
        public var timestamp: Timestamp?
        /// The captured bytes.
        public var data: [UInt8]
        public var originalLength: Int
        /// The packet's comments (`opt_comment`), joined by a newline; nil when it has none.
        public var comment: String?
    }

    public let path: String
    /// Every packet, in order.
    public private(set) var packets: [Packet] = []
    /// The section headers' comments (`shb_comment`), in order.
    public private(set) var sectionComments: [String] = []

    /// Reads and parses `path`.
    /// - Throws: `PcapError` `.open` when unreadable, `.corrupt` when it is not pcapng or a block
    ///   is malformed, `.truncated` when it ends inside a block.
    public init(path: String) throws(PcapError) {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PcapError(.open, path: path, message: "cannot read file")
        }
        try parse([UInt8](data))
    }

    /// Parses bytes already in memory (`name` is used in errors).
    public init(bytes: [UInt8], name: String) throws(PcapError) {
        path = name
        try parse(bytes)
    }

    struct Interface {
        var linkType: Int
        /// Ticks per second and whether the resolution is a power of 10 (else of 2).
        var resolution: UInt8 = 6
    }

    private mutating func parse(_ b: [UInt8]) throws(PcapError) {
        var offset = 0
        var little = true
        var interfaces: [Interface] = []
        var sawSection = false
        func u32(_ o: Int) -> UInt32 {
            let v = UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
            return little ? v : v.byteSwapped
        }
        func u16(_ o: Int) -> UInt16 {
            let v = UInt16(b[o]) | UInt16(b[o + 1]) << 8
            return little ? v : v.byteSwapped
        }
        while offset < b.count {
            let at = offset
            guard offset + 12 <= b.count else {
                throw PcapError(.truncated, path: path, message: "file ends inside the block at byte \(at)")
            }
            let rawType = UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
            if rawType == 0x0A0D_0D0A {
                // Section header: the byte-order magic decides how everything in it is read.
                let magic =
                    UInt32(b[at + 8]) | UInt32(b[at + 9]) << 8 | UInt32(b[at + 10]) << 16 | UInt32(b[at + 11]) << 24
                switch magic {
                case 0x1A2B_3C4D: little = true
                case 0x4D3C_2B1A: little = false
                default:
                    throw PcapError(
                        .corrupt, path: path, message: "block at byte \(at): bad byte-order magic in the section header"
                    )
                }
                interfaces = []
                sawSection = true
            } else if !sawSection {
                throw PcapError(.corrupt, path: path, message: "not a pcapng file (no section header block at byte 0)")
            }
            let type = u32(at)
            let length = Int(u32(at + 4))
            guard length >= 12, length % 4 == 0 else {
                throw PcapError(
                    .corrupt, path: path,
                    message: "block at byte \(at): length \(length) is not a multiple of 4 of at least 12")
            }
            guard at + length <= b.count else {
                throw PcapError(
                    .truncated, path: path,
                    message: "file ends inside the block at byte \(at) (\(length) bytes announced)")
            }
            guard Int(u32(at + length - 4)) == length else {
                throw PcapError(
                    .corrupt, path: path,
                    message: "block at byte \(at): trailing length differs from the leading \(length)")
            }
            let body = (at + 8)..<(at + length - 4)
            switch type {
            case 0x0A0D_0D0A:
                guard body.count >= 16 else {
                    throw PcapError(.corrupt, path: path, message: "block at byte \(at): section header too short")
                }
                for (code, value) in try options(b, from: body.lowerBound + 16, to: body.upperBound, at: at, u16: u16)
                where code == 1 {
                    sectionComments.append(String(decoding: value, as: UTF8.self))
                }
            case 1:
                guard body.count >= 8 else {
                    throw PcapError(
                        .corrupt, path: path, message: "block at byte \(at): interface description too short")
                }
                var i = Interface(linkType: Int(u16(body.lowerBound)))
                for (code, value) in try options(b, from: body.lowerBound + 8, to: body.upperBound, at: at, u16: u16)
                where code == 9 && value.count == 1 {
                    i.resolution = value[value.startIndex]
                }
                interfaces.append(i)
            case 2, 6:
                // An enhanced packet block, or the obsolete packet block (type 2: a 16-bit
                // interface and a drop count where the enhanced one has a 32-bit interface),
                // which libpcap reads and numbers too.
                let index = packets.count
                guard body.count >= 20 else {
                    throw PcapError(
                        .corrupt, path: path, packetIndex: index,
                        message: "block at byte \(at): enhanced packet block too short")
                }
                let interface = type == 2 ? Int(u16(body.lowerBound)) : Int(u32(body.lowerBound))
                guard interface < interfaces.count else {
                    throw PcapError(
                        .corrupt, path: path, packetIndex: index,
                        message: "block at byte \(at): interface \(interface) was not described")
                }
                let ticks = UInt64(u32(body.lowerBound + 4)) << 32 | UInt64(u32(body.lowerBound + 8))
                let captured = Int(u32(body.lowerBound + 12))
                let original = Int(u32(body.lowerBound + 16))
                let dataStart = body.lowerBound + 20
                let padded = (captured + 3) & ~3
                guard dataStart + padded <= body.upperBound else {
                    throw PcapError(
                        .corrupt, path: path, packetIndex: index,
                        message: "block at byte \(at): captured length \(captured) exceeds the block")
                }
                var comments: [String] = []
                for (code, value) in try options(
                    b, from: dataStart + padded, to: body.upperBound, at: at, packetIndex: index, u16: u16)
                where code == 1 {
                    comments.append(String(decoding: value, as: UTF8.self))
                }
                packets.append(
                    Packet(
                        index: index, interface: interface, linkType: interfaces[interface].linkType,
                        timestamp: Self.timestamp(ticks, resolution: interfaces[interface].resolution),
                        data: Array(b[dataStart..<(dataStart + captured)]), originalLength: original,
                        comment: comments.isEmpty ? nil : comments.joined(separator: "\n")))
            case 3:
                let index = packets.count
                guard body.count >= 4, !interfaces.isEmpty else {
                    throw PcapError(
                        .corrupt, path: path, packetIndex: index,
                        message: "block at byte \(at): simple packet block without an interface")
                }
                let original = Int(u32(body.lowerBound))
                let captured = min(original, body.count - 4)
                packets.append(
                    Packet(
                        index: index, interface: 0, linkType: interfaces[0].linkType, timestamp: nil,
                        data: Array(b[(body.lowerBound + 4)..<(body.lowerBound + 4 + captured)]),
                        originalLength: original, comment: nil))
            default:
                break
            }
            offset = at + length
        }
        guard sawSection else {
            throw PcapError(.corrupt, path: path, message: "not a pcapng file (empty)")
        }
    }

    /// The options in `from..<to`, up to `opt_endofopt`.
    private func options(
        _ b: [UInt8], from: Int, to: Int, at: Int, packetIndex: Int? = nil, u16: (Int) -> UInt16
    ) throws(PcapError) -> [(UInt16, ArraySlice<UInt8>)] {
        var out: [(UInt16, ArraySlice<UInt8>)] = []
        var o = from
        while o + 4 <= to {
            let code = u16(o)
            let length = Int(u16(o + 2))
            if code == 0 { break }
            guard o + 4 + length <= to else {
                throw PcapError(
                    .corrupt, path: path, packetIndex: packetIndex,
                    message: "block at byte \(at): option \(code) runs past the block")
            }
            out.append((code, b[(o + 4)..<(o + 4 + length)]))
            o += 4 + ((length + 3) & ~3)
        }
        return out
    }

    /// A pcapng timestamp in ticks of `if_tsresol` as seconds and nanoseconds.
    static func timestamp(_ ticks: UInt64, resolution r: UInt8) -> Timestamp {
        let exponent = Int(r & 0x7F)
        if r & 0x80 == 0 {
            var perSecond: UInt64 = 1
            for _ in 0..<min(exponent, 19) { perSecond &*= 10 }
            let seconds = ticks / perSecond
            let rest = ticks % perSecond
            let ns = exponent <= 9 ? rest * (1_000_000_000 / perSecond) : rest / (perSecond / 1_000_000_000)
            return Timestamp(seconds: Int64(clamping: seconds), nanoseconds: UInt32(ns))
        }
        let shift = UInt64(min(exponent, 63))
        let seconds = ticks >> shift
        let rest = ticks & ((1 << shift) - 1)
        let ns = UInt64((Double(rest) / Double(UInt64(1) << shift)) * 1e9)
        return Timestamp(seconds: Int64(clamping: seconds), nanoseconds: UInt32(min(ns, 999_999_999)))
    }
}

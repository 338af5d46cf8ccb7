/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// The full sum runs over 8-byte words with end-around carry folding, which is the same ones'
/// complement sum as the 16-bit loop of RFC 1071 §4.1 (RFC 1071 §2(B): the sum is independent of
/// byte order and can be computed on wider words, then folded).
public enum InternetChecksum {
    /// The ones' complement sum of `bytes` (not yet complemented), folded to 16 bits.
    ///
    /// The bytes are summed as native-order 32-bit halves of 64-bit words in four independent
    /// accumulators (so the additions of neighbouring words overlap), and the folded result is
    /// put in network order once at the end: RFC 1071 §2(B), the sum commutes with byte
    /// swapping. A 64-bit accumulator takes 2^32 such additions, far above any IPv4 datagram.
    ///
    /// - Parameters:
    ///   - bytes: the data; an odd trailing byte is padded with a zero byte, as RFC 1071 says.
    ///   - initial: a partial sum to continue from (for pseudo-headers), in network byte order.
    /// - Returns: the folded 16-bit sum in network order semantics (big-endian value).
    @inlinable
    public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        guard let base = bytes.baseAddress else { return fold(UInt64(initial)) }
        let n = bytes.count
        // Headers (20–60 bytes) take the short loop inline; payloads the four-way loop.
        return finish(n <= 64 ? shortSum(base, n) : nativeSum(base, n), initial: initial)
    }

    /// `nativeSum` for short buffers (and its tail): one accumulator, no set-up, inlined at every
    /// call. `base` must lie at an even offset of the summed data.
    @inlinable @inline(__always)
    static func shortSum(_ base: UnsafeRawPointer, _ count: Int) -> UInt64 {
        var a: UInt64 = 0
        var i = 0
        // Safe: every load below is checked against count first.
        while i &+ 8 <= count {
            let w = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            a &+= (w & 0xFFFF_FFFF) &+ (w >> 32)
            i &+= 8
        }
        if i &+ 4 <= count {
            a &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i &+= 4
        }
        if i &+ 2 <= count {
            a &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i &+= 2
        }
        if i < count {
            a &+= UInt64(UInt16(bigEndian: UInt16(base.load(fromByteOffset: i, as: UInt8.self)) << 8))
        }
        return a
    }

    /// Copies `count` bytes from `source` to `destination` (not overlapping) and returns their
    /// ones' complement sum as `sum(_:initial:)` would: one pass over the data instead of two.
    @inlinable
    public static func sumCopying(
        from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, count: Int,
        initial: UInt32 = 0
    ) -> UInt16 {
        var a0: UInt64 = 0
        var a1: UInt64 = 0
        var i = 0
        // Safe: every load and store below stays within [0, count).
        while i &+ 16 <= count {
            let w0 = source.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let w1 = source.loadUnaligned(fromByteOffset: i &+ 8, as: UInt64.self)
            destination.storeBytes(of: w0, toByteOffset: i, as: UInt64.self)
            destination.storeBytes(of: w1, toByteOffset: i &+ 8, as: UInt64.self)
            a0 &+= (w0 & 0xFFFF_FFFF) &+ (w0 >> 32)
            a1 &+= (w1 & 0xFFFF_FFFF) &+ (w1 >> 32)
            i &+= 16
        }
        if i < count {
            let rest = count &- i
            (destination + i).copyMemory(from: source + i, byteCount: rest)
            a0 &+= nativeSum(source + i, rest)
        }
        return finish(a0 &+ a1, initial: initial)
    }

    /// The unfolded ones' complement sum of `count` bytes at `base`, in the host's byte order.
    @inlinable
    static func nativeSum(_ base: UnsafeRawPointer, _ count: Int) -> UInt64 {
        var a0: UInt64 = 0
        var a1: UInt64 = 0
        var a2: UInt64 = 0
        var a3: UInt64 = 0
        var i = 0
        // Safe: every load below is checked against count first.
        while i &+ 32 <= count {
            let w0 = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let w1 = base.loadUnaligned(fromByteOffset: i &+ 8, as: UInt64.self)
            let w2 = base.loadUnaligned(fromByteOffset: i &+ 16, as: UInt64.self)
            let w3 = base.loadUnaligned(fromByteOffset: i &+ 24, as: UInt64.self)
            a0 &+= (w0 & 0xFFFF_FFFF) &+ (w0 >> 32)
            a1 &+= (w1 & 0xFFFF_FFFF) &+ (w1 >> 32)
            a2 &+= (w2 & 0xFFFF_FFFF) &+ (w2 >> 32)
            a3 &+= (w3 & 0xFFFF_FFFF) &+ (w3 >> 32)
            i &+= 32
        }
        // The tail (under 32 bytes) starts at an even offset, so its odd byte keeps its place.
        return (a0 &+ a1) &+ (a2 &+ a3) &+ shortSum(base + i, count &- i)
    }

    /// Folds a native-order sum, puts it in network order and adds `initial`.
    @inlinable @inline(__always)
    static func finish(_ native: UInt64, initial: UInt32) -> UInt16 {
        let networkOrder = UInt16(bigEndian: fold(native))
        return fold(UInt64(networkOrder) &+ UInt64(initial))
    }

    /// Folds a wide ones' complement accumulator to 16 bits with end-around carries.
    @inlinable
    public static func fold(_ value: UInt64) -> UInt16 {
        var v = value
        // Safe: each step strictly shrinks the value until it fits 16 bits.
        v = (v & 0xFFFF_FFFF) &+ (v >> 32)
        v = (v & 0xFFFF_FFFF) &+ (v >> 32)
        v = (v & 0xFFFF) &+ (v >> 16)
        v = (v & 0xFFFF) &+ (v >> 16)
        return UInt16(truncatingIfNeeded: v)
    }

    /// The checksum field value for `bytes`: the complement of their sum.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        ~sum(bytes, initial: initial)
    }

    /// RFC 1624 eqn. 3: the new checksum after a 16-bit field changes from `old` to `new`.
    ///
    /// `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 it never produces 0xFFFF from a correct header
    /// whose true sum is not zero (RFC 1624 §3 and §5).
    @inlinable
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        let sum = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        return ~fold(UInt64(sum))
    }

    /// RFC 1624 update for a 32-bit field (two 16-bit words), such as an IPv4 address.
    @inlinable
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        let sum =
            UInt64(~checksum) &+ UInt64(~UInt16(truncatingIfNeeded: old >> 16))
            &+ UInt64(~UInt16(truncatingIfNeeded: old)) &+ UInt64(new >> 16) &+ UInt64(new & 0xFFFF)
        return ~fold(sum)
    }

    /// The straightforward RFC 1071 §4.1 reference: 16-bit words, one at a time. Tests only.
    public static func referenceChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
            i += 2
        }
        if i < bytes.count {
            sum += UInt32(bytes[i]) << 8
            while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        }
        return ~UInt16(sum)
    }
}

/// Accumulates RFC 1624 field changes so several rewrites under one checksum are applied at once:
/// `HC' = ~(~HC + Σ ~m + Σ m')` (eqn. 3, extended to many fields as RFC 1624 §3 allows).
public struct ChecksumAdjustment: Sendable {
    @usableFromInline var sum: UInt64 = 0

    /// No change yet.
    @inlinable public init() {}

    /// Records that a 16-bit word changes from `old` to `new`.
    @inlinable public mutating func replace(_ old: UInt16, with new: UInt16) {
        sum &+= UInt64(~old) &+ UInt64(new)
    }

    /// Records that a 32-bit field (two words) changes from `old` to `new`.
    @inlinable public mutating func replace(_ old: UInt32, with new: UInt32) {
        replace(UInt16(truncatingIfNeeded: old >> 16), with: UInt16(truncatingIfNeeded: new >> 16))
        replace(UInt16(truncatingIfNeeded: old), with: UInt16(truncatingIfNeeded: new))
    }

    /// The checksum after the recorded changes.
    @inlinable public func applied(to checksum: UInt16) -> UInt16 {
        ~InternetChecksum.fold(UInt64(~checksum) &+ sum)
    }
}

extension InternetChecksum {
    /// Computes and stores the TCP or UDP checksum of an IPv4 datagram from scratch (pseudo-header
    /// included; a UDP result of 0 is stored as 0xFFFF), for packets whose checksum was left to
    /// hardware: a packet read from AF_PACKET with `TP_STATUS_CSUMNOTREADY` (CHECKSUM_PARTIAL)
    /// carries only the pseudo-header sum in that field. An IP-in-IP datagram gets its inner
    /// transport checksum completed instead. Fragments and other protocols are left alone.
    /// - Returns: whether a checksum was written.
    @discardableResult
    public static func completeTransportChecksum(_ packet: UnsafeMutableRawBufferPointer) -> Bool {
        guard case .valid(let hl, let total) = IPv4Header.validate(UnsafeRawBufferPointer(packet)) else { return false }
        // Safe: validate() proved the header and total length lie within the buffer.
        var ip = IPv4Header(unchecked: packet.baseAddress!)
        var start = hl
        var end = total
        if ip.protocolNumber == IPProtocolNumber.ipInIP && !ip.isFragment {
            let inner = UnsafeMutableRawBufferPointer(rebasing: packet[hl..<total])
            guard case .valid(let ihl, let itotal) = IPv4Header.validate(UnsafeRawBufferPointer(inner)) else {
                return false
            }
            ip = IPv4Header(unchecked: inner.baseAddress!)
            start = hl &+ ihl
            end = hl &+ itotal
        }
        guard !ip.isFragment else { return false }
        let offset: Int
        switch ip.protocolNumber {
        case IPProtocolNumber.tcp: offset = 16
        case IPProtocolNumber.udp: offset = 6
        default: return false
        }
        let length = end &- start
        guard length >= offset &+ 2 else { return false }
        let l4 = packet.baseAddress! + start
        l4.storeBytes(of: 0, toByteOffset: offset, as: UInt16.self)
        var pseudo = UInt64(ip.sourceAddress.rawValue >> 16) &+ UInt64(ip.sourceAddress.rawValue & 0xFFFF)
        pseudo &+= UInt64(ip.destinationAddress.rawValue >> 16) &+ UInt64(ip.destinationAddress.rawValue & 0xFFFF)
        pseudo &+= UInt64(ip.protocolNumber) &+ UInt64(length)
        var c = checksum(UnsafeRawBufferPointer(start: l4, count: length), initial: UInt32(fold(pseudo)))
        if ip.protocolNumber == IPProtocolNumber.udp && c == 0 { c = 0xFFFF }
        l4.storeBytes(of: c.bigEndian, toByteOffset: offset, as: UInt16.self)
        return true
    }
}

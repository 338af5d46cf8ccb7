/// Userspace GRO for the TUN side: merges, in place, the TCP segments (and, when the TUN takes
/// USO, the UDP datagrams) of one flow that leave a batch toward the TUN into super-packets, so
/// that one `write(2)` with a virtio header carries what would otherwise take dozens: the kernel
/// segments them again (or hands them on whole) toward the workload. Writes into a TUN are the
/// largest per-packet cost of the receive side; coalescing is what makes it cheap.
///
/// Architecture: one pass over the batch in slot order. A small open-addressing table maps a
/// flow (addresses, ports, protocol) to the slot of its open group (the *head*); a packet that
/// continues the group has its payload appended to the head's slot (`PacketBatch.extend`) and its
/// own slot set to `.none`; anything else of the flow closes the group (and may open a new one),
/// so the packets of one flow keep their order. Packets of different flows keep their relative
/// order too, except that a group is written where its head was. At the end every head that took
/// a packet gets its IPv4 total length and header checksum rewritten (UDP: its length) and its
/// `SegmentationOffload` set; the TUN writer adds the virtio header and the partial checksum
/// (`VirtioNetHeader.preparingTransmit`).
///
/// What merges (Linux `tcp_gro_receive`, `udp_gro_receive` rules, as wireguard-go applies them):
/// - TCP: IPv4 without options, not a fragment; ACK set, no SYN/FIN/RST/URG/CWR; the same TOS,
///   TTL, DF, acknowledgement number, flags and TCP option bytes as the head; the sequence number
///   right after the group's last byte; a payload no larger than the head's, a shorter one or
///   one with PSH ends the group (PSH moves onto the super-packet).
/// - UDP: IPv4 without options, not a fragment, a UDP length that covers the datagram; the same
///   TOS, TTL and DF; a payload no larger than the head's (a shorter one ends the group); at most
///   64 datagrams per super-packet (the kernel allows `UDP_MAX_SEGMENTS` = 128 in a USO write).
/// - Every packet's transport checksum is verified before it joins or starts a group: the TUN
///   write asks the kernel to compute fresh checksums, which would otherwise hide a corrupted
///   segment. A packet that fails stays alone with its bad checksum (the workload's stack drops
///   it) and is counted.
/// - At most 65,535 bytes (the IPv4 total length) and what the head's slot has room for.
///
/// Memory: everything is allocated in `init`; `coalesce` allocates nothing.
/// Threading: one coalescer per worker, like the engine.
public final class TUNCoalescer {
    /// Whether UDP datagrams are merged too (only when the TUN accepted USO).
    public let coalescesUDP: Bool
    /// The largest batch `coalesce` accepts.
    public let batchCapacity: Int

    /// Segments that were appended to a super-packet (their own slot emptied).
    public private(set) var mergedPackets: UInt64 = 0
    /// Super-packets built (heads that took at least one more packet).
    public private(set) var superPackets: UInt64 = 0
    /// Packets left alone because their transport checksum did not verify.
    public private(set) var checksumFailures: UInt64 = 0

    /// The most UDP datagrams merged into one write.
    public static let maximumUDPSegments = 64

    struct FlowKey: Equatable {
        var source: UInt32
        var destination: UInt32
        var ports: UInt32
        var protocolNumber: UInt8
    }

    let tableMask: Int
    let keys: UnsafeMutablePointer<FlowKey>
    let stamps: UnsafeMutablePointer<UInt32>
    /// Head slot of the flow's open group, -1 when the flow has none.
    let tableHeads: UnsafeMutablePointer<Int32>
    var generation: UInt32 = 0

    // Per slot, meaningful for heads: the group's state.
    let nextSequence: UnsafeMutablePointer<UInt32>
    let segmentSizes: UnsafeMutablePointer<UInt16>
    let segmentCounts: UnsafeMutablePointer<UInt16>
    /// Per slot: the head the packet was merged into, or -1.
    let merged: UnsafeMutablePointer<Int32>
    /// Heads that took at least one packet in this pass.
    let grownHeads: UnsafeMutablePointer<Int32>
    var grownCount = 0

    /// - Parameters:
    ///   - batchCapacity: the largest batch it will see.
    ///   - coalescesUDP: merge UDP datagrams into USO super-packets too.
    public init(batchCapacity: Int, coalescesUDP: Bool) {
        precondition(batchCapacity > 0)
        self.batchCapacity = batchCapacity
        self.coalescesUDP = coalescesUDP
        var size = 16
        while size < 4 * batchCapacity { size <<= 1 }
        tableMask = size - 1
        keys = .allocate(capacity: size)
        keys.initialize(repeating: FlowKey(source: 0, destination: 0, ports: 0, protocolNumber: 0), count: size)
        stamps = .allocate(capacity: size)
        stamps.initialize(repeating: 0, count: size)
        tableHeads = .allocate(capacity: size)
        tableHeads.initialize(repeating: -1, count: size)
        nextSequence = .allocate(capacity: batchCapacity)
        nextSequence.initialize(repeating: 0, count: batchCapacity)
        segmentSizes = .allocate(capacity: batchCapacity)
        segmentSizes.initialize(repeating: 0, count: batchCapacity)
        segmentCounts = .allocate(capacity: batchCapacity)
        segmentCounts.initialize(repeating: 0, count: batchCapacity)
        merged = .allocate(capacity: batchCapacity)
        merged.initialize(repeating: -1, count: batchCapacity)
        grownHeads = .allocate(capacity: batchCapacity)
        grownHeads.initialize(repeating: -1, count: batchCapacity)
    }

    deinit {
        keys.deallocate()
        stamps.deallocate()
        tableHeads.deallocate()
        nextSequence.deallocate()
        segmentSizes.deallocate()
        segmentCounts.deallocate()
        merged.deallocate()
        grownHeads.deallocate()
    }

    /// The head slot packet `i` was merged into by the last `coalesce`, or nil when it was not.
    public func mergedInto(_ i: Int) -> Int? {
        precondition(i >= 0 && i < batchCapacity)
        return merged[i] >= 0 ? Int(merged[i]) : nil
    }

    /// Merges the `.tun` packets of `batch` in place (see the type's description).
    /// - Returns: how many packets were merged into others.
    @discardableResult
    public func coalesce(_ batch: borrowing PacketBatch) -> Int {
        precondition(batch.count <= batchCapacity, "batch larger than the coalescer was made for")
        generation &+= 1
        if generation == 0 {
            stamps.update(repeating: 0, count: tableMask &+ 1)
            generation = 1
        }
        grownCount = 0
        var absorbed = 0
        for j in 0..<batch.count {
            merged[j] = -1
            guard batch.side(of: j) == .tun else { continue }
            let p = UnsafeRawBufferPointer(batch.packet(j))
            guard p.count >= 24, p[0] == 0x45 else { continue }
            let proto = p[9]
            guard proto == IPProtocolNumber.tcp || (proto == IPProtocolNumber.udp && coalescesUDP) else { continue }
            let key = FlowKey(
                source: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self),
                destination: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self),
                ports: p.loadUnaligned(fromByteOffset: 20, as: UInt32.self), protocolNumber: proto)
            let entry = find(key)
            let eligible =
                batch.offload(of: j).kind == .none
                && (proto == IPProtocolNumber.tcp ? Self.tcpCandidate(p) : Self.udpCandidate(p))
            guard eligible else {
                tableHeads[entry] = -1
                continue
            }
            let head = Int(tableHeads[entry])
            if head >= 0 {
                let result =
                    proto == IPProtocolNumber.tcp
                    ? appendTCP(j, to: head, in: batch) : appendUDP(j, to: head, in: batch)
                switch result {
                case .appended(let closes):
                    absorbed &+= 1
                    if closes { tableHeads[entry] = -1 }
                    continue
                case .badChecksum:
                    checksumFailures &+= 1
                    tableHeads[entry] = -1
                    continue
                case .refused:
                    break
                }
            }
            guard Self.transportChecksumVerifies(p) else {
                checksumFailures &+= 1
                tableHeads[entry] = -1
                continue
            }
            // j opens a new group (the previous one of the flow, if any, is closed).
            tableHeads[entry] = startGroup(j, p, tcp: proto == IPProtocolNumber.tcp) ? Int32(truncatingIfNeeded: j) : -1
        }
        for g in 0..<grownCount { finish(Int(grownHeads[g]), in: batch) }
        mergedPackets &+= UInt64(truncatingIfNeeded: absorbed)
        superPackets &+= UInt64(truncatingIfNeeded: grownCount)
        return absorbed
    }

    /// The table index for `key`: its entry if the flow was seen in this pass, else a fresh one
    /// (stamped, with no open group).
    @inline(__always)
    func find(_ key: FlowKey) -> Int {
        var h = UInt64(key.source) &* 0x9E37_79B9_7F4A_7C15
        h ^= UInt64(key.destination) &* 0xC2B2_AE3D_27D4_EB4F
        h ^= (UInt64(key.ports) << 8 | UInt64(key.protocolNumber)) &* 0x1656_67B1_9E37_79F9
        var i = Int(truncatingIfNeeded: h >> 40) & tableMask
        // Safe: the table has at least 4 × batchCapacity entries and a pass stamps at most
        // batchCapacity of them, so a free (stale) entry is always found.
        while stamps[i] == generation {
            if keys[i] == key { return i }
            i = (i &+ 1) & tableMask
        }
        stamps[i] = generation
        keys[i] = key
        tableHeads[i] = -1
        return i
    }

    enum AppendResult {
        case appended(closesGroup: Bool)
        /// It would have joined, but its checksum does not verify: it stays alone.
        case badChecksum
        case refused
    }

    /// Whether a TCP packet may open or join a group: IPv4 without options (checked by the
    /// caller), not a fragment, total length = the bytes, a sane data offset, payload, ACK and
    /// none of SYN, FIN, RST, URG, CWR.
    @inline(__always)
    static func tcpCandidate(_ p: UnsafeRawBufferPointer) -> Bool {
        guard p.count >= 40, p.loadUnaligned(fromByteOffset: 6, as: UInt16.self) & UInt16(0x3FFF).bigEndian == 0,
            Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))) == p.count
        else { return false }
        let thl = Int(p[32] >> 4) &<< 2
        guard thl >= 20, 20 &+ thl < p.count else { return false }
        let flags = p[33]
        return flags & TCPFlags.ack != 0
            && flags & (TCPFlags.syn | TCPFlags.fin | TCPFlags.rst | TCPFlags.urg | TCPFlags.cwr) == 0
    }

    /// Whether a UDP packet may open or join a group: not a fragment, lengths consistent, payload.
    @inline(__always)
    static func udpCandidate(_ p: UnsafeRawBufferPointer) -> Bool {
        guard p.count > 28, p.loadUnaligned(fromByteOffset: 6, as: UInt16.self) & UInt16(0x3FFF).bigEndian == 0,
            Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))) == p.count,
            Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt16.self))) == p.count &- 20
        else { return false }
        return true
    }

    /// Whether the TCP or UDP checksum of an option-less IPv4 packet verifies (a UDP checksum of 0
    /// means "none" and passes).
    @inline(__always)
    static func transportChecksumVerifies(_ p: UnsafeRawBufferPointer) -> Bool {
        let proto = p[9]
        if proto == IPProtocolNumber.udp && p.loadUnaligned(fromByteOffset: 26, as: UInt16.self) == 0 { return true }
        let pseudo = InternetChecksum.pseudoHeaderSum(
            source: IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))),
            destination: IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self))),
            protocolNumber: proto, length: p.count &- 20)
        return InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: p[20...]), initial: pseudo) == 0xFFFF
    }

    /// Copies the payload of option-less IPv4 TCP/UDP packet `p` (after `headerLength` bytes of
    /// IP and transport header) to `destination`, summing it on the way, and says whether the
    /// packet's transport checksum verifies: one pass over the payload for both.
    @inline(__always)
    static func copyVerifying(
        _ p: UnsafeRawBufferPointer, headerLength: Int, to destination: UnsafeMutableRawPointer
    ) -> Bool {
        let base = p.baseAddress!
        let payloadSum = InternetChecksum.sumCopying(
            from: base + headerLength, to: destination, count: p.count &- headerLength)
        let pseudo = InternetChecksum.pseudoHeaderSum(
            source: IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))),
            destination: IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self))),
            protocolNumber: p[9], length: p.count &- 20)
        // Safe: the transport header [20, headerLength) is within the packet (checked by the candidates).
        return InternetChecksum.sum(
            UnsafeRawBufferPointer(start: base + 20, count: headerLength &- 20),
            initial: pseudo &+ UInt32(payloadSum)) == 0xFFFF
    }

    /// Records `j` as the head of a new group; false when it cannot be extended (PSH set).
    @inline(__always)
    func startGroup(_ j: Int, _ p: UnsafeRawBufferPointer, tcp: Bool) -> Bool {
        if tcp {
            let thl = Int(p[32] >> 4) &<< 2
            let payload = p.count &- 20 &- thl
            guard p[33] & TCPFlags.psh == 0 else { return false }
            nextSequence[j] =
                UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
                &+ UInt32(truncatingIfNeeded: payload)
            segmentSizes[j] = UInt16(truncatingIfNeeded: payload)
        } else {
            segmentSizes[j] = UInt16(truncatingIfNeeded: p.count &- 28)
        }
        segmentCounts[j] = 1
        return true
    }

    @inline(__always)
    func appendTCP(_ j: Int, to head: Int, in batch: borrowing PacketBatch) -> AppendResult {
        let h = UnsafeRawBufferPointer(batch.packet(head))
        let p = UnsafeRawBufferPointer(batch.packet(j))
        let thl = Int(p[32] >> 4) &<< 2
        let payload = p.count &- 20 &- thl
        // Safe: both passed tcpCandidate, so both hold 20 + thl (resp. the head's own) bytes.
        guard h[1] == p[1], h[8] == p[8], h[6] & 0x40 == p[6] & 0x40,
            Int(h[32] >> 4) &<< 2 == thl,
            h.loadUnaligned(fromByteOffset: 28, as: UInt32.self)
                == p.loadUnaligned(fromByteOffset: 28, as: UInt32.self),
            (h[33] ^ p[33]) & ~TCPFlags.psh == 0,
            UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)) == nextSequence[head],
            payload <= Int(segmentSizes[head]),
            h.count &+ payload <= 65535, payload <= batch.tailroom(of: head),
            Self.sameBytes(h, p, from: 40, to: 20 &+ thl)
        else { return .refused }
        let headLength = h.count
        let end = batch.extend(head, by: payload)
        guard Self.copyVerifying(p, headerLength: 20 &+ thl, to: end) else {
            batch.setLength(headLength, of: head)
            return .badChecksum
        }
        noteMerge(j, into: head, in: batch)
        nextSequence[head] &+= UInt32(truncatingIfNeeded: payload)
        let push = p[33] & TCPFlags.psh != 0
        if push {
            let hp = batch.packet(head).baseAddress!
            hp.storeBytes(of: h[33] | TCPFlags.psh, toByteOffset: 33, as: UInt8.self)
        }
        return .appended(closesGroup: push || payload < Int(segmentSizes[head]))
    }

    @inline(__always)
    func appendUDP(_ j: Int, to head: Int, in batch: borrowing PacketBatch) -> AppendResult {
        let h = UnsafeRawBufferPointer(batch.packet(head))
        let p = UnsafeRawBufferPointer(batch.packet(j))
        let payload = p.count &- 28
        guard h[1] == p[1], h[8] == p[8], h[6] & 0x40 == p[6] & 0x40,
            payload <= Int(segmentSizes[head]), Int(segmentCounts[head]) < Self.maximumUDPSegments,
            h.count &+ payload <= 65535, payload <= batch.tailroom(of: head)
        else { return .refused }
        let headLength = h.count
        let end = batch.extend(head, by: payload)
        if p.loadUnaligned(fromByteOffset: 26, as: UInt16.self) == 0 {
            end.copyMemory(from: p.baseAddress!.advanced(by: 28), byteCount: payload)  // no checksum to verify
        } else if !Self.copyVerifying(p, headerLength: 28, to: end) {
            batch.setLength(headLength, of: head)
            return .badChecksum
        }
        noteMerge(j, into: head, in: batch)
        return .appended(
            closesGroup: payload < Int(segmentSizes[head])
                || Int(segmentCounts[head]) >= Self.maximumUDPSegments)
    }

    /// Books packet `j` into `head`'s group; its content now travels in the head's super-packet,
    /// so its own slot emits nothing.
    @inline(__always)
    func noteMerge(_ j: Int, into head: Int, in batch: borrowing PacketBatch) {
        if segmentCounts[head] == 1 {
            grownHeads[grownCount] = Int32(truncatingIfNeeded: head)
            grownCount &+= 1
        }
        segmentCounts[head] &+= 1
        merged[j] = Int32(truncatingIfNeeded: head)
        batch.setSide(.none, of: j)
    }

    /// Rewrites a grown head's lengths and checksum and marks it a super-packet.
    func finish(_ head: Int, in batch: borrowing PacketBatch) {
        let p = batch.packet(head)
        let ip = IPv4Header(unchecked: p.baseAddress!)
        ip.totalLength = UInt16(truncatingIfNeeded: p.count)
        ip.updateChecksum()
        let tcp = ip.protocolNumber == IPProtocolNumber.tcp
        if !tcp {
            p.baseAddress!.storeBytes(
                of: UInt16(truncatingIfNeeded: p.count &- 20).bigEndian, toByteOffset: 24, as: UInt16.self)
        }
        batch.setOffload(SegmentationOffload(kind: tcp ? .tcp : .udp, segmentSize: segmentSizes[head]), of: head)
    }

    @inline(__always)
    static func sameBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, from: Int, to: Int) -> Bool {
        var i = from
        while i &+ 4 <= to {
            if a.loadUnaligned(fromByteOffset: i, as: UInt32.self)
                != b.loadUnaligned(fromByteOffset: i, as: UInt32.self)
            {
                return false
            }
            i &+= 4
        }
        while i < to {
            if a[i] != b[i] { return false }
            i &+= 1
        }
        return true
    }
}

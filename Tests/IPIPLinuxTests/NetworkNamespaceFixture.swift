// Fixtures for the privileged tests built on the shared `NetworkNamespace` (IPIPTestSupport):
// two namespaces joined by a veth pair, and small socket helpers. Addresses are 10.250–10.254.x.y
// and exist only inside these namespaces.
import CIPIPLinux
import Foundation
import Glibc
import IPIPCore
import IPIPTestSupport

@testable import IPIPLinux

struct FixtureError: Error, CustomStringConvertible {
    var description: String
}

final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// Two namespaces joined by a veth pair `va` (10.S.0.1, MAC 02:00:00:00:S:01) — `vb`
/// (10.S.0.2, MAC …:02), with permanent neighbour entries so that no ARP delays the first
/// packets. In `a`, 10.S.0.3 also resolves to `vb`'s MAC, so packets to it reach `b`'s link
/// without being addressed to `b`.
struct TwoHosts {
    let a: NetworkNamespace
    let b: NetworkNamespace
    let subnet: UInt8

    var addressA: IPv4Address { IPv4Address(10, subnet, 0, 1) }
    var addressB: IPv4Address { IPv4Address(10, subnet, 0, 2) }
    var strangerOnB: IPv4Address { IPv4Address(10, subnet, 0, 3) }

    /// Creates the pair; deletes what it created if a step fails.
    init(subnet: UInt8, tag: String) throws {
        self.subnet = subnet
        a = try NetworkNamespace("\(tag)a")
        do { b = try NetworkNamespace("\(tag)b") } catch {
            a.delete()
            throw error
        }
        do {
            let hex = String(subnet, radix: 16)
            let macA = "02:00:00:00:\(hex):01"
            let macB = "02:00:00:00:\(hex):02"
            try a.ip(
                "link", "add", "va", "address", macA, "type", "veth", "peer", "name", "vb", "address", macB,
                "netns", b.name)
            try a.ip("addr", "add", "10.\(subnet).0.1/24", "dev", "va")
            try b.ip("addr", "add", "10.\(subnet).0.2/24", "dev", "vb")
            try a.ip("link", "set", "va", "up")
            try b.ip("link", "set", "vb", "up")
            try a.ip("neigh", "replace", "10.\(subnet).0.2", "lladdr", macB, "dev", "va", "nud", "permanent")
            try a.ip("neigh", "replace", "10.\(subnet).0.3", "lladdr", macB, "dev", "va", "nud", "permanent")
            try b.ip("neigh", "replace", "10.\(subnet).0.1", "lladdr", macA, "dev", "vb", "nud", "permanent")
        } catch {
            delete()
            throw error
        }
    }

    func delete() {
        a.delete()
        b.delete()
    }
}

// MARK: sockets

/// A plain UDP socket for the tests (blocking calls are bounded by poll timeouts).
final class UDPSocket: @unchecked Sendable {
    let fd: Int32

    init(bindingTo address: IPv4Address = .any, port: UInt16 = 0, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw FixtureError(description: "socket: errno \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(4))
        }
        var sin = sockaddr_in(address, port)
        let r = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard r == 0 else { throw FixtureError(description: "bind: errno \(errno)") }
    }

    deinit { close(fd) }

    var port: UInt16 {
        var sin = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return UInt16(bigEndian: sin.sin_port)
    }

    func send(_ bytes: [UInt8], to address: IPv4Address, port: UInt16) throws {
        var sin = sockaddr_in(address, port)
        let r = withUnsafePointer(to: &sin) { sa in
            sa.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes {
                    sendto(fd, $0.baseAddress, $0.count, 0, sa, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard r == bytes.count else { throw FixtureError(description: "sendto: errno \(errno)") }
    }

    /// The next datagram, or nil after `timeoutMilliseconds` without one.
    func receive(timeoutMilliseconds: Int32) -> [UInt8]? {
        receiveRaw(fd, timeoutMilliseconds: timeoutMilliseconds)
    }
}

/// Waits up to `timeoutMilliseconds` for one datagram on `fd` and returns it.
func receiveRaw(_ fd: Int32, timeoutMilliseconds: Int32) -> [UInt8]? {
    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&entry, 1, timeoutMilliseconds) > 0 else { return nil }
    var buffer = [UInt8](repeating: 0, count: 65536)
    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    return n >= 0 ? Array(buffer[0..<n]) : nil
}

/// Waits until `fd` is readable or the timeout passes.
func waitReadable(_ fd: Int32, timeoutMilliseconds: Int32) -> Bool {
    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&entry, 1, timeoutMilliseconds) > 0
}

extension sockaddr_in {
    init(_ address: IPv4Address, _ port: UInt16) {
        self.init()
        sin_family = sa_family_t(AF_INET)
        sin_port = port.bigEndian
        sin_addr.s_addr = address.rawValue.bigEndian
    }
}

// MARK: packets

/// An IPv4/UDP packet (UDP checksum 0: "none", valid for IPv4) with a correct header checksum.
func udpPacket(
    from source: IPv4Address, _ sourcePort: UInt16, to destination: IPv4Address, _ destinationPort: UInt16,
    payload: [UInt8]
) -> [UInt8] {
    ipv4(
        source: source, destination: destination, protocol: 17,
        payload: PacketBuilder.udp(
            source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
            payload: payload, checksum: false))
}

/// The IPv4 fields the tests look at.
struct ParsedIPv4 {
    var source: IPv4Address
    var destination: IPv4Address
    var proto: UInt8
    var headerLength: Int
    var bytes: [UInt8]

    init?(_ bytes: [UInt8]) {
        guard bytes.count >= 20, bytes[0] >> 4 == 4 else { return nil }
        func address(_ o: Int) -> IPv4Address { IPv4Address(bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]) }
        source = address(12)
        destination = address(16)
        proto = bytes[9]
        headerLength = Int(bytes[0] & 0x0f) * 4
        self.bytes = bytes
    }

    var payload: ArraySlice<UInt8> { bytes[headerLength...] }
    /// Destination port (TCP/UDP).
    var destinationPort: UInt16 { UInt16(bytes[headerLength + 2]) << 8 | UInt16(bytes[headerLength + 3]) }
    /// UDP payload.
    var udpPayload: ArraySlice<UInt8> { bytes[(headerLength + 8)...] }
}

extension PacketBatch {
    /// Copies `bytes` in as a new packet leaving on `side`.
    mutating func append(_ bytes: [UInt8], side: PacketSide) {
        let ok = bytes.withUnsafeBytes { append(copying: $0) }
        precondition(ok, "batch full")
        setSide(side, of: count - 1)
    }

    func bytes(_ i: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(packet(i))) }
}

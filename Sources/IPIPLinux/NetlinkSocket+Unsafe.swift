// The system calls of NetlinkSocket: errno is read right after each call,
// EINTR is retried, pointers never leave the closures that lend them.
import CIPIPLinux
import Glibc

extension NetlinkSocket {
    /// `socket` + options + `bind`, closing the descriptor again if a later step fails.
    static func openDescriptor(protocol netlinkProtocol: Int32, timeoutSeconds: Int) throws(NetlinkError) -> Int32 {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), netlinkProtocol)
        guard fd >= 0 else {
            throw NetlinkError(errno: errno, operation: "socket", detail: "AF_NETLINK protocol \(netlinkProtocol)")
        }
        do throws(NetlinkError) {
            // Best effort: without these (kernels before 4.12) errors just lose their reason text.
            _ = setOption(fd, level: SOL_NETLINK, name: NETLINK_EXT_ACK, value: Int32(1))
            _ = setOption(fd, level: SOL_NETLINK, name: NETLINK_CAP_ACK, value: Int32(1))
            let timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            if !setOption(fd, level: SOL_SOCKET, name: SO_RCVTIMEO, value: timeout) {
                throw NetlinkError(errno: errno, operation: "setsockopt", detail: "SO_RCVTIMEO")
            }
            var address = sockaddr_nl()
            address.nl_family = sa_family_t(AF_NETLINK)
            let r = withUnsafePointer(to: &address) { p in
                // Safe: sockaddr_nl is a sockaddr of family AF_NETLINK; the kernel reads `size` bytes.
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                }
            }
            if r != 0 { throw NetlinkError(errno: errno, operation: "bind", detail: "AF_NETLINK") }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        return fd
    }

    private static func setOption<T>(_ fd: Int32, level: Int32, name: Int32, value: T) -> Bool {
        withUnsafePointer(to: value) { p in
            setsockopt(fd, level, name, p, socklen_t(MemoryLayout<T>.size)) == 0
        }
    }

    static func closeDescriptor(_ fd: Int32) {
        // close is not retried on EINTR (the descriptor is gone either way on Linux).
        _ = close(fd)
    }

    /// Sends one datagram to the kernel (port 0).
    static func send(_ bytes: [UInt8], descriptor fd: Int32, operation: String) throws(NetlinkError) {
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        while true {
            let n = bytes.withUnsafeBytes { buffer in
                withUnsafePointer(to: &kernel) { p in
                    // Safe: as in bind; the buffer is lent for the duration of the call only.
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buffer.baseAddress, buffer.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                    }
                }
            }
            if n >= 0 {
                guard n == bytes.count else {
                    throw NetlinkError(
                        errno: EMSGSIZE, operation: "sendto", detail: "\(operation): sent \(n) of \(bytes.count) bytes")
                }
                return
            }
            let e = errno
            if e == EINTR { continue }
            throw NetlinkError(errno: e, operation: "sendto", detail: operation)
        }
    }

    /// Receives one datagram into `buffer`; returns its length.
    /// - Throws: `EAGAIN` after the receive timeout, `EMSGSIZE` when the datagram did not fit.
    static func receive(descriptor fd: Int32, into buffer: inout [UInt8], operation: String) throws(NetlinkError) -> Int
    {
        while true {
            // MSG_TRUNC: return the real datagram length, so truncation is detected.
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_TRUNC)) }
            if n >= 0 {
                guard n <= buffer.count else {
                    throw NetlinkError(
                        errno: EMSGSIZE, operation: "recv",
                        detail: "\(operation): \(n)-byte answer truncated to \(buffer.count)")
                }
                return n
            }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK {
                throw NetlinkError(
                    errno: e, operation: "recv", detail: "\(operation): no answer within \(receiveTimeoutSeconds) s")
            }
            throw NetlinkError(errno: e, operation: "recv", detail: operation)
        }
    }
}

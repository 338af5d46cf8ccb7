import Glibc

/// Kernel parameters under `/proc/sys`, by their `sysctl` names.
///
/// `net.ipv4.ip_forward` is `/proc/sys/net/ipv4/ip_forward`. As with `sysctl(8)`, a `/` inside a
/// name stands for a `.` inside a component, so a VLAN device is written
/// `net.ipv4.conf.eth0/100.rp_filter`. Values are read and written in the network namespace of
/// the calling thread.
public enum Sysctl {
    /// The `/proc/sys` path of a parameter.
    public static func path(of name: String) -> String {
        "/proc/sys/" + String(name.map { $0 == "." ? "/" : $0 == "/" ? "." : $0 })
    }

    /// The parameter's value without the trailing newline; nil when it does not exist or cannot be read.
    public static func read(_ name: String) -> String? {
        guard let fd = try? Syscall.open(path(of: name), flags: O_RDONLY | O_CLOEXEC) else { return nil }
        defer { Syscall.close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 256)
        while true {
            let result = chunk.withUnsafeMutableBytes { raw in
                Result { () throws(SystemCallError) in try Syscall.read(fd, raw.baseAddress!, raw.count) }
            }
            guard case .success(let outcome) = result else { return nil }
            guard case .processed(let n) = outcome, n > 0 else { break }
            data.append(contentsOf: chunk[0..<n])
        }
        while let last = data.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: " ") { data.removeLast() }
        return String(decoding: data, as: UTF8.self)
    }

    /// Sets the parameter.
    /// - Throws: `SystemCallError` from `open` (`ENOENT` for an unknown name, `EACCES`/`EPERM`
    ///   without privilege) or `write` (`EINVAL` for a value the kernel refuses).
    public static func write(_ name: String, _ value: String) throws(SystemCallError) {
        let path = path(of: name)
        let fd = try Syscall.open(path, flags: O_WRONLY | O_CLOEXEC)
        defer { Syscall.close(fd) }
        var bytes = Array((value + "\n").utf8)
        let result = bytes.withUnsafeMutableBytes { raw in
            Result { () throws(SystemCallError) in try Syscall.write(fd, raw.baseAddress!, raw.count) }
        }
        switch result {
        case .success(.processed): return
        case .success(.wouldBlock): throw SystemCallError(errno: EAGAIN, call: "write", detail: path)
        case .failure(let error): throw SystemCallError(errno: error.errno, call: "write", detail: path)
        }
    }
}

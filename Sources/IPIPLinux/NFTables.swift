import Glibc
import IPIPCore

/// Why an `NFTables` operation failed.
public enum NFTablesError: Error, CustomStringConvertible, Equatable {
    /// A table or device name that cannot be put in a ruleset (quotes, spaces, too long, …).
    case invalidName(String)
    /// Spawning `nft` or talking to it failed.
    case systemCall(SystemCallError)
    /// `nft` ran and exited non-zero; `message` is its standard error.
    case commandFailed(status: Int32, message: String)

    public var description: String {
        switch self {
        case .invalidName(let name): "invalid nftables name '\(name)'"
        case .systemCall(let error): "nft: \(error)"
        case .commandFailed(let status, let message): "nft exited with status \(status): \(message)"
        }
    }
}

/// The nftables half of taking the dataplane's packets away from the host stack (docs/decisions.md, "Live mode").
///
/// `UplinkCapture` gets a copy of each packet the dataplane handles; the host would still
/// answer it (TCP RST to a NAT port it has no socket for, ICMP port or protocol unreachable for
/// IP-in-IP without the ipip module). A `netdev` table with an `ingress` chain on the uplink,
/// at priority -500, drops those packets before the host stack sees them; `AF_PACKET` taps run
/// before the netdev ingress hook, so the capture still receives them. ICMP errors are not
/// dropped: the host needs its own (path MTU, unreachable reports), and the capture has a copy.
///
/// The generated ruleset (for table `ipipd`, uplink `eth0`, node 10.0.0.1, ports 32768–65535):
/// ```
/// add table netdev ipipd
/// delete table netdev ipipd
/// table netdev ipipd {
///     chain ingress {
///         type filter hook ingress device "eth0" priority -500; policy accept;
///         ip daddr 10.0.0.1 ip protocol 4 drop
///         ip daddr 10.0.0.1 ip protocol tcp tcp dport 32768-65535 drop
///         ip daddr 10.0.0.1 ip protocol udp udp dport 32768-65535 drop
///         ip daddr 10.0.0.1 icmp type echo-reply icmp id 32768-65535 drop
///     }
/// }
/// ```
/// `nft -f` applies a file as one transaction, so the replacement is atomic: `add` makes the
/// `delete` succeed whether or not the table existed, and no packet sees a state without rules.
/// Transport-header matches never match non-first fragments (nftables does not load a transport
/// header at a non-zero fragment offset), exactly as the capture filter rejects them.
///
/// Runs `/usr/sbin/nft -f -` through `posix_spawn`, the ruleset on its standard input. Control
/// plane only: never call it from a packet loop.
public enum NFTables {
    /// Where `nft` lives on Debian.
    public static let defaultExecutable = "/usr/sbin/nft"

    /// The ruleset `apply` loads; see the type's documentation.
    /// - Throws: `NFTablesError.invalidName` for a table or device name that is not a plain
    ///   identifier (letters, digits, `_`, `-`, `.`, at most 15 bytes for a device).
    public static func ruleset(
        table: String, uplink: String, nodeAddress: IPv4Address,
        natPortRange: ClosedRange<UInt16>
    ) throws(NFTablesError) -> String {
        try validate(table, maximumLength: 64)
        try validate(uplink, maximumLength: 15)
        let ports =
            natPortRange.lowerBound == natPortRange.upperBound
            ? "\(natPortRange.lowerBound)" : "\(natPortRange.lowerBound)-\(natPortRange.upperBound)"
        let node = nodeAddress.description
        return """
            add table netdev \(table)
            delete table netdev \(table)
            table netdev \(table) {
                chain ingress {
                    type filter hook ingress device "\(uplink)" priority -500; policy accept;
                    ip daddr \(node) ip protocol 4 drop
                    ip daddr \(node) ip protocol tcp tcp dport \(ports) drop
                    ip daddr \(node) ip protocol udp udp dport \(ports) drop
                    ip daddr \(node) icmp type echo-reply icmp id \(ports) drop
                }
            }

            """
    }

    /// Creates or atomically replaces `table netdev <table>` (see the type's documentation).
    /// - Parameters:
    ///   - table: the table's name (default `ipipd`).
    ///   - uplink: the device whose ingress is filtered.
    ///   - nodeAddress: the node IP the dataplane receives on.
    ///   - natPortRange: the SNAT port range (also ICMP echo identifiers).
    ///   - executable: the `nft` binary.
    /// - Throws: `NFTablesError`.
    public static func apply(
        table: String = "ipipd", uplink: String, nodeAddress: IPv4Address,
        natPortRange: ClosedRange<UInt16>,
        executable: String = defaultExecutable
    ) throws(NFTablesError) {
        let text = try ruleset(table: table, uplink: uplink, nodeAddress: nodeAddress, natPortRange: natPortRange)
        _ = try run(executable, ["-f", "-"], input: text)
    }

    /// Deletes `table netdev <table>`; an absent table is not an error.
    /// - Throws: `NFTablesError`.
    public static func remove(table: String = "ipipd", executable: String = defaultExecutable) throws(NFTablesError) {
        try validate(table, maximumLength: 64)
        _ = try run(executable, ["-f", "-"], input: "add table netdev \(table)\ndelete table netdev \(table)\n")
    }

    /// Whether `table netdev <table>` exists.
    /// - Throws: `NFTablesError` when `nft` cannot be run or fails.
    public static func exists(
        table: String = "ipipd", executable: String = defaultExecutable
    ) throws(NFTablesError)
        -> Bool
    {
        try validate(table, maximumLength: 64)
        let output = try run(executable, ["list", "tables", "netdev"], input: "")
        return output.split(separator: "\n").contains { $0.trimmingSpaces == "table netdev \(table)" }
    }

    /// The current ruleset of `table netdev <table>` as `nft list table` prints it.
    /// - Throws: `NFTablesError` (`commandFailed` when the table does not exist).
    public static func list(
        table: String = "ipipd", executable: String = defaultExecutable
    ) throws(NFTablesError)
        -> String
    {
        try validate(table, maximumLength: 64)
        return try run(executable, ["list", "table", "netdev", table], input: "")
    }

    private static func validate(_ name: String, maximumLength: Int) throws(NFTablesError) {
        let allowed = name.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_")
                || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
        }
        guard allowed, !name.isEmpty, name.utf8.count <= maximumLength else { throw .invalidName(name) }
    }

    /// Runs `executable arguments…` with `input` on standard input; returns standard output.
    static func run(_ executable: String, _ arguments: [String], input: String) throws(NFTablesError) -> String {
        do {
            let result = try Subprocess.run(executable, arguments: arguments, input: input)
            guard result.status == 0 else {
                throw NFTablesError.commandFailed(status: result.status, message: result.standardError)
            }
            return result.standardOutput
        } catch let error as NFTablesError {
            throw error
        } catch let error as SystemCallError {
            throw .systemCall(error)
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }
}

/// A child process with its standard streams on pipes (control plane only).
enum Subprocess {
    /// Runs the program to completion. Input must fit the pipe buffer (64 KiB) unless the
    /// child reads as it goes; output is read after the input is written.
    static func run(
        _ executable: String, arguments: [String], input: String
    ) throws(SystemCallError)
        -> (status: Int32, standardOutput: String, standardError: String)
    {
        let stdin = try Syscall.pipe()
        let stdout: (read: Int32, write: Int32)
        let stderr: (read: Int32, write: Int32)
        do { stdout = try Syscall.pipe() } catch {
            Syscall.close(stdin.read)
            Syscall.close(stdin.write)
            throw error
        }
        do { stderr = try Syscall.pipe() } catch {
            for fd in [stdin.read, stdin.write, stdout.read, stdout.write] { Syscall.close(fd) }
            throw error
        }
        let pid: pid_t
        do {
            pid = try Syscall.spawn(
                executable, arguments: [executable] + arguments, standardInput: stdin.read,
                standardOutput: stdout.write, standardError: stderr.write)
        } catch {
            for fd in [stdin.read, stdin.write, stdout.read, stdout.write, stderr.read, stderr.write] {
                Syscall.close(fd)
            }
            throw error
        }
        Syscall.close(stdin.read)
        Syscall.close(stdout.write)
        Syscall.close(stderr.write)
        var bytes = Array(input.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeMutableBytes { raw in
                Result { () throws(SystemCallError) in
                    try Syscall.write(stdin.write, raw.baseAddress! + written, raw.count - written)
                }
            }
            guard case .success(.processed(let n)) = result, n > 0 else { break }  // the child closed its input
            written += n
        }
        Syscall.close(stdin.write)
        let output = readAll(stdout.read)
        let errors = readAll(stderr.read)
        Syscall.close(stdout.read)
        Syscall.close(stderr.read)
        let status = try Syscall.wait(pid)
        return (status, output, errors)
    }

    private static func readAll(_ fd: Int32) -> String {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let result = chunk.withUnsafeMutableBytes { raw in
                Result { () throws(SystemCallError) in try Syscall.read(fd, raw.baseAddress!, raw.count) }
            }
            guard case .success(.processed(let n)) = result, n > 0 else { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: data, as: UTF8.self)
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The secret behind SNAT's port choice, kept in a file so that a restarted ipipd gives each
/// workload endpoint the external port it had (`NATTable`'s hash-based port choice), and the
/// natOutgoing flows of the process before carry on. The file lives in /run (tmpfs): a reboot
/// makes a new one, as it ends every flow anyway.
///
/// Format: 16 hexadecimal digits and a newline, mode 0600. Created once, atomically, by whichever
/// ipipd finds it missing first (written to a private temporary name, then hard-linked into place,
/// so two daemons starting at once agree on one secret).
public enum NATSecretFile {
    /// Where `ipipd run` keeps it unless told otherwise (`--nat-secret-file`).
    public static let defaultPath = "/run/ipipd/nat-secret"

    /// The secret in `path`, creating the file (and its directory, mode 0700) with `fresh` when it
    /// does not exist. Returns the secret and whether this call created the file.
    /// - Throws: `DaemonError` naming the file when it cannot be read or created, or holds
    ///   anything but 16 hexadecimal digits.
    public static func load(path: String, fresh: UInt64) throws -> (secret: UInt64, created: Bool) {
        if let existing = try read(path) { return (existing, false) }
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DaemonError("NAT secret \(path): cannot create \(directory): \(error.localizedDescription)")
        }
        let temporary = "\(path).\(getpid()).tmp"
        let text = String(fresh, radix: 16).leftPadded(to: 16) + "\n"
        guard
            FileManager.default.createFile(
                atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw DaemonError("NAT secret \(path): cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        defer { unlink(temporary) }
        if link(temporary, path) == 0 { return (fresh, true) }
        let e = errno
        guard e == EEXIST, let raced = try read(path) else {
            throw DaemonError("NAT secret \(path): cannot create it: \(String(cString: strerror(e)))")
        }
        return (raced, false)
    }

    /// The secret in `path`, nil when there is no such file.
    static func read(_ path: String) throws -> UInt64? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DaemonError("NAT secret \(path): cannot read it")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.utf8.count == 16, let value = UInt64(text, radix: 16) else {
            throw DaemonError(
                "NAT secret \(path): expected 16 hexadecimal digits, found \(data.count) bytes (remove the file to make a new one)"
            )
        }
        return value
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

import Foundation
import IPIPTestSupport
import Testing

@testable import IPIPDataplane

@Suite("NAT secret file")
struct NATSecretFileTests {
    func temporaryPath() throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nat-secret-\(UUID().uuidString)")
        return (directory, directory.appendingPathComponent("run/ipipd/nat-secret").path)
    }

    @Test("created once with mode 0600 in a new directory, then read back by every later start")
    func createdThenKept() throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try NATSecretFile.load(path: path, fresh: 0x0123_4567_89AB_CDEF)
        #expect(first.secret == 0x0123_4567_89AB_CDEF && first.created)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "0123456789abcdef\n")
        let again = try NATSecretFile.load(path: path, fresh: 42)
        #expect(again.secret == 0x0123_4567_89AB_CDEF && !again.created, "a restart must keep the secret")
        let leftovers = try FileManager.default.contentsOfDirectory(
            atPath: (path as NSString).deletingLastPathComponent)
        #expect(leftovers == ["nat-secret"], "temporary files are removed: \(leftovers)")
    }

    @Test("a file that is not 16 hexadecimal digits is an error naming it")
    func malformed() throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "not a secret\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect {
            _ = try NATSecretFile.load(path: path, fresh: 1)
        } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("16 hexadecimal digits")
        }
    }

    @Test("a directory that cannot be made is an error naming the file")
    func unwritable() throws {
        let (directory, _) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let blocker = directory.appendingPathComponent("file")
        try "x".write(to: blocker, atomically: true, encoding: .utf8)
        let path = blocker.appendingPathComponent("nat-secret").path
        #expect {
            _ = try NATSecretFile.load(path: path, fresh: 1)
        } throws: { error in
            "\(error)".contains(path)
        }
    }

    @Test("the systemd unit keeps the secret's directory across restarts (RuntimeDirectory, preserved)")
    func unitRuntimeDirectory() throws {
        let unit = try String(
            contentsOf: ExampleCluster.repositoryRoot.appendingPathComponent("deploy/ipipd.service"), encoding: .utf8)
        let lines = unit.split(separator: "\n").map(String.init)
        let runtime = lines.filter { $0.hasPrefix("RuntimeDirectory=") }.map { "/run/" + $0.dropFirst(17) }
        let directory = (NATSecretFile.defaultPath as NSString).deletingLastPathComponent
        #expect(runtime.contains(directory), "unit: \(runtime), secret: \(NATSecretFile.defaultPath)")
        // Without it systemd removes the directory, and the secret, whenever the service stops.
        #expect(lines.contains("RuntimeDirectoryPreserve=yes"))
    }
}

import Foundation
import IPIPDatastore
import IPIPTestSupport
import Testing

/// The filesystem sandbox of a systemd unit, read from the unit file, rebuilt with `unshare --mount`
/// the way systemd's namespace setup builds it, so that a test can run a command of the unit inside
/// it without systemd as PID 1 (docs/decisions.md, "Datastore: the systemd unit's sandbox").
///
/// Emulated: `ProtectSystem=` (yes/true, full, strict), `ProtectHome=` (yes/true, read-only, tmpfs),
/// `PrivateTmp=`, `ReadWritePaths=`, `ReadOnlyPaths=`, `InaccessiblePaths=` (a leading `-` makes a
/// missing path harmless, as in systemd), `StateDirectory=` with `StateDirectoryMode=`,
/// `RuntimeDirectory=` with `RuntimeDirectoryMode=` (a private tmpfs at /run/NAME, so the host's
/// /run/NAME is neither read nor written; `RuntimeDirectoryPreserve=` matters only between runs),
/// `CapabilityBoundingSet=` and `NoNewPrivileges=` (through `setpriv`), `Environment=`, and
/// `ExecStart=`'s `${VAR}` / `$VAR` expansion. A unit with any other setting that changes the
/// filesystem or the user the service sees is refused (`unsupported`), so the emulation cannot
/// silently fall behind the unit.
struct UnitSandbox {
    /// `[Service]` settings in order (a key may repeat).
    var settings: [(key: String, value: String)] = []

    /// Settings that change what the service sees of the filesystem, or who it runs as, and that
    /// this emulation does not rebuild.
    static let notEmulated: Set<String> = [
        "User", "Group", "DynamicUser", "RootDirectory", "RootImage", "PrivateDevices", "PrivateMounts",
        "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "ProtectKernelTunables", "ProtectControlGroups",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectProc", "ProcSubset",
        "CacheDirectory", "LogsDirectory", "ConfigurationDirectory", "MountFlags", "ReadWriteDirectories",
        "ReadOnlyDirectories", "InaccessibleDirectories", "ExecPaths", "NoExecPaths", "WorkingDirectory",
        "MountAPIVFS", "PrivateUsers",
    ]

    init(unit text: String) {
        var inService = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasPrefix("[") {
                inService = line == "[Service]"
                continue
            }
            guard inService, let eq = line.firstIndex(of: "=") else { continue }
            settings.append((String(line[..<eq]), String(line[line.index(after: eq)...])))
        }
    }

    func values(_ key: String) -> [String] { settings.filter { $0.key == key }.map(\.value) }
    func last(_ key: String) -> String? { values(key).last }
    /// Space-separated lists, every occurrence (an empty assignment resets, as in systemd).
    func list(_ key: String) -> [String] {
        var items: [String] = []
        for value in values(key) {
            if value.isEmpty { items = [] } else { items += value.split(separator: " ").map(String.init) }
        }
        return items
    }
    static func yes(_ value: String?) -> Bool { ["yes", "true", "1", "on"].contains(value?.lowercased() ?? "") }

    /// Settings present that the emulation does not rebuild.
    var unsupported: [String] { settings.map(\.key).filter { Self.notEmulated.contains($0) } }

    /// The paths `ProtectSystem=` makes read-only.
    var readOnlyRoots: [String] {
        switch last("ProtectSystem")?.lowercased() {
        case "strict": ["/"]
        case "full": ["/usr", "/boot", "/efi", "/etc"]
        case let v where Self.yes(v): ["/usr", "/boot", "/efi"]
        default: []
        }
    }

    /// The shell commands that build the sandbox in a fresh mount namespace, with `varLib` (a
    /// directory of the test) standing in for the host's /var/lib, so that nothing of the real
    /// /var/lib is read or written.
    func setupScript(varLib: String, mounts: [(point: String, type: String)]) -> [String] {
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        var lines = ["set -eu", "mount --make-rprivate /", "mount --bind \(q(varLib)) /var/lib"]
        // RuntimeDirectory=: its mount point must exist before / turns read-only.
        for name in list("RuntimeDirectory") { lines.append("mkdir -p \(q("/run/" + name))") }
        // ProtectSystem=: every mount at or below each root read-only, the API file systems excepted.
        let api = ["/proc", "/sys", "/dev"]
        func below(_ path: String, _ root: String) -> Bool {
            root == "/" || path == root || path.hasPrefix(root + "/")
        }
        // The host's mounts (name spaces' nsfs files aside, and those under /var/lib, which the
        // test's directory now hides), and the /var/lib bind itself.
        var points =
            mounts.filter { $0.type != "nsfs" && !($0.point == "/var/lib" || $0.point.hasPrefix("/var/lib/")) }
            .map(\.point) + ["/var/lib"]
        for root in readOnlyRoots where FileManager.default.fileExists(atPath: root) {
            if !points.contains(root) {
                lines.append("mount --bind \(q(root)) \(q(root))")
                points.append(root)
            }
            for point in points where below(point, root) && !api.contains(where: { below(point, $0) && $0 != "/" }) {
                lines.append("mount -o remount,bind,ro \(q(point))")
            }
        }
        // ProtectHome=.
        let homes = ["/home", "/root", "/run/user"].filter { FileManager.default.fileExists(atPath: $0) }
        switch last("ProtectHome")?.lowercased() {
        case "read-only":
            for h in homes { lines += ["mount --bind \(q(h)) \(q(h))", "mount -o remount,bind,ro \(q(h))"] }
        case "tmpfs": for h in homes { lines.append("mount -t tmpfs -o ro,mode=0755 tmpfs \(q(h))") }
        case let v where Self.yes(v): for h in homes { lines.append("mount -t tmpfs -o ro,mode=0000 tmpfs \(q(h))") }
        default: break
        }
        // ReadOnlyPaths=, InaccessiblePaths=, ReadWritePaths= (a leading '-': a missing path is fine).
        func paths(_ key: String) -> [(path: String, optional: Bool)] {
            list(key).map { $0.hasPrefix("-") ? (String($0.dropFirst()), true) : ($0, false) }
        }
        for (path, optional) in paths("ReadOnlyPaths") {
            lines.append(
                (optional ? "[ ! -e \(q(path)) ] || " : "")
                    + "{ mount --bind \(q(path)) \(q(path)) && mount -o remount,bind,ro \(q(path)); }")
        }
        for (path, optional) in paths("InaccessiblePaths") {
            lines.append(
                (optional ? "[ ! -e \(q(path)) ] || " : "") + "mount -t tmpfs -o ro,mode=0000 tmpfs \(q(path))")
        }
        var writable = paths("ReadWritePaths")
        // StateDirectory=: /var/lib/NAME, created by systemd before the namespace, always writable.
        for name in list("StateDirectory") { writable.append(("/var/lib/" + name, false)) }
        for (path, optional) in writable {
            lines.append(
                (optional ? "[ ! -e \(q(path)) ] || " : "")
                    + "{ mount --bind \(q(path)) \(q(path)) && mount -o remount,bind,rw \(q(path)); }")
        }
        // RuntimeDirectory=: /run/NAME, created by systemd with its mode, always writable.
        let runtimeMode = last("RuntimeDirectoryMode") ?? "0755"
        for name in list("RuntimeDirectory") {
            lines.append("mount -t tmpfs -o mode=\(runtimeMode) tmpfs \(q("/run/" + name))")
        }
        if Self.yes(last("PrivateTmp")) {
            lines += ["mount -t tmpfs -o mode=1777 tmpfs /tmp", "mount -t tmpfs -o mode=1777 tmpfs /var/tmp"]
        }
        return lines
    }

    /// `setpriv` arguments for `CapabilityBoundingSet=` and `NoNewPrivileges=`.
    var privileges: [String] {
        var args: [String] = []
        let caps = list("CapabilityBoundingSet")
        if !caps.isEmpty {
            let names = caps.map { $0.lowercased().replacingOccurrences(of: "cap_", with: "+") }
            args += ["--bounding-set", (["-all"] + names).joined(separator: ",")]
        }
        if Self.yes(last("NoNewPrivileges")) { args.append("--no-new-privs") }
        return args
    }

    /// `ExecStart=` with the program replaced and `${VAR}` (one word) and `$VAR` (split at spaces)
    /// expanded from the unit's `Environment=` overridden by `environment` (the EnvironmentFile).
    func execStart(program: String, environment: [String: String]) -> [String] {
        var env: [String: String] = [:]
        for assignment in values("Environment") {
            var text = assignment
            if text.hasPrefix("\""), text.hasSuffix("\"") { text = String(text.dropFirst().dropLast()) }
            if let eq = text.firstIndex(of: "=") { env[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
        }
        env.merge(environment) { $1 }
        let words = (last("ExecStart") ?? "").split(separator: " ").map(String.init)
        var argv: [String] = []
        for (index, word) in words.enumerated() {
            if index == 0 {
                argv.append(program)
            } else if word.hasPrefix("${"), word.hasSuffix("}") {
                argv.append(env[String(word.dropFirst(2).dropLast())] ?? "")
            } else if word.hasPrefix("$") {
                argv += (env[String(word.dropFirst())] ?? "").split(separator: " ").map(String.init)
            } else {
                argv.append(word)
            }
        }
        return argv
    }

    /// Mount points of this process's namespace (`/proc/self/mountinfo`, escapes decoded).
    static func currentMounts() throws -> [(point: String, type: String)] {
        let text = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count > 5, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
            var point = fields[4]
            for (code, char) in [("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")] {
                point = point.replacingOccurrences(of: code, with: char)
            }
            return (point, fields[dash + 1])
        }
    }

    /// Runs `ExecStart=` (with `extra` arguments) inside the sandbox; `varLib` stands in for /var/lib.
    func run(
        program: String, environment: [String: String], extra: [String], varLib: String
    ) throws -> ProcessResult {
        try run(argv: execStart(program: program, environment: environment) + extra, varLib: varLib)
    }

    /// Runs `argv` inside the sandbox (after systemd's pre-namespace steps: the state directories).
    func run(argv: [String], varLib: String) throws -> ProcessResult {
        // What systemd does before the namespace: create the state directories with their mode.
        let mode = last("StateDirectoryMode").flatMap { Int($0, radix: 8) } ?? 0o755
        for name in list("StateDirectory") {
            let path = varLib + "/" + name
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        }
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let script =
            (setupScript(varLib: varLib, mounts: try Self.currentMounts())
            + ["exec setpriv " + (privileges + ["--"] + argv).map(q).joined(separator: " ")]).joined(separator: "\n")
        return try Processes.run(
            "/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script], timeout: 60,
            removing: inheritedDatastoreVariables)
    }
}

@Suite("Datastore: the systemd unit's sandbox lets ipipd open its store", .serialized, .needsRoot)
struct SystemdSandboxTests {
    static func unit() throws -> String {
        try String(
            contentsOf: ExampleCluster.repositoryRoot.appendingPathComponent("deploy/ipipd.service"), encoding: .utf8)
    }

    /// `ipipd run --check` (open, load, compile, exit) as the unit starts it with
    /// `IPIPD_SOURCE=--datastore sqlite` in /etc/default/ipipd: root's default store
    /// /var/lib/ipipd/datastore.sqlite, which an admin filled with `ipipctl apply` beforehand.
    static func check(unit text: String, filled: Bool = true) throws -> (ProcessResult, TempDir) {
        let ipipd = try #require(builtProgram("ipipd"), "build ipipd first (swift build)")
        let ctl = try #require(builtProgram("ipipctl"), "build ipipctl first (swift build)")
        let sandbox = UnitSandbox(unit: text)
        #expect(sandbox.unsupported.isEmpty, "the emulation does not rebuild \(sandbox.unsupported): extend it")
        let dir = TempDir()
        let varLib = dir.file("var-lib")
        if filled {
            let applied = try runProcess(
                ctl,
                [
                    "apply", "-f", ExampleCluster.manifestsURL.path, "--datastore",
                    "sqlite:\(varLib)/ipipd/datastore.sqlite",
                ])
            #expect(applied.status == 0, "\(applied.stderr)")
        }
        // PrivateTmp= covers /tmp, where the checkout and this build may live (a CI clone): the
        // binary under test goes into the stand-in /var/lib, bound before /tmp is covered, and
        // ExecStart= runs it from there.
        let installed = varLib + "/.under-test"
        try FileManager.default.createDirectory(atPath: installed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: ipipd, toPath: installed + "/ipipd")
        let result = try sandbox.run(
            program: "/var/lib/.under-test/ipipd",
            environment: ["IPIPD_NODE": "node-a", "IPIPD_SOURCE": "--datastore sqlite"],
            extra: ["--check"], varLib: varLib)
        return (result, dir)
    }

    @Test(
        "deploy/ipipd.service: ipipd run --datastore sqlite opens /var/lib/ipipd/datastore.sqlite in the unit's sandbox"
    )
    func unitOpensStore() throws {
        let (r, dir) = try Self.check(unit: Self.unit())
        defer { dir.cleanup() }
        #expect(r.status == 0 && !r.crashedOrHung, "\(r.stderr)")
        #expect(r.stdout.contains("datastore sqlite /var/lib/ipipd/datastore.sqlite: node node-a"), "\(r.stdout)")
    }

    @Test("deploy/ipipd.service: with an empty state directory, ipipd creates the store there")
    func unitCreatesStore() throws {
        let (r, dir) = try Self.check(unit: Self.unit(), filled: false)
        defer { dir.cleanup() }
        // The store opened (created, its tables written); what is missing is the cluster.
        #expect(r.status == 1 && !r.crashedOrHung, "\(r.stderr)")
        #expect(r.stderr.contains("node 'node-a' is not defined"), "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.file("var-lib/ipipd/datastore.sqlite")))
    }

    @Test("the same unit without StateDirectory=: the store is refused read-only, with its path")
    func withoutStateDirectory() throws {
        let text = try Self.unit().split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("StateDirectory") }.joined(separator: "\n")
        #expect(!text.contains("\nStateDirectory="))
        let (r, dir) = try Self.check(unit: text)
        defer { dir.cleanup() }
        #expect(r.status == 1 && !r.crashedOrHung, "\(r.status) \(r.stderr)")
        #expect(r.stderr.contains("/var/lib/ipipd/datastore.sqlite"), "\(r.stderr)")
    }

    @Test("the sandbox is what the unit says: the system is read-only, the state directory is not")
    func sandboxShape() throws {
        let sandbox = UnitSandbox(unit: try Self.unit())
        #expect(sandbox.readOnlyRoots == ["/"])
        let dir = TempDir()
        defer { dir.cleanup() }
        let script = [
            "for p in /usr /etc /var/lib /work /run; do if touch \"$p/.ipdst-probe\" 2>/dev/null; then rm -f \"$p/.ipdst-probe\"; echo \"$p writable\"; else echo \"$p read-only\"; fi; done",
            "touch /var/lib/ipipd/probe && echo 'state writable'",
            "touch /run/ipipd/probe && echo 'runtime writable'",
            "touch /tmp/probe && echo 'tmp writable'",
        ].joined(separator: "; ")
        try FileManager.default.createDirectory(atPath: dir.file("var-lib"), withIntermediateDirectories: true)
        let r = try sandbox.run(argv: ["/bin/sh", "-c", script], varLib: dir.file("var-lib"))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(
            r.stdout
                == "/usr read-only\n/etc read-only\n/var/lib read-only\n/work read-only\n/run read-only\n"
                + "state writable\nruntime writable\ntmp writable\n",
            "\(r.stdout)\(r.stderr)")
        // The private /tmp went away with the namespace; the state directory is the test's.
        #expect(FileManager.default.fileExists(atPath: dir.file("var-lib/ipipd/probe")))
    }
}

import Foundation

/// What a finished child process left.
public struct ProcessResult: Sendable {
    public var stdout: String
    public var stderr: String
    public var status: Int32
    /// Whether the process ended on a signal (`status` is then the signal number).
    public var signaled = false
    /// Whether `wait(timeout:)` had to kill it.
    public var timedOut = false

    /// A crash or a hang: killed by a signal, an exit status of 128 or more (a shell's way of
    /// reporting a signal), Swift's "Fatal error" trap message, or the timeout.
    public var crashedOrHung: Bool {
        signaled || timedOut || status >= 128 || stderr.contains("Fatal error") || stdout.contains("Fatal error")
    }
}

/// A started child process; `wait()` collects its output.
public final class RunningProcess: @unchecked Sendable {
    public let process: Process
    let out: Pipe
    let err: Pipe

    init(process: Process, out: Pipe, err: Pipe) {
        self.process = process
        self.out = out
        self.err = err
    }

    /// Waits at most `timeout` seconds, then kills the process (SIGKILL) and reports `timedOut`.
    public func wait(timeout: Double) -> ProcessResult {
        let finished = DispatchSemaphore(value: 0)
        let killed = Mutex<Bool>()
        killed.set(false)
        let pid = process.processIdentifier
        DispatchQueue.global().async {
            if finished.wait(timeout: .now() + timeout) == .timedOut {
                killed.set(true)
                kill(pid, SIGKILL)
            }
        }
        var result = wait()
        finished.signal()
        result.timedOut = killed.get()
        return result
    }

    /// Waits for the process to exit; both streams are drained concurrently, so a child that
    /// fills one pipe while we read the other cannot deadlock.
    public func wait() -> ProcessResult {
        let errorData = Mutex<Data>()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { [err] in
            errorData.set(err.fileHandleForReading.readDataToEndOfFile())
        }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return ProcessResult(
            stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: errorData.get(), as: UTF8.self),
            status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal)
    }

    /// A lock-protected box (Foundation-only, so the module needs no Synchronization import).
    final class Mutex<T>: @unchecked Sendable {
        private var value: T?
        private let lock = NSLock()
        init() {}
        func set(_ v: T) { lock.withLock { value = v } }
        func get() -> T { lock.withLock { value! } }
    }
}

/// The tests' one way to run a program: find it, start it, feed it, collect what it wrote.
public enum Processes {
    /// The path of `name` on `PATH` (then /usr/sbin, /usr/bin, /sbin, /bin), or nil.
    public static func find(_ name: String) -> String? {
        let directories =
            (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts `path` with `arguments`; `stdin` is written and closed; `environment` is added to
    /// this process's environment after the variables in `removing` are taken out.
    public static func start(
        _ path: String, _ arguments: [String], stdin: String? = nil,
        environment: [String: String] = [:], removing: [String] = []
    ) throws -> RunningProcess {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for name in removing { env[name] = nil }
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        return RunningProcess(process: p, out: out, err: err)
    }

    /// Runs `path` to completion, killing it after `timeout` seconds (see `start`, `wait(timeout:)`).
    public static func run(
        _ path: String, _ arguments: [String], timeout: Double, stdin: String? = nil,
        environment: [String: String] = [:], removing: [String] = []
    ) throws -> ProcessResult {
        try start(path, arguments, stdin: stdin, environment: environment, removing: removing).wait(timeout: timeout)
    }

    /// Runs `path` to completion (see `start`).
    public static func run(
        _ path: String, _ arguments: [String], stdin: String? = nil,
        environment: [String: String] = [:], removing: [String] = []
    ) throws -> ProcessResult {
        try start(path, arguments, stdin: stdin, environment: environment, removing: removing).wait()
    }
}

import Glibc

/// The allocation counter (`libIPIPMallocCounter.so`, the CMallocCounter target) as seen from a
/// process that may have it preloaded.
///
/// The counter interposes malloc and its kin, which no production process should carry, so no
/// executable links it. `ipipd bench` instead re-executes itself once with the library in
/// `LD_PRELOAD` (found next to the executable, as SwiftPM builds it) and then reads the counter
/// through `dlsym`. Without the library, bench runs and says that allocations were not counted.
public enum AllocationCounter {
    /// The library's file name, as SwiftPM names the dynamic product.
    public static let libraryName = "libIPIPMallocCounter.so"
    /// Set in the re-executed process, so that a failed preload cannot loop.
    static let markerVariable = "IPIPD_ALLOCATION_COUNTER_PRELOADED"

    typealias CountFunction = @convention(c) () -> UInt64
    typealias ProbeFunction = @convention(c) () -> Int32

    /// A reader of the process-wide count, when the counter is loaded and sees allocations made
    /// inside other libraries (its own probe); nil otherwise.
    public static func reader() -> (() -> UInt64)? {
        guard let handle = dlopen(nil, RTLD_NOW) else { return nil }
        defer { dlclose(handle) }
        guard let count = dlsym(handle, "ipip_malloc_count"), let probe = dlsym(handle, "ipip_malloc_counting") else {
            return nil
        }
        let countFunction = unsafeBitCast(count, to: CountFunction.self)
        guard unsafeBitCast(probe, to: ProbeFunction.self)() != 0 else { return nil }
        return { countFunction() }
    }

    /// Re-executes this program with the counter preloaded, when it is not loaded yet, the
    /// library stands next to the executable, and this is not already the re-executed copy.
    /// Returns (with the reason) only when it did not re-execute.
    public static func reexecutePreloaded() -> String {
        if reader() != nil { return "loaded" }
        if getenv(markerVariable) != nil { return "\(libraryName) was preloaded but does not count" }
        guard let executable = executablePath() else { return "cannot read /proc/self/exe" }
        let directory = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(
            separator: "/")
        let library = directory + "/" + libraryName
        guard access(library, R_OK) == 0 else { return "no \(library)" }
        let previous = getenv("LD_PRELOAD").map { String(cString: $0) } ?? ""
        setenv("LD_PRELOAD", previous.isEmpty ? library : library + ":" + previous, 1)
        setenv(markerVariable, "1", 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv(executable, arguments)
        let reason = "execv \(executable): \(String(cString: strerror(errno)))"
        unsetenv(markerVariable)
        if previous.isEmpty { unsetenv("LD_PRELOAD") } else { setenv("LD_PRELOAD", previous, 1) }
        for a in arguments { free(a) }
        return reason
    }

    static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

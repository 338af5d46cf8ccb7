import Glibc

/// The signals a daemon takes synchronously (SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2): blocked in every
/// thread, then collected with `sigtimedwait` by the one thread that acts on them, so no thread is
/// ever interrupted mid-change.
public enum ControlSignals {
    /// The signal numbers, in the order `wait` reports them.
    public static let numbers: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]

    static func set() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for n in numbers { sigaddset(&set, n) }
        return set
    }

    /// Blocks the control signals in the calling thread and every thread it creates afterwards.
    /// Call it first thing in `main`, before any thread exists.
    public static func block() {
        var s = set()
        pthread_sigmask(SIG_BLOCK, &s, nil)
    }

    /// Waits up to `seconds` for a control signal; returns every one pending by then (in arrival
    /// order as the kernel hands them out), or none after the timeout.
    public static func wait(seconds: Double) -> [Int32] {
        var s = set()
        let whole = max(0, seconds)
        var timeout = timespec(tv_sec: Int(whole), tv_nsec: Int((whole - Double(Int(whole))) * 1e9))
        var got: [Int32] = []
        var info = siginfo_t()
        var n = sigtimedwait(&s, &info, &timeout)
        while n > 0 {
            got.append(n)
            var zero = timespec(tv_sec: 0, tv_nsec: 0)
            n = sigtimedwait(&s, &info, &zero)
        }
        return got
    }
}

/// The monotonic clock (`CLOCK_MONOTONIC`), and sleeping on it.
public enum MonotonicClock {
    /// Seconds and nanoseconds since an arbitrary start (boot).
    public static func now() -> (seconds: Int64, nanoseconds: UInt32) {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return (Int64(ts.tv_sec), UInt32(ts.tv_nsec))
    }

    /// `now()` as one number of seconds.
    public static func seconds() -> Double {
        let t = now()
        return Double(t.seconds) + Double(t.nanoseconds) / 1e9
    }

    /// Sleeps at least `seconds` (restarted after a signal).
    public static func sleep(seconds: Double) {
        guard seconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

/// The process.
public enum CurrentProcess {
    /// Its process ID.
    public static var id: Int32 { getpid() }
}

import CIPIPLinux
import Foundation
import Glibc
import IPIPCore
import Testing

@testable import IPIPLinux

@Suite("Syscall policy, errors, poller")
struct SyscallTests {
    /// A fake call that fails with the given errno values in turn, then succeeds with 5.
    final class Script: @unchecked Sendable {
        var errnos: [Int32]
        var calls = 0
        init(_ errnos: [Int32]) { self.errnos = errnos }
        func call() -> Int {
            calls += 1
            guard !errnos.isEmpty else { return 5 }
            Glibc.errno = errnos.removeFirst()
            return -1
        }
    }

    struct RetryCase: CustomTestStringConvertible, Sendable {
        var name: String
        var errnos: [Int32]
        var retryOnInterrupt = true
        var expected: IOResult<Int>?  // nil: throws
        var calls: Int
        var testDescription: String { name }
    }

    @Test(
        "retry helper",
        arguments: [
            RetryCase(name: "success", errnos: [], expected: .processed(5), calls: 1),
            RetryCase(name: "EINTR twice, then success", errnos: [EINTR, EINTR], expected: .processed(5), calls: 3),
            RetryCase(name: "EAGAIN is would-block", errnos: [EAGAIN], expected: .wouldBlock, calls: 1),
            RetryCase(name: "EINTR then EAGAIN", errnos: [EINTR, EAGAIN], expected: .wouldBlock, calls: 2),
            RetryCase(
                name: "EINTR without retry throws", errnos: [EINTR], retryOnInterrupt: false, expected: nil, calls: 1),
            RetryCase(name: "ENOBUFS throws", errnos: [ENOBUFS], expected: nil, calls: 1),
        ])
    func retry(_ row: RetryCase) {
        let script = Script(row.errnos)
        do {
            let result = try Syscall.retrying("fake", retryOnInterrupt: row.retryOnInterrupt) { script.call() }
            #expect(result == row.expected)
        } catch {
            #expect(row.expected == nil)
            #expect(error.errno == row.errnos.last)
            #expect("\(error.call)" == "fake")
        }
        #expect(script.calls == row.calls)
    }

    @Test("error text names the call, the detail and errno")
    func errorText() {
        let error = SystemCallError(errno: ENOENT, call: "open", detail: "/dev/net/tun")
        #expect(error.description == "open /dev/net/tun: No such file or directory (errno 2)")
        #expect(
            SystemCallError(errno: EPERM, call: "socket").description == "socket: Operation not permitted (errno 1)")
    }

    @Test("send errors: per-packet ones are counted, the rest are not")
    func sendClassification() {
        var report = SendReport()
        for code in [ENOBUFS, EMSGSIZE, EHOSTUNREACH, ENETUNREACH, EPERM, EINVAL] {
            #expect(RawIPv4Socket.count(code, in: &report))
        }
        #expect(
            report.noBuffers == 1 && report.tooBig == 1 && report.unreachable == 2 && report.denied == 1
                && report.malformed == 1 && report.dropped == 6)
        #expect(!RawIPv4Socket.count(EBADF, in: &report))
        #expect(!RawIPv4Socket.count(EFAULT, in: &report))
    }

    @Test("sysctl names map to /proc/sys paths")
    func sysctlPaths() {
        #expect(Sysctl.path(of: "net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward")
        #expect(Sysctl.path(of: "net.ipv4.conf.eth0/100.rp_filter") == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        #expect(Sysctl.read("net.ipv4.no_such_parameter") == nil)
    }

    @Test("poller: timeout, readiness by index, wake from another thread")
    func poller() throws {
        let waker = try EventLoopWaker()
        let poller = Poller(waker: waker, capacity: 4)
        let pipe = try Syscall.pipe()
        defer {
            close(pipe.read)
            close(pipe.write)
        }
        let timedOut = try poller.wait(fds: [pipe.read], timeoutMilliseconds: 10)
        #expect(timedOut.timedOut)

        var byte: UInt8 = 1
        #expect(write(pipe.write, &byte, 1) == 1)
        let ready = try poller.wait(fds: [-1, pipe.read], timeoutMilliseconds: 1000)
        #expect(ready.isReady(1) && !ready.isReady(0) && !ready.woken)
        #expect(read(pipe.read, &byte, 1) == 1)

        let started = DispatchSemaphore(value: 0)
        Thread {
            started.signal()
            usleep(20_000)
            waker.wake()
        }.start()
        started.wait()
        let woken = try poller.wait(fds: [pipe.read], timeoutMilliseconds: 5000)
        #expect(woken.woken && woken.ready == 0)
        // The wake was consumed: the next wait times out again.
        #expect(try poller.wait(fds: [pipe.read], timeoutMilliseconds: 10).timedOut)
        // A wake before the wait is not lost.
        waker.wake()
        waker.wake()
        #expect(try poller.wait(fds: [], timeoutMilliseconds: 1000).woken)
    }

    @Test("a subprocess's status and output are reported")
    func subprocess() throws {
        let echo = try Subprocess.run("/bin/sh", arguments: ["-c", "cat; echo err >&2; exit 3"], input: "hello")
        #expect(echo.status == 3 && echo.standardOutput == "hello" && echo.standardError == "err\n")
        #expect(throws: SystemCallError.self) { try Subprocess.run("/nonexistent/nft", arguments: [], input: "") }
    }

    @Test("TUNDevice refuses tunl0")
    func refusesTunl0() async {
        await #expect(processExitsWith: .failure) {
            _ = try? TUNDevice(name: "tunl0")
        }
    }
}

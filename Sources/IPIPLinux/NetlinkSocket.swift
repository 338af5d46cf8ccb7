// NetlinkSocket: one NETLINK_ROUTE socket and the request/answer protocol over it.
//
// Architecture: every exchange (send one request, read answers until its acknowledgement, error or
// NLMSG_DONE) runs under one lock, so the socket may be shared between tasks but requests are
// serialised, and the answers of one request are never read by another. Answers are matched on
// the sequence number; anything else on the socket (answers to a request abandoned after a
// timeout) is skipped.
//
// Hazards (the same ones vishvananda/netlink and Felix's netlinkshim handle):
// - a dump can be interrupted by a concurrent change (NLM_F_DUMP_INTR on its messages): the
//   result may be inconsistent, so the dump is repeated (a bounded number of times);
// - the kernel never answers requests that do not reach it; a receive timeout (SO_RCVTIMEO)
//   turns a hang into an `EAGAIN` error instead;
// - the socket belongs to the network namespace of the thread that created it, for its whole
//   life, whatever thread later uses it (tests rely on this: they create it in a namespace).
import CIPIPLinux
import Glibc
import Synchronization

/// A `NETLINK_ROUTE` socket speaking rtnetlink: requests with acknowledgements, and dumps.
///
/// Safe to share between threads: exchanges are serialised by an internal lock.
/// The socket is bound to the network namespace that was current for the creating thread.
public final class NetlinkSocket: Sendable {
    struct State {
        var sequence: UInt32
        var buffer: [UInt8]
    }

    let descriptor: Int32
    private let state: Mutex<State>

    /// How long one receive may wait for the kernel before the exchange fails with `EAGAIN`.
    public static let receiveTimeoutSeconds = 10
    /// How many times a dump interrupted by concurrent changes is repeated before failing with `EINTR`.
    public static let dumpAttempts = 5
    /// The receive buffer: larger than the largest datagram the kernel builds for a dump (32 KiB).
    static let receiveBufferByteCount = 64 * 1024

    /// Opens and binds a netlink socket (C: `socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, protocol)`),
    /// with extended acknowledgements (`NETLINK_EXT_ACK`) so errors carry the kernel's reason.
    /// - Parameter netlinkProtocol: The netlink family; `NETLINK_ROUTE` unless you know better.
    /// - Throws: `NetlinkError` from `socket`, `setsockopt` or `bind`.
    public init(protocol netlinkProtocol: Int32 = NETLINK_ROUTE) throws(NetlinkError) {
        descriptor = try Self.openDescriptor(protocol: netlinkProtocol, timeoutSeconds: Self.receiveTimeoutSeconds)
        state = Mutex(
            State(
                sequence: UInt32.random(in: 1...0x7FFF_FFFF),
                buffer: [UInt8](repeating: 0, count: Self.receiveBufferByteCount)))
    }

    deinit {
        Self.closeDescriptor(descriptor)
    }

    /// Sends a request with `NLM_F_ACK` and waits for the kernel's acknowledgement.
    /// - Parameters:
    ///   - message: The request.
    ///   - detail: What the request is about, for the error.
    /// - Returns: The messages the kernel sent before the acknowledgement (the object a `GET` of
    ///   one object returns; empty for changes).
    /// - Throws: `NetlinkError` with the kernel's errno, or the failing system call.
    @discardableResult
    public func request(
        _ message: NetlinkMessageBuilder, detail: @autoclosure () -> String = ""
    )
        throws(NetlinkError) -> [NetlinkMessage]
    {
        // Only NLM_F_ACK is added: NLM_F_DUMP's bits (ROOT|MATCH) are REPLACE|EXCL on NEW requests.
        var m = message
        m.flags |= NL.ack
        do {
            return try exchange(m).messages
        } catch {
            throw Self.annotated(error, detail: detail())
        }
    }

    /// Sends a dump request (`NLM_F_DUMP`) and collects every message until `NLMSG_DONE`,
    /// repeating the dump when the kernel flags it as interrupted by a concurrent change.
    /// - Parameters:
    ///   - message: The request (a `GET` message with its family header).
    ///   - detail: What the dump is about, for the error.
    /// - Returns: The messages of the dump, in order.
    /// - Throws: `NetlinkError` with the kernel's errno, `EINTR` when every attempt was
    ///   interrupted, or the failing system call.
    public func dump(
        _ message: NetlinkMessageBuilder, detail: @autoclosure () -> String = ""
    )
        throws(NetlinkError) -> [NetlinkMessage]
    {
        var m = message
        m.flags |= NL.dump
        m.flags &= ~NL.ack
        for _ in 0..<Self.dumpAttempts {
            let answer: (messages: [NetlinkMessage], interrupted: Bool)
            do {
                answer = try exchange(m)
            } catch {
                throw Self.annotated(error, detail: detail())
            }
            if !answer.interrupted { return answer.messages }
        }
        throw NetlinkError(
            errno: EINTR, operation: NL.name(of: m.type),
            detail: "dump interrupted by concurrent changes \(Self.dumpAttempts) times")
    }

    private static func annotated(_ error: NetlinkError, detail: String) -> NetlinkError {
        guard !detail.isEmpty else { return error }
        var e = error
        e.detail = e.detail.isEmpty ? detail : "\(detail): \(e.detail)"
        return e
    }

    /// One request and its answers, under the lock.
    private func exchange(
        _ message: NetlinkMessageBuilder
    ) throws(NetlinkError)
        -> (messages: [NetlinkMessage], interrupted: Bool)
    {
        let fd = descriptor
        let operation = NL.name(of: message.type)
        return try state.withLock {
            (state: inout State) throws(NetlinkError) -> (messages: [NetlinkMessage], interrupted: Bool) in
            state.sequence = state.sequence == UInt32.max ? 1 : state.sequence + 1
            let sequence = state.sequence
            try Self.send(message.bytes(sequence: sequence), descriptor: fd, operation: operation)
            var messages: [NetlinkMessage] = []
            var interrupted = false
            while true {
                let count = try Self.receive(descriptor: fd, into: &state.buffer, operation: operation)
                // Copy the datagram out: the parsed payloads are slices of it and must outlive the
                // next receive into the shared buffer.
                let datagram = Array(state.buffer[0..<count])
                for m in try NetlinkParser.messages(in: datagram[...]) {
                    guard m.header.sequence == sequence else { continue }
                    if m.header.flags & NL.dumpInterrupted != 0 { interrupted = true }
                    switch m.header.type {
                    case NL.error:
                        let answer = try NetlinkErrorAnswer(parsing: m.payload, flags: m.header.flags)
                        if answer.errno == 0 { return (messages, interrupted) }
                        throw NetlinkError(errno: answer.errno, operation: operation, detail: answer.message ?? "")
                    case NL.done:
                        // NLMSG_DONE carries an int: a negative errno when the dump itself failed.
                        if let e = m.payload.netlinkInteger(at: 0, as: Int32.self), e < 0 {
                            throw NetlinkError(errno: -e, operation: operation, detail: "dump failed")
                        }
                        return (messages, interrupted)
                    default:
                        // Requests end with their acknowledgement (NLM_F_ACK), dumps with NLMSG_DONE.
                        messages.append(m)
                    }
                }
            }
        }
    }
}

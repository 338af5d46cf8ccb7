import AsyncHTTPClient
import Foundation
import IPIPEtcdWire
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// A small etcd v3 client over etcd's JSON gateway (grpc-gateway: `POST /v3/kv/range`,
/// `/v3/kv/txn`, `/v3/watch`), through async-http-client. Calls block the calling thread: the
/// datastore protocol is synchronous, and neither `ipipctl` nor `ipipd`'s control loop runs on an
/// event loop.
///
/// Wire format (etcd's `rpc.proto` mapped by grpc-gateway): keys and values are base64, 64-bit
/// integers are JSON strings, fields at their default value (0, false, empty) are left out, so a
/// missing `succeeded` means false and a missing event `type` means PUT.
///
/// Endpoints are tried in order; a connection failure moves on to the next one and the one that
/// answered is used first from then on. An HTTP error from etcd is not retried elsewhere.
public final class EtcdClient: @unchecked Sendable {
    /// A key and its value, as `range` returns them.
    public typealias KeyValue = EtcdKeyValue

    /// A comparison in a transaction's guard.
    public enum Compare: Sendable {
        /// The key does not exist (create revision 0).
        case absent(String)
        /// The key's mod revision equals the given one.
        case modRevision(String, Int64)
    }

    /// An operation in a transaction branch.
    public enum Operation: Sendable {
        /// Put a value.
        case put(String, [UInt8])
        /// Delete one key.
        case delete(String)
        /// Read one key.
        case get(String)
    }

    /// What a transaction did.
    public struct TxnResult: Sendable {
        /// Whether the guard held (the success branch ran).
        public var succeeded: Bool
        /// The store revision after the transaction.
        public var revision: Int64
        /// The key-values read by `get` operations of the branch that ran, in order.
        public var reads: [[KeyValue]]
    }

    /// One change seen by a watch.
    public typealias Event = EtcdEvent

    /// TLS material for `https://` endpoints, as calicoctl takes it (`ETCD_CA_CERT_FILE`,
    /// `ETCD_CERT_FILE`, `ETCD_KEY_FILE`): a CA to trust instead of the system's, and a client
    /// certificate and key for etcd's `--client-cert-auth`.
    public struct TLSFiles: Hashable, Sendable {
        /// PEM file of the CA that signed etcd's server certificate; nil: the system's roots.
        public var caFile: String?
        /// PEM client certificate (chain).
        public var certFile: String?
        /// PEM private key of the client certificate.
        public var keyFile: String?

        public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }

        /// The files named by calicoctl's variables; nil when none is set.
        public static func from(environment: [String: String]) -> TLSFiles? {
            func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
            let files = TLSFiles(
                caFile: value("ETCD_CA_CERT_FILE"), certFile: value("ETCD_CERT_FILE"),
                keyFile: value("ETCD_KEY_FILE"))
            return files == TLSFiles() ? nil : files
        }

        /// The TLS configuration, with every file read now (a missing or bad file is an error that
        /// names it, before any request).
        func configuration() throws(DatastoreError) -> TLSConfiguration {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile {
                do {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                } catch {
                    throw .storage("etcd: cannot read the CA certificate \(caFile) (ETCD_CA_CERT_FILE): \(error)")
                }
            }
            switch (certFile, keyFile) {
            case (nil, nil):
                break
            case (let cert?, let key?):
                do {
                    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                } catch {
                    throw .storage("etcd: cannot read the client certificate \(cert) (ETCD_CERT_FILE): \(error)")
                }
                do {
                    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                } catch {
                    throw .storage("etcd: cannot read the client key \(key) (ETCD_KEY_FILE): \(error)")
                }
            default:
                throw .storage("etcd: a client certificate needs both ETCD_CERT_FILE and ETCD_KEY_FILE")
            }
            return tls
        }
    }

    /// etcd user authentication, as calicoctl takes it (`ETCD_USERNAME`, `ETCD_PASSWORD`).
    public struct Credentials: Hashable, Sendable {
        public var username: String
        public var password: String

        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }

        /// The credentials calicoctl's variables name; nil without `ETCD_USERNAME`.
        public static func from(environment: [String: String]) -> Credentials? {
            guard let user = environment["ETCD_USERNAME"], !user.isEmpty else { return nil }
            return Credentials(username: user, password: environment["ETCD_PASSWORD"] ?? "")
        }
    }

    /// The client endpoints (`http://127.0.0.1:2379`).
    public let endpoints: [String]
    /// TLS for `https://` endpoints (nil: system roots, no client certificate).
    private let tls: TLSConfiguration?
    /// User authentication (nil: none); the token etcd issued for it, sent as `Authorization`.
    private let credentials: Credentials?
    private let token = Mutex<String?>(nil)
    /// How long one unary request may take.
    public let requestTimeout: TimeAmount
    private let preferred = Mutex(0)

    /// One HTTP client for the process: created on first use and never shut down (it lives as
    /// long as the process). No read timeout, so a quiet watch stream is not cut; unary requests
    /// carry their own deadline.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(5), read: nil))
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// A client for `endpoints` (each `http://host:port`, or `https://`).
    public init(endpoints: [String], requestTimeout: TimeAmount = .seconds(10)) {
        self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.requestTimeout = requestTimeout
        tls = nil
        credentials = nil
    }

    /// A client for `https://` endpoints with a CA and/or a client certificate.
    public init(
        endpoints: [String], tls files: TLSFiles?, credentials: Credentials? = nil,
        requestTimeout: TimeAmount = .seconds(10)
    ) throws(DatastoreError) {
        self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.requestTimeout = requestTimeout
        tls = try files?.configuration()
        self.credentials = credentials
    }

    private func request(_ url: String, body: [UInt8], authorized: Bool = true) throws -> HTTPClient.Request {
        var headers: HTTPHeaders = ["Content-Type": "application/json"]
        if authorized, let token = token.withLock({ $0 }) { headers.add(name: "Authorization", value: token) }
        return try HTTPClient.Request(
            url: url, method: .POST, headers: headers, body: .bytes(body), tlsConfiguration: tls)
    }

    /// Replaces the held token (tests: an expired or revoked token, which etcd answers with 401
    /// "invalid auth token").
    func replaceToken(_ value: String?) { token.withLock { $0 = value } }

    /// Whether an etcd error means "authenticate (again)": no token, or an expired one.
    static func isAuthenticationError(status: HTTPResponseStatus, message: String) -> Bool {
        status == .unauthorized || message.contains("invalid auth token") || message.contains("user name is empty")
    }

    /// Gets a token for the credentials (`/v3/auth/authenticate`) from `endpoint`.
    private func authenticate(at endpoint: String) throws(SendError) {
        guard let credentials else { return }
        let reply = try send(
            endpoint, "/v3/auth/authenticate",
            Self.json(["name": credentials.username, "password": credentials.password]),
            authorized: false)
        guard let issued = reply["token"] as? String, !issued.isEmpty else {
            throw .failed(.storage("etcd \(endpoint): authentication as \(credentials.username) returned no token"))
        }
        token.withLock { $0 = issued }
    }

    // MARK: KV

    /// Reads one key, or every key under a prefix (sorted by key), at the current revision or at
    /// `revision`. Returns the store revision the read saw.
    public func range(
        _ key: String, prefix: Bool = false, revision: Int64? = nil
    ) throws(DatastoreError)
        -> (revision: Int64, kvs: [KeyValue])
    {
        var body: [String: Any] = ["key": Self.base64(key)]
        if prefix { body["range_end"] = Self.base64(Self.prefixEnd(key)) }
        if let revision { body["revision"] = String(revision) }
        let reply = try call("/v3/kv/range", body)
        return (Self.headerRevision(reply), try Self.keyValues(reply["kvs"]))
    }

    /// Deletes every key under `prefix`; returns how many went.
    @discardableResult
    public func deletePrefix(_ prefix: String) throws(DatastoreError) -> Int64 {
        let reply = try call(
            "/v3/kv/deleterange",
            ["key": Self.base64(prefix), "range_end": Self.base64(Self.prefixEnd(prefix))])
        return Self.int64(reply["deleted"])
    }

    /// Writes one key unconditionally (tests and tools that seed a store as Calico would).
    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) throws(DatastoreError) -> Int64 {
        Self.headerRevision(
            try call("/v3/kv/put", ["key": Self.base64(key), "value": Data(value).base64EncodedString()]))
    }

    /// Compacts the key history up to `revision` (older revisions can no longer be read or watched).
    public func compact(_ revision: Int64) throws(DatastoreError) {
        _ = try call("/v3/kv/compaction", ["revision": String(revision), "physical": true])
    }

    /// The store's current revision.
    public func currentRevision() throws(DatastoreError) -> Int64 {
        let reply = try call("/v3/kv/range", ["key": Self.base64("/calico/"), "count_only": true])
        return Self.headerRevision(reply)
    }

    /// One transaction: if every comparison holds, `success` runs, else `failure`.
    public func txn(
        _ compare: [Compare], success: [Operation], failure: [Operation] = []
    ) throws(DatastoreError)
        -> TxnResult
    {
        let compares: [[String: Any]] = compare.map { c in
            switch c {
            case .absent(let key):
                ["key": Self.base64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"]
            case .modRevision(let key, let revision):
                ["key": Self.base64(key), "result": "EQUAL", "target": "MOD", "mod_revision": String(revision)]
            }
        }
        func ops(_ list: [Operation]) -> [[String: Any]] {
            list.map { op in
                switch op {
                case .put(let key, let value):
                    ["request_put": ["key": Self.base64(key), "value": Data(value).base64EncodedString()]]
                case .delete(let key): ["request_delete_range": ["key": Self.base64(key)]]
                case .get(let key): ["request_range": ["key": Self.base64(key)]]
                }
            }
        }
        let reply = try call("/v3/kv/txn", ["compare": compares, "success": ops(success), "failure": ops(failure)])
        do {
            let (succeeded, reads) = try EtcdWire.transaction(reply)
            return TxnResult(succeeded: succeeded, revision: Self.headerRevision(reply), reads: reads)
        } catch {
            throw .storage(error.message)
        }
    }

    // MARK: Watch

    /// A running watch; `cancel()` ends it.
    public final class Watch: @unchecked Sendable {
        fileprivate let task: Mutex<HTTPClient.Task<Void>?> = Mutex(nil)
        fileprivate let cancelled = Mutex(false)
        /// Ends the watch stream.
        public func cancel() {
            cancelled.withLock { $0 = true }
            task.withLock { $0?.cancel() }
        }
        /// Ends the current stream only (the caller starts a new one).
        public func restart() { task.withLock { $0?.cancel() } }
        /// Whether `cancel()` was called.
        public var isCancelled: Bool { cancelled.withLock { $0 } }
    }

    /// What a watch stream reports.
    public enum WatchReport: Sendable {
        /// The watch is established; later events are newer than `revision`.
        case created(revision: Int64)
        /// Changes, in revision order.
        case events([Event], revision: Int64)
        /// The requested start revision was compacted away: resync, then watch from `revision`.
        case compacted(revision: Int64)
    }

    /// Streams the changes under `prefix` from `startRevision` (inclusive) to `report`, until the
    /// stream ends (returns normally when cancelled, throws when it broke). Blocks while it runs.
    public func watch(
        prefix: String, from startRevision: Int64, handle: Watch,
        report: @escaping @Sendable (WatchReport) -> Void
    ) throws(DatastoreError) {
        let create: [String: Any] = [
            "create_request": [
                "key": Self.base64(prefix), "range_end": Self.base64(Self.prefixEnd(prefix)),
                "start_revision": String(startRevision),
            ]
        ]
        let body = Self.json(create)
        var lastError: DatastoreError = .storage("etcd: no endpoint")
        for endpoint in orderedEndpoints() {
            if credentials != nil {
                do {
                    try authenticate(at: endpoint)
                } catch {
                    switch error {
                    case .unreachable(let message):
                        lastError = .storage(message)
                        continue
                    case .authenticationNeeded(let message): throw .storage(message)
                    case .failed(let failure): throw failure
                    }
                }
            }
            let delegate = WatchDelegate(report: report)
            let task: HTTPClient.Task<Void>
            do {
                let request = try request(endpoint + "/v3/watch", body: body)
                task = Self.http.execute(request: request, delegate: delegate)
            } catch {
                lastError = .storage("etcd \(endpoint): \(error)")
                continue
            }
            handle.task.withLock { $0 = task }
            if handle.isCancelled { task.cancel() }
            do {
                try task.wait()
                if handle.isCancelled { return }
                throw DatastoreError.storage("etcd \(endpoint): the watch stream ended")
            } catch {
                if handle.isCancelled { return }
                if let failure = delegate.failure.withLock({ $0 }) { throw failure }
                if delegate.connected.withLock({ $0 }) {
                    throw (error as? DatastoreError) ?? .storage("etcd \(endpoint): watch: \(error)")
                }
                lastError = .storage("etcd \(endpoint): \(Self.describe(error))")
            }
        }
        throw lastError
    }

    // MARK: Plumbing

    private func orderedEndpoints() -> [String] {
        let first = preferred.withLock { $0 }
        guard endpoints.indices.contains(first) else { return endpoints }
        return Array(endpoints[first...] + endpoints[..<first])
    }

    private func call(_ path: String, _ object: [String: Any]) throws(DatastoreError) -> [String: Any] {
        guard !endpoints.isEmpty else { throw .storage("etcd: no endpoint given") }
        let body = Self.json(object)
        var lastError: DatastoreError = .storage("etcd: no endpoint")
        for endpoint in orderedEndpoints() {
            do {
                if credentials != nil, token.withLock({ $0 }) == nil { try authenticate(at: endpoint) }
                do {
                    return try send(endpoint, path, body)
                } catch .authenticationNeeded where credentials != nil {
                    // The token expired (or etcd restarted): once more with a fresh one.
                    try authenticate(at: endpoint)
                    return try send(endpoint, path, body)
                }
            } catch {
                switch error {
                case .unreachable(let message):
                    lastError = .storage(message)
                    continue
                case .authenticationNeeded(let message): throw .storage(message)
                case .failed(let failure): throw failure
                }
            }
        }
        throw lastError
    }

    /// Why one request failed: the endpoint did not answer (try the next), etcd wants a (new)
    /// token, or etcd answered with an error.
    private enum SendError: Error {
        case unreachable(String)
        case authenticationNeeded(String)
        case failed(DatastoreError)
    }

    private func send(
        _ endpoint: String, _ path: String, _ body: [UInt8], authorized: Bool = true
    )
        throws(SendError) -> [String: Any]
    {
        let response: HTTPClient.Response
        do {
            let request = try request(endpoint + path, body: body, authorized: authorized)
            response = try Self.http.execute(request: request, deadline: .now() + requestTimeout).wait()
        } catch {
            throw .unreachable("etcd \(endpoint): \(Self.describe(error))")
        }
        if let index = endpoints.firstIndex(of: endpoint) { preferred.withLock { $0 = index } }
        let bytes = response.body.map { Array($0.readableBytesView) } ?? []
        let parsed = EtcdWire.object(bytes)
        guard response.status == .ok, let parsed else {
            let message = EtcdWire.errorMessage(parsed, body: bytes)
            let text = "etcd \(endpoint)\(path): HTTP \(response.status.code): \(message)"
            if authorized, Self.isAuthenticationError(status: response.status, message: message) {
                throw .authenticationNeeded(text)
            }
            throw .failed(.storage(text))
        }
        return parsed
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            if error == .connectTimeout { return "connect timeout" }
            if error == .deadlineExceeded { return "no answer in time" }
        }
        return "\(error)"
    }

    static func json(_ object: Any) -> [UInt8] { EtcdWire.json(object) }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// The end of the key range that holds every key starting with `prefix` (etcd's
    /// `GetPrefixRangeEnd`: the prefix with its last byte below 0xff incremented).
    static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return String(decoding: bytes, as: UTF8.self)
            }
            bytes.removeLast()
        }
        return "\0"
    }

    static func int64(_ any: Any?) -> Int64 { EtcdWire.int64(any) }

    static func headerRevision(_ reply: [String: Any]) -> Int64 { EtcdWire.headerRevision(reply) }

    static func keyValues(_ any: Any?) throws(DatastoreError) -> [KeyValue] {
        do {
            return try EtcdWire.keyValues(any)
        } catch {
            throw .storage(error.message)
        }
    }
}

/// Splits the watch stream (one JSON message per line) and hands each change to the report.
private final class WatchDelegate: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = Void
    let report: @Sendable (EtcdClient.WatchReport) -> Void
    let failure = Mutex<DatastoreError?>(nil)
    let connected = Mutex(false)
    private var pending: [UInt8] = []

    init(report: @escaping @Sendable (EtcdClient.WatchReport) -> Void) { self.report = report }

    func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        if head.status == .ok {
            connected.withLock { $0 = true }
        } else {
            failure.withLock { $0 = .storage("etcd watch: HTTP \(head.status.code)") }
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        pending.append(contentsOf: buffer.readableBytesView)
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            let line = Array(pending[..<newline])
            pending.removeSubrange(...newline)
            handle(line)
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Void>) throws {
        if !pending.isEmpty { handle(pending) }
        pending = []
    }

    private func handle(_ line: [UInt8]) {
        switch EtcdWire.watchMessage(line) {
        case nil: return
        case .failure(let message): failure.withLock { $0 = .storage(message) }
        case .compacted(let revision): report(.compacted(revision: revision))
        case .changes(let created, let revision, let events):
            if created { report(.created(revision: revision)) }
            if !events.isEmpty { report(.events(events, revision: revision)) }
        }
    }
}

import Foundation
import IPIPDatastore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd (Debian's etcd-server) on loopback, started for a test suite and stopped with it:
/// a fresh data directory, a client and a peer port picked free, ready once it answers a read.
///
/// Where no `etcd` binary is installed the suites that need it are disabled (`.needsEtcd`), except
/// under CI (`CI` set) or `scripts/test` (`IPIPD_REQUIRE_TOOLS=1`, after it installed
/// etcd-server), where a missing etcd is a failure.
public final class EtcdServer: @unchecked Sendable {
    public let endpoint: String
    public let dataDir: TempDir
    /// With TLS: the CA and a client certificate the server requires (`--client-cert-auth`).
    public let clientTLS: EtcdClient.TLSFiles?
    private let clientPort: UInt16
    private let peerPort: UInt16
    private var process: Process?
    private let binary: String

    /// Starts a server. The suites that call it carry `.needsEtcd`, so without etcd they are
    /// disabled, except under CI, where reaching this without etcd records an issue (nil).
    public static func start(tls: Bool = false) throws -> EtcdServer? {
        guard let binary = TestEnvironment.require(TestEnvironment.etcd, "etcd", package: "etcd-server") else {
            return nil
        }
        let server = try EtcdServer(binary: binary, clientPort: try freePort(), peerPort: try freePort(), tls: tls)
        try server.launch()
        return server
    }

    private init(binary: String, clientPort: UInt16, peerPort: UInt16, tls: Bool) throws {
        self.binary = binary
        self.clientPort = clientPort
        self.peerPort = peerPort
        endpoint = "\(tls ? "https" : "http")://127.0.0.1:\(clientPort)"
        dataDir = TempDir()
        if tls {
            try Self.makeCertificates(in: dataDir)
            clientTLS = EtcdClient.TLSFiles(
                caFile: dataDir.file("ca.pem"), certFile: dataDir.file("client.pem"),
                keyFile: dataDir.file("client.key"))
        } else {
            clientTLS = nil
        }
    }

    /// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl). The
    /// server's is also good for client auth: etcd's JSON gateway dials etcd's own gRPC port with it.
    static func makeCertificates(in dir: TempDir) throws {
        let script = """
            set -e
            cd '\(dir.path)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ipipd-test-ca 2>/dev/null
            for who in server client; do
                openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=ipipd-test-$who 2>/dev/null
            done
            printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
            printf 'extendedKeyUsage=clientAuth\n' > client.ext
            for who in server client; do
                openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 \
                    -extfile $who.ext 2>/dev/null
            done
            """
        let result = try Processes.run("/bin/sh", ["-c", script])
        guard result.status == 0 else { throw DatastoreError.storage("openssl failed: \(result.stderr)") }
    }

    /// Starts etcd (again, on the same data and ports after `kill()`), and waits until it answers.
    public func launch(credentials: EtcdClient.Credentials? = nil) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = [
            "--name", "ipipd-test", "--data-dir", dataDir.file("data"),
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-cluster", "ipipd-test=http://127.0.0.1:\(peerPort)",
            "--log-outputs", dataDir.file("etcd.log"), "--logger", "zap",
        ]
        if clientTLS != nil {
            p.arguments! += [
                "--cert-file", dataDir.file("server.pem"), "--key-file", dataDir.file("server.key"),
                "--client-cert-auth", "--trusted-ca-file", dataDir.file("ca.pem"),
            ]
        }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let client = try EtcdClient(
            endpoints: [endpoint], tls: clientTLS, credentials: credentials,
            requestTimeout: .seconds(1))
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if (try? client.currentRevision()) != nil { return }
            guard p.isRunning else { break }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: dataDir.file("etcd.log"), encoding: .utf8)) ?? ""
        throw DatastoreError.storage("etcd did not come up on \(endpoint): \(log.suffix(800))")
    }

    /// Stops etcd with SIGKILL, keeping its data (to test a restart).
    public func kill() {
        guard let p = process, p.isRunning else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Stops etcd and removes its data.
    public func stop() {
        if let p = process, p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        dataDir.cleanup()
    }

    /// Turns on etcd's user authentication with a `root` user (etcd's JSON gateway:
    /// `/v3/auth/user/add`, `/v3/auth/user/grant`, `/v3/auth/enable`), through Python's urllib.
    public func enableAuthentication(rootPassword: String) throws {
        let script = """
            import json, sys, urllib.request
            base = sys.argv[1]
            def post(path, body):
                request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=10).read()
            post("/v3/auth/user/add", {"name": "root", "password": sys.argv[2]})
            post("/v3/auth/user/grant", {"user": "root", "role": "root"})
            post("/v3/auth/enable", {})
            """
        let result = try Processes.run("/usr/bin/env", ["python3", "-c", script, endpoint, rootPassword])
        guard result.status == 0 else { throw DatastoreError.storage("enabling etcd auth failed: \(result.stderr)") }
    }

    /// A store on this server, with every Calico key removed first.
    public func freshStore() throws -> EtcdDatastore {
        let store = try EtcdDatastore(endpoints: [endpoint], tls: clientTLS)
        try store.client.deletePrefix("/calico/")
        return store
    }

    /// A TCP port nobody listens on right now (bind to port 0, read it back, close).
    public static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(fd, raw, length) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard bound else { throw DatastoreError.storage("no free port: errno \(errno)") }
        return UInt16(bigEndian: address.sin_port)
    }
}

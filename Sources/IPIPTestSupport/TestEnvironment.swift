import Foundation
import Testing

/// What the machine offers the tests, and the traits that enable a test only where it can run.
///
/// Under CI (`CI` set) or `scripts/test` (`IPIPD_REQUIRE_TOOLS=1`, after it installed every
/// tool), a missing tool does not disable a test: the test runs and fails on it, so CI can never
/// pass by skipping. Root is different: CI runs as root, and a root-only test elsewhere is
/// disabled with its reason.
public enum TestEnvironment {
    /// Whether the tests run as root (network namespaces, TUN devices, raw sockets).
    public static var isRoot: Bool { getuid() == 0 }

    /// Whether every tool must be there (CI, or `scripts/test` after installing them).
    public static var toolsRequired: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["CI"] != nil || environment["IPIPD_REQUIRE_TOOLS"] == "1"
    }

    /// tshark, the independent decoder, or nil.
    public static let tshark = Processes.find("tshark")
    /// Debian's etcd-server binary, or nil.
    public static let etcd = Processes.find("etcd")

    /// `tool` when it is installed; otherwise records an issue naming the package and returns
    /// nil (reached only where the trait let the test run although the tool is missing: CI).
    public static func require(
        _ tool: String?, _ name: String, package: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> String? {
        if let tool { return tool }
        Issue.record(
            "\(name) is not installed and CI must run this test (apt-get install \(package))",
            sourceLocation: sourceLocation)
        return nil
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs only as root (network namespaces, devices, sockets).
    public static var needsRoot: Self {
        .enabled(if: TestEnvironment.isRoot, "needs root: creates network namespaces and devices")
    }

    /// Runs where tshark is installed, and always under CI.
    public static var needsTshark: Self {
        .enabled(
            if: TestEnvironment.tshark != nil || TestEnvironment.toolsRequired,
            "needs tshark (apt-get install tshark)")
    }

    /// Runs where etcd is installed, and always under CI.
    public static var needsEtcd: Self {
        .enabled(
            if: TestEnvironment.etcd != nil || TestEnvironment.toolsRequired,
            "needs etcd (apt-get install etcd-server)")
    }
}

/// The health endpoints' settings as one node sees them, after Calico's layering
/// (FelixConfiguration `default`, then `node.<name>` on top), with Felix's own defaults where
/// neither says anything: disabled, `localhost`, port 9099 (docs/health.md).
public struct FelixHealthSettings: Equatable, Sendable {
    /// Felix's default port for `/liveness` and `/readiness`.
    public static let defaultPort = 9099
    /// Felix's default host.
    public static let defaultHost = "localhost"

    /// `healthEnabled` (Felix's default: false).
    public var enabled: Bool
    /// `healthHost`: an IPv4 address or `localhost` (validated when decoded).
    public var host: String
    /// `healthPort`.
    public var port: Int
    /// `debugSimulateDataplaneHangAfter` in seconds; nil when unset or zero (Felix: 0 = off).
    public var simulateDataplaneHangAfter: Double?

    /// Felix's defaults.
    public init(
        enabled: Bool = false, host: String = FelixHealthSettings.defaultHost,
        port: Int = FelixHealthSettings.defaultPort, simulateDataplaneHangAfter: Double? = nil
    ) {
        self.enabled = enabled
        self.host = host
        self.port = port
        self.simulateDataplaneHangAfter = simulateDataplaneHangAfter
    }

    /// The IPv4 literal to bind: `localhost` is 127.0.0.1 (the listener takes literals only).
    public var bindAddress: String { host == "localhost" ? "127.0.0.1" : host }
}

extension ClusterLoader {
    /// The health settings for `node`: each field from `node.<node>` if it sets it, else from
    /// `default`, else Felix's default (Calico's per-field layering, as `spec(from:)` does for
    /// the dataplane fields).
    public static func healthSettings(from set: ResourceSet, node: String) -> FelixHealthSettings {
        var s = FelixHealthSettings()
        for name in ["default", "node.\(node)"] {
            guard let f = set.felixConfigurations.first(where: { $0.metadata.name == name }) else { continue }
            if let v = f.spec.healthEnabled { s.enabled = v }
            if let v = f.spec.healthHost { s.host = v }
            if let v = f.spec.healthPort { s.port = v }
            if let v = f.spec.debugSimulateDataplaneHangAfter { s.simulateDataplaneHangAfter = v > 0 ? v : nil }
        }
        return s
    }
}

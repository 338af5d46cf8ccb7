import CIPIPLinux
#if canImport(Glibc)
import Glibc
#endif

/// Receive aggregation on an interface: GRO (software, per device) and LRO (in the NIC), read and
/// switched through the ethtool ioctl (`SIOCETHTOOL`, as `ethtool -k/-K` does).
///
/// Why the daemon cares: with either on, the kernel merges the TCP segments of a flow before
/// AF_PACKET sees them, so the uplink capture hands over super-packets of up to 64 KiB. The engine
/// would translate them whole and the TUN could not deliver them to a 1500-byte workload link, so
/// the flow stalls. Until the capture reads GSO metadata (`PACKET_VNET_HDR`) and segments, `ipipd
/// run` switches both off on its uplink and restores them when it stops.
public struct ReceiveOffloads: Hashable, Sendable, CustomStringConvertible {
    /// Generic receive offload.
    public var gro: Bool
    /// Large receive offload (nil when the driver does not report flags).
    public var lro: Bool?

    public init(gro: Bool, lro: Bool?) {
        self.gro = gro
        self.lro = lro
    }

    /// Whether anything aggregates received packets.
    public var aggregates: Bool { gro || (lro ?? false) }

    public var description: String {
        "gro \(gro ? "on" : "off")" + (lro.map { ", lro \($0 ? "on" : "off")" } ?? "")
    }

    /// The interface's current settings.
    public static func read(interface: String) throws(SystemCallError) -> ReceiveOffloads {
        var gro: UInt32 = 0
        guard cipl_ethtool_get(interface, cipl_ethtool_ggro(), &gro) == 0 else {
            throw SystemCallError(errno: errno, call: "ioctl(SIOCETHTOOL, ETHTOOL_GGRO)", detail: interface)
        }
        var flags: UInt32 = 0
        let lro: Bool? = cipl_ethtool_get(interface, cipl_ethtool_gflags(), &flags) == 0
            ? (flags & cipl_eth_flag_lro()) != 0 : nil
        return ReceiveOffloads(gro: gro != 0, lro: lro)
    }

    /// Applies `gro` and, when given, `lro`; returns the settings read back afterwards.
    @discardableResult
    public static func apply(_ wanted: ReceiveOffloads, interface: String) throws(SystemCallError) -> ReceiveOffloads {
        guard cipl_ethtool_set(interface, cipl_ethtool_sgro(), wanted.gro ? 1 : 0) == 0 else {
            throw SystemCallError(errno: errno, call: "ioctl(SIOCETHTOOL, ETHTOOL_SGRO)", detail: interface)
        }
        if let lro = wanted.lro {
            var flags: UInt32 = 0
            if cipl_ethtool_get(interface, cipl_ethtool_gflags(), &flags) == 0 {
                let next = lro ? flags | cipl_eth_flag_lro() : flags & ~cipl_eth_flag_lro()
                if next != flags, cipl_ethtool_set(interface, cipl_ethtool_sflags(), next) != 0 {
                    throw SystemCallError(errno: errno, call: "ioctl(SIOCETHTOOL, ETHTOOL_SFLAGS)", detail: interface)
                }
            }
        }
        return try read(interface: interface)
    }
}

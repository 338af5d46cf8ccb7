import IPIPCore
import IPIPTestSupport
import Testing

@testable import IPIPLinux

/// HostRoutes is pure: topology in, routes and rules out. Rows are small clusters written inline
/// (test support of IPIPCoreTests cannot be imported); the first is the README's example cluster.
struct HostRoutesTests {
    static let tun: Int32 = 7
    static let uplink: Int32 = 3
    static let proto = RouteReconciler.defaultProtocolNumber

    static func p(_ s: String) -> IPv4Prefix { IPv4Prefix(s)! }
    static func a(_ s: String) -> IPv4Address { IPv4Address(s)! }
    static func viaTun(_ s: String, mtu: UInt32 = 1480) -> Route {
        Route(destination: p(s), outputInterface: tun, protocolNumber: proto, mtu: mtu)
    }
    static func native(_ s: String, _ gateway: String) -> Route {
        Route(destination: p(s), gateway: a(gateway), outputInterface: uplink, protocolNumber: proto, onlink: true)
    }
    static func blackhole(_ s: String) -> Route { Route(destination: p(s), protocolNumber: proto, type: .blackhole) }
    static let natDefault = Route(destination: .all, outputInterface: tun, table: 498, protocolNumber: proto)
    /// Behind natDefault: what stays when the TUN goes without clean-up (kill -9).
    static let natFailClosed = Route(
        destination: .all, table: 498, protocolNumber: proto, type: .blackhole, metric: UInt32.max)
    static func natThrow(_ s: String) -> Route {
        Route(destination: p(s), table: 498, protocolNumber: proto, type: .throw)
    }
    static func natRule(_ s: String) -> Rule { Rule(priority: 498, source: p(s), table: 498, protocolNumber: proto) }

    static func spec(mode: EncapsulationMode, natOutgoing: Bool = true) -> TopologySpec {
        ExampleCluster.spec(mode: mode, natOutgoing: natOutgoing)
    }

    struct Row: CustomTestStringConvertible, Sendable {
        var name: String
        var spec: TopologySpec
        var routes: Set<Route>
        var rules: Set<Rule>
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        Row(
            name:
                "Always, natOutgoing: remote blocks and tunnel addresses into the TUN, local block blackholed, NAT table",
            spec: spec(mode: .always),
            routes: [
                viaTun("192.168.1.0/26"), viaTun("192.168.1.1/32"), viaTun("192.168.2.0/26"), viaTun("192.168.2.1/32"),
                blackhole("192.168.0.0/26"),
                natDefault, natFailClosed, natThrow("192.168.0.0/16"),
            ],
            rules: [natRule("192.168.0.0/16")]),
        Row(
            name: "CrossSubnet: the same-subnet node natively via its IP, the other through the TUN",
            spec: spec(mode: .crossSubnet),
            routes: [
                native("192.168.1.0/26", "10.0.0.2"), native("192.168.1.1/32", "10.0.0.2"),
                viaTun("192.168.2.0/26"), viaTun("192.168.2.1/32"),
                blackhole("192.168.0.0/26"),
                natDefault, natFailClosed, natThrow("192.168.0.0/16"),
            ],
            rules: [natRule("192.168.0.0/16")]),
        Row(
            name: "Never without natOutgoing: everything native, no NAT table, no rules",
            spec: spec(mode: .never, natOutgoing: false),
            routes: [
                native("192.168.1.0/26", "10.0.0.2"), native("192.168.1.1/32", "10.0.0.2"),
                native("192.168.2.0/26", "10.0.1.3"), native("192.168.2.1/32", "10.0.1.3"),
                blackhole("192.168.0.0/26"),
            ],
            rules: []),
        Row(
            name: "ipipMTU, a VXLAN pool, a block outside the pools, a node without address, a disabled NAT pool",
            spec: {
                var s = spec(mode: .always)
                s.ipipMTU = 1400
                s.pools.append(.init(name: "vx", prefix: p("172.16.0.0/16"), ipipMode: .never, vxlanEnabled: true))
                s.pools.append(
                    .init(name: "off", prefix: p("10.244.0.0/16"), ipipMode: .always, natOutgoing: true, disabled: true)
                )
                s.nodes.append(.init(name: "node-d", address: nil))
                s.blocks.append(.init(prefix: p("172.16.3.0/26"), node: "node-b"))  // in the VXLAN pool
                s.blocks.append(.init(prefix: p("100.64.0.0/26"), node: "node-c"))  // in no pool: native
                s.blocks.append(.init(prefix: p("192.168.4.0/26"), node: "node-d"))  // node without address
                return s
            }(),
            routes: [
                viaTun("192.168.1.0/26", mtu: 1400), viaTun("192.168.1.1/32", mtu: 1400),
                viaTun("192.168.2.0/26", mtu: 1400), viaTun("192.168.2.1/32", mtu: 1400),
                native("100.64.0.0/26", "10.0.1.3"),
                blackhole("192.168.0.0/26"),
                natDefault, natFailClosed, natThrow("192.168.0.0/16"), natThrow("172.16.0.0/16"),
                natThrow("10.244.0.0/16"),
                natThrow("100.64.0.0/26"),
            ],
            rules: [natRule("192.168.0.0/16"), natRule("10.244.0.0/16")]),
    ]

    @Test("desired routes and rules", arguments: rows)
    func desired(_ row: Row) throws {
        let topology = try Topology.compile(row.spec)
        let d = HostRoutes.desired(for: topology, tunnelInterface: Self.tun, uplinkInterface: Self.uplink)
        #expect(
            d.routes.subtracting(row.routes).isEmpty,
            "unexpected: \(d.routes.subtracting(row.routes).map(\.description).sorted())")
        #expect(
            row.routes.subtracting(d.routes).isEmpty,
            "missing: \(row.routes.subtracting(d.routes).map(\.description).sorted())")
        #expect(d.rules == row.rules)
        // Every route lands in a table the default reconciler owns.
        #expect(d.routes.allSatisfy { HostRoutes.tables().contains($0.table) })
    }

    @Test("a custom NAT table and protocol number are used throughout")
    func customTable() throws {
        let topology = try Topology.compile(Self.spec(mode: .always))
        let d = HostRoutes.desired(
            for: topology, tunnelInterface: 1, uplinkInterface: 2, natTable: 1000, protocolNumber: 99)
        #expect(d.routes.allSatisfy { $0.protocolNumber == 99 && ($0.table == 254 || $0.table == 1000) })
        #expect(d.routes.filter { $0.table == 1000 }.count == 3)
        #expect(d.rules == [Rule(priority: 498, source: Self.p("192.168.0.0/16"), table: 1000, protocolNumber: 99)])
        #expect(HostRoutes.tables(natTable: 1000) == [254, 1000])
    }
}

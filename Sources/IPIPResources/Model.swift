import IPIPCore

/// The only API version this module reads: Calico's v3 resources.
public let calicoAPIVersion = "projectcalico.org/v3"

/// A YAML/JSON value kept as written, for fields this module accepts but does not interpret.
public enum RawValue: Hashable, Sendable {
    /// `null` or an empty value.
    case null
    /// A boolean.
    case bool(Bool)
    /// An integer.
    case int(Int)
    /// A floating-point number.
    case double(Double)
    /// A string (also any scalar of another YAML type, such as a timestamp).
    case string(String)
    /// A list.
    case list([RawValue])
    /// A mapping with string keys.
    case mapping([String: RawValue])
}

/// Kubernetes object metadata, as Calico v3 resources carry it.
public struct ObjectMetadata: Hashable, Sendable {
    /// The resource name (a DNS-1123 subdomain).
    public var name: String
    /// Must be absent: none of the kinds read here is namespaced.
    public var namespace: String?
    /// Labels.
    public var labels: [String: String]
    /// Annotations.
    public var annotations: [String: String]
    /// Datastore revision, as written by `calicoctl get`.
    public var resourceVersion: String?
    /// Unique id set by the datastore on create.
    public var uid: String?
    /// RFC 3339 creation time set by the datastore.
    public var creationTimestamp: String?
    /// Kubernetes generation counter.
    public var generation: Int?
    /// Other ObjectMeta keys (`generateName`, `selfLink`, `finalizers`, `ownerReferences`,
    /// `managedFields`, `deletionTimestamp`, ...), accepted and kept as written.
    public var other: [String: RawValue]

    /// Creates metadata with a name and nothing else.
    public init(name: String) {
        self.name = name
        namespace = nil
        labels = [:]
        annotations = [:]
        resourceVersion = nil
        uid = nil
        creationTimestamp = nil
        generation = nil
        other = [:]
    }
}

/// IP-in-IP encapsulation mode of a pool (`spec.ipipMode`); the spelling is case-sensitive.
public enum IPIPMode: String, CaseIterable, Hashable, Sendable {
    /// Always encapsulate traffic to this pool's remote blocks.
    case always = "Always"
    /// Encapsulate only when the remote node is outside the local node's subnet.
    case crossSubnet = "CrossSubnet"
    /// Never encapsulate.
    case never = "Never"

    /// The mode an **IPv4** pool gets when its manifest has no `ipipMode`.
    ///
    /// Project decision (docs/decisions.md, "Resources"): `Always`, as the Calico v3.5 IP-in-IP guide says a pool
    /// without the field behaves. Calico's own client stores `Never` in that case
    /// (Calico's `validateAndSetDefaults`), but manifests read back from a real
    /// Calico datastore always carry an explicit value, so interoperability is unaffected.
    /// IPv6 pools default to `Never` (IP-in-IP over IPv6 pools is not supported), and so does a
    /// pool with VXLAN enabled (a pool cannot use both encapsulations, and a VXLAN manifest without
    /// `ipipMode` means a VXLAN pool).
    public static let defaultForIPv4Pools: IPIPMode = .always

    /// True for `Always` and `CrossSubnet`.
    public var isEnabled: Bool { self != .never }
}

/// VXLAN encapsulation mode of a pool (`spec.vxlanMode`). Stored and validated; this dataplane
/// does not route VXLAN pools.
public enum VXLANMode: String, CaseIterable, Hashable, Sendable {
    /// Always encapsulate.
    case always = "Always"
    /// Encapsulate across subnets only.
    case crossSubnet = "CrossSubnet"
    /// Never encapsulate (the default).
    case never = "Never"

    /// True for `Always` and `CrossSubnet`.
    public var isEnabled: Bool { self != .never }
}

/// What a pool's addresses may be used for (`spec.allowedUses`).
public enum IPPoolAllowedUse: String, CaseIterable, Hashable, Sendable {
    /// Pod (workload) addresses.
    case workload = "Workload"
    /// Tunnel device addresses.
    case tunnel = "Tunnel"
    /// Service LoadBalancer addresses.
    case loadBalancer = "LoadBalancer"
}

/// How addresses are handed out from a pool (`spec.assignmentMode`).
public enum AssignmentMode: String, CaseIterable, Hashable, Sendable {
    /// IPAM may pick the pool on its own (the default).
    case automatic = "Automatic"
    /// Only used when explicitly requested.
    case manual = "Manual"
}

/// A Calico `IPPool` (`projectcalico.org/v3`), after defaults.
public struct IPPool: Hashable, Sendable {
    /// Object metadata.
    public var metadata: ObjectMetadata
    /// The pool's specification.
    public var spec: Spec
    /// Where the object starts in its source.
    public var location: SourceLocation
    /// Where `spec.cidr` is written (set-level errors about the CIDR point here).
    public var cidrLocation: SourceLocation

    /// The pool's specification with every default filled in.
    public struct Spec: Hashable, Sendable {
        /// The pool CIDR in canonical form (masked, lower-case IPv6).
        public var cidr: String
        /// The parsed CIDR (IPv4 or IPv6).
        public var prefix: IPPrefix
        /// IP-in-IP mode; see `IPIPMode.defaultForIPv4Pools` for the default.
        public var ipipMode: IPIPMode
        /// VXLAN mode; default `Never`.
        public var vxlanMode: VXLANMode
        /// Masquerade traffic from this pool to destinations outside all pools; default false.
        public var natOutgoing: Bool
        /// IPAM does not allocate from a disabled pool (routing and NAT still apply); default false.
        public var disabled: Bool
        /// Do not export the pool's routes over BGP; default false.
        public var disableBGPExport: Bool
        /// Block size: default 26 (IPv4) or 122 (IPv6).
        public var blockSize: Int
        /// Node selector; default `all()`.
        public var nodeSelector: String
        /// Namespace selector; default empty (no restriction).
        public var namespaceSelector: String
        /// Allowed uses; default `[Workload, Tunnel]`.
        public var allowedUses: [IPPoolAllowedUse]
        /// Assignment mode; default `Automatic`.
        public var assignmentMode: AssignmentMode
    }

    /// The pool CIDR when it is an IPv4 pool; nil for an IPv6 pool.
    public var ipv4Prefix: IPv4Prefix? { spec.prefix.ipv4 }
}

/// A Calico `Node` (`projectcalico.org/v3`).
public struct Node: Hashable, Sendable {
    /// Object metadata.
    public var metadata: ObjectMetadata
    /// The node's specification.
    public var spec: Spec
    /// `status` as written (Wireguard public keys, pod CIDRs), not interpreted.
    public var status: [String: RawValue]
    /// Where the object starts in its source.
    public var location: SourceLocation

    /// `spec` of a Node.
    public struct Spec: Hashable, Sendable {
        /// BGP settings, including the node address; nil when the manifest has no `bgp`.
        public var bgp: BGP?
        /// IPv4 VXLAN tunnel address.
        public var ipv4VXLANTunnelAddr: String?
        /// IPv4 VXLAN tunnel MAC address.
        public var vxlanTunnelMACAddr: String?
        /// IPv6 VXLAN tunnel address.
        public var ipv6VXLANTunnelAddr: String?
        /// IPv6 VXLAN tunnel MAC address.
        public var vxlanTunnelMACAddrV6: String?
        /// Orchestrator references.
        public var orchRefs: [OrchRef]
        /// Wireguard interface addresses, as written.
        public var wireguard: [String: RawValue]?
        /// Addresses the node can be reached at, as written (`address`, `type`).
        public var addresses: [[String: RawValue]]
        /// Interfaces on the node, as written (`name`, `addresses`).
        public var interfaces: [[String: RawValue]]

        /// An empty spec.
        public init() {
            bgp = nil
            ipv4VXLANTunnelAddr = nil
            vxlanTunnelMACAddr = nil
            ipv6VXLANTunnelAddr = nil
            vxlanTunnelMACAddrV6 = nil
            orchRefs = []
            wireguard = nil
            addresses = []
            interfaces = []
        }
    }

    /// `spec.bgp` of a Node.
    public struct BGP: Hashable, Sendable {
        /// The node IPv4 address with its subnet, host bits kept (`10.0.0.5/24`); a bare address is a /32.
        /// The address is the tunnel endpoint; the prefix is the subnet CrossSubnet compares against.
        public var ipv4Address: IPv4Prefix?
        /// The node IPv6 address with optional prefix, as written.
        public var ipv6Address: String?
        /// The node's IP-in-IP tunnel address.
        public var ipv4IPIPTunnelAddr: IPv4Address?
        /// The node's AS number (asdot `a.b` is converted to the 32-bit number).
        public var asNumber: UInt32?
        /// Route-reflector cluster id (an IPv4 address), as written.
        public var routeReflectorClusterID: String?
    }

    /// One entry of `spec.orchRefs`.
    public struct OrchRef: Hashable, Sendable {
        /// The node's name in the orchestrator.
        public var nodeName: String?
        /// The orchestrator (`k8s`, ...).
        public var orchestrator: String
    }
}

/// State of a block affinity (`spec.state`).
public enum BlockAffinityState: String, CaseIterable, Hashable, Sendable {
    /// The block is claimed by the node.
    case confirmed
    /// The claim is in progress.
    case pending
    /// The claim is being released.
    case pendingDeletion
}

/// A Calico `BlockAffinity`: which IPAM block belongs to which node.
public struct BlockAffinity: Hashable, Sendable {
    /// Object metadata.
    public var metadata: ObjectMetadata
    /// The affinity's specification.
    public var spec: Spec
    /// Where the object starts in its source.
    public var location: SourceLocation

    /// `spec` of a BlockAffinity.
    public struct Spec: Hashable, Sendable {
        /// Claim state.
        public var state: BlockAffinityState
        /// The node the block is affine to.
        public var node: String
        /// The block CIDR in canonical form.
        public var cidr: String
        /// The parsed block CIDR.
        public var prefix: IPPrefix
        /// Affinity type (`host` or `virtual` in current Calico); nil when absent.
        public var type: String?
        /// True while the affinity is being deleted: treat the block as absent. Calico writes this
        /// as a string (`"true"`/`"false"`) in some versions and as a bool in others.
        public var deleted: Bool
    }

    /// The block CIDR when it is IPv4.
    public var ipv4Prefix: IPv4Prefix? { spec.prefix.ipv4 }
}

/// One decoded resource.
public enum Resource: Hashable, Sendable {
    /// An IPPool.
    case ipPool(IPPool)
    /// A Node.
    case node(Node)
    /// A BlockAffinity.
    case blockAffinity(BlockAffinity)
    /// A FelixConfiguration.
    case felixConfiguration(FelixConfiguration)

    /// The resource kind as written in manifests.
    public var kind: String {
        switch self {
        case .ipPool: "IPPool"
        case .node: "Node"
        case .blockAffinity: "BlockAffinity"
        case .felixConfiguration: "FelixConfiguration"
        }
    }

    /// `metadata.name`.
    public var name: String {
        switch self {
        case .ipPool(let r): r.metadata.name
        case .node(let r): r.metadata.name
        case .blockAffinity(let r): r.metadata.name
        case .felixConfiguration(let r): r.metadata.name
        }
    }

    /// Where the object starts in its source.
    public var location: SourceLocation {
        switch self {
        case .ipPool(let r): r.location
        case .node(let r): r.location
        case .blockAffinity(let r): r.location
        case .felixConfiguration(let r): r.location
        }
    }
}

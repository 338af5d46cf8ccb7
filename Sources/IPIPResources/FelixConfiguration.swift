import IPIPCore

/// A Calico `FelixConfiguration` (`projectcalico.org/v3`): `default` for the cluster or
/// `node.<name>` for one node.
///
/// The fields this dataplane uses are typed and validated. Every other key of Calico's
/// `FelixConfigurationSpec` is accepted (a real datastore contains them) and kept, unvalidated, in
/// `Spec.other`; a key Calico does not have is an error.
public struct FelixConfiguration: Hashable, Sendable {
    /// Object metadata.
    public var metadata: ObjectMetadata
    /// The configuration.
    public var spec: Spec
    /// Where the object starts in its source.
    public var location: SourceLocation

    /// The typed part of `FelixConfigurationSpec`, plus the rest as written.
    public struct Spec: Hashable, Sendable {
        /// `ipipEnabled`: force the IP-in-IP device on or off; nil lets the pools decide.
        public var ipipEnabled: Bool?
        /// `ipipMTU`: tunnel MTU; nil or 0 means underlay MTU − 20.
        public var ipipMTU: Int?
        /// `natPortRange`: source ports for outgoing NAT (a single port is a one-port range).
        public var natPortRange: ClosedRange<UInt16>?
        /// `natOutgoingAddress`: fixed SNAT source address instead of the node address.
        public var natOutgoingAddress: IPv4Address?
        /// `iptablesNATOutgoingInterfaceFilter`: only NAT traffic leaving interfaces matching this
        /// iptables-style name (`+` is a wildcard).
        public var iptablesNATOutgoingInterfaceFilter: String?
        /// `externalNodesList` (Go field `ExternalNodesCIDRList`): non-Calico hosts allowed to send
        /// tunnel traffic, each an IPv4/IPv6 CIDR or address, as written.
        public var externalNodesCIDRList: [String]
        /// The IPv4 entries of `externalNodesCIDRList`, a bare address as a /32.
        public var externalNodesIPv4: [IPv4Prefix]
        /// `logSeverityScreen`: `Trace`, `Debug`, `Info`, `Warning`, `Error` or `Fatal` (any case).
        public var logSeverityScreen: String?
        /// `prometheusMetricsEnabled`.
        public var prometheusMetricsEnabled: Bool?
        /// `prometheusMetricsHost`.
        public var prometheusMetricsHost: String?
        /// `prometheusMetricsPort`.
        public var prometheusMetricsPort: Int?
        /// `healthEnabled`: serve `/liveness` and `/readiness` (Felix's default: false).
        public var healthEnabled: Bool?
        /// `healthHost`: the address the health endpoints listen on, an IPv4 address or
        /// `localhost` (Felix's default: `localhost`).
        public var healthHost: String?
        /// `healthPort`: 0…65535 (Felix's default: 9099).
        public var healthPort: Int?
        /// `debugSimulateDataplaneHangAfter` in seconds (a Kubernetes duration such as `30s` when
        /// written): for testing the health checks, a packet loop blocks this long after the start.
        /// Never set it in production.
        public var debugSimulateDataplaneHangAfter: Double?
        /// `debugSimulateDataplaneHangAfter` as written (kept so that encoding gives it back).
        public var debugSimulateDataplaneHangAfterText: String?
        /// Every other known key, as written.
        public var other: [String: RawValue]

        /// An empty spec.
        public init() {
            ipipEnabled = nil
            ipipMTU = nil
            natPortRange = nil
            natOutgoingAddress = nil
            iptablesNATOutgoingInterfaceFilter = nil
            externalNodesCIDRList = []
            externalNodesIPv4 = []
            logSeverityScreen = nil
            prometheusMetricsEnabled = nil
            prometheusMetricsHost = nil
            prometheusMetricsPort = nil
            healthEnabled = nil
            healthHost = nil
            healthPort = nil
            debugSimulateDataplaneHangAfter = nil
            debugSimulateDataplaneHangAfterText = nil
            other = [:]
        }
    }

    /// The spec keys this module types.
    static let typedSpecKeys: Set<String> = [
        "ipipEnabled", "ipipMTU", "natPortRange", "natOutgoingAddress", "iptablesNATOutgoingInterfaceFilter",
        "externalNodesList", "logSeverityScreen", "prometheusMetricsEnabled", "prometheusMetricsHost",
        "prometheusMetricsPort", "healthEnabled", "healthHost", "healthPort", "debugSimulateDataplaneHangAfter",
    ]

    /// Every JSON key of Calico's `FelixConfigurationSpec` (projectcalico/calico
    /// `api/pkg/apis/projectcalico/v3/felixconfig.go`, 2025 master, plus keys of older releases that
    /// datastores may still hold).
    static let knownSpecKeys: Set<String> = typedSpecKeys.union([
        "allowIPIPPacketsFromWorkloads", "allowVXLANPacketsFromWorkloads", "awsSrcDstCheck",
        "bpfCTLBLogFilter", "bpfConnectTimeLoadBalancing", "bpfConnectTimeLoadBalancingEnabled",
        "bpfConntrackLogLevel", "bpfConntrackMode", "bpfConntrackTimeouts", "bpfDSROptoutCIDRs",
        "bpfDataIfacePattern", "bpfDisableGROForIfaces", "bpfDisableUnprivileged", "bpfEnabled", "bpfEnforceRPF",
        "bpfExcludeCIDRsFromNAT", "bpfExportBufferSizeMB", "bpfExtToServiceConnmark", "bpfExternalServiceMode",
        "bpfForceTrackPacketsFromIfaces", "bpfHostConntrackBypass", "bpfHostNetworkedNATWithoutCTLB",
        "bpfKubeProxyEndpointSlicesEnabled", "bpfKubeProxyIptablesCleanupEnabled", "bpfKubeProxyMinSyncPeriod",
        "bpfL3IfacePattern", "bpfLogFilters", "bpfLogLevel", "bpfMapSizeConntrack",
        "bpfMapSizeConntrackCleanupQueue", "bpfMapSizeConntrackScaling", "bpfMapSizeIPSets", "bpfMapSizeIfState",
        "bpfMapSizeNATAffinity", "bpfMapSizeNATBackend", "bpfMapSizeNATFrontend", "bpfMapSizePerCpuConntrack",
        "bpfMapSizeRoute", "bpfPSNATPorts", "bpfPolicyDebugEnabled", "bpfProfiling", "bpfRedirectToPeer",
        "chainInsertMode", "dataplaneDriver", "dataplaneWatchdogTimeout", "debugDisableLogDropping", "debugHost",
        "debugMemoryProfilePath", "debugPort", "debugSimulateCalcGraphHangAfter",
        "debugSimulateDataplaneApplyDelay", "debugSimulateDataplaneHangAfter", "defaultEndpointToHostAction",
        "deviceRouteProtocol", "deviceRouteSourceAddress", "deviceRouteSourceAddressIPv6",
        "disableConntrackInvalidCheck", "endpointReportingDelay", "endpointReportingEnabled",
        "endpointStatusPathPrefix", "failsafeInboundHostPorts", "failsafeOutboundHostPorts",
        "featureDetectOverride", "featureGates", "floatingIPs", "flowLogsCollectorDebugTrace",
        "flowLogsFlushInterval", "flowLogsGoldmaneServer", "flowLogsLocalReporter",
        "flowLogsPolicyEvaluationMode", "genericXDPEnabled", "goGCThreshold", "goMaxProcs", "goMemoryLimitMB",
        "healthEnabled", "healthHost", "healthPort", "healthTimeoutOverrides", "interfaceExclude",
        "interfacePrefix", "interfaceRefreshInterval", "ipForwarding", "ipsetsRefreshInterval", "ipv6Support",
        "iptablesBackend", "iptablesFilterAllowAction", "iptablesFilterDenyAction", "iptablesLockFilePath",
        "iptablesLockProbeInterval", "iptablesLockTimeout", "iptablesMangleAllowAction", "iptablesMarkMask",
        "iptablesPostWriteCheckInterval", "iptablesRefreshInterval", "kubeNodePortRanges", "logDebugFilenameRegex",
        "logFilePath", "logPrefix", "logSeverityFile", "logSeveritySys", "maxIpsetSize", "metadataAddr",
        "metadataPort", "mtuIfacePattern", "natOutgoingExclusions", "netlinkTimeout", "nftablesFilterAllowAction",
        "nftablesFilterDenyAction", "nftablesMangleAllowAction", "nftablesMarkMask", "nftablesMode",
        "nftablesRefreshInterval", "openstackRegion", "policySyncPathPrefix", "programClusterRoutes",
        "prometheusGoMetricsEnabled", "prometheusProcessMetricsEnabled", "prometheusWireGuardMetricsEnabled",
        "removeExternalRoutes", "reportingInterval", "reportingTTL", "requireMTUFile", "routeRefreshInterval",
        "routeSource", "routeSyncDisabled", "routeTableRange", "routeTableRanges", "serviceLoopPrevention",
        "sidecarAccelerationEnabled", "usageReportingEnabled", "usageReportingInitialDelay",
        "usageReportingInterval", "useInternalDataplaneDriver", "vxlanEnabled", "vxlanMTU", "vxlanMTUV6",
        "vxlanPort", "vxlanVNI", "windowsManageFirewallRules", "wireguardEnabled", "wireguardEnabledV6",
        "wireguardHostEncryptionEnabled", "wireguardInterfaceName", "wireguardInterfaceNameV6",
        "wireguardKeepAlive", "wireguardListeningPort", "wireguardListeningPortV6", "wireguardMTU",
        "wireguardMTUV6", "wireguardRoutingRulePriority", "wireguardThreadingEnabled", "workloadSourceSpoofing",
        "xdpEnabled", "xdpRefreshInterval",
    ])
}

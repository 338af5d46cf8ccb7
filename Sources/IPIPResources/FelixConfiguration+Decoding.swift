import IPIPCore
import Yams

extension KindDecoder {
    /// Decodes a FelixConfiguration spec: the typed fields are checked, every other key Calico knows
    /// is kept as written, and unknown keys are errors.
    mutating func decodeFelixConfiguration(metadata: ObjectMetadata, spec: Yams.Node?) -> FelixConfiguration? {
        let fields = specFields(spec, allowed: FelixConfiguration.knownSpecKeys)
        var result = FelixConfiguration.Spec()
        result.ipipEnabled = reader.bool(fields["ipipEnabled"], "spec.ipipEnabled")
        result.ipipMTU = reader.int(fields["ipipMTU"], "spec.ipipMTU")
        result.prometheusMetricsEnabled = reader.bool(
            fields["prometheusMetricsEnabled"],
            "spec.prometheusMetricsEnabled")
        result.prometheusMetricsHost = nonEmptyString(fields["prometheusMetricsHost"], "spec.prometheusMetricsHost")
        result.prometheusMetricsPort = reader.int(fields["prometheusMetricsPort"], "spec.prometheusMetricsPort")
        result.healthEnabled = reader.bool(fields["healthEnabled"], "spec.healthEnabled")
        result.healthHost = nonEmptyString(fields["healthHost"], "spec.healthHost")
        if let host = result.healthHost, host != "localhost", IPv4Address(host) == nil {
            // Felix accepts a hostname too and resolves it; this dataplane listens on IPv4
            // literals only, so anything else would fail at the start, far from its line.
            reader.fail(
                "spec.healthHost",
                "invalid health host '\(host)': expected an IPv4 address or 'localhost' (this dataplane listens on IPv4 only)"
            )
        }
        result.healthPort = reader.int(fields["healthPort"], "spec.healthPort")
        if let port = result.healthPort, !(0...65535).contains(port) {
            reader.fail("spec.healthPort", "invalid port \(port): expected 0…65535")
        }
        if let text = nonEmptyString(fields["debugSimulateDataplaneHangAfter"], "spec.debugSimulateDataplaneHangAfter")
        {
            switch GoDuration.seconds(text) {
            case .success(let seconds) where seconds >= 0:
                result.debugSimulateDataplaneHangAfter = seconds
                result.debugSimulateDataplaneHangAfterText = text
            case .success:
                reader.fail("spec.debugSimulateDataplaneHangAfter", "invalid duration '\(text)': must not be negative")
            case .failure(let problem):
                reader.fail("spec.debugSimulateDataplaneHangAfter", "invalid duration '\(text)': \(problem.reason)")
            }
        }
        if let node = fields["natPortRange"], !ObjectReader.isNull(node) {
            result.natPortRange = decodePortRange(node, "spec.natPortRange")
        }
        if let text = nonEmptyString(fields["natOutgoingAddress"], "spec.natOutgoingAddress") {
            result.natOutgoingAddress = IPv4Address(text)
            if result.natOutgoingAddress == nil {
                reader.fail("spec.natOutgoingAddress", "invalid IPv4 address '\(text)'")
            }
        }
        result.iptablesNATOutgoingInterfaceFilter = nonEmptyString(
            fields["iptablesNATOutgoingInterfaceFilter"], "spec.iptablesNATOutgoingInterfaceFilter")
        checkTag(
            result.iptablesNATOutgoingInterfaceFilter, path: "spec.iptablesNATOutgoingInterfaceFilter",
            jsonName: "iptablesNATOutgoingInterfaceFilter", tag: "ifaceFilter", Self.isInterfaceFilter)
        result.logSeverityScreen = nonEmptyString(fields["logSeverityScreen"], "spec.logSeverityScreen")
        checkTag(
            result.logSeverityScreen, path: "spec.logSeverityScreen", jsonName: "logSeverityScreen",
            tag: "logLevel"
        ) { ["trace", "debug", "info", "warning", "error", "fatal"].contains($0.lowercased()) }
        if let listNode = fields["externalNodesList"], !ObjectReader.isNull(listNode) {
            for (path, node) in reader.list(listNode, "spec.externalNodesList") ?? [] {
                guard let text = reader.string(node, path) else { continue }
                switch IPPrefix(text, allowBareAddress: true) {
                case .v4(let prefix)?:
                    result.externalNodesIPv4.append(prefix)
                case .v6?:
                    break
                case nil:
                    reader.fail(path, "invalid CIDR or IP address '\(text)'")
                }
                result.externalNodesCIDRList.append(text)
            }
        }
        for (key, value) in fields where !FelixConfiguration.typedSpecKeys.contains(key) {
            result.other[key] = reader.raw(value, "spec.\(key)")
        }
        return FelixConfiguration(metadata: metadata, spec: result, location: location)
    }

    /// Calico's `ifaceFilter` tag: `^[a-zA-Z0-9:._+-]{1,15}$`.
    private static func isInterfaceFilter(_ text: String) -> Bool {
        (1...15).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "_"),
                    UInt8(ascii: "+"), UInt8(ascii: "-"):
                    true
                default:
                    false
                }
            }
    }

    /// Calico's `numorstring.Port` as a range: an integer, or a string `"port"` or `"low:high"`.
    /// Named ports are not valid here.
    private mutating func decodePortRange(_ node: Yams.Node, _ path: String) -> ClosedRange<UInt16>? {
        guard case .scalar(let scalar) = node else {
            reader.fail(path, "expected a port or a \"low:high\" range, found \(reader.describe(node))", at: node.mark)
            return nil
        }
        // A plain `32768:60999` is a YAML 1.1 sexagesimal integer to Yams when the part after the
        // colon is short (`1:59`); read the text, never the resolved number, when it has a colon.
        let text = scalar.string
        let tag = ObjectReader.tagName(node)
        guard tag == .str || tag == .int || text.contains(":") else {
            reader.fail(path, "expected a port or a \"low:high\" range, found \(reader.describe(node))", at: node.mark)
            return nil
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let numbers = parts.map { part in
            part.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } ? UInt16(part) : nil
        }
        switch (numbers.count, numbers.first ?? nil, numbers.last ?? nil) {
        case (1, let port?, _):
            return port...port
        case (2, let low?, let high?) where low <= high:
            return low...high
        case (2, let low?, let high?):
            reader.fail(
                path, "minimum port number (\(low)) is greater than maximum port number (\(high)) in port range",
                at: node.mark)
        default:
            reader.fail(
                path, "invalid port range '\(text)': expected a port or 'low:high' with ports 0…65535",
                at: node.mark)
        }
        return nil
    }
}

/// Calico's validation messages and the Kubernetes name/label rules it applies, rendered the way
/// libcalico-go renders them (`lib/errors/errors.go`, `lib/validator/v3/validator.go`).
enum CalicoMessage {
    /// `error with field <Name> = '<Value>' (<Reason>)`.
    static func field(_ name: String, _ value: String, _ reason: String) -> String {
        "error with field \(name) = '\(value)' (\(reason))"
    }

    /// The generic reason of a failed field-level validation tag, as in
    /// `error with field cidr = '10.0.1.0/33' (Reason: failed to validate Field: cidr because of Tag: net )`.
    static func tag(_ jsonName: String, _ value: String, _ tag: String) -> String {
        field(jsonName, value, "Reason: failed to validate Field: \(jsonName) because of Tag: \(tag) ")
    }

    static let cidrMissing = "IPPool CIDR must be specified"
    static let cidrInvalid = "IPPool CIDR must be a valid subnet"
    static let cidrNotStrictlyMasked = "IP pool CIDR is not strictly masked"
    static let poolTooSmall =
        "IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size."
    static let ipv4LinkLocal = "IP pool range overlaps with IPv4 Link Local range 169.254.0.0/16"
    static let ipv6LinkLocal = "IP pool range overlaps with IPv6 Link Local range fe80::/10"
    static let ipipOnIPv6 = "IPIPMode other than 'Never' is not supported on an IPv6 IP pool"
    static let ipipAndVXLAN = "IPIPMode and VXLANMode cannot both be enabled on the same IP pool"
    static let ipv4BlockSize = "IPv4 block size must be between 20 and 32"
    static let ipv6BlockSize = "IPv6 block size must be between 116 and 128"
    static let globalNodeSelector = "global() selector is not valid for IPPool nodeSelector"
    static let emptyBGP = "Spec.BGP should not be empty"
    static let nameRequired = "field must be set for a Create request"

    static func nonNamespaced(_ kind: String) -> String {
        "namespace should not be specified for a non-namespaced resource. \(kind) is not a namespaced resource"
    }

    static func unknownResource(kind: String, apiVersion: String) -> String {
        "Unknown resource type (\(kind)) and/or version (\(apiVersion))"
    }

    static func unsupportedResource(_ kind: String) -> String { "resource type '\(kind)' is not supported" }

    static func overlap(new: String, other: String, otherCIDR: String) -> String {
        "IPPool(\(new)) CIDR overlaps with IPPool(\(other)) CIDR \(otherCIDR)"
    }
}

/// Kubernetes `k8s.io/apimachinery/pkg/util/validation` checks, with their exact messages.
enum KubernetesNames {
    static let dns1123SubdomainMaxLength = 253
    static let qualifiedNameMaxLength = 63
    static let labelValueMaxLength = 63
    static let annotationsTotalSizeLimit = 256 * 1024

    static let dns1123LabelFormat = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    static let dns1123SubdomainFormat = dns1123LabelFormat + "(\\." + dns1123LabelFormat + ")*"
    static let qualifiedNameFormat = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
    static let labelValueFormat = "(" + qualifiedNameFormat + ")?"

    /// Calico's `Metadata.Name` reason for a name that is not a DNS-1123 subdomain.
    static let calicoNameMessage =
        "name must consist of lower case alphanumeric characters, '-' or '.' (regex: \(dns1123SubdomainFormat))"

    static func regexError(_ message: String, _ format: String, _ examples: [String]) -> String {
        let quoted = examples.map { "'\($0)', " }.joined(separator: " or ")
        return "\(message) (e.g. \(quoted)regex used for validation is '\(format)')"
    }

    private static func isLowerAlnum(_ b: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
    }

    private static func isAlnum(_ b: UInt8) -> Bool {
        isLowerAlnum(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
    }

    /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, anchored.
    static func matchesDNS1123Subdomain(_ text: String) -> Bool {
        let labels = text.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            guard let first = label.first, let last = label.last, isLowerAlnum(first), isLowerAlnum(last) else {
                return false
            }
            return label.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
    static func matchesQualifiedName(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last) else { return false }
        return bytes.allSatisfy {
            isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
        }
    }

    /// `IsDNS1123Subdomain`.
    static func dns1123SubdomainErrors(_ value: String) -> [String] {
        var errors: [String] = []
        if value.utf8.count > dns1123SubdomainMaxLength {
            errors.append("must be no more than \(dns1123SubdomainMaxLength) characters")
        }
        if !matchesDNS1123Subdomain(value) {
            errors.append(
                regexError(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                        + "and must start and end with an alphanumeric character",
                    dns1123SubdomainFormat, ["example.com"]))
        }
        return errors
    }

    private static let qualifiedNameMessage =
        "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"

    /// `IsQualifiedName` (label keys, annotation keys).
    static func qualifiedNameErrors(_ value: String) -> [String] {
        let parts = value.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var errors: [String] = []
        let name: String
        switch parts.count {
        case 1:
            name = parts[0]
        case 2:
            name = parts[1]
            if parts[0].isEmpty {
                errors.append("prefix part must be non-empty")
            } else {
                errors += dns1123SubdomainErrors(parts[0]).map { "prefix part " + $0 }
            }
        default:
            return [
                "a qualified name "
                    + regexError(qualifiedNameMessage, qualifiedNameFormat, ["MyName", "my.name", "123-abc"])
                    + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        }
        if name.isEmpty {
            errors.append("name part must be non-empty")
        } else if name.utf8.count > qualifiedNameMaxLength {
            errors.append("name part must be no more than \(qualifiedNameMaxLength) characters")
        }
        if !matchesQualifiedName(name) {
            errors.append(
                "name part "
                    + regexError(qualifiedNameMessage, qualifiedNameFormat, ["MyName", "my.name", "123-abc"]))
        }
        return errors
    }

    /// `IsValidLabelValue`.
    static func labelValueErrors(_ value: String) -> [String] {
        var errors: [String] = []
        if value.utf8.count > labelValueMaxLength {
            errors.append("must be no more than \(labelValueMaxLength) characters")
        }
        if !value.isEmpty, !matchesQualifiedName(value) {
            errors.append(
                regexError(
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                        + "and must start and end with an alphanumeric character",
                    labelValueFormat, ["MyValue", "my_value", "12345"]))
        }
        return errors
    }
}

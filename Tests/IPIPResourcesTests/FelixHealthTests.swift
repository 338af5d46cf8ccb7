import Testing

@testable import IPIPResources

/// A FelixConfiguration manifest named `name` whose spec lines start on line 6.
private func felix(_ specLines: String, name: String = "default") -> String {
    "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: \(name)\nspec:\n\(specLines)\n"
}

private func decodeFelix(_ text: String) throws -> FelixConfiguration? {
    guard case .felixConfiguration(let f)? = try ResourceDecoder.decode(text, file: "t.yaml").first else { return nil }
    return f
}

@Test func healthFieldsAreTyped() throws {
    let f = try #require(
        try decodeFelix(
            felix(
                "  healthEnabled: true\n  healthHost: 0.0.0.0\n  healthPort: 9199\n  debugSimulateDataplaneHangAfter: 1m30s"
            )))
    #expect(f.spec.healthEnabled == true)
    #expect(f.spec.healthHost == "0.0.0.0")
    #expect(f.spec.healthPort == 9199)
    #expect(f.spec.debugSimulateDataplaneHangAfter == 90)
    // Typed keys are not kept a second time among the untyped ones.
    #expect(f.spec.other["healthPort"] == nil)
    #expect(f.spec.other["debugSimulateDataplaneHangAfter"] == nil)
}

@Test func healthFieldsEncodeAsWritten() throws {
    let f = try #require(
        try decodeFelix(felix("  healthEnabled: false\n  healthHost: localhost\n  debugSimulateDataplaneHangAfter: 2s"))
    )
    let json = ResourceEncoder.json(ResourceEncoder.value(.felixConfiguration(f)), indent: nil)
    #expect(json.contains("\"healthEnabled\":false"))
    #expect(json.contains("\"healthHost\":\"localhost\""))
    #expect(json.contains("\"debugSimulateDataplaneHangAfter\":\"2s\""))
}

/// A FelixConfiguration health field that must be refused, with the exact error line.
struct HealthErrorCase: CustomTestStringConvertible, Sendable {
    let name: String
    let spec: String
    let expected: String
    var testDescription: String { name }
}

@Test(
    "health fields: invalid values name file, line, column and field",
    arguments: [
        HealthErrorCase(
            name: "healthPort above 65535", spec: "  healthPort: 70000",
            expected: "t.yaml:6:15: FelixConfiguration(default) spec.healthPort: invalid port 70000: expected 0…65535"),
        HealthErrorCase(
            name: "healthPort negative", spec: "  healthPort: -1",
            expected: "t.yaml:6:15: FelixConfiguration(default) spec.healthPort: invalid port -1: expected 0…65535"),
        HealthErrorCase(
            name: "healthPort a string", spec: "  healthPort: \"9099\"",
            expected:
                "t.yaml:6:15: FelixConfiguration(default) spec.healthPort: expected an integer, found string \"9099\""),
        HealthErrorCase(
            name: "healthEnabled not a boolean", spec: "  healthEnabled: sometimes",
            expected:
                "t.yaml:6:18: FelixConfiguration(default) spec.healthEnabled: expected a boolean, found string \"sometimes\""
        ),
        HealthErrorCase(
            name: "healthHost a hostname", spec: "  healthHost: node-a.example",
            expected:
                "t.yaml:6:15: FelixConfiguration(default) spec.healthHost: invalid health host 'node-a.example': expected an IPv4 address or 'localhost' (this dataplane listens on IPv4 only)"
        ),
        HealthErrorCase(
            name: "healthHost IPv6", spec: "  healthHost: \"::1\"",
            expected:
                "t.yaml:6:15: FelixConfiguration(default) spec.healthHost: invalid health host '::1': expected an IPv4 address or 'localhost' (this dataplane listens on IPv4 only)"
        ),
        HealthErrorCase(
            name: "hang duration without unit", spec: "  debugSimulateDataplaneHangAfter: \"30\"",
            expected:
                "t.yaml:6:36: FelixConfiguration(default) spec.debugSimulateDataplaneHangAfter: invalid duration '30': missing unit (ns, us, ms, s, m or h)"
        ),
        HealthErrorCase(
            name: "hang duration with an unknown unit", spec: "  debugSimulateDataplaneHangAfter: 3d",
            expected:
                "t.yaml:6:36: FelixConfiguration(default) spec.debugSimulateDataplaneHangAfter: invalid duration '3d': unknown unit 'd' (ns, us, ms, s, m or h)"
        ),
        HealthErrorCase(
            name: "hang duration negative", spec: "  debugSimulateDataplaneHangAfter: -5s",
            expected:
                "t.yaml:6:36: FelixConfiguration(default) spec.debugSimulateDataplaneHangAfter: invalid duration '-5s': must not be negative"
        ),
        HealthErrorCase(
            name: "hang duration a number", spec: "  debugSimulateDataplaneHangAfter: 30",
            expected:
                "t.yaml:6:36: FelixConfiguration(default) spec.debugSimulateDataplaneHangAfter: expected a string, found integer 30"
        ),
    ])
func healthFieldErrors(_ row: HealthErrorCase) {
    #expect(errorLines(felix(row.spec)) == [row.expected])
}

/// A Go duration and its value in seconds.
struct DurationCase: CustomTestStringConvertible, Sendable {
    let text: String
    let seconds: Double
    var testDescription: String { text }
}

@Test(
    "Go durations",
    arguments: [
        DurationCase(text: "0", seconds: 0), DurationCase(text: "30s", seconds: 30),
        DurationCase(text: "1m30s", seconds: 90), DurationCase(text: "1.5h", seconds: 5400),
        DurationCase(text: "300ms", seconds: 0.3), DurationCase(text: "2us", seconds: 2e-6),
        DurationCase(text: "+1s", seconds: 1), DurationCase(text: "-2m", seconds: -120),
        DurationCase(text: ".5s", seconds: 0.5),
    ])
func goDurations(_ row: DurationCase) throws {
    let value = try GoDuration.seconds(row.text).get()
    #expect(abs(value - row.seconds) < 1e-9)
}

@Test(
    "not Go durations",
    arguments: ["", "s", "5", "1.2.3s", "5 s", "1x", "-", "."])
func notGoDurations(_ text: String) {
    guard case .failure = GoDuration.seconds(text) else {
        Issue.record("'\(text)' parsed as a duration")
        return
    }
}

@Test func healthSettingsLayerFelixDefaultsThenDefaultThenNode() throws {
    let none = try ResourceLoader.load(text: felix("  ipipMTU: 1400"), file: "t.yaml")
    #expect(ClusterLoader.healthSettings(from: none, node: "node-a") == FelixHealthSettings())
    #expect(FelixHealthSettings() == FelixHealthSettings(enabled: false, host: "localhost", port: 9099))
    let text =
        felix("  healthEnabled: true\n  healthPort: 9199\n  debugSimulateDataplaneHangAfter: 10s") + "---\n"
        + felix("  healthHost: 10.0.0.1\n  healthPort: 9299", name: "node.node-a")
    let set = try ResourceLoader.load(text: text, file: "t.yaml")
    let a = ClusterLoader.healthSettings(from: set, node: "node-a")
    #expect(a == FelixHealthSettings(enabled: true, host: "10.0.0.1", port: 9299, simulateDataplaneHangAfter: 10))
    #expect(a.bindAddress == "10.0.0.1")
    let b = ClusterLoader.healthSettings(from: set, node: "node-b")
    #expect(b == FelixHealthSettings(enabled: true, host: "localhost", port: 9199, simulateDataplaneHangAfter: 10))
    #expect(b.bindAddress == "127.0.0.1")
}

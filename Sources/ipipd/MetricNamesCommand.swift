import ArgumentParser
import IPIPDataplane

/// `ipipd metric-names` (hidden): every metric family the daemon can export, one per line, taken
/// from the code that renders `/metrics` (`MetricsCatalog`); `--exposition` prints an example page
/// instead. scripts/check-deploy checks the dashboard's and the rules' queries against it.
struct MetricNames: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metric-names",
        abstract: "Print every metric family /metrics can carry (for scripts/check-deploy).",
        shouldDisplay: false)

    @Flag(name: .long, help: "Print an example /metrics page with every family present instead.")
    var exposition = false

    func run() {
        if exposition {
            print(MetricsCatalog.exampleExposition(), terminator: "")
        } else {
            for name in MetricsCatalog.allFamilies { print(name) }
        }
    }
}

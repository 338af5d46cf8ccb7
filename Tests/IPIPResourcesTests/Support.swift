@testable import IPIPResources

/// The start of an IPPool manifest up to `spec:`; spec lines start on line 6.
func poolManifest(name: String = "p", _ specLines: String) -> String {
    """
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata:
      name: \(name)
    spec:
    \(specLines)
    """
}

/// Every error line the decoder reports for `text` (empty when it decodes).
func errorLines(_ text: String, file: String = "t.yaml") -> [String] {
    do {
        _ = try ResourceDecoder.decode(text, file: file)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

/// Every error line the loader reports for `text` (empty when it loads).
func loadErrorLines(_ text: String, file: String = "t.yaml") -> [String] {
    do {
        _ = try ResourceLoader.load(text: text, file: file)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

/// The single IPPool in `text`; nil when decoding fails or yields something else.
func decodePool(_ text: String) -> IPPool? {
    guard let resources = try? ResourceDecoder.decode(text, file: "t.yaml"), resources.count == 1,
        case .ipPool(let pool) = resources[0]
    else { return nil }
    return pool
}

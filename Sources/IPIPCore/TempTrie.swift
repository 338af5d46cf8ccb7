// Interim trie (per-length hash tables, 33 probes per lookup) with the final API; replaced by the
// stride-table implementation.
public struct IPv4PrefixTrie: Sendable {
    var tables: [[UInt32: UInt32]] = Array(repeating: [:], count: 33)
    public init() {}
    public mutating func insert(_ prefix: IPv4Prefix, value: UInt32) {
        tables[Int(prefix.length)][prefix.network.address.rawValue] = value
    }
    @discardableResult public mutating func remove(_ prefix: IPv4Prefix) -> UInt32? {
        tables[Int(prefix.length)].removeValue(forKey: prefix.network.address.rawValue)
    }
    public func lookup(_ address: IPv4Address) -> UInt32? { longestMatch(address)?.value }
    public func longestMatch(_ address: IPv4Address) -> (prefix: IPv4Prefix, value: UInt32)? {
        var l = 32
        while l >= 0 {
            let p = IPv4Prefix(address: address, length: UInt8(l)).network
            if let v = tables[l][p.address.rawValue] { return (p, v) }
            l -= 1
        }
        return nil
    }
    public subscript(exactly prefix: IPv4Prefix) -> UInt32? { tables[Int(prefix.length)][prefix.network.address.rawValue] }
    public var count: Int { tables.reduce(0) { $0 + $1.count } }
}

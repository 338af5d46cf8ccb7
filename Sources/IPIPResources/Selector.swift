/// A syntax checker for Calico label selectors (the common grammar, not an evaluator).
///
/// Accepted, as in `libcalico-go/lib/selector`:
/// ```
/// expr    := and ("||" and)*
/// and     := unary ("&&" unary)*
/// unary   := "!" unary | primary
/// primary := "(" expr ")" | "all()" | "global()" | "has(" label ")"
///          | label ("==" | "!=") string
///          | label ("in" | "not in") "{" [string ("," string)*] "}"
///          | label ("contains" | "starts with" | "ends with") string
/// ```
/// Strings are single- or double-quoted; labels are `[A-Za-z0-9_./-]+`. The empty selector is valid
/// (Calico treats it as `all()`).
struct SelectorSyntax {
    /// What the checker found.
    struct Result: Equatable {
        /// True when the selector uses `global()` anywhere.
        var usesGlobal: Bool
    }

    /// Why a selector failed to parse.
    struct Failure: Error, Equatable {
        var message: String
    }

    private enum Token: Equatable {
        case label(String)
        case string
        case openParen, closeParen, openBrace, closeBrace, comma
        case not, and, or, equal, notEqual
        case end
    }

    private var tokens: [Token] = []
    private var position = 0
    private var usesGlobal = false

    /// Checks `selector`; throws a `Failure` naming the first problem.
    static func check(_ selector: String) throws(Failure) -> Result {
        var checker = SelectorSyntax()
        checker.tokens = try tokenize(selector)
        if checker.tokens == [.end] { return Result(usesGlobal: false) }
        try checker.parseExpression()
        guard checker.peek == .end else { throw Failure(message: "unexpected trailing input") }
        return Result(usesGlobal: checker.usesGlobal)
    }

    private static func isLabelByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "/"),
            UInt8(ascii: "-"):
            true
        default:
            false
        }
    }

    private static func tokenize(_ text: String) throws(Failure) -> [Token] {
        let bytes = Array(text.utf8)
        var tokens: [Token] = []
        var i = 0
        func starts(_ literal: String) -> Bool {
            let l = Array(literal.utf8)
            return i + l.count <= bytes.count && Array(bytes[i..<(i + l.count)]) == l
        }
        while i < bytes.count {
            let byte = bytes[i]
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                i += 1
            case UInt8(ascii: "("):
                tokens.append(.openParen)
                i += 1
            case UInt8(ascii: ")"):
                tokens.append(.closeParen)
                i += 1
            case UInt8(ascii: "{"):
                tokens.append(.openBrace)
                i += 1
            case UInt8(ascii: "}"):
                tokens.append(.closeBrace)
                i += 1
            case UInt8(ascii: ","):
                tokens.append(.comma)
                i += 1
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                guard let close = bytes[(i + 1)...].firstIndex(of: byte) else {
                    throw Failure(message: "unterminated string")
                }
                tokens.append(.string)
                i = close + 1
            case UInt8(ascii: "!"):
                if starts("!=") {
                    tokens.append(.notEqual)
                    i += 2
                } else {
                    tokens.append(.not)
                    i += 1
                }
            case UInt8(ascii: "="):
                guard starts("==") else { throw Failure(message: "expected '=='") }
                tokens.append(.equal)
                i += 2
            case UInt8(ascii: "&"):
                guard starts("&&") else { throw Failure(message: "expected '&&'") }
                tokens.append(.and)
                i += 2
            case UInt8(ascii: "|"):
                guard starts("||") else { throw Failure(message: "expected '||'") }
                tokens.append(.or)
                i += 2
            default:
                guard isLabelByte(byte) else {
                    throw Failure(message: "unexpected character '\(String(decoding: [byte], as: UTF8.self))'")
                }
                let start = i
                while i < bytes.count, isLabelByte(bytes[i]) { i += 1 }
                tokens.append(.label(String(decoding: bytes[start..<i], as: UTF8.self)))
            }
        }
        tokens.append(.end)
        return tokens
    }

    private var peek: Token { tokens[position] }

    private mutating func next() -> Token {
        let token = tokens[position]
        if token != .end { position += 1 }
        return token
    }

    private mutating func expect(_ token: Token, _ what: String) throws(Failure) {
        guard next() == token else { throw Failure(message: "expected \(what)") }
    }

    private mutating func parseExpression() throws(Failure) {
        try parseAnd()
        while peek == .or {
            _ = next()
            try parseAnd()
        }
    }

    private mutating func parseAnd() throws(Failure) {
        try parseUnary()
        while peek == .and {
            _ = next()
            try parseUnary()
        }
    }

    private mutating func parseUnary() throws(Failure) {
        if peek == .not {
            _ = next()
            try parseUnary()
        } else {
            try parsePrimary()
        }
    }

    private mutating func parsePrimary() throws(Failure) {
        switch next() {
        case .openParen:
            try parseExpression()
            try expect(.closeParen, "')'")
        case .label(let word):
            switch (word, peek) {
            case ("all", .openParen), ("global", .openParen):
                _ = next()
                try expect(.closeParen, "')' after \(word)(")
                if word == "global" { usesGlobal = true }
            case ("has", .openParen):
                _ = next()
                guard case .label = next() else { throw Failure(message: "expected a label name in has()") }
                try expect(.closeParen, "')' after has(label")
            default:
                try parseComparison()
            }
        default:
            throw Failure(message: "expected a selector expression")
        }
    }

    private mutating func parseComparison() throws(Failure) {
        switch next() {
        case .equal, .notEqual:
            try expect(.string, "a quoted string")
        case .label("in"):
            try parseSet()
        case .label("not"):
            try expect(.label("in"), "'in' after 'not'")
            try parseSet()
        case .label("contains"):
            try expect(.string, "a quoted string")
        case .label("starts"), .label("ends"):
            try expect(.label("with"), "'with'")
            try expect(.string, "a quoted string")
        default:
            throw Failure(message: "expected an operator after a label")
        }
    }

    private mutating func parseSet() throws(Failure) {
        try expect(.openBrace, "'{'")
        if peek == .closeBrace {
            _ = next()
            return
        }
        try expect(.string, "a quoted string in the set")
        while peek == .comma {
            _ = next()
            try expect(.string, "a quoted string in the set")
        }
        try expect(.closeBrace, "'}'")
    }
}

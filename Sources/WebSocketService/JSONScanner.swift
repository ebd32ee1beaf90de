/// A strict JSON (RFC 8259) structure scanner over bytes: it checks the
/// grammar and finds where values start and end without building anything,
/// so the envelope's `param` can be handed on as the client's own bytes.
/// The input must already be valid UTF-8 (the engine checks every text
/// message); the scanner checks everything else: string escapes and control
/// characters, number syntax, literals, nesting (bounded), no trailing commas.
struct JSONScanner {
    static let maxDepth = 128

    let bytes: UnsafeRawBufferPointer
    private(set) var index = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { index >= bytes.count }

    private func fail(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(offset: index, reason: reason) }

    private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    mutating func skipWhitespace() throws(JSONSyntaxError) {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    mutating func expect(_ byte: UInt8) throws(JSONSyntaxError) {
        guard peek() == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))'") }
        index += 1
    }

    /// Skips one value starting at `index` (no leading whitespace).
    mutating func skipValue(depth: Int) throws(JSONSyntaxError) {
        guard let byte = peek() else { throw fail("unexpected end") }
        switch byte {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw fail("nested too deeply") }
            index += 1
            try skipWhitespace()
            if peek() == UInt8(ascii: "}") { index += 1; return }
            while true {
                _ = try scanString()
                try skipWhitespace()
                try expect(UInt8(ascii: ":"))
                try skipWhitespace()
                try skipValue(depth: depth + 1)
                try skipWhitespace()
                if peek() == UInt8(ascii: ",") { index += 1; try skipWhitespace(); continue }
                try expect(UInt8(ascii: "}"))
                return
            }
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw fail("nested too deeply") }
            index += 1
            try skipWhitespace()
            if peek() == UInt8(ascii: "]") { index += 1; return }
            while true {
                try skipValue(depth: depth + 1)
                try skipWhitespace()
                if peek() == UInt8(ascii: ",") { index += 1; try skipWhitespace(); continue }
                try expect(UInt8(ascii: "]"))
                return
            }
        case UInt8(ascii: "\""):
            _ = try scanString()
        case UInt8(ascii: "t"): try skipLiteral("true")
        case UInt8(ascii: "f"): try skipLiteral("false")
        case UInt8(ascii: "n"): try skipLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw fail("unexpected byte")
        }
    }

    private mutating func skipLiteral(_ literal: StaticString) throws(JSONSyntaxError) {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw fail("bad literal") }
        for k in 0..<count where bytes[index + k] != literal.utf8Start[k] { throw fail("bad literal") }
        index += count
    }

    private mutating func skipDigits() -> Int {
        let start = index
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return index - start
    }

    private mutating func skipNumber() throws(JSONSyntaxError) {
        if peek() == UInt8(ascii: "-") { index += 1 }
        if peek() == UInt8(ascii: "0") {
            index += 1
        } else {
            guard skipDigits() > 0 else { throw fail("bad number") }
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard skipDigits() > 0 else { throw fail("bad fraction") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            guard skipDigits() > 0 else { throw fail("bad exponent") }
        }
    }

    /// Scans a string at `index`; returns the range of its content (between
    /// the quotes) and whether it holds escapes.
    mutating func scanString() throws(JSONSyntaxError) -> (content: Range<Int>, escaped: Bool) {
        try expect(UInt8(ascii: "\""))
        let start = index
        var escaped = false
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                return (start..<(index - 1), escaped)
            }
            if byte < 0x20 { throw fail("control character in string") }
            if byte == UInt8(ascii: "\\") {
                escaped = true
                index += 1
                guard let e = peek() else { break }
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    index += 1
                    guard bytes.count - index >= 4 else { throw fail("bad \\u escape") }
                    for _ in 0..<4 {
                        guard Self.hexValue(bytes[index]) != nil else { throw fail("bad \\u escape") }
                        index += 1
                    }
                default:
                    throw fail("bad escape")
                }
                continue
            }
            index += 1
        }
        throw fail("unterminated string")
    }

    static func hexValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// The text of a scanned string's content. Escapes are decoded; a lone
    /// surrogate escape is refused (it cannot be text).
    func decodeString(_ content: Range<Int>, escaped: Bool) throws(JSONSyntaxError) -> String {
        let slice = UnsafeRawBufferPointer(rebasing: bytes[content])
        if !escaped { return String(decoding: slice, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(slice.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32 {
            var v: UInt32 = 0
            for k in 0..<4 { v = v << 4 | JSONScanner.hexValue(slice[at + k])! }
            return v
        }
        while i < slice.count {
            let byte = slice[i]
            guard byte == UInt8(ascii: "\\") else { out.append(byte); i += 1; continue }
            let e = slice[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex4(i)
                i += 4
                if (0xD800...0xDBFF).contains(scalar) {
                    guard i + 6 <= slice.count, slice[i] == UInt8(ascii: "\\"), slice[i + 1] == UInt8(ascii: "u") else {
                        throw JSONSyntaxError(offset: content.lowerBound + i, reason: "lone surrogate")
                    }
                    let low = hex4(i + 2)
                    guard (0xDC00...0xDFFF).contains(low) else {
                        throw JSONSyntaxError(offset: content.lowerBound + i, reason: "lone surrogate")
                    }
                    i += 6
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw JSONSyntaxError(offset: content.lowerBound + i, reason: "lone surrogate")
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default: out.append(e) // " \ /
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

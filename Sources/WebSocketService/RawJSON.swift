import Foundation

/// One JSON value kept as its compact UTF-8 text. A handler's `param` arrives
/// as the exact bytes the client sent (never re-serialized), and a `param`
/// written to clients is spliced into the envelope as is.
public struct RawJSON: Sendable, Hashable, CustomStringConvertible {
    /// The UTF-8 text of one JSON value.
    public let bytes: [UInt8]

    /// Trusted bytes: the envelope scanner already checked them.
    init(trusted bytes: [UInt8]) { self.bytes = bytes }

    /// Checks that `bytes` hold exactly one JSON value (surrounding whitespace allowed).
    public init(validating bytes: [UInt8]) throws(JSONSyntaxError) {
        let result: Result<[UInt8], JSONSyntaxError> = bytes.withUnsafeBytes { raw in
          do throws(JSONSyntaxError) {
            var scanner = JSONScanner(raw)
            try scanner.skipWhitespace()
            let start = scanner.index
            try scanner.skipValue(depth: 0)
            let end = scanner.index
            try scanner.skipWhitespace()
            guard scanner.atEnd else { throw JSONSyntaxError(offset: scanner.index, reason: "trailing bytes") }
            guard UTF8Validator.isValid(raw) else { throw JSONSyntaxError(offset: 0, reason: "not UTF-8") }
            return .success(Array(raw[start..<end]))
          } catch { return .failure(error) }
        }
        self.bytes = try result.get()
    }

    public init(validating text: String) throws(JSONSyntaxError) {
        try self.init(validating: Array(text.utf8))
    }

    /// Any `Encodable`, encoded compactly by Foundation.
    public init(encoding value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        self.bytes = Array(try encoder.encode(value))
    }

    /// A JSON string literal holding `string`.
    public init(string: String) {
        var out: [UInt8] = []
        out.reserveCapacity(string.utf8.count + 2)
        JSONWriter.appendString(string, to: &out)
        self.bytes = out
    }

    public init(_ value: Bool) { self.bytes = Array((value ? "true" : "false").utf8) }
    public init(_ value: Int) { self.bytes = Array(String(value).utf8) }

    public static let null = RawJSON(trusted: Array("null".utf8))
    public static let emptyObject = RawJSON(trusted: Array("{}".utf8))

    /// Decodes the value with Foundation.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }

    /// The value's text.
    public var description: String { String(decoding: bytes, as: UTF8.self) }

    public var isNull: Bool { bytes == Array("null".utf8) }
}

/// Where and why some text is not JSON.
public struct JSONSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var offset: Int
    public var reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// Writes JSON text without Foundation (the envelope's hot path).
enum JSONWriter {
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// A string literal with the escapes JSON requires (quote, backslash,
    /// control characters); everything else, non-ASCII included, stays as is.
    static func appendString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(byte)
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(byte)
            case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 0..<0x20:
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                        hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

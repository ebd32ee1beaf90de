import Foundation

/// The wire envelope: `{"from"?: uuid, "channel"?: string, "offset"?: number, "cmd": string, "param": any}`
/// as one compact JSON text message.
public struct Envelope: Sendable, Equatable {
    /// The connection a message comes from (set by the server; ignored when a client sends it).
    public var from: UUID?
    public var channel: String?
    /// Its place in the channel's history (`Configuration.History`), set by
    /// the server on channel messages of a channel with one; ignored when a
    /// client sends it.
    public var offset: UInt64?
    public var cmd: String
    public var param: RawJSON

    public init(from: UUID? = nil, channel: String? = nil, offset: UInt64? = nil, cmd: String, param: RawJSON = .null) {
        self.from = from
        self.channel = channel
        self.offset = offset
        self.cmd = cmd
        self.param = param
    }

    /// Why a client's message is not an envelope (sent back as an `error`).
    public struct Invalid: Error, Equatable, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Parses a client's text message. `param` keeps the client's bytes; a
    /// missing `param` is `null`. Unknown members are ignored; a repeated
    /// member, a `cmd` or `channel` that is not a string, or any JSON syntax
    /// error is refused. `text` must be valid UTF-8 (the engine checks every
    /// text message).
    public static func parse(_ text: UnsafeRawBufferPointer) throws(Invalid) -> Envelope {
        var scanner = JSONScanner(text)
        var cmd: String?
        var channel: String?
        var param: Range<Int>?
        var seenFrom = false
        var seenOffset = false
        do {
            try scanner.skipWhitespace()
            try scanner.expect(UInt8(ascii: "{"))
            try scanner.skipWhitespace()
            if text.count > scanner.index, text[scanner.index] == UInt8(ascii: "}") {
                try scanner.expect(UInt8(ascii: "}"))
            } else {
                while true {
                    let key = try scanner.scanString()
                    let name = key.escaped ? try scanner.decodeString(key.content, escaped: true)
                                           : String(decoding: UnsafeRawBufferPointer(rebasing: text[key.content]), as: UTF8.self)
                    try scanner.skipWhitespace()
                    try scanner.expect(UInt8(ascii: ":"))
                    try scanner.skipWhitespace()
                    let valueStart = scanner.index
                    switch name {
                    case "cmd", "channel":
                        guard valueStart < text.count, text[valueStart] == UInt8(ascii: "\"") else {
                            throw Invalid(description: "\"\(name)\" must be a string")
                        }
                        let value = try scanner.scanString()
                        let string = try scanner.decodeString(value.content, escaped: value.escaped)
                        if name == "cmd" {
                            guard cmd == nil else { throw Invalid(description: "\"cmd\" given twice") }
                            cmd = string
                        } else {
                            guard channel == nil else { throw Invalid(description: "\"channel\" given twice") }
                            channel = string
                        }
                    case "param":
                        guard param == nil else { throw Invalid(description: "\"param\" given twice") }
                        try scanner.skipValue(depth: 1)
                        param = valueStart..<scanner.index
                    case "from":
                        guard !seenFrom else { throw Invalid(description: "\"from\" given twice") }
                        seenFrom = true
                        try scanner.skipValue(depth: 1)
                    case "offset":
                        guard !seenOffset else { throw Invalid(description: "\"offset\" given twice") }
                        seenOffset = true
                        try scanner.skipValue(depth: 1)
                    default:
                        try scanner.skipValue(depth: 1)
                    }
                    try scanner.skipWhitespace()
                    if text.count > scanner.index, text[scanner.index] == UInt8(ascii: ",") {
                        try scanner.expect(UInt8(ascii: ","))
                        try scanner.skipWhitespace()
                        continue
                    }
                    try scanner.expect(UInt8(ascii: "}"))
                    break
                }
            }
            try scanner.skipWhitespace()
            guard scanner.atEnd else { throw JSONSyntaxError(offset: scanner.index, reason: "trailing bytes") }
        } catch let error as JSONSyntaxError {
            throw Invalid(description: error.description)
        } catch let error as Invalid {
            throw error
        } catch {
            throw Invalid(description: "\(error)")
        }
        guard let cmd else { throw Invalid(description: "missing \"cmd\"") }
        let paramJSON = param.map { RawJSON(trusted: Array(text[$0])) } ?? .null
        return Envelope(channel: channel, cmd: cmd, param: paramJSON)
    }

    public static func parse(_ text: [UInt8]) throws(Invalid) -> Envelope {
        let result: Result<Envelope, Invalid> = text.withUnsafeBytes { raw in
            do throws(Invalid) { return .success(try parse(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// The compact JSON text: members in the order from, channel, offset, cmd, param.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32 + cmd.utf8.count + (channel?.utf8.count ?? 0) + param.bytes.count + (from == nil ? 0 : 46))
        out.append(UInt8(ascii: "{"))
        if let from {
            out.append(contentsOf: #""from":"#.utf8)
            JSONWriter.appendString(from.uuidString.lowercased(), to: &out)
            out.append(UInt8(ascii: ","))
        }
        if let channel {
            out.append(contentsOf: #""channel":"#.utf8)
            JSONWriter.appendString(channel, to: &out)
            out.append(UInt8(ascii: ","))
        }
        if let offset {
            out.append(contentsOf: #""offset":"#.utf8)
            out.append(contentsOf: String(offset).utf8)
            out.append(UInt8(ascii: ","))
        }
        out.append(contentsOf: #""cmd":"#.utf8)
        JSONWriter.appendString(cmd, to: &out)
        out.append(contentsOf: #","param":"#.utf8)
        out.append(contentsOf: param.bytes)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// The encoding with an offset, in two parts: before the offset's digits
    /// and after them (a cluster's history gives the offset; ClusterHistory.swift).
    func encodedAroundOffset() -> (before: [UInt8], after: [UInt8]) {
        var numbered = self
        numbered.offset = 0
        let bytes = numbered.encoded()
        // The first `"offset":` is the member's name: inside a string every quote is escaped.
        let name = Array(#""offset":"#.utf8)
        var start = 0
        while !bytes[start..<(start + name.count)].elementsEqual(name) { start += 1 }
        let digit = start + name.count
        return (Array(bytes[..<digit]), Array(bytes[(digit + 1)...]))
    }

    /// `{"cmd":"error","param":{"message":...,"code"?:...,...}}`: `code`
    /// names a refusal by the service's limits and checks (`"rate-limited"`,
    /// `"join-refused"`...) so a client can tell it from a handler's error;
    /// `details` are further string members (`"channel"`, `"cmd"`).
    static func error(_ message: String, code: String? = nil, details: KeyValuePairs<String, String> = [:]) -> Envelope {
        var param: [UInt8] = Array(#"{"message":"#.utf8)
        JSONWriter.appendString(message, to: &param)
        if let code {
            param.append(contentsOf: #","code":"#.utf8)
            JSONWriter.appendString(code, to: &param)
        }
        for (key, value) in details {
            param.append(UInt8(ascii: ","))
            JSONWriter.appendString(key, to: &param)
            param.append(UInt8(ascii: ":"))
            JSONWriter.appendString(value, to: &param)
        }
        param.append(UInt8(ascii: "}"))
        return Envelope(cmd: "error", param: RawJSON(trusted: param))
    }
}

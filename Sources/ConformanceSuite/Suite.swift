import WebSocketProtocol

/// The case table. One `add` per case: id, group, description, how the
/// connection opens (default: a plain upgrade), the bytes to send, and the
/// expected outcome. Ids follow Autobahn's numbering where there is one.
public enum Suite {
    public static func cases(for target: Target) -> [Case] {
        var all: [Case] = []
        func add(_ id: String, _ group: Group, _ description: String, _ opening: Opening,
                 _ send: [UInt8], _ expect: Expect, then: [UInt8] = [], chop: Int? = nil, deadline: Double? = nil) {
            all.append(Case(id, group, description, opening, send: send, expect: expect, then: then, chop: chop,
                            deadline: deadline))
        }
        func add(_ id: String, _ group: Group, _ description: String,
                 _ send: [UInt8], _ expect: Expect, then: [UInt8] = [], chop: Int? = nil, deadline: Double? = nil) {
            add(id, group, description, .standard, send, expect, then: then, chop: chop, deadline: deadline)
        }
        let limit = target.maxMessage
        let big = max(target.deadline, 60) // deadline for the multi-MiB cases
        let hello = frame(Op.text, "Hello"), ping = frame(Op.ping, "ping")
        let kosme = "κόσμε", kosmeBytes = utf8("κόσμε")
        func http(method: String = "GET", version: String = "HTTP/1.1",
                  set: [String: String?] = [:], extra: [String] = []) -> [UInt8] {
            httpRequest(target, method: method, version: version, set: set, extra: extra)
        }
        let pdf: Opening = .deflate()

        // MARK: framing (Autobahn 1.x: lengths at each header size boundary)
        for (i, n) in [0, 125, 126, 127, 128, 65535, 65536].enumerated() {
            add("1.1.\(i + 1)", .framing, "text, \(n) bytes", frame(Op.text, pattern(n)), .echo([.text(pattern(n))]))
            add("1.2.\(i + 1)", .framing, "binary, \(n) bytes", frame(Op.binary, bytes(n)), .echo([.binary(bytes(n))]))
        }
        add("1.1.8", .framing, "text, 65536 bytes, written 997 bytes at a time", frame(Op.text, pattern(65536)), .echo([.text(pattern(65536))]), chop: 997)
        add("1.2.8", .framing, "binary, 65536 bytes, written 997 bytes at a time", frame(Op.binary, bytes(65536)), .echo([.binary(bytes(65536))]), chop: 997)
        add("1.3.1", .framing, "text, 125 bytes, written byte by byte", frame(Op.text, pattern(125)), .echo([.text(pattern(125))]), chop: 1)
        add("1.3.2", .framing, "two messages in one write", hello + frame(Op.binary, [1, 2, 3]), .echo([.text("Hello"), .binary([1, 2, 3])]))
        add("1.3.3", .framing, "binary with every byte value", frame(Op.binary, (0...255).map { UInt8($0) }), .echo([.binary((0...255).map { UInt8($0) })]))
        add("1.3.4", .framing, "unmasked text frame", frame(Op.text, "Hello", masked: false), .close(1002))
        add("1.3.5", .framing, "unmasked binary frame after a good one", hello, .close(1002, after: [.text("Hello")]), then: frame(Op.binary, [1], masked: false))
        add("1.3.6", .framing, "64-bit length with the top bit set", raw(0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4), .closeAny([1002, 1009]))

        // MARK: ping-pong (Autobahn 2.x)
        add("2.1", .pingPong, "ping, empty", frame(Op.ping, []), .echo([.pong([])]))
        add("2.2", .pingPong, "ping, text payload", frame(Op.ping, "Hello, world!"), .echo([.pong("Hello, world!")]))
        add("2.3", .pingPong, "ping, binary payload", frame(Op.ping, [0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF]), .echo([.pong([0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF])]))
        add("2.4", .pingPong, "ping, 125 bytes", frame(Op.ping, bytes(125)), .echo([.pong(bytes(125))]))
        add("2.5", .pingPong, "ping, 126 bytes (control frames are at most 125)", frame(Op.ping, bytes(126)), .close(1002))
        add("2.6", .pingPong, "ping, 125 bytes, written byte by byte", frame(Op.ping, bytes(125)), .echo([.pong(bytes(125))]), chop: 1)
        add("2.7", .pingPong, "unsolicited pong, empty: no answer", frame(Op.pong, []) + ping, .echo([.pong("ping")]))
        add("2.8", .pingPong, "unsolicited pong with payload: no answer", frame(Op.pong, "unsolicited") + ping, .echo([.pong("ping")]))
        add("2.9", .pingPong, "pong then ping: only the ping is answered", frame(Op.pong, "pong") + frame(Op.ping, "answer me"), .echo([.pong("answer me")]))
        add("2.10", .pingPong, "10 pings in one write", (0..<10).flatMap { frame(Op.ping, "p\($0)") }, .echo((0..<10).map { .pong("p\($0)") }))
        add("2.11", .pingPong, "10 pings, written byte by byte", (0..<10).flatMap { frame(Op.ping, "p\($0)") }, .echo((0..<10).map { .pong("p\($0)") }), chop: 1)
        add("2.12", .pingPong, "fragmented ping", frame(Op.ping, "frag", fin: false) + frame(Op.continuation, "ment"), .close(1002))
        add("2.13", .pingPong, "pong, 126 bytes", frame(Op.pong, bytes(126)), .close(1002))

        // MARK: reserved bits (Autobahn 3.x; no extension negotiated)
        add("3.1", .reservedBits, "text with RSV3", frame(Op.text, "Hello", rsv: 1), .close(1002))
        add("3.2", .reservedBits, "text, then text with RSV2", hello, .close(1002, after: [.text("Hello")]), then: frame(Op.text, "Hello", rsv: 2))
        add("3.3", .reservedBits, "text, text with RSV2|RSV3, ping: echo, then fail (no pong)", hello, .close(1002, after: [.text("Hello")]), then: frame(Op.text, "Hello", rsv: 3) + ping)
        add("3.4", .reservedBits, "text, text with RSV1, ping, written byte by byte", hello, .close(1002, after: [.text("Hello")]), then: frame(Op.text, "Hello", rsv: 4) + ping, chop: 1)
        add("3.5", .reservedBits, "binary with RSV1|RSV3", frame(Op.binary, [1, 2, 3], rsv: 5), .close(1002))
        add("3.6", .reservedBits, "ping with RSV1|RSV2", frame(Op.ping, "Hello", rsv: 6), .close(1002))
        add("3.7", .reservedBits, "close with all RSV bits", frame(Op.close, [0x03, 0xE8], rsv: 7), .close(1002))
        add("3.8", .reservedBits, "RSV1 on text without permessage-deflate", frame(Op.text, "Hello", rsv: 4), .close(1002))
        add("3.9", .reservedBits, "RSV2 on a continuation", frame(Op.text, "Hel", fin: false) + frame(Op.continuation, "lo", rsv: 2), .close(1002))

        // MARK: opcodes (Autobahn 4.x)
        for op: UInt8 in 3...7 {
            add("4.1.\(op - 2)", .opcodes, "reserved data opcode \(op)", frame(op, "reserved"), .close(1002))
        }
        add("4.1.6", .opcodes, "text, reserved opcode 5, ping: echo, then fail", hello, .close(1002, after: [.text("Hello")]), then: frame(5, "x") + ping)
        add("4.1.7", .opcodes, "reserved opcode 6 written byte by byte", hello, .close(1002, after: [.text("Hello")]), then: frame(6, "x") + ping, chop: 1)
        for op: UInt8 in 0xB...0xF {
            add("4.2.\(op - 0xA)", .opcodes, "reserved control opcode \(op)", frame(op, []), .close(1002))
        }
        add("4.2.6", .opcodes, "text, reserved control opcode 13, ping: echo, then fail", hello, .close(1002, after: [.text("Hello")]), then: frame(0xD, "x") + ping)

        // MARK: fragmentation (Autobahn 5.x)
        add("5.1", .fragmentation, "ping in two fragments", frame(Op.ping, "frag", fin: false) + frame(Op.continuation, "ment"), .close(1002))
        add("5.2", .fragmentation, "pong in two fragments", frame(Op.pong, "frag", fin: false) + frame(Op.continuation, "ment"), .close(1002))
        add("5.3", .fragmentation, "text in two fragments", split(Op.text, "fragment1fragment2", at: [9]), .echo([.text("fragment1fragment2")]))
        add("5.4", .fragmentation, "text in two fragments, byte by byte", split(Op.text, "fragment1fragment2", at: [9]), .echo([.text("fragment1fragment2")]), chop: 1)
        add("5.5", .fragmentation, "ping between two fragments", frame(Op.text, "fragment1", fin: false) + ping + frame(Op.continuation, "fragment2"), .echo([.pong("ping"), .text("fragment1fragment2")]))
        add("5.6", .fragmentation, "as 5.5, byte by byte", frame(Op.text, "fragment1", fin: false) + ping + frame(Op.continuation, "fragment2"), .echo([.pong("ping"), .text("fragment1fragment2")]), chop: 1)
        add("5.7", .fragmentation, "pings between each of 5 fragments", frame(Op.text, "a", fin: false) + (0..<3).flatMap { frame(Op.ping, "p\($0)") + frame(Op.continuation, "b", fin: false) } + frame(Op.ping, "p3") + frame(Op.continuation, "c"), .echo([.pong("p0"), .pong("p1"), .pong("p2"), .pong("p3"), .text("abbbc")]))
        add("5.8", .fragmentation, "text in 1000 one-byte fragments", fragments(Op.text, pattern(1000), size: 1), .echo([.text(pattern(1000))]))
        add("5.9", .fragmentation, "continuation with no message started (FIN)", frame(Op.continuation, "fragment"), .close(1002))
        add("5.10", .fragmentation, "continuation with no message started (no FIN)", frame(Op.continuation, "fragment", fin: false) + frame(Op.continuation, "end"), .close(1002))
        add("5.11", .fragmentation, "as 5.10, byte by byte", frame(Op.continuation, "fragment", fin: false) + frame(Op.continuation, "end"), .close(1002), chop: 1)
        add("5.12", .fragmentation, "text, then a stray continuation", hello, .close(1002, after: [.text("Hello")]), then: frame(Op.continuation, "stray"))
        add("5.13", .fragmentation, "new text message inside a fragmented one", frame(Op.text, "frag", fin: false) + frame(Op.text, "ment"), .close(1002))
        add("5.14", .fragmentation, "binary message inside a fragmented text", frame(Op.text, "frag", fin: false) + frame(Op.binary, [1]), .close(1002))
        add("5.15", .fragmentation, "continuation after the message ended", split(Op.text, "fragment1fragment2", at: [9]), .close(1002, after: [.text("fragment1fragment2")]), then: frame(Op.continuation, "3"))
        add("5.16", .fragmentation, "binary in 3 fragments, the middle one empty", frame(Op.binary, [1, 2], fin: false) + frame(Op.continuation, [], fin: false) + frame(Op.continuation, [3]), .echo([.binary([1, 2, 3])]))
        add("5.17", .fragmentation, "text with empty first and last fragments", split(Op.text, "middle", at: [0, 6]), .echo([.text("middle")]))
        add("5.18", .fragmentation, "binary, 64 KiB in 1 KiB fragments", fragments(Op.binary, bytes(65536), size: 1024), .echo([.binary(bytes(65536))]))
        add("5.19", .fragmentation, "close 1000 inside a fragmented message", frame(Op.text, "frag", fin: false) + close(1000), .close(1000))

        // MARK: UTF-8 (Autobahn 6.x)
        add("6.1.1", .utf8, "empty text", frame(Op.text, []), .echo([.text("")]))
        add("6.1.2", .utf8, "empty text in 3 empty fragments", split(Op.text, [], at: [0, 0]), .echo([.text("")]))
        add("6.2.1", .utf8, "valid text", frame(Op.text, "Hello-µ@ßöäüàá-UTF-8!!"), .echo([.text("Hello-µ@ßöäüàá-UTF-8!!")]))
        add("6.2.2", .utf8, "valid text, one byte per fragment", fragments(Op.text, utf8("Hello-µ@ßöäüàá-UTF-8!!"), size: 1), .echo([.text("Hello-µ@ßöäüàá-UTF-8!!")]))
        add("6.2.3", .utf8, "valid text, one byte per write", frame(Op.text, "Hello-µ@ßöäüàá-UTF-8!!"), .echo([.text("Hello-µ@ßöäüàá-UTF-8!!")]), chop: 1)
        add("6.2.4", .utf8, "κόσμε", frame(Op.text, kosme), .echo([.text(kosme)]))
        add("6.2.5", .utf8, "κόσμε, one byte per fragment", fragments(Op.text, kosmeBytes, size: 1), .echo([.text(kosme)]))
        add("6.2.6", .utf8, "4-byte code points split inside", split(Op.text, utf8("𝄞😀"), at: [1, 3, 6]), .echo([.text("𝄞😀")]))
        for (i, s) in ["\u{0}", "\u{7F}", "\u{80}", "\u{7FF}", "\u{800}", "\u{D7FF}", "\u{E000}", "\u{FFFD}", "\u{FFFF}", "\u{10000}", "\u{10FFFF}"].enumerated() {
            let hex = s.unicodeScalars.first!.value
            add("6.3.\(i + 1)", .utf8, "boundary code point U+\(String(hex, radix: 16, uppercase: true))", frame(Op.text, s), .echo([.text(s)]))
        }
        // Fail-fast: the frame is announced whole but only a prefix is sent,
        // ending just after the first impossible byte. A server that waits for
        // the rest never answers, and the case fails at its deadline.
        add("6.4.1", .utf8, "fail-fast: κόσμε then F4 90 (over U+10FFFF), frame unfinished", framePrefix(Op.text, length: 256, prefix: kosmeBytes + [0xF4, 0x90]), .close(1007))
        add("6.4.2", .utf8, "fail-fast: Hello then FF, frame unfinished", framePrefix(Op.text, length: 256, prefix: utf8("Hello") + [0xFF]), .close(1007))
        add("6.4.3", .utf8, "fail-fast: ED A0 (surrogate), frame unfinished", framePrefix(Op.text, length: 256, prefix: utf8("ab") + [0xED, 0xA0]), .close(1007))
        add("6.4.4", .utf8, "fail-fast: C0 (overlong lead), frame unfinished", framePrefix(Op.text, length: 256, prefix: [0xC0]), .close(1007))
        add("6.4.5", .utf8, "fail-fast: bad byte in a whole first fragment, no continuation sent", frame(Op.text, utf8("Hello") + [0xFE, 0x41], fin: false), .close(1007))
        add("6.4.6", .utf8, "fail-fast: bad byte in an unfinished second fragment", frame(Op.text, kosme, fin: false) + framePrefix(Op.continuation, length: 256, prefix: [0xE0, 0x80], fin: false), .close(1007))
        add("6.4.7", .utf8, "fail-fast: 1 MiB frame, 1000 good bytes then F5", framePrefix(Op.text, length: 1 << 20, prefix: pattern(1000) + [0xF5]), .close(1007))
        let invalid: [(String, [UInt8])] = [
            ("FF", [0xFF]), ("FE", [0xFE]), ("lone continuation 80", [0x80]), ("lone continuation BF", [0xBF]),
            ("overlong NUL C0 80", [0xC0, 0x80]), ("overlong C1 BF", [0xC1, 0xBF]), ("overlong E0 80 80", [0xE0, 0x80, 0x80]),
            ("overlong E0 9F BF", [0xE0, 0x9F, 0xBF]), ("overlong F0 80 80 80", [0xF0, 0x80, 0x80, 0x80]),
            ("overlong F0 8F BF BF", [0xF0, 0x8F, 0xBF, 0xBF]), ("high surrogate ED A0 80", [0xED, 0xA0, 0x80]),
            ("low surrogate ED BF BF", [0xED, 0xBF, 0xBF]), ("surrogate pair", [0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80]),
            ("U+110000 F4 90 80 80", [0xF4, 0x90, 0x80, 0x80]), ("F5 80 80 80", [0xF5, 0x80, 0x80, 0x80]),
            ("5-byte F8 88 80 80 80", [0xF8, 0x88, 0x80, 0x80, 0x80]), ("6-byte FC 84 80 80 80 80", [0xFC, 0x84, 0x80, 0x80, 0x80, 0x80]),
            ("lead then ASCII C2 41", [0xC2, 0x41]), ("E2 28 A1", [0xE2, 0x28, 0xA1]),
            ("truncated C2 at the end", utf8("ab") + [0xC2]), ("truncated E2 82 at the end", utf8("ab") + [0xE2, 0x82]),
            ("truncated F0 9F 98 at the end", utf8("ab") + [0xF0, 0x9F, 0x98]),
            ("κόσμε, surrogate, more text", kosmeBytes + [0xED, 0xA0, 0x80] + utf8("edited")),
        ]
        for (i, (what, b)) in invalid.enumerated() {
            add("6.5.\(i + 1)", .utf8, "invalid: \(what)", frame(Op.text, b), .close(1007))
        }
        add("6.6.1", .utf8, "invalid in the second fragment", frame(Op.text, "Hello", fin: false) + frame(Op.continuation, [0xFF]), .close(1007))
        add("6.6.2", .utf8, "code point cut at the end of a fragmented message", frame(Op.text, "a", fin: false) + frame(Op.continuation, [0xE2, 0x82]), .close(1007))
        add("6.6.3", .utf8, "surrogate split across fragments", split(Op.text, utf8("ab") + [0xED, 0xA0, 0x80], at: [3]), .close(1007))
        add("6.6.4", .utf8, "invalid, one byte per fragment", fragments(Op.text, kosmeBytes + [0xF8, 0x88, 0x80, 0x80, 0x80] + utf8("x"), size: 1), .close(1007))
        add("6.6.5", .utf8, "invalid, one byte per write", frame(Op.text, kosmeBytes + [0xC0, 0xAF]), .close(1007), chop: 1)

        // MARK: close (Autobahn 7.x)
        add("7.1.1", .close, "close 1000", close(1000), .close(1000))
        add("7.1.2", .close, "close with no payload", close(nil), .closeAny([1000, 1005]))
        add("7.1.3", .close, "close, then text: the text is ignored", close(1000) + hello, .close(1000))
        add("7.1.4", .close, "close, then ping: the ping is ignored", close(1000) + ping, .close(1000))
        add("7.1.5", .close, "close inside a fragmented message, then its end", frame(Op.text, "frag", fin: false) + close(1000) + frame(Op.continuation, "ment"), .close(1000))
        add("7.1.6", .close, "text, its echo, then close", hello, .close(1000, after: [.text("Hello")]), then: close(1000))
        add("7.3.1", .close, "close with a 1-byte payload", frame(Op.close, [0x03]), .close(1002))
        add("7.3.2", .close, "close 1000, reason 123 bytes (payload 125)", close(1000, pattern(123)), .close(1000))
        add("7.3.3", .close, "close 1000, reason 124 bytes (payload 126)", close(1000, pattern(124)), .close(1002))
        add("7.3.4", .close, "close 1000, short reason", close(1000, "Hello World!"), .close(1000))
        add("7.3.5", .close, "close 1000, reason κόσμε", close(1000, kosme), .close(1000))
        add("7.3.6", .close, "close 1000, reason not UTF-8", close(1000, utf8("Hello") + [0xFF]), .close(1007))
        add("7.3.7", .close, "close 1000, reason with a surrogate", close(1000, [0xED, 0xA0, 0x80]), .close(1007))
        add("7.3.8", .close, "fragmented close", frame(Op.close, [0x03], fin: false) + frame(Op.continuation, [0xE8]), .close(1002))
        add("7.3.9", .close, "close written byte by byte", close(1000, "bye"), .close(1000), chop: 1)
        for (i, code) in ([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] as [UInt16]).enumerated() {
            add("7.7.\(i + 1)", .close, "valid close code \(code)", close(code, "x"), .closeAny([1000, code]))
        }
        for (i, code) in ([0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] as [UInt16]).enumerated() {
            add("7.9.\(i + 1)", .close, "invalid close code \(code)", close(code), .close(1002))
        }

        // MARK: limits and sizes (Autobahn 9.x, sized for CI)
        add("9.1.1", .limits, "text, 64 KiB", frame(Op.text, pattern(65536)), .echo([.text(pattern(65536))]))
        add("9.1.2", .limits, "text, 1 MiB", frame(Op.text, pattern(1 << 20)), .echo([.text(pattern(1 << 20))]), deadline: big)
        add("9.2.1", .limits, "binary, 1 MiB", frame(Op.binary, bytes(1 << 20)), .echo([.binary(bytes(1 << 20))]), deadline: big)
        add("9.3.1", .limits, "text, 4 MiB in 64 KiB fragments", fragments(Op.text, pattern(4 << 20), size: 65536), .echo([.text(pattern(4 << 20))]), deadline: big)
        add("9.4.1", .limits, "binary, 1 MiB in 256-byte fragments", fragments(Op.binary, bytes(1 << 20), size: 256), .echo([.binary(bytes(1 << 20))]), deadline: big)
        add("9.5.1", .limits, "100 text messages of 1 KiB in one write", (0..<100).flatMap { _ in frame(Op.text, pattern(1024)) }, .echo(Array(repeating: .text(pattern(1024)), count: 100)))
        add("9.5.2", .limits, "1000 binary messages of 16 bytes in one write", (0..<1000).flatMap { _ in frame(Op.binary, bytes(16)) }, .echo(Array(repeating: .binary(bytes(16)), count: 1000)))
        add("9.6.1", .limits, "binary at the limit (\(limit) bytes)", frame(Op.binary, bytes(limit)), .echo([.binary(bytes(limit))]), deadline: big)
        add("9.6.2", .limits, "one frame announcing limit + 1 bytes: 1009 without waiting for it", framePrefix(Op.binary, length: limit + 1, prefix: bytes(1000)), .close(1009))
        add("9.6.3", .limits, "limit + 1 bytes in two fragments", frame(Op.binary, bytes(limit), fin: false) + frame(Op.continuation, [0]), .close(1009), deadline: big)
        add("9.6.4", .limits, "text over the limit announced in the second fragment", frame(Op.text, "Hello", fin: false) + framePrefix(Op.continuation, length: limit, prefix: pattern(100)), .close(1009))

        // MARK: opening handshake (RFC 6455 section 4.2)
        add("H.1", .handshake, "a valid upgrade", .none, http(), .httpStatus(101))
        add("H.2", .handshake, "header names and values in other cases, Connection as a list", .none, http(set: ["Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"]), .httpStatus(101))
        add("H.3", .handshake, "request written in 7-byte pieces", .none, http(), .httpStatus(101), chop: 7)
        add("H.4", .handshake, "no Sec-WebSocket-Key", .none, http(set: ["Sec-WebSocket-Key": nil]), .httpStatus(400))
        add("H.5", .handshake, "Sec-WebSocket-Key of 15 bytes", .none, http(set: ["Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"]), .httpStatus(400))
        add("H.6", .handshake, "Sec-WebSocket-Key not base64", .none, http(set: ["Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!=="]), .httpStatus(400))
        add("H.7", .handshake, "two Sec-WebSocket-Key headers", .none, http(extra: ["Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="]), .httpStatus(400))
        add("H.8", .handshake, "Sec-WebSocket-Version: 8", .none, http(set: ["Sec-WebSocket-Version": "8"]), .httpStatus(426, header: "Sec-WebSocket-Version: 13"))
        add("H.9", .handshake, "no Sec-WebSocket-Version", .none, http(set: ["Sec-WebSocket-Version": nil]), .httpStatusAny([400, 426]))
        add("H.10", .handshake, "POST", .none, http(method: "POST"), .httpStatus(405))
        add("H.11", .handshake, "HTTP/1.0", .none, http(version: "HTTP/1.0"), .httpStatusAny([400, 505]))
        add("H.12", .handshake, "no Upgrade header", .none, http(set: ["Upgrade": nil]), .httpStatusAny([400, 426]))
        add("H.13", .handshake, "Upgrade: h2c", .none, http(set: ["Upgrade": "h2c"]), .httpStatusAny([400, 426]))
        add("H.14", .handshake, "Connection: keep-alive (no upgrade token)", .none, http(set: ["Connection": "keep-alive"]), .httpStatusAny([400, 426]))
        add("H.15", .handshake, "no Host header", .none, http(set: ["Host": nil]), .httpStatus(400))
        add("H.16", .handshake, "not HTTP at all", .none, utf8("HELLO\r\n\r\n"), .failWithin(target.deadline))
        add("H.17", .handshake, "a 16 KiB header", .none, http(extra: ["X-Padding: " + String(decoding: pattern(16384), as: UTF8.self)]), .httpStatusAny([400, 413, 431, 494]))
        add("H.18", .handshake, "frames in the same write as the upgrade request", .pipelined, hello + ping, .echo([.text("Hello"), .pong("ping")]))

        // MARK: compression (Autobahn 12.x / 13.x, RFC 7692). SKIPPED when
        // the server does not accept permessage-deflate.
        let repeated = utf8("Hello, Hello, Hello, Hello! ") + pattern(200)
        let first = utf8("Context takeover: this sentence is sent twice.")
        let compressedText = Deflate.fixed(repeated)
        add("12.1", .compression, "text, stored blocks", pdf, frame(Op.text, Deflate.stored(utf8("Hello")), rsv: rsv1), .echo([.text("Hello")]))
        add("12.2", .compression, "text, fixed Huffman with back-references", pdf, frame(Op.text, compressedText, rsv: rsv1), .echo([.text(repeated)]))
        add("12.3", .compression, "binary, 64 KiB in stored blocks", pdf, frame(Op.binary, Deflate.stored(bytes(65536)), rsv: rsv1), .echo([.binary(bytes(65536))]))
        add("12.4", .compression, "text, 256 KiB, fixed Huffman", pdf, frame(Op.text, Deflate.fixed(pattern(262144)), rsv: rsv1), .echo([.text(pattern(262144))]))
        add("12.5", .compression, "empty text, compressed", pdf, frame(Op.text, [0x00], rsv: rsv1), .echo([.text("")]))
        add("12.6", .compression, "compressed text in 3 fragments (RSV1 on the first)", pdf, split(Op.text, compressedText, at: [3, 10], rsv: rsv1), .echo([.text(repeated)]))
        add("12.7", .compression, "uncompressed and compressed messages mixed", pdf, hello + frame(Op.text, compressedText, rsv: rsv1) + frame(Op.binary, [1, 2, 3]), .echo([.text("Hello"), .text(repeated), .binary([1, 2, 3])]))
        add("12.8", .compression, "ping between compressed fragments", pdf, frame(Op.text, Array(compressedText[..<5]), fin: false, rsv: rsv1) + ping + frame(Op.continuation, Array(compressedText[5...])), .echo([.pong("ping"), .text(repeated)]))
        add("13.1", .compression, "context takeover: the second message refers to the first", .deflate(contextTakeover: true), frame(Op.text, Deflate.fixed(first), rsv: rsv1) + frame(Op.text, Deflate.fixed(first, history: first), rsv: rsv1), .echo([.text(first), .text(first)]))
        add("13.2", .compression, "offer with client_max_window_bits", .deflate(offer: "permessage-deflate; client_max_window_bits"), frame(Op.text, compressedText, rsv: rsv1), .echo([.text(repeated)]))
        add("13.3", .compression, "offer with both no_context_takeover", .deflate(offer: "permessage-deflate; server_no_context_takeover; client_no_context_takeover"), frame(Op.text, compressedText, rsv: rsv1) + frame(Op.text, compressedText, rsv: rsv1), .echo([.text(repeated), .text(repeated)]))
        add("13.4", .compression, "an unknown parameter first, a plain offer second", .deflate(offer: "permessage-deflate; x-unknown=1, permessage-deflate"), frame(Op.text, compressedText, rsv: rsv1), .echo([.text(repeated)]))
        add("13.5", .compression, "RSV1 on a continuation", pdf, frame(Op.text, "ab", fin: false) + frame(Op.continuation, [0x00], rsv: rsv1), .close(1002))
        add("13.6", .compression, "RSV1 on a ping", pdf, frame(Op.ping, [0x00], rsv: rsv1), .close(1002))
        add("13.7", .compression, "compressed data that does not inflate (block type 3)", pdf, frame(Op.text, [0x07, 0x00, 0x00], rsv: rsv1), .closeAny([1002, 1007]))
        add("13.8", .compression, "compressed text that inflates to invalid UTF-8", pdf, frame(Op.text, Deflate.stored(utf8("ab") + [0xFF]), rsv: rsv1), .close(1007))
        add("13.9", .compression, "zip bomb: \(Deflate.bomb(limit + 1).count) bytes inflating to limit + 1", pdf, frame(Op.binary, Deflate.bomb(limit + 1), rsv: rsv1), .close(1009), deadline: big)
        return all
    }

    /// An upgrade request for the target, with a fresh key.
    static func upgradeRequest(host: String, path: String, headers: [String]) -> (String, String) {
        let key = base64((0..<16).map { _ in UInt8.random(in: 0...255) })
        let lines = ["GET \(path) HTTP/1.1", "Host: \(hostHeader(host))", "Upgrade: websocket", "Connection: Upgrade",
                     "Sec-WebSocket-Key: \(key)", "Sec-WebSocket-Version: 13"] + headers
        return (lines.joined(separator: "\r\n") + "\r\n\r\n", key)
    }

    static func hostHeader(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    /// A handshake request: `set` replaces a header's value (nil removes it).
    static func httpRequest(_ target: Target, method: String, version: String, set: [String: String?],
                            extra: [String]) -> [UInt8] {
        var headers: [(String, String)] = [
            ("Host", "\(hostHeader(target.host)):\(target.port)"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ]
        for (name, value) in set {
            if let i = headers.firstIndex(where: { $0.0 == name }) {
                if let value = value { headers[i].1 = value } else { headers.remove(at: i) }
            } else if let value = value {
                headers.append((name, value))
            }
        }
        let lines = ["\(method) \(target.path) \(version)"] + headers.map { "\($0.0): \($0.1)" } + extra
        return utf8(lines.joined(separator: "\r\n") + "\r\n\r\n")
    }

    static func headEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        for i in 0...(data.count - 4) where data[i] == 13 && data[i + 1] == 10 && data[i + 2] == 13 && data[i + 3] == 10 {
            return i
        }
        return nil
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var out = ""
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let v = (Int(bytes[i]) << 16) | (n > 1 ? Int(bytes[i + 1]) << 8 : 0) | (n > 2 ? Int(bytes[i + 2]) : 0)
            for j in 0..<4 { out.append(j <= n ? table[(v >> (18 - 6 * j)) & 63] : "=") }
            i += 3
        }
        return out
    }
}

extension Deflate {
    /// A tiny message that inflates to `size` zero bytes: one literal, then
    /// back-references of 258 bytes at distance 1.
    public static func bomb(_ size: Int) -> [UInt8] {
        var tokens: [DeflateToken] = [.literal(0)]
        var rest = size - 1
        while rest > 0 {
            var n = min(258, rest)
            if (1..<3).contains(rest - n) { n = rest - 3 }
            tokens.append(.match(length: n, distance: 1))
            rest -= n
        }
        return fixed(tokens: tokens)
    }
}

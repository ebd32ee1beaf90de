import CWebSocket
import Foundation
import Testing

// MARK: - Helpers

private func string(_ s: cws_slice) -> String? {
    guard let p = s.ptr else { return nil }
    return String(decoding: UnsafeRawBufferPointer(start: p, count: s.len), as: UTF8.self)
}

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

private func sha1(_ bytes: [UInt8]) -> String {
    var digest = [UInt8](repeating: 0, count: 20)
    bytes.withUnsafeBytes { cws_sha1($0.baseAddress, $0.count, &digest) }
    return hex(digest)
}

private func base64(_ bytes: [UInt8]) -> String {
    var out = [CChar](repeating: 0, count: (bytes.count + 2) / 3 * 4 + 1)
    let n = bytes.withUnsafeBytes { cws_base64_encode($0.baseAddress, $0.count, &out) }
    return String(decoding: out[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The decoded bytes, or nil when cws_base64_decode refuses the input.
private func unbase64(_ text: String, cap: Int = 256) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: cap)
    let n = Array(text.utf8).withUnsafeBytes { b in
        cws_base64_decode(b.baseAddress?.assumingMemoryBound(to: CChar.self), b.count, &out, cap)
    }
    return n < 0 ? nil : Array(out[0..<n])
}

private func acceptKey(_ key: String) -> String {
    var out = [CChar](repeating: 0, count: 28)
    Array(key.utf8).withUnsafeBytes { cws_accept_key($0.baseAddress, $0.count, &out) }
    return String(decoding: out.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Everything a parsed request exposes, copied out while its buffer is alive.
private struct Request: Equatable {
    var headLen: Int
    var method: String?
    var target: String?
    var path: String?
    var query: String?
    var major: Int
    var minor: Int
    var headers: [[String?]]
    var isUpgrade: Bool
    var status: Int32 // cws_upgrade_validate
    var info: Info?

    struct Info: Equatable {
        var key, origin, protocols, extensions, cookie, host: String?
        var extensionHeaders: Int
    }

    init(_ r: UnsafePointer<cws_http_request>) {
        let req = r.pointee
        headLen = req.head_len
        method = string(req.method)
        target = string(req.target)
        path = string(req.path)
        query = string(req.query)
        major = Int(req.http_major)
        minor = Int(req.http_minor)
        headers = withUnsafeBytes(of: req.headers) { raw in
            raw.bindMemory(to: cws_http_header.self).prefix(Int(req.header_count)).map {
                [string($0.name), string($0.value)]
            }
        }
        isUpgrade = cws_http_is_upgrade(r) == 1
        var i = cws_upgrade_info()
        status = cws_upgrade_validate(r, &i)
        info = status != 0 ? nil : Info(
            key: string(i.key), origin: string(i.origin), protocols: string(i.protocols),
            extensions: string(i.extensions), cookie: string(i.cookie), host: string(i.host),
            extensionHeaders: Int(i.extension_headers))
    }
}

/// Feeds the bytes received so far to r; on a complete head, body sees the
/// request while the buffer is still valid.
private func feed<T>(_ r: inout cws_http_request, _ bytes: [UInt8],
                     _ body: (Int, UnsafePointer<cws_http_request>) throws -> T) rethrows -> T {
    try bytes.withUnsafeBytes { buf in
        let rc = cws_http_parse(&r, buf.baseAddress, buf.count)
        return try withUnsafePointer(to: &r) { try body(rc, $0) }
    }
}

/// Parses a whole buffer at once: the return code and, if complete, the request.
private func parse(_ bytes: [UInt8], maxHead: Int = 8192) -> (rc: Int, request: Request?) {
    var r = cws_http_request()
    cws_http_request_init(&r, maxHead)
    return feed(&r, bytes) { rc, p in (rc, rc > 0 ? Request(p) : nil) }
}

private func parse(_ text: String, maxHead: Int = 8192) -> (rc: Int, request: Request?) {
    parse(Array(text.utf8), maxHead: maxHead)
}

private let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="

private let validHeaders: [(String, String)] = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", sampleKey),
    ("Origin", "http://example.com"),
    ("Sec-WebSocket-Protocol", "chat, superchat"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Cookie", "sid=abc"),
    ("Sec-WebSocket-Version", "13"),
]

private func requestText(method: String = "GET", target: String = "/chat?room=1&x=y",
                         version: String = "HTTP/1.1", headers: [(String, String)] = validHeaders) -> String {
    var s = "\(method) \(target) \(version)\r\n"
    for (name, value) in headers { s += "\(name): \(value)\r\n" }
    return s + "\r\n"
}

/// The valid headers with every `name` header removed and `added` appended.
private func headers(without name: String, adding added: [(String, String)] = []) -> [(String, String)] {
    validHeaders.filter { $0.0.lowercased() != name.lowercased() } + added
}

/// cws_upgrade_validate's answer for a request that must parse.
private func validationStatus(_ text: String) throws -> Int32 {
    let (rc, request) = parse(text)
    #expect(rc == text.utf8.count)
    return try #require(request).status
}

private func errorResponse(_ status: Int32) -> String {
    var out = [UInt8](repeating: 0, count: 512)
    let n = cws_http_error_response(&out, out.count, status)
    return String(decoding: out[0..<n], as: UTF8.self)
}

// MARK: - SHA-1, base64, accept key

@Suite struct HandshakeCryptoTests {
    @Test func acceptKeyRFC6455Sample() {
        // RFC 6455 section 1.3 (also checked with Python hashlib + base64).
        #expect(acceptKey(sampleKey) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func sha1FIPSVectors() {
        #expect(sha1(Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(sha1([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(sha1(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(sha1([UInt8](repeating: 0x61, count: 1_000_000)) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    /// Lengths around the padding boundaries (55/56 bytes: one or two final
    /// blocks; 64: an exact block). Digests from an independent implementation.
    @Test(arguments: [
        (55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"),
        (56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"),
        (63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"),
        (64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"),
        (65, "11655326c708d70319be2610e8a57d9a5b959d3b"),
        (119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"),
        (120, "f34c1488385346a55709ba056ddd08280dd4c6d6"),
        (128, "ad5b3fdbcb526778c2839d2f151ea753995e26a0"),
    ])
    func sha1PaddingBoundaries(length: Int, digest: String) {
        #expect(sha1([UInt8](repeating: 0x61, count: length)) == digest)
    }

    @Test func base64RFC4648Vectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="),
                       ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors {
            #expect(base64(Array(plain.utf8)) == encoded)
            #expect(unbase64(encoded) == Array(plain.utf8))
        }
    }

    /// Every length 0...64, all 256 byte values exercised, checked against
    /// Foundation's encoder and decoded back.
    @Test func base64RoundTrip() {
        for length in 0...64 {
            let bytes = (0..<length).map { UInt8((($0 * 97) + length * 31) & 0xFF) }
            let encoded = base64(bytes)
            #expect(encoded.utf8.count == (length + 2) / 3 * 4)
            #expect(encoded == Data(bytes).base64EncodedString(), "length \(length)")
            #expect(unbase64(encoded) == bytes, "length \(length)")
        }
        let all = (0...255).map { UInt8($0) }
        #expect(unbase64(base64(all)) == all)
    }

    @Test(arguments: [
        "Zg", "Zg=", "Zm9vY", // length not a multiple of 4
        "Z===", "====", "=AAA", "Zg=a", "Z=g=", // padding in the wrong place
        "Zm9vYg==Zm9v", "Zg==Zg==", // padding before the end
        "Zm9v!A==", "Zm 9v", "Zm9v\n", "Zm-_", "Zm9\u{0}", "Zé9", // outside the alphabet
        "Zh==", "Zm9=", // non-zero bits under the padding (non-canonical)
    ])
    func base64DecodeRejects(_ text: String) {
        #expect(unbase64(text) == nil)
    }

    @Test func base64DecodeRespectsCap() {
        #expect(unbase64("Zm9vYmFy", cap: 5) == nil)
        #expect(unbase64("Zm9vYmFy", cap: 6) == Array("foobar".utf8))
        #expect(unbase64("Zm9vYg==", cap: 4) == Array("foob".utf8))
        #expect(unbase64("Zm9vYg==", cap: 3) == nil)
    }
}

// MARK: - Parsing and upgrade

@Suite struct HandshakeTests {
    @Test func validUpgradeRequest() throws {
        let text = requestText()
        let (rc, parsed) = parse(text)
        #expect(rc == text.utf8.count)
        let request = try #require(parsed)
        #expect(request.headLen == text.utf8.count)
        #expect(request.method == "GET")
        #expect(request.target == "/chat?room=1&x=y")
        #expect(request.path == "/chat")
        #expect(request.query == "room=1&x=y")
        #expect(request.major == 1 && request.minor == 1)
        #expect(request.headers == validHeaders.map { [$0.0, $0.1] })
        #expect(request.isUpgrade)
        #expect(request.status == 0)
        #expect(request.info == Request.Info(
            key: sampleKey, origin: "http://example.com", protocols: "chat, superchat",
            extensions: "permessage-deflate; client_max_window_bits", cookie: "sid=abc",
            host: "server.example.com", extensionHeaders: 1))
    }

    @Test func upgradeResponseBytes() {
        var out = [UInt8](repeating: 0, count: 256)
        let n = Array(sampleKey.utf8).withUnsafeBytes {
            cws_upgrade_response(&out, out.count, $0.baseAddress, $0.count, nil, nil)
        }
        #expect(String(decoding: out[0..<n], as: UTF8.self) ==
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        // Empty strings leave the optional headers out too.
        let m = Array(sampleKey.utf8).withUnsafeBytes {
            cws_upgrade_response(&out, out.count, $0.baseAddress, $0.count, "", "")
        }
        #expect(m == n)
    }

    @Test func upgradeResponseWithProtocolAndExtensions() {
        let expected = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
            + "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        let size = expected.utf8.count
        for cap in [size - 1, size, size + 100] {
            var out = [UInt8](repeating: 0, count: cap)
            let n = Array(sampleKey.utf8).withUnsafeBytes {
                cws_upgrade_response(&out, cap, $0.baseAddress, $0.count, "chat",
                                     "permessage-deflate; server_no_context_takeover")
            }
            if cap < size {
                #expect(n == 0, "cap \(cap) is too small")
            } else {
                #expect(String(decoding: out[0..<n], as: UTF8.self) == expected)
            }
        }
    }

    /// The buffer grows by one byte per call: need-more until the last byte,
    /// then exactly what a single call gives.
    @Test func incrementalByteByByte() throws {
        let bytes = Array(requestText().utf8)
        let whole = try #require(parse(bytes).request)
        var r = cws_http_request()
        cws_http_request_init(&r, 8192)
        for end in 1..<bytes.count {
            let rc = feed(&r, Array(bytes[0..<end])) { rc, _ in rc }
            #expect(rc == 0, "prefix of \(end) bytes")
        }
        let last = feed(&r, bytes) { rc, p in (rc, Request(p)) }
        #expect(last.0 == bytes.count)
        #expect(last.1 == whole)
        // Once complete it stays complete, without rescanning.
        #expect(feed(&r, bytes) { rc, _ in rc } == bytes.count)
    }

    @Test func incrementalTwoPiecesAtEverySplit() throws {
        let bytes = Array(requestText().utf8)
        let whole = try #require(parse(bytes).request)
        for split in 0...bytes.count {
            var r = cws_http_request()
            cws_http_request_init(&r, 8192)
            let first = feed(&r, Array(bytes[0..<split])) { rc, _ in rc }
            #expect(first == (split == bytes.count ? bytes.count : 0), "split \(split)")
            let second = feed(&r, bytes) { rc, p in (rc, Request(p)) }
            #expect(second.0 == bytes.count && second.1 == whole, "split \(split)")
        }
    }

    /// Bytes after the head (an early frame) are not part of it.
    @Test func headLengthExcludesFollowingBytes() {
        let text = requestText()
        let (rc, request) = parse(Array(text.utf8) + [0x81, 0x85, 1, 2, 3, 4, 5])
        #expect(rc == text.utf8.count)
        #expect(request?.status == 0)
    }

    @Test func bareLineFeedsAreLineEndings() throws {
        let text = "GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: upgrade\n"
            + "Sec-WebSocket-Key: \(sampleKey)\nSec-WebSocket-Version: 13\n\n"
        let (rc, request) = parse(text)
        #expect(rc == text.utf8.count)
        #expect(try #require(request).status == 0)
        #expect(request?.path == "/" && request?.query == nil)
        // Mixed endings end the head too.
        #expect(parse("GET / HTTP/1.1\r\nHost: a\r\n\n").rc == 26)
        #expect(parse("GET / HTTP/1.1\r\nHost: a\n\r\n").rc == 26)
    }

    @Test func valuesAreTrimmedOfOptionalWhitespace() throws {
        let request = try #require(parse("GET /x HTTP/1.1\r\nHost:a\r\nX-A: \t spaced out \t \r\nX-Empty:   \r\n\r\n").request)
        #expect(request.headers == [["Host", "a"], ["X-A", "spaced out"], ["X-Empty", ""]])
        // "/?" has an empty (but present) query.
        #expect(parse("GET /? HTTP/1.1\r\nHost: a\r\n\r\n").request?.query == "")
        #expect(parse("GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n").request.map { [$0.path, $0.query] } == ["/a", "b?c"])
    }

    @Test func absoluteFormTarget() throws {
        let request = try #require(parse("GET ws://example.com:8080/chat?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n").request)
        #expect(request.target == "ws://example.com:8080/chat?x=1")
        #expect(request.path == "/chat")
        #expect(request.query == "x=1")
        #expect(parse("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n").request?.path == "/")
    }

    // MARK: Rejections by the validator

    @Test func methodNotGET() throws {
        #expect(try validationStatus(requestText(method: "POST")) == 405)
        #expect(try validationStatus(requestText(method: "get")) == 405) // methods are case-sensitive
    }

    @Test func http10() throws {
        #expect(try validationStatus(requestText(version: "HTTP/1.0")) == 400)
        #expect(try validationStatus(requestText(version: "HTTP/1.2")) == 0)
    }

    @Test func missingHost() throws {
        #expect(try validationStatus(requestText(headers: headers(without: "Host"))) == 400)
        #expect(try validationStatus(requestText(headers: headers(without: "Host", adding: [("Host", "")]))) == 400)
        #expect(try validationStatus(requestText(headers: validHeaders + [("Host", "other")])) == 400)
    }

    @Test func connectionUpgradeToken() throws {
        #expect(try validationStatus(requestText(headers: headers(without: "Connection"))) == 400)
        for bad in ["keep-alive", "upgraded", "up grade", "keep-alive upgrade", ""] {
            let h = headers(without: "Connection", adding: [("Connection", bad)])
            #expect(try validationStatus(requestText(headers: h)) == 400, "Connection: \(bad)")
        }
        for good in ["keep-alive, Upgrade", "UPGRADE", "uPgRaDe", ",upgrade,", "close ,\tupgrade\t, x"] {
            let h = headers(without: "Connection", adding: [("Connection", good)])
            #expect(try validationStatus(requestText(headers: h)) == 0, "Connection: \(good)")
        }
        // The token may be in any of several Connection headers.
        let split = headers(without: "Connection", adding: [("Connection", "keep-alive"), ("connection", "Upgrade")])
        #expect(try validationStatus(requestText(headers: split)) == 0)
        let splitFirst = headers(without: "Connection", adding: [("CONNECTION", "upgrade"), ("Connection", "close")])
        #expect(try validationStatus(requestText(headers: splitFirst)) == 0)
    }

    @Test func upgradeHeader() throws {
        #expect(try validationStatus(requestText(headers: headers(without: "Upgrade"))) == 400)
        for bad in ["h2c", "websockets", "web socket", ""] {
            let h = headers(without: "Upgrade", adding: [("Upgrade", bad)])
            #expect(try validationStatus(requestText(headers: h)) == 400, "Upgrade: \(bad)")
        }
        for good in ["WebSocket", "h2c, websocket"] {
            let h = headers(without: "Upgrade", adding: [("Upgrade", good)])
            #expect(try validationStatus(requestText(headers: h)) == 0, "Upgrade: \(good)")
        }
    }

    @Test func missingKey() throws {
        #expect(try validationStatus(requestText(headers: headers(without: "Sec-WebSocket-Key"))) == 400)
    }

    @Test(arguments: [
        "AAECAwQFBgcICQoLDA0O",     // 15 bytes
        "AAECAwQFBgcICQoLDA0ODxA=", // 17 bytes
        "AAECAwQFBgcICQoLDA0ODw",   // 16 bytes without padding
        "AAECAwQFBgcICQoLDA0ODw=!", // bad character
        "",
    ])
    func keyOfWrongSize(key: String) throws {
        let h = headers(without: "Sec-WebSocket-Key", adding: [("Sec-WebSocket-Key", key)])
        #expect(try validationStatus(requestText(headers: h)) == 400)
    }

    @Test func twoKeyHeaders() throws {
        let h = validHeaders + [("Sec-WebSocket-Key", "AAECAwQFBgcICQoLDA0ODw==")]
        #expect(try validationStatus(requestText(headers: h)) == 400)
    }

    @Test func versionMissingOrWrong() throws {
        #expect(try validationStatus(requestText(headers: headers(without: "Sec-WebSocket-Version"))) == 426)
        for bad in ["8", "12", "14", "13, 8", "013", ""] {
            let h = headers(without: "Sec-WebSocket-Version", adding: [("Sec-WebSocket-Version", bad)])
            #expect(try validationStatus(requestText(headers: h)) == 426, "version \(bad)")
        }
        let twice = validHeaders + [("Sec-WebSocket-Version", "13")]
        #expect(try validationStatus(requestText(headers: twice)) == 426)
    }

    @Test func extensionHeadersAreCounted() throws {
        let h = validHeaders + [("Sec-WebSocket-Extensions", "x-other")]
        let info = try #require(parse(requestText(headers: h)).request?.info)
        #expect(info.extensions == "permessage-deflate; client_max_window_bits")
        #expect(info.extensionHeaders == 2)
        let none = try #require(parse(requestText(headers: headers(without: "Sec-WebSocket-Extensions"))).request?.info)
        #expect(none.extensions == nil && none.extensionHeaders == 0)
        #expect(none.origin == "http://example.com")
        let bare = try #require(parse(requestText(headers: headers(without: "Origin").filter { $0.0 != "Cookie" }))
            .request?.info)
        #expect(bare.origin == nil && bare.cookie == nil)
    }

    // MARK: Rejections by the parser

    @Test func headTooLargeWithoutTerminator() {
        let bytes = Array(requestText().utf8)
        // Exactly max_head bytes is allowed; one byte less is not.
        #expect(parse(bytes, maxHead: bytes.count).rc == bytes.count)
        #expect(parse(bytes, maxHead: bytes.count - 1).rc == -431)
        // Growing a head that never ends: need-more until max_head, then -431.
        var r = cws_http_request()
        cws_http_request_init(&r, 100)
        var junk = Array("GET / HTTP/1.1\r\n".utf8)
        while junk.count < 99 { junk.append(UInt8(ascii: "a")) }
        #expect(feed(&r, junk) { rc, _ in rc } == 0)
        junk.append(UInt8(ascii: "a"))
        #expect(feed(&r, junk) { rc, _ in rc } == -431)
    }

    @Test func tooManyHeaders() {
        let base = [("Host", "a")]
        let max = Int(CWS_HTTP_MAX_HEADERS)
        let ok = base + (1..<max).map { ("X-\($0)", "v") }
        #expect(parse(requestText(headers: ok), maxHead: 1 << 20).request?.headers.count == max)
        let tooMany = ok + [("X-Last", "v")]
        #expect(parse(requestText(headers: tooMany), maxHead: 1 << 20).rc == -431)
    }

    @Test(arguments: [
        "GET  / HTTP/1.1", "GET /  HTTP/1.1", "GET / HTTP/1.1 ", " GET / HTTP/1.1", "GET /", "GET / ",
        "GET", "G(T / HTTP/1.1", "GET chat HTTP/1.1", "GET * HTTP/1.1", "GET http:/x HTTP/1.1",
        "GET / HTTP/2.0", "GET / HTTP/1", "GET / HTTP/1.10", "GET / http/1.1", "GET / HTTP/1.x",
        "GET /a\u{7F} HTTP/1.1", "GET /é HTTP/1.1", "GET\t/ HTTP/1.1",
    ])
    func malformedRequestLine(_ line: String) {
        #expect(parse("\(line)\r\nHost: a\r\n\r\n").rc == -400)
    }

    @Test func leadingBlankLine() {
        #expect(parse("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").rc == -400)
    }

    @Test(arguments: [
        "Host a",             // no colon
        "Host : a",           // whitespace before the colon
        "Host\t: a",
        ": a",                // empty name
        " folded",            // obs-fold
        "\tfolded",
        "X(y): a",            // name not a token
        "X-A: a\rb",          // bare CR
        "X-A: a\u{1}b",       // control character
        "X-A: a\u{7F}",       // DEL
    ])
    func malformedHeaderLine(_ line: String) {
        #expect(parse("GET / HTTP/1.1\r\nHost: a\r\n\(line)\r\n\r\n").rc == -400, "\(line.debugDescription)")
    }

    @Test func nulInHead() {
        var bytes = Array(requestText().utf8)
        for at in [2, 20, 40] {
            var b = bytes
            b[at] = 0
            #expect(parse(b).rc == -400, "NUL at \(at)")
        }
        bytes.insert(0, at: bytes.count - 4) // at the end of the last header's value
        #expect(parse(bytes).rc == -400)
    }

    @Test func obsTextIsAllowedInValues() {
        #expect(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Name: Jos\u{E9}\r\n\r\n").rc > 0)
    }

    @Test func errorIsStableWhenCalledAgain() {
        var r = cws_http_request()
        cws_http_request_init(&r, 8192)
        let bytes = Array("GET / HTTP/1.1\r\nBad\r\n\r\n".utf8)
        #expect(feed(&r, bytes) { rc, _ in rc } == -400)
        #expect(feed(&r, bytes) { rc, _ in rc } == -400)
    }

    // MARK: Lookups and classification

    @Test func isUpgrade() throws {
        #expect(try #require(parse(requestText()).request).isUpgrade)
        let plain = "GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
        #expect(try #require(parse(plain).request).isUpgrade == false)
        let h2c = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        #expect(try #require(parse(h2c).request).isUpgrade == false)
        let upgradeOnly = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c, WebSocket\r\n\r\n"
        #expect(try #require(parse(upgradeOnly).request).isUpgrade)
        let keyOnly = "POST / HTTP/1.1\r\nHost: a\r\nsec-websocket-key: x\r\n\r\n"
        let keyRequest = try #require(parse(keyOnly).request)
        #expect(keyRequest.isUpgrade)
        #expect(keyRequest.status == 405)
    }

    @Test func headerGetIsCaseInsensitive() {
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\nX-Dup: first\r\nx-dup: second\r\nSEC-WEBSOCKET-KEY: k\r\n\r\n".utf8)
        var r = cws_http_request()
        cws_http_request_init(&r, 8192)
        let found = feed(&r, bytes) { rc, p -> [String?] in
            #expect(rc == bytes.count)
            let names: [String] = ["host", "HOST", "x-dup", "X-DUP", "Sec-WebSocket-Key", "missing", "Hos", "Hostx"]
            return names.map { name in string(cws_http_header_get(p, name)) }
        }
        #expect(found == ["a", "a", "first", "first", "k", nil, nil, nil])
    }

    // MARK: Error responses

    @Test func errorResponses() {
        #expect(errorResponse(400) == "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        let upgradeRequired = errorResponse(426)
        #expect(upgradeRequired.hasPrefix("HTTP/1.1 426 Upgrade Required\r\n"))
        #expect(upgradeRequired.contains("\r\nSec-WebSocket-Version: 13\r\n"))
        #expect(upgradeRequired.hasSuffix("\r\n\r\n"))
        let notAllowed = errorResponse(405)
        #expect(notAllowed.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        #expect(notAllowed.contains("\r\nAllow: GET\r\n"))
        #expect(!notAllowed.contains("Sec-WebSocket-Version"))
        for (status, reason): (Int32, String) in [(403, "Forbidden"), (404, "Not Found"), (431, "Request Header Fields Too Large"),
                                 (500, "Internal Server Error"), (503, "Service Unavailable")] {
            let r = errorResponse(status)
            #expect(r.hasPrefix("HTTP/1.1 \(status) \(reason)\r\n"))
            #expect(r.contains("\r\nConnection: close\r\n") && r.contains("\r\nContent-Length: 0\r\n"))
        }
        #expect(errorResponse(418).hasPrefix("HTTP/1.1 418 "))
    }

    @Test func errorResponseCapTooSmall() {
        let full = errorResponse(426).utf8.count
        var out = [UInt8](repeating: 0, count: full)
        #expect(cws_http_error_response(&out, full - 1, 426) == 0)
        #expect(cws_http_error_response(&out, full, 426) == full)
    }
}

import OffThePool
import CWebSocket
import Testing

// permessage-deflate (RFC 7692), sans-IO: negotiation over offer strings and the
// compressor / decompressor on their own. The engine tests are in
// DeflateEngineTests.swift.

/// The answer to a list of Sec-WebSocket-Extensions header values: the response
/// text (nil when declined) and the agreed parameters.
private func negotiate(_ headers: [String], configure: (inout cws_deflate_config) -> Void = { _ in })
    -> (String?, cws_deflate_params)
{
    var cfg = cws_deflate_config()
    cws_deflate_config_init(&cfg)
    cfg.enabled = 1
    configure(&cfg)
    var params = cws_deflate_params()
    var out = [CChar](repeating: 0, count: Int(CWS_DEFLATE_RESPONSE_MAX))
    // Keep every header's bytes alive while the slices point into them.
    let storage = headers.map { Array($0.utf8) }
    let n: Int32 = withSlices(storage) { slices in
        cws_deflate_negotiate(&cfg, slices.baseAddress, slices.count, &params, &out, out.count)
    }
    if n <= 0 { return (nil, params) }
    return (String(decoding: out.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self), params)
}

private func withSlices<R>(_ storage: [[UInt8]], _ body: (UnsafeBufferPointer<cws_slice>) -> R) -> R {
    var ptrs: [UnsafeMutablePointer<UInt8>] = []
    defer { ptrs.forEach { $0.deallocate() } }
    var slices: [cws_slice] = []
    for bytes in storage {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(bytes.count, 1))
        p.initialize(from: bytes, count: bytes.count)
        ptrs.append(p)
        slices.append(cws_slice(ptr: UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self), len: bytes.count))
    }
    return slices.withUnsafeBufferPointer(body)
}

private func answer(_ headers: String..., configure: (inout cws_deflate_config) -> Void = { _ in }) -> String? {
    negotiate(headers, configure: configure).0
}

/// The policy that adds nothing of its own, so answers show the RFC's rules.
private func plain(_ c: inout cws_deflate_config) { c.server_no_context_takeover = 0 }

// MARK: - compressor / decompressor helpers

private func compress(_ d: OpaquePointer, _ input: [UInt8]) -> [UInt8] {
    var b = cws_buffer()
    defer { cws_buffer_free(&b) }
    let rc = input.withUnsafeBytes { cws_deflater_message(d, $0.baseAddress, $0.count, &b) }
    precondition(rc == 0)
    return Array(UnsafeBufferPointer(start: b.data, count: b.len))
}

/// Inflates a whole message, optionally in pieces of `chunk` bytes. Returns the
/// output or the negative close code, and the buffer capacity reached.
private func inflate(_ f: OpaquePointer, _ input: [UInt8], max limit: UInt64 = 64 << 20, chunk: Int = 0, utf8: Bool = false)
    -> (out: [UInt8], rc: Int32, cap: Int)
{
    var b = cws_buffer()
    defer { cws_buffer_free(&b) }
    var u = cws_utf8_state()
    cws_utf8_init(&u)
    let step = chunk == 0 ? max(input.count, 1) : chunk
    var rc: Int32 = 0
    var pos = 0
    repeat {
        let end = min(input.count, pos + step)
        let last: Int32 = end == input.count ? 1 : 0
        rc = input.withUnsafeBytes { raw in
            withUnsafeMutablePointer(to: &u) { up in
                cws_inflater_feed(f, raw.baseAddress.map { $0 + pos }, end - pos, last, &b, limit, utf8 ? up : nil)
            }
        }
        pos = end
    } while rc == 0 && pos < input.count
    return (Array(UnsafeBufferPointer(start: b.data, count: b.len)), rc, b.cap)
}

private func jsonLike(_ n: Int, seed: Int = 0) -> [UInt8] {
    var s: [UInt8] = []
    var i = seed
    while s.count < n {
        s += Array("{\"from\":\"user-\(i % 97)\",\"cmd\":\"chat\",\"param\":{\"text\":\"message number \(i)\"}},".utf8)
        i += 1
    }
    return Array(s.prefix(n))
}

private func pseudoRandom(_ n: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var x = seed
    return (0..<n).map { _ in
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
}

@Suite("Deflate negotiation")
struct DeflateNegotiationTests {
    // RFC 7692 section 5 / 7.1 examples.

    @Test func plainOffer() {
        // "permessage-deflate": accepted as is.
        #expect(answer("permessage-deflate", configure: plain) == "permessage-deflate")
    }

    @Test func offerWithClientMaxWindowBitsNoValue() {
        // 7.1.2.2: without a value the server may answer with any value; with
        // the default policy (15) nothing needs saying.
        #expect(answer("permessage-deflate; client_max_window_bits", configure: plain) == "permessage-deflate")
        let (r, p) = negotiate(["permessage-deflate; client_max_window_bits"]) {
            plain(&$0)
            $0.client_max_window_bits = 10
        }
        #expect(r == "permessage-deflate; client_max_window_bits=10")
        #expect(p.client_max_window_bits == 10)
    }

    @Test func serverMaxWindowBitsTen() {
        // Section 7.1.2.1 example: the server must answer the bits it will use.
        let (r, p) = negotiate(["permessage-deflate; server_max_window_bits=10"], configure: plain)
        #expect(r == "permessage-deflate; server_max_window_bits=10")
        #expect(p.server_max_window_bits == 10)
    }

    @Test func twoOffersFirstAccepted() {
        // Section 5.1 example: an offer with a fallback.
        let (r, p) = negotiate(
            ["permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"],
            configure: plain)
        #expect(r == "permessage-deflate; server_max_window_bits=10")
        #expect(p.server_max_window_bits == 10 && p.client_max_window_bits == 15)
    }

    @Test func fallbackAcceptedWhenFirstDeclined() {
        // Section 5.1 example, with the first offer unacceptable (a bad value):
        // the plain fallback is taken.
        #expect(answer("permessage-deflate; server_max_window_bits=16, permessage-deflate", configure: plain)
            == "permessage-deflate")
    }

    @Test func serverNoContextTakeoverKept() {
        // 7.1.1.1: an offered server_no_context_takeover must be in the answer.
        let (r, p) = negotiate(["permessage-deflate; server_no_context_takeover"], configure: plain)
        #expect(r == "permessage-deflate; server_no_context_takeover")
        #expect(p.server_no_context_takeover == 1)
    }

    @Test func clientNoContextTakeoverEchoed() {
        // 7.1.1.2: a hint; we take it (no per-connection inflate state).
        let (r, p) = negotiate(["permessage-deflate; client_no_context_takeover"], configure: plain)
        #expect(r == "permessage-deflate; client_no_context_takeover")
        #expect(p.client_no_context_takeover == 1)
    }

    @Test func defaultPolicyAddsServerNoContextTakeover() {
        #expect(answer("permessage-deflate") == "permessage-deflate; server_no_context_takeover")
        #expect(answer("permessage-deflate") { $0.client_no_context_takeover = 1 }
            == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    }

    @Test func allFourParameters() {
        let (r, p) = negotiate([
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11",
        ], configure: plain)
        #expect(r == "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11")
        #expect(p.server_no_context_takeover == 1 && p.client_no_context_takeover == 1)
        #expect(p.server_max_window_bits == 12 && p.client_max_window_bits == 11)
    }

    // Edge cases.

    @Test func disabledNeverAnswers() {
        #expect(answer("permessage-deflate") { $0.enabled = 0 } == nil)
    }

    @Test func noOfferNoAnswer() {
        #expect(negotiate([]).0 == nil)
        #expect(answer("x-webkit-deflate-frame, foo; bar=1") == nil)
    }

    @Test func unknownExtensionsIgnored() {
        #expect(answer("foo; a=\"b,c\", x-webkit-deflate-frame, permessage-deflate", configure: plain) == "permessage-deflate")
    }

    @Test func unknownParameterDeclinesOffer() {
        #expect(answer("permessage-deflate; foo", configure: plain) == nil)
        #expect(answer("permessage-deflate; foo=1, permessage-deflate; server_no_context_takeover", configure: plain)
            == "permessage-deflate; server_no_context_takeover")
    }

    @Test func duplicateParameterDeclinesOffer() {
        #expect(answer("permessage-deflate; server_no_context_takeover; server_no_context_takeover") == nil)
        #expect(answer("permessage-deflate; client_max_window_bits; client_max_window_bits=10") == nil)
        #expect(answer("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10") == nil)
    }

    @Test func duplicateOffersFirstWins() {
        let (r, p) = negotiate(["permessage-deflate; server_max_window_bits=9, permessage-deflate; server_max_window_bits=12"],
                               configure: plain)
        #expect(r == "permessage-deflate; server_max_window_bits=9")
        #expect(p.server_max_window_bits == 9)
    }

    @Test func badWindowBitsValuesDecline() {
        for v in ["7", "16", "08", "010", "1O", "", "-9", "9.0", "\"\"", "\"1 0\""] {
            #expect(answer("permessage-deflate; server_max_window_bits=\(v)") == nil, "server \(v)")
            #expect(answer("permessage-deflate; client_max_window_bits=\(v)") == nil, "client \(v)")
        }
        // server_max_window_bits needs a value.
        #expect(answer("permessage-deflate; server_max_window_bits") == nil)
    }

    @Test func valuelessParametersWithValueDecline() {
        #expect(answer("permessage-deflate; server_no_context_takeover=1") == nil)
        #expect(answer("permessage-deflate; client_no_context_takeover=\"x\"") == nil)
    }

    @Test func quotedValues() {
        #expect(answer("permessage-deflate; server_max_window_bits=\"10\"", configure: plain)
            == "permessage-deflate; server_max_window_bits=10")
        #expect(answer("permessage-deflate; client_max_window_bits=\"1\\1\"", configure: plain)
            == "permessage-deflate; client_max_window_bits=11")
        // A comma inside quotes does not split offers (and is not a token).
        #expect(answer("permessage-deflate; server_max_window_bits=\"10, permessage-deflate\"") == nil)
        // Unterminated quote: the rest of the header is one declined offer.
        #expect(answer("permessage-deflate; server_max_window_bits=\"10, permessage-deflate") == nil)
    }

    @Test func longQuotedValueKeepsItsQuotes() {
        // A quoted value longer than any valid one (here 17 characters) must
        // still be read to its closing quote: a comma inside it does not end
        // the offer, and the quote does not open a new string.
        #expect(answer("permessage-deflate; x=\"aaaaaaaaaaaaaaaaa, permessage-deflate, a\"", configure: plain) == nil)
        #expect(answer("permessage-deflate; client_max_window_bits=\"12345678901234567\", permessage-deflate",
                       configure: plain) == "permessage-deflate")
        // 16 characters, the size of the unescape buffer, behaved before too.
        #expect(answer("permessage-deflate; x=\"aaaaaaaaaaaaaaaa, permessage-deflate, a\"", configure: plain) == nil)
        #expect(answer("permessage-deflate; client_max_window_bits=\"1234567890123456\", permessage-deflate",
                       configure: plain) == "permessage-deflate")
        // Escapes count as one character each and stay inside the string.
        #expect(answer("permessage-deflate; x=\"\\\"aaaaaaaaaaaaaaaaaaaa, permessage-deflate\", permessage-deflate",
                       configure: plain) == "permessage-deflate")
    }

    @Test func malformedSyntaxDeclinesOnlyThatOffer() {
        #expect(answer("permessage-deflate server_no_context_takeover, permessage-deflate", configure: plain)
            == "permessage-deflate")
        #expect(answer("permessage-deflate;, permessage-deflate", configure: plain) == "permessage-deflate")
        #expect(answer("permessage-deflate; =1, permessage-deflate", configure: plain) == "permessage-deflate")
        #expect(answer(",, permessage-deflate ,", configure: plain) == "permessage-deflate")
    }

    @Test func caseAndWhitespaceTolerated() {
        #expect(answer("  Permessage-Deflate ;\tServer_Max_Window_Bits = 11 ", configure: plain)
            == "permessage-deflate; server_max_window_bits=11")
    }

    @Test func severalHeaders() {
        // The first header's only offer is declined; the second header's is taken.
        let (r, _) = negotiate(["permessage-deflate; bogus", "foo, permessage-deflate; client_no_context_takeover"],
                               configure: plain)
        #expect(r == "permessage-deflate; client_no_context_takeover")
    }

    @Test func serverWindowNeverAboveOfferOrPolicy() {
        // Policy 12, offer 14: 12. Policy 12, no offer: say 12 so the client can
        // size its window. Policy 15, offer 9: 9.
        #expect(answer("permessage-deflate; server_max_window_bits=14") { plain(&$0); $0.server_max_window_bits = 12 }
            == "permessage-deflate; server_max_window_bits=12")
        #expect(answer("permessage-deflate") { plain(&$0); $0.server_max_window_bits = 12 }
            == "permessage-deflate; server_max_window_bits=12")
        #expect(answer("permessage-deflate; server_max_window_bits=9", configure: plain)
            == "permessage-deflate; server_max_window_bits=9")
    }

    @Test func serverWindowEightUsesRunsOnly() {
        // zlib has no raw 8-bit window; the offer is still accepted and the
        // compressor limits itself to distance-1 matches (see the RLE test).
        let (r, p) = negotiate(["permessage-deflate; server_max_window_bits=8"], configure: plain)
        #expect(r == "permessage-deflate; server_max_window_bits=8")
        #expect(p.server_max_window_bits == 8)
    }

    @Test func clientWindowNeverAboveOffer() {
        // Offer 8: answered 8 (our inflater takes any window at least that big).
        let (r8, p8) = negotiate(["permessage-deflate; client_max_window_bits=8"], configure: plain)
        #expect(r8 == "permessage-deflate; client_max_window_bits=8")
        #expect(p8.client_max_window_bits == 8)
        // Offer 12, policy 10: 10. Offer 10, policy 12: 10.
        #expect(answer("permessage-deflate; client_max_window_bits=12") { plain(&$0); $0.client_max_window_bits = 10 }
            == "permessage-deflate; client_max_window_bits=10")
        #expect(answer("permessage-deflate; client_max_window_bits=10") { plain(&$0); $0.client_max_window_bits = 12 }
            == "permessage-deflate; client_max_window_bits=10")
        // Not offered: never answered, whatever the policy (the client may not support it).
        let (r, p) = negotiate(["permessage-deflate"]) { plain(&$0); $0.client_max_window_bits = 9 }
        #expect(r == "permessage-deflate")
        #expect(p.client_max_window_bits == 15)
    }

    @Test func responseBufferTooSmall() {
        var cfg = cws_deflate_config()
        cws_deflate_config_init(&cfg)
        cfg.enabled = 1
        var p = cws_deflate_params()
        var out = [CChar](repeating: 0, count: 10)
        let rc = withSlices([Array("permessage-deflate".utf8)]) {
            cws_deflate_negotiate(&cfg, $0.baseAddress, $0.count, &p, &out, out.count)
        }
        #expect(rc == -1)
    }

    @Test func fromParsedRequest() {
        let head = "GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: foo\r\nUpgrade: websocket\r\n"
            + "sec-websocket-extensions: permessage-deflate; server_max_window_bits=11\r\n\r\n"
        let bytes = Array(head.utf8)
        var req = cws_http_request()
        cws_http_request_init(&req, 8192)
        var cfg = cws_deflate_config()
        cws_deflate_config_init(&cfg)
        cfg.enabled = 1
        var p = cws_deflate_params()
        var out = [CChar](repeating: 0, count: Int(CWS_DEFLATE_RESPONSE_MAX))
        let n = bytes.withUnsafeBytes { raw -> Int32 in
            #expect(cws_http_parse(&req, raw.baseAddress, raw.count) > 0)
            return cws_deflate_negotiate_request(&cfg, &req, &p, &out, out.count)
        }
        #expect(n > 0)
        let text = String(decoding: out.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #expect(text == "permessage-deflate; server_no_context_takeover; server_max_window_bits=11")
    }
}

@Suite("Deflate codec")
struct DeflateCodecTests {
    private let hello = Array("Hello".utf8)

    @Test func rfcExampleVectors() {
        // RFC 7692 section 7.2.3.
        let f = cws_inflater_new(15, 1)!
        defer { cws_inflater_free(f) }
        // 7.2.3.1: one compressed "Hello"; then the same again using the window.
        #expect(inflate(f, [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]).out == hello)
        #expect(inflate(f, [0xF2, 0x00, 0x11, 0x00, 0x00]).out == hello)
        // 7.2.3.1 fragmented: the same bytes in two pieces.
        let g = cws_inflater_new(15, 0)!
        defer { cws_inflater_free(g) }
        #expect(inflate(g, [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00], chunk: 3).out == hello)
        // 7.2.3.2: a stored block.
        #expect(inflate(g, [0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00]).out == hello)
        // 7.2.3.3: two compressed blocks in one message.
        #expect(inflate(g, [0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00]).out == hello)
        // 7.2.3.4: a final block (BFINAL) and then the appended tail.
        #expect(inflate(g, [0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]).out == hello)
        // 7.2.3.6: an empty message is a single 00 byte.
        let r = inflate(g, [0x00])
        #expect(r.rc == 0 && r.out.isEmpty)
    }

    @Test func compressorMatchesRFCAndStripsTail() {
        let d = cws_deflater_new(6, 8, 15, 1)!
        defer { cws_deflater_free(d) }
        #expect(compress(d, hello) == [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
        #expect(compress(d, hello) == [0xF2, 0x00, 0x11, 0x00, 0x00]) // context kept
        let e = cws_deflater_new(1, 8, 15, 0)!
        defer { cws_deflater_free(e) }
        #expect(compress(e, []) == [0x00])
    }

    @Test(arguments: [0, 1, 100, 1024, 65_535, 65_537, 1 << 20, 4 << 20])
    func roundTrips(_ size: Int) async throws {
        let failures = await offThePool { () -> [String] in
            var failures: [String] = []
            for takeover in [Int32(0), 1] {
                for level in [Int32(1), 6] {
                    let d = cws_deflater_new(level, 8, 15, takeover)!
                    let f = cws_inflater_new(15, takeover)!
                    defer { cws_deflater_free(d); cws_inflater_free(f) }
                    for (i, data) in [jsonLike(size), pseudoRandom(size), jsonLike(size, seed: 7)].enumerated() {
                        let z = compress(d, data)
                        let r = inflate(f, z, chunk: i == 1 ? 1000 : 0, utf8: i != 1)
                        if !(r.rc == 0 && r.out == data) { failures.append("size \(size) takeover \(takeover) level \(level) #\(i): rc \(r.rc)") }
                    }
                }
            }
            return failures
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func windowBitsRespected() {
        // A 10-bit window compressor's output inflates with a 10-bit window; data
        // with repeats 300 bytes apart needs more than a 256-byte window.
        let block = pseudoRandom(300)
        let data = block + block + block
        let d10 = cws_deflater_new(9, 9, 10, 0)!
        let f10 = cws_inflater_new(10, 0)!
        defer { cws_deflater_free(d10); cws_inflater_free(f10) }
        let z10 = compress(d10, data)
        #expect(z10.count < data.count / 2)
        #expect(inflate(f10, z10).out == data)
        // (zlib's inflate does not reject a distance beyond its window while the
        // bytes are in the same output buffer, so windows cannot be checked by
        // inflating; the 8-bit case is safe by construction: Z_RLE emits
        // distance 1 only.)
        // "8 bits": runs only, valid for a 256-byte window.
        let d8 = cws_deflater_new(9, 9, 8, 1)!
        defer { cws_deflater_free(d8) }
        let runs = [UInt8](repeating: 0x41, count: 5000) + data
        let z8 = compress(d8, runs)
        #expect(z8.count < runs.count)
        let g8 = cws_inflater_new(8, 1)!
        defer { cws_inflater_free(g8) }
        #expect(inflate(g8, z8).out == runs)
        #expect(inflate(g8, compress(d8, runs)).out == runs) // with takeover, second message too
    }

    @Test func bombStopsAtLimitWithBoundedMemory() {
        let d = cws_deflater_new(9, 9, 15, 0)!
        defer { cws_deflater_free(d) }
        let bomb = compress(d, [UInt8](repeating: 0, count: 10 << 20))
        #expect(bomb.count < 16 * 1024)
        let f = cws_inflater_new(15, 0)!
        defer { cws_inflater_free(f) }
        let r = inflate(f, bomb, max: 1 << 20)
        #expect(r.rc == -1009)
        #expect(r.cap <= (1 << 20) + 1)
        // The context is usable again after the error.
        #expect(inflate(f, compress(d, hello)).out == hello)
        // Exactly at the limit is fine.
        let exact = compress(d, [UInt8](repeating: 0, count: 1 << 20))
        #expect(inflate(f, exact, max: 1 << 20).rc == 0)
    }

    @Test func corruptDataIs1007() {
        let f = cws_inflater_new(15, 0)!
        defer { cws_inflater_free(f) }
        #expect(inflate(f, [0xFF, 0xFF, 0xFF, 0xFF]).rc == -1007) // reserved block type 3
        #expect(inflate(f, [0x00, 0x05, 0x00, 0x00, 0x00, 0x48]).rc == -1007) // LEN/NLEN mismatch
        let d = cws_deflater_new(1, 8, 15, 0)!
        defer { cws_deflater_free(d) }
        #expect(inflate(f, compress(d, hello)).out == hello) // recovered
    }

    @Test func invalidUTF8FailsFastInsideCompressedText() {
        let d = cws_deflater_new(1, 8, 15, 0)!
        defer { cws_deflater_free(d) }
        var text = [UInt8](repeating: 0x61, count: 1 << 20)
        text[10] = 0xFF
        let z = compress(d, text)
        let f = cws_inflater_new(15, 0)!
        defer { cws_inflater_free(f) }
        let r = inflate(f, z, utf8: true)
        #expect(r.rc == -1007)
        #expect(r.out.count <= 64 * 1024) // stopped at the first output piece
    }

    @Test func memoryAccounting() {
        let shared = cws_deflater_new(1, 8, 15, 0)!
        let small = cws_deflater_new(1, 4, 10, 1)!
        let inf15 = cws_inflater_new(15, 1)!
        let inf10 = cws_inflater_new(10, 1)!
        defer { cws_deflater_free(shared); cws_deflater_free(small); cws_inflater_free(inf15); cws_inflater_free(inf10) }
        _ = compress(shared, jsonLike(1024))
        _ = inflate(inf15, compress(small, jsonLike(1024)))
        _ = inflate(inf10, compress(small, jsonLike(1024)))
        let a = cws_deflater_memory(shared), b = cws_deflater_memory(small)
        let c = cws_inflater_memory(inf15), e = cws_inflater_memory(inf10)
        print("zlib bytes: deflate w15/m8 \(a), deflate w10/m4 \(b), inflate w15 \(c), inflate w10 \(e)")
        #expect(a > 256 * 1024 && b < 32 * 1024)
        #expect(c > 32 * 1024 && c < 48 * 1024 && e < c)
    }
}

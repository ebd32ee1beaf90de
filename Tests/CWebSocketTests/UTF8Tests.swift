import OffThePool
import CWebSocket
import Testing

// UTF-8 validation (utf8.c). Every verdict and every bad offset is checked
// against code that shares nothing with utf8.c: a range checker written from
// Unicode Table 3-7 below, itself checked against the standard library's
// decoder. The SIMD kernels only run on buffers of 64 bytes or more, so short
// cases are also embedded in ASCII padding at every position within a block.

// MARK: - Reference

/// Per lead byte: how many continuation bytes follow (-1: never a lead) and
/// the allowed range of the first of them. Unicode 15, Table 3-7 (well-formed
/// UTF-8 byte sequences); later continuations are always 80...BF.
private let leadRules: [(tail: Int, low: UInt8, high: UInt8)] = (0...255).map { (b: Int) in
    switch b {
    case 0x00...0x7F: return (0, 0, 0)
    case 0xC2...0xDF: return (1, 0x80, 0xBF)
    case 0xE0: return (2, 0xA0, 0xBF)
    case 0xE1...0xEC, 0xEE...0xEF: return (2, 0x80, 0xBF)
    case 0xED: return (2, 0x80, 0x9F)
    case 0xF0: return (3, 0x90, 0xBF)
    case 0xF1...0xF3: return (3, 0x80, 0xBF)
    case 0xF4: return (3, 0x80, 0x8F)
    default: return (-1, 0, 0)
    }
}

/// Index of the first byte that makes `p[0..<n]` invalid UTF-8, `n` if it is
/// only cut short, nil if it is valid.
private func referenceBadOffset(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int? {
    var i = 0
    while i < n {
        let rule = leadRules[Int(p[i])]
        if rule.tail == 0 { i += 1; continue }
        if rule.tail < 0 { return i }
        for k in 1...rule.tail {
            if i + k >= n { return n }
            let c = p[i + k]
            let ok = k == 1 ? (c >= rule.low && c <= rule.high) : (c >= 0x80 && c <= 0xBF)
            if !ok { return i + k }
        }
        i += rule.tail + 1
    }
    return nil
}

private func referenceBadOffset(_ bytes: [UInt8]) -> Int? {
    bytes.withUnsafeBufferPointer { referenceBadOffset($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
}

/// The standard library's own decoder.
private func stdlibValid(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var input = UnsafeBufferPointer(start: p, count: n).makeIterator()
    var decoder = UTF8()
    while true {
        switch decoder.decode(&input) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}

// MARK: - Calling utf8.c

private let allLevels: [Int32] = [0, 1, 2, 3]
private let supportedLevels: [Int32] = allLevels.filter { cws_simd_supported($0) != 0 }
private func supported(_ level: cws_simd_level) -> Bool { cws_simd_supported(Int32(level.rawValue)) != 0 }

/// nil if valid, else the bad offset (len for a cut-short end).
private func validate(_ p: UnsafeRawPointer?, _ n: Int, level: Int32? = nil) -> Int? {
    var bad = -7
    let r = level.map { cws_utf8_validate_with($0, p, n, &bad) } ?? cws_utf8_validate(p, n, &bad)
    if r == 0 { return nil }
    precondition(r == -1 && bad >= 0 && bad <= n, "validate returned \(r) with offset \(bad)")
    return bad
}

private func validate(_ bytes: [UInt8], level: Int32? = nil) -> Int? {
    bytes.withUnsafeBytes { validate($0.baseAddress, $0.count, level: level) }
}

/// Feeds `bytes` in pieces ending at `cuts` (ascending, within 0...count) and
/// finishes; returns what whole-buffer validation would: nil or the absolute
/// bad offset (count if it only failed at finish).
private func feedPieces(_ bytes: [UInt8], cuts: [Int], level: Int32? = nil) -> Int? {
    var s = cws_utf8_state()
    cws_utf8_init(&s)
    var start = 0
    let ends = cuts + [bytes.count]
    return bytes.withUnsafeBytes { raw -> Int? in
        for end in ends {
            var bad = -7
            let p = raw.baseAddress.map { $0 + start }
            let r = level.map { cws_utf8_feed_with($0, &s, p, end - start, &bad) }
                ?? cws_utf8_feed(&s, p, end - start, &bad)
            if r != 0 {
                precondition(bad >= 0 && bad < end - start, "feed offset \(bad) outside its chunk")
                // Poisoned: later feeds fail at 0.
                var again = -7
                precondition(cws_utf8_feed(&s, raw.baseAddress, raw.count, &again) == -1 && again == 0)
                return start + bad
            }
            start = end
        }
        return cws_utf8_finish(&s) == 0 ? nil : bytes.count
    }
}

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String($0, radix: 16, uppercase: true) }.joined(separator: " ")
}

/// SplitMix64: reproducible runs (the engine fault tests use it too).
struct Rng {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

private func encode(_ scalar: UInt32) -> [UInt8] {
    Array(String(Character(Unicode.Scalar(scalar)!)).utf8)
}

// MARK: - Exhaustive short sequences

/// Reference verdict for every 3-byte sequence b0 b1 b2 at index b0<<16|b1<<8|b2:
/// -1 valid, else the bad offset (3 = cut short).
private let tripleVerdicts: [Int8] = {
    var out = [Int8](repeating: 0, count: 1 << 24)
    var buf: [UInt8] = [0, 0, 0]
    buf.withUnsafeMutableBufferPointer { b in
        let p = b.baseAddress!
        for t in 0..<(1 << 24) {
            p[0] = UInt8(t >> 16); p[1] = UInt8((t >> 8) & 0xFF); p[2] = UInt8(t & 0xFF)
            out[t] = Int8(referenceBadOffset(p, 3) ?? -1)
        }
    }
    return out
}()

/// Every 4-byte sequence that starts with F0-F4 and continues with 80-BF (all
/// candidates for a valid 4-byte character), every E0-FF lead with every
/// second byte and boundary values for the last two, and 2M random ones.
private let quadSample: [UInt32] = {
    var out: [UInt32] = []
    out.reserveCapacity(5_000_000)
    for b0: UInt32 in 0xF0...0xF4 {
        for b1: UInt32 in 0x80...0xBF { for b2: UInt32 in 0x80...0xBF { for b3: UInt32 in 0x80...0xBF {
            out.append(b0 << 24 | b1 << 16 | b2 << 8 | b3)
        } } }
    }
    let edges: [UInt32] = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xF0, 0xFF]
    for b0: UInt32 in 0xE0...0xFF { for b1: UInt32 in 0...0xFF { for b2 in edges { for b3 in edges {
        out.append(b0 << 24 | b1 << 16 | b2 << 8 | b3)
    } } } }
    var rng = Rng(state: 0x5EED_0004)
    for _ in 0..<2_000_000 {
        // Bias toward lead and continuation bytes, where the rules are.
        var q: UInt32 = 0
        for _ in 0..<4 {
            let r = rng.next()
            let byte: UInt32 = r & 1 == 0 ? UInt32((r >> 8) & 0xFF) : 0x80 + UInt32((r >> 8) % 0x80)
            q = q << 8 | byte
        }
        out.append(q)
    }
    return out
}()

@Suite("UTF-8 validation") struct UTF8Tests {

    @Test("reference checker agrees with the standard library on every 1-, 2- and 3-byte sequence")
    func referenceMatchesStdlibShort() async throws {
        let (mismatches, valid) = await offThePool { () -> (Int, Int) in
            var buf: [UInt8] = [0, 0, 0]
            var mismatches = 0
            buf.withUnsafeMutableBufferPointer { b in
                let p = b.baseAddress!
                for x in 0..<256 {
                    p[0] = UInt8(x)
                    if stdlibValid(p, 1) != (referenceBadOffset(p, 1) == nil) { mismatches += 1 }
                }
                for x in 0..<65536 {
                    p[0] = UInt8(x >> 8); p[1] = UInt8(x & 0xFF)
                    if stdlibValid(p, 2) != (referenceBadOffset(p, 2) == nil) { mismatches += 1 }
                }
                for t in 0..<(1 << 24) {
                    p[0] = UInt8(t >> 16); p[1] = UInt8((t >> 8) & 0xFF); p[2] = UInt8(t & 0xFF)
                    if stdlibValid(p, 3) != (tripleVerdicts[t] < 0) { mismatches += 1 }
                }
            }
            return (mismatches, tripleVerdicts.reduce(0) { $0 + ($1 < 0 ? 1 : 0) })
        }
        #expect(mismatches == 0)
        // The table is not vacuous: 3-byte valid sequences = 128^3 ASCII-only, plus
        // mixes of ASCII and 2-byte, plus 3-byte characters (U+0800-U+FFFF minus
        // 2048 surrogates).
        #expect(valid == 128 * 128 * 128 + 2 * 128 * 1920 + (0x10000 - 0x800 - 0x800))
    }

    @Test("reference checker agrees with the standard library on the 4-byte sample")
    func referenceMatchesStdlibQuads() async throws {
        let (mismatches, valid4) = await offThePool { () -> (Int, Int) in
            var buf: [UInt8] = [0, 0, 0, 0]
            var mismatches = 0
            var valid4 = 0
            buf.withUnsafeMutableBufferPointer { b in
                let p = b.baseAddress!
                for q in quadSample {
                    p[0] = UInt8(q >> 24); p[1] = UInt8((q >> 16) & 0xFF); p[2] = UInt8((q >> 8) & 0xFF); p[3] = UInt8(q & 0xFF)
                    let ref = referenceBadOffset(p, 4)
                    if stdlibValid(p, 4) != (ref == nil) { mismatches += 1 }
                    if ref == nil && p[0] >= 0xF0 { valid4 += 1 }
                }
            }
            return (mismatches, valid4)
        }
        #expect(mismatches == 0)
        #expect(valid4 >= 0x100000) // every code point U+10000-U+10FFFF is in the sample
    }

    @Test("every 1-, 2- and 3-byte sequence as a whole buffer")
    func exhaustiveShortWhole() async throws {
        let failures = await offThePool { () -> [String] in
            var buf: [UInt8] = [0, 0, 0]
            var failures: [String] = []
            buf.withUnsafeMutableBufferPointer { b in
                let p = b.baseAddress!
                for x in 0..<256 {
                    p[0] = UInt8(x)
                    if validate(p, 1) != referenceBadOffset(p, 1) { failures.append(hex([p[0]])) }
                }
                for x in 0..<65536 {
                    p[0] = UInt8(x >> 8); p[1] = UInt8(x & 0xFF)
                    if validate(p, 2) != referenceBadOffset(p, 2) { failures.append(hex(Array(b[0..<2]))) }
                }
                for t in 0..<(1 << 24) {
                    p[0] = UInt8(t >> 16); p[1] = UInt8((t >> 8) & 0xFF); p[2] = UInt8(t & 0xFF)
                    let want = tripleVerdicts[t]
                    if (validate(p, 3) ?? -1) != Int(want), failures.count < 20 { failures.append(hex(Array(b))) }
                }
            }
            return failures
        }
        #expect(failures.isEmpty, "\(failures.prefix(20))")
    }

    /// Every 3-byte sequence (and the 4-byte sample) placed in a 128-byte
    /// ASCII buffer at a position that walks through offsets 32-95, so the SIMD
    /// kernel at `level` judges it: its pair tables, its look-back across
    /// vector and block boundaries, and a block that ends inside a character
    /// followed by an all-ASCII block.
    private func exhaustiveEmbedded(level: Int32) async throws {
        let failures = await offThePool { () -> [String] in
            var buf = [UInt8](repeating: 0x61, count: 128)
            var failures: [String] = []
            var bad = 0
            buf.withUnsafeMutableBufferPointer { b in
                let base = b.baseAddress!
                for t in 0..<(1 << 24) {
                    let pos = 32 + ((t & 63) ^ ((t >> 6) & 63)) // decorrelate position from the bytes
                    let p = base + pos
                    p[0] = UInt8(t >> 16); p[1] = UInt8((t >> 8) & 0xFF); p[2] = UInt8(t & 0xFF)
                    let want = Int(tripleVerdicts[t])
                    let got = cws_utf8_validate_with(level, base, 128, &bad) == 0 ? -1 : bad - pos
                    if got != want, failures.count < 20 { failures.append("\(hex([p[0], p[1], p[2]])) at \(pos): \(got) want \(want)") }
                    p[0] = 0x61; p[1] = 0x61; p[2] = 0x61
                }
                for (k, q) in quadSample.enumerated() {
                    let pos = 32 + (k & 63)
                    let p = base + pos
                    p[0] = UInt8(q >> 24); p[1] = UInt8((q >> 16) & 0xFF); p[2] = UInt8((q >> 8) & 0xFF); p[3] = UInt8(q & 0xFF)
                    let want = referenceBadOffset(p, 4) ?? -1
                    let got = cws_utf8_validate_with(level, base, 128, &bad) == 0 ? -1 : bad - pos
                    if got != want, failures.count < 20 { failures.append("\(hex(Array(b[pos..<pos + 4]))) at \(pos): \(got) want \(want)") }
                    p[0] = 0x61; p[1] = 0x61; p[2] = 0x61; p[3] = 0x61
                }
            }
            return failures
        }
        #expect(failures.isEmpty, "level \(level): \(failures)")
    }

    @Test("every 3-byte sequence and the 4-byte sample inside padding: scalar")
    func exhaustiveEmbeddedScalar() async throws { try await exhaustiveEmbedded(level: 0) }

    @Test("every 3-byte sequence and the 4-byte sample inside padding: SSE", .enabled(if: supported(CWS_SIMD_SSE)))
    func exhaustiveEmbeddedSSE() async throws { try await exhaustiveEmbedded(level: 1) }

    @Test("every 3-byte sequence and the 4-byte sample inside padding: AVX2", .enabled(if: supported(CWS_SIMD_AVX2)))
    func exhaustiveEmbeddedAVX2() async throws { try await exhaustiveEmbedded(level: 2) }

    @Test("every 3-byte sequence and the 4-byte sample inside padding: AVX-512", .enabled(if: supported(CWS_SIMD_AVX512)))
    func exhaustiveEmbeddedAVX512() async throws { try await exhaustiveEmbedded(level: 3) }

    @Test("4-byte sample as whole buffers")
    func quadsWhole() async throws {
        let failures = await offThePool { () -> [String] in
            var buf: [UInt8] = [0, 0, 0, 0]
            var failures: [String] = []
            buf.withUnsafeMutableBufferPointer { b in
                let p = b.baseAddress!
                for q in quadSample {
                    p[0] = UInt8(q >> 24); p[1] = UInt8((q >> 16) & 0xFF); p[2] = UInt8((q >> 8) & 0xFF); p[3] = UInt8(q & 0xFF)
                    if validate(p, 4) != referenceBadOffset(p, 4), failures.count < 20 { failures.append(hex(Array(b))) }
                }
            }
            return failures
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    // MARK: - Incremental

    @Test("every split of every 2-byte sequence and of 3-byte sequences with a non-ASCII lead")
    func exhaustiveSplits() {
        var failures: [String] = []
        func check(_ bytes: [UInt8], _ want: Int?) {
            for c in 0...bytes.count {
                if feedPieces(bytes, cuts: [c]) != want, failures.count < 20 { failures.append("\(hex(bytes)) cut \(c)") }
            }
            if bytes.count == 3, feedPieces(bytes, cuts: [1, 2]) != want, failures.count < 20 {
                failures.append("\(hex(bytes)) byte at a time")
            }
        }
        for x in 0..<65536 {
            let bytes = [UInt8(x >> 8), UInt8(x & 0xFF)]
            check(bytes, referenceBadOffset(bytes))
        }
        for t in (0x80 << 16)..<(1 << 24) {
            // Second and third bytes: every value that can matter (each class edge).
            let b1 = UInt8((t >> 8) & 0xFF), b2 = UInt8(t & 0xFF)
            guard b1 & 0x0F == 0 || b1 & 0x0F == 0x0F, b2 & 0x0F == 0 || b2 & 0x0F == 0x0F else { continue }
            let bytes = [UInt8(t >> 16), b1, b2]
            let v = tripleVerdicts[t]
            check(bytes, v < 0 ? nil : Int(v))
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test("fail-fast: impossible bytes fail where they arrive, possible prefixes wait for finish")
    func failFast() {
        func feedAlone(_ bytes: [UInt8]) -> (Int32, Int) {
            var s = cws_utf8_state()
            cws_utf8_init(&s)
            var bad = -7
            let r = cws_utf8_feed(&s, bytes, bytes.count, &bad)
            return (r, bad)
        }
        #expect(feedAlone([0xF4, 0x90]) == (-1, 1))
        #expect(feedAlone([0xED, 0xA0]) == (-1, 1))
        #expect(feedAlone([0xE0, 0x80]) == (-1, 1))
        #expect(feedAlone([0xE0, 0x9F]) == (-1, 1))
        for b: UInt8 in 0x80...0x8F { #expect(feedAlone([0xF0, b]) == (-1, 1)) }
        for b in [UInt8(0xC0), 0xC1] + Array(0xF5...0xFF) {
            #expect(feedAlone([b]) == (-1, 0), "\(hex([b]))")
            #expect(feedAlone([0x41, 0x42, b]) == (-1, 2), "\(hex([b]))")
        }
        // Continuation bytes with nothing to continue.
        for b: UInt8 in 0x80...0xBF { #expect(feedAlone([b]) == (-1, 0)) }

        // A valid prefix is fine until the message ends.
        for prefix: [UInt8] in [[0xE2, 0x82], [0xE2], [0xF0, 0x9F, 0x98], [0xF4, 0x8F], [0xC3]] {
            var s = cws_utf8_state()
            cws_utf8_init(&s)
            var bad = -7
            #expect(cws_utf8_feed(&s, prefix, prefix.count, &bad) == 0)
            #expect(s.state != 0)
            #expect(cws_utf8_finish(&s) == -1, "\(hex(prefix))")
            #expect(validate(prefix) == prefix.count)
        }
        // ...and completing it is fine; a wrong continuation fails at that byte.
        let euroHead: [UInt8] = [0xE2, 0x82], euroTail: [UInt8] = [0xAC, 0x41], letter: [UInt8] = [0x41]
        var s = cws_utf8_state()
        cws_utf8_init(&s)
        var bad = -7
        #expect(cws_utf8_feed(&s, euroHead, 2, &bad) == 0)
        #expect(cws_utf8_feed(&s, euroTail, 2, &bad) == 0)
        #expect(cws_utf8_finish(&s) == 0 && s.state == 0)
        cws_utf8_init(&s)
        #expect(cws_utf8_feed(&s, euroHead, 2, &bad) == 0)
        #expect(cws_utf8_feed(&s, letter, 1, &bad) == -1 && bad == 0)
        // Poisoned after a failure.
        #expect(cws_utf8_feed(&s, letter, 1, &bad) == -1 && bad == 0)
        #expect(cws_utf8_finish(&s) == -1)
        // An empty feed changes nothing, and an empty message is valid.
        cws_utf8_init(&s)
        #expect(cws_utf8_feed(&s, nil, 0, &bad) == 0 && cws_utf8_finish(&s) == 0)
        #expect(validate(nil, 0) == nil)

        // The same fail-fast inside a long chunk, where the SIMD kernels run:
        // an impossible byte at the very end of the chunk fails there.
        for level in supportedLevels {
            for tail: [UInt8] in [[0xF4, 0x90], [0xED, 0xA0], [0xE0, 0x80], [0xF0, 0x8F], [0xC0], [0xF5]] {
                let bytes = [UInt8](repeating: 0x20, count: 200) + tail
                cws_utf8_init(&s)
                let r = cws_utf8_feed_with(level, &s, bytes, bytes.count, &bad)
                #expect(r == -1 && bad == bytes.count - 1, "level \(level) \(hex(tail))")
            }
            let bytes = [UInt8](repeating: 0x20, count: 200) + [0xE2, 0x82]
            cws_utf8_init(&s)
            #expect(cws_utf8_feed_with(level, &s, bytes, bytes.count, &bad) == 0)
            #expect(cws_utf8_finish(&s) == -1)
        }
    }

    // MARK: - Autobahn 6.x and RFC 3629 vectors

    /// (bytes, first bad offset or nil). Written out from the Autobahn 6.x case
    /// descriptions, RFC 3629 section 7 and Markus Kuhn's stress test.
    private static let vectors: [(String, [UInt8], Int?)] = {
        let kosme: [UInt8] = [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5]
        var v: [(String, [UInt8], Int?)] = [
            ("6.1 empty", [], nil),
            ("6.2 Hello-µ@ßöäüàá-UTF-8!!", Array("Hello-µ@ßöäüàá-UTF-8!!".utf8), nil),
            ("6.3.1 κόσμε", kosme, nil),
            ("6.3.2 κόσμε + ED A0 80 + edited", kosme + [0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64], 12),
            ("6.4.1 κόσμε F4 90 80 80", kosme + [0xF4, 0x90, 0x80, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64], 12),
            ("6.4.2 κόσμε F4 90 (ends mid-character)", kosme + [0xF4, 0x90], 12),
            ("6.4.3 F4 90 80 80 then text", [0xF4, 0x90, 0x80, 0x80] + Array("edited".utf8), 1),
            ("6.4.4 κόσμε + F4 90 80 80 + edited", kosme + [0xF4, 0x90, 0x80, 0x80] + Array("edited".utf8), 12),
            // 6.5: the first possible sequence of each length
            ("U+0000", [0x00], nil),
            ("U+0080", [0xC2, 0x80], nil),
            ("U+0800", [0xE0, 0xA0, 0x80], nil),
            ("U+10000", [0xF0, 0x90, 0x80, 0x80], nil),
            // 6.7: the last possible sequence of each length
            ("U+007F", [0x7F], nil),
            ("U+07FF", [0xDF, 0xBF], nil),
            ("U+FFFF", [0xEF, 0xBF, 0xBF], nil),
            ("U+10FFFF", [0xF4, 0x8F, 0xBF, 0xBF], nil),
            // 6.8: 5- and 6-byte forms (old RFC 2279) are invalid
            ("5-byte U+200000", [0xF8, 0x88, 0x80, 0x80, 0x80], 0),
            ("6-byte U+4000000", [0xFC, 0x84, 0x80, 0x80, 0x80, 0x80], 0),
            ("5-byte max", [0xFB, 0xBF, 0xBF, 0xBF, 0xBF], 0),
            ("6-byte max", [0xFD, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF], 0),
            // 6.9: other boundaries
            ("U+D7FF", [0xED, 0x9F, 0xBF], nil),
            ("U+E000", [0xEE, 0x80, 0x80], nil),
            ("U+FFFD", [0xEF, 0xBF, 0xBD], nil),
            ("U+110000", [0xF4, 0x90, 0x80, 0x80], 1),
            ("U+13FFFF (F4 BF)", [0xF4, 0xBF, 0xBF, 0xBF], 1),
            ("F5 lead", [0xF5, 0x80, 0x80, 0x80], 0),
            // 6.10-6.13: lonely continuation and start bytes, missing last bytes
            ("first continuation", [0x80], 0),
            ("last continuation", [0xBF], 0),
            ("2 continuations", [0x80, 0xBF], 0),
            ("lonely C0 + space", [0xC0, 0x20], 0),
            ("lonely E0 + space", [0xE0, 0x20], 1),
            ("lonely F0 + space", [0xF0, 0x20], 1),
            ("lonely C2 + space", [0xC2, 0x20], 1),
            ("3-byte missing last", [0xE0, 0xA0], 2),
            ("4-byte missing last", [0xF0, 0x90, 0x80], 3),
            ("2-byte missing last, then ASCII", [0xDF, 0x41], 1),
            ("concatenated incomplete", [0xC2, 0xE0, 0x80, 0xF0, 0x80, 0x80], 1),
            // 6.14: impossible bytes
            ("FE", [0xFE], 0), ("FF", [0xFF], 0), ("FE FE FF FF", [0xFE, 0xFE, 0xFF, 0xFF], 0),
            // 6.15-6.17: overlong forms
            ("overlong / 2-byte", [0xC0, 0xAF], 0),
            ("overlong / 3-byte", [0xE0, 0x80, 0xAF], 1),
            ("overlong / 4-byte", [0xF0, 0x80, 0x80, 0xAF], 1),
            ("overlong / 5-byte", [0xF8, 0x80, 0x80, 0x80, 0xAF], 0),
            ("max overlong 2-byte U+007F", [0xC1, 0xBF], 0),
            ("max overlong 3-byte U+07FF", [0xE0, 0x9F, 0xBF], 1),
            ("max overlong 4-byte U+FFFF", [0xF0, 0x8F, 0xBF, 0xBF], 1),
            ("overlong NUL 2-byte", [0xC0, 0x80], 0),
            ("overlong NUL 3-byte", [0xE0, 0x80, 0x80], 1),
            // 6.18-6.19: surrogates, single and paired
            ("U+D800", [0xED, 0xA0, 0x80], 1),
            ("U+DB7F", [0xED, 0xAD, 0xBF], 1),
            ("U+DC00", [0xED, 0xB0, 0x80], 1),
            ("U+DFFF", [0xED, 0xBF, 0xBF], 1),
            ("U+D800 U+DC00", [0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80], 1),
            ("U+DBFF U+DFFF", [0xED, 0xAF, 0xBF, 0xED, 0xBF, 0xBF], 1),
            // 6.20: noncharacters are valid UTF-8
            ("U+FFFE", [0xEF, 0xBF, 0xBE], nil),
            ("U+FDD0", [0xEF, 0xB7, 0x90], nil),
            ("U+10FFFE", [0xF4, 0x8F, 0xBF, 0xBE], nil),
            // 6.21-6.23 style: valid text around an error, and U+FFFD
            ("text then lone continuation", Array("ab€".utf8) + [0x80] + Array("cd".utf8), 5),
            ("emoji", Array("😀👍🏽".utf8), nil),
            ("RFC 3629 example: A<NOT IDENTICAL TO><ALPHA>.", [0x41, 0xE2, 0x89, 0xA2, 0xCE, 0x91, 0x2E], nil),
            ("RFC 3629 example: Korean", [0xED, 0x95, 0x9C, 0xEA, 0xB5, 0xAD, 0xEC, 0x96, 0xB4], nil),
            ("RFC 3629 example: Japanese", [0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC, 0xE8, 0xAA, 0x9E], nil),
            ("RFC 3629 example: BOM + U+233B4", [0xEF, 0xBB, 0xBF, 0xF0, 0xA3, 0x8E, 0xB4], nil),
        ]
        // Every code point at a length boundary, encoded by the standard library.
        for cp: UInt32 in [0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF] {
            v.append(("encoded U+\(String(cp, radix: 16))", encode(cp), nil))
        }
        return v
    }()

    @Test("Autobahn 6.x / RFC 3629 vectors: whole, padded, and fed at every split")
    func vectors() {
        for (name, bytes, want) in Self.vectors {
            #expect(referenceBadOffset(bytes) == want, "reference disagrees on \(name)")
            #expect((String(validating: bytes, as: UTF8.self) != nil) == (want == nil), "stdlib disagrees on \(name)")
            #expect(validate(bytes) == want, "\(name)")
            // Fed at every split point into 2 and 3 pieces, and byte at a time.
            for a in 0...bytes.count {
                #expect(feedPieces(bytes, cuts: [a]) == want, "\(name) cut \(a)")
                for b in a...bytes.count where feedPieces(bytes, cuts: [a, b]) != want {
                    Issue.record("\(name) cuts \(a), \(b)")
                }
            }
            #expect(feedPieces(bytes, cuts: Array(0..<bytes.count)) == want, "\(name) byte at a time")
            // Inside ASCII padding so every SIMD level sees it, at every level.
            for level in supportedLevels {
                for lead in [63, 64, 100] {
                    let padded = [UInt8](repeating: 0x20, count: lead) + bytes + [UInt8](repeating: 0x20, count: 70)
                    let want2 = want.map { $0 + lead }
                    #expect(validate(padded, level: level) == want2, "\(name) level \(level) lead \(lead)")
                    // pieces through the padding
                    for cut in Set([lead - 1, lead, lead + bytes.count / 2, lead + bytes.count, padded.count - 65]) {
                        #expect(feedPieces(padded, cuts: [cut], level: level) == want2,
                                "\(name) level \(level) lead \(lead) cut \(cut)")
                    }
                }
            }
        }
    }

    @Test("long valid text fed in pieces: every split of 2, sampled splits of 3, at every level")
    func longSplits() {
        let text = Array(("héllo wörld — κόσμε — 日本語テキスト — 😀👍🏽🇺🇳 " + String(repeating: "abc", count: 30)).utf8)
        var bad = text
        bad[text.count / 2] = 0xFF
        var truncated = text
        truncated.append(0xF0)
        for level in supportedLevels {
            for (bytes, want) in [(text, nil as Int?), (bad, text.count / 2), (truncated, truncated.count)] {
                #expect(validate(bytes, level: level) == want)
                for a in 0...bytes.count {
                    #expect(feedPieces(bytes, cuts: [a], level: level) == want, "level \(level) cut \(a)")
                    for b in stride(from: a, through: bytes.count, by: 7) where feedPieces(bytes, cuts: [a, b], level: level) != want {
                        Issue.record("level \(level) cuts \(a), \(b)")
                    }
                }
            }
        }
    }

    // MARK: - SIMD vs scalar differential

    /// Random text from a mix of 1- to 4-byte characters, then a few random
    /// corruptions (or none), sometimes cut short.
    private static func randomText(_ rng: inout Rng, length: Int) -> [UInt8] {
        let pieces: [[UInt8]] = [
            Array("a".utf8), Array(" ".utf8), Array("é".utf8), Array("ß".utf8), Array("ж".utf8),
            Array("中".utf8), Array("€".utf8), Array("\u{FFFD}".utf8), Array("😀".utf8), Array("\u{10FFFF}".utf8),
            Array("\u{D7FF}".utf8), Array("\u{E000}".utf8), Array("\u{800}".utf8), Array("\u{10000}".utf8),
        ]
        var out: [UInt8] = []
        out.reserveCapacity(length + 4)
        let asciiRun = rng.below(4) == 0 // long ASCII stretches exercise the kernels' ASCII skip
        while out.count < length {
            if asciiRun && rng.below(8) == 0 {
                out += [UInt8](repeating: 0x61, count: rng.below(150))
            } else {
                out += pieces[rng.below(pieces.count)]
            }
        }
        out.removeLast(out.count - length) // may cut a character: that is a case too
        switch rng.below(3) {
        case 0: break
        case 1:
            if !out.isEmpty { out[rng.below(out.count)] = UInt8(truncatingIfNeeded: rng.next()) }
        default:
            for _ in 0..<rng.below(4) where !out.isEmpty {
                let bytes: [UInt8] = [0x80, 0xBF, 0xC0, 0xC1, 0xE0, 0xED, 0xF0, 0xF4, 0xF5, 0xFF, 0x90, 0xA0, 0x20]
                out[rng.below(out.count)] = bytes[rng.below(bytes.count)]
            }
        }
        return out
    }

    @Test("random buffers: every level agrees with scalar and the reference at every alignment")
    func differential() {
        var rng = Rng(state: 0xD1FF)
        var failures: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096 + 64)
        var invalidSeen = 0
        for round in 0..<300 {
            let length = round < 100 ? rng.below(200) : rng.below(4097)
            let text = Self.randomText(&rng, length: length)
            let want = referenceBadOffset(text)
            if want != nil { invalidSeen += 1 }
            buffer.withUnsafeMutableBytes { raw in
                for align in 0..<64 {
                    let dst = raw.baseAddress! + align
                    text.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(raw.baseAddress!), byteCount: length) }
                    for level in supportedLevels where validate(dst, length, level: level) != want {
                        if failures.count < 20 { failures.append("round \(round) len \(length) align \(align) level \(level)") }
                    }
                }
            }
            // Incremental at every level, random chunking.
            for level in supportedLevels {
                var cuts: [Int] = []
                var c = 0
                while true {
                    c += rng.below(300)
                    if c >= length { break }
                    cuts.append(c)
                }
                if feedPieces(text, cuts: cuts, level: level) != want, failures.count < 20 {
                    failures.append("round \(round) len \(length) level \(level) cuts \(cuts)")
                }
            }
        }
        #expect(failures.isEmpty, "\(failures)")
        #expect(invalidSeen > 50 && invalidSeen < 250) // both verdicts well represented
    }

    @Test("dispatch: the active level is supported and the _with variants clamp")
    func dispatch() {
        #expect(cws_simd_supported(cws_simd_active()) != 0)
        let text = Array(String(repeating: "日本語😀", count: 40).utf8)
        for level: Int32 in [-1, 0, 1, 2, 3, 4, 99] {
            #expect(validate(text, level: level) == nil)
            var broken = text
            broken[101] = 0xC0
            #expect(validate(broken, level: level) == referenceBadOffset(broken))
        }
    }
}

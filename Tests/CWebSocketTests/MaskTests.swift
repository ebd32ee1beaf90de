import OffThePool
import CWebSocket
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Reference: the definition in RFC 6455 section 5.3, one byte at a time.
private func referenceMask(_ bytes: [UInt8], key: [UInt8], offset: Int) -> [UInt8] {
    bytes.enumerated().map { i, b in b ^ key[(offset + i) & 3] }
}

private func wireKey(_ key: [UInt8]) -> UInt32 {
    key.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
}

private let keys: [[UInt8]] = [
    [0x00, 0x00, 0x00, 0x00], [0x37, 0xFA, 0x21, 0x3D], [0xFF, 0xFF, 0xFF, 0xFF], [0x01, 0x80, 0x7F, 0xFE],
]

private let levels = (Int32(CWS_SIMD_SCALAR.rawValue)...Int32(CWS_SIMD_AVX512.rawValue))

@Suite struct MaskTests {
    @Test func rfcExample() {
        // RFC 6455 section 5.7: masked "Hello" with key 37 fa 21 3d.
        var hello = Array("Hello".utf8)
        cws_mask(&hello, hello.count, wireKey([0x37, 0xFA, 0x21, 0x3D]), 0)
        #expect(hello == [0x7F, 0x9F, 0x4D, 0x51, 0x58])
    }

    /// The scalar kernel against the byte-wise definition: every length
    /// 0...1024 at the first eight alignments, every key phase.
    @Test func scalarMatchesDefinition() async throws {
        let mismatches = await offThePool { () -> Int in
            let scalar = Int32(CWS_SIMD_SCALAR.rawValue)
            let source = (0..<1100).map { UInt8(truncatingIfNeeded: $0 &* 151 &+ 17) }
            var mismatches = 0
            for key in keys {
                for align in 0..<8 {
                    for len in 0...1024 {
                        let offset = (len + align) & 3
                        var buf = Array(source[align..<(align + len)])
                        cws_mask_with(scalar, &buf, len, wireKey(key), offset)
                        if buf != referenceMask(Array(source[align..<(align + len)]), key: key, offset: offset) { mismatches += 1 }
                    }
                }
            }
            return mismatches
        }
        #expect(mismatches == 0)
    }

    /// Each SIMD kernel against the scalar one: every length 0...1024 at every
    /// start alignment 0...63 and every key phase, with guard bytes around the
    /// buffer that must stay untouched.
    @Test(arguments: levels.dropFirst())
    func simdMatchesScalar(level: Int32) throws {
        guard cws_simd_supported(level) == 1 else {
            print("skipped: simdMatchesScalar(\(String(cString: cws_simd_name(level)))): not supported by this CPU")
            try Test.cancel("this CPU lacks \(String(cString: cws_simd_name(level)))")
        }
        let scalar = Int32(CWS_SIMD_SCALAR.rawValue)
        let maxLen = 1024, guardBytes = 64, total = guardBytes + 64 + maxLen + guardBytes
        var rng = SystemRandomNumberGenerator()
        let source = (0..<total).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var expected = source, actual = source
        var mismatches = 0
        for key in keys {
            let k = wireKey(key)
            for align in 0..<64 {
                for len in 0...maxLen {
                    let start = guardBytes + align, offset = (len * 7 + align) & 3
                    expected.withUnsafeMutableBytes { e in
                        actual.withUnsafeMutableBytes { a in
                            cws_mask_with(scalar, e.baseAddress! + start, len, k, offset)
                            cws_mask_with(level, a.baseAddress! + start, len, k, offset)
                            if memcmp(e.baseAddress!, a.baseAddress!, total) != 0 { mismatches += 1 }
                            // Undo, so every round starts from the source bytes.
                            cws_mask_with(scalar, e.baseAddress! + start, len, k, offset)
                            cws_mask_with(scalar, a.baseAddress! + start, len, k, offset)
                        }
                    }
                }
            }
        }
        #expect(mismatches == 0)
        #expect(actual == source)
    }

    /// Unmasking a payload in pieces (as it arrives from the network) gives the
    /// same bytes as unmasking it whole, for every split point.
    @Test func piecesEqualWhole() {
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let expected = referenceMask(payload, key: key, offset: 0)
        for split1 in stride(from: 0, through: payload.count, by: 1) {
            let split2 = min(payload.count, split1 + 37 + split1 % 101)
            var buf = payload
            buf.withUnsafeMutableBytes { raw in
                let base = raw.baseAddress!
                cws_mask(base, split1, wireKey(key), 0)
                cws_mask(base + split1, split2 - split1, wireKey(key), split1)
                cws_mask(base + split2, payload.count - split2, wireKey(key), split2)
            }
            #expect(buf == expected, "split at \(split1), \(split2)")
        }
    }

    @Test func copyMatchesInPlace() {
        let key = wireKey([0xDE, 0xAD, 0xBE, 0xEF])
        for len in [0, 1, 3, 4, 15, 31, 32, 33, 100, 1000, 4099] {
            for offset in 0..<4 {
                let src = (0..<len).map { UInt8(truncatingIfNeeded: $0 * 13 + 5) }
                var inPlace = src
                cws_mask(&inPlace, len, key, offset)
                var dst = [UInt8](repeating: 0, count: len)
                src.withUnsafeBytes { s in
                    dst.withUnsafeMutableBytes { d in cws_mask_copy(d.baseAddress, s.baseAddress, len, key, offset) }
                }
                #expect(dst == inPlace)
            }
        }
    }

    @Test func largeBuffersAgreeAcrossLevels() async throws {
        // Past the alignment thresholds of the AVX kernels (512 B, 1 KiB).
        let failures = await offThePool { () -> [String] in
            var failures: [String] = []
            var rng = SystemRandomNumberGenerator()
            let key = wireKey([0x9A, 0x01, 0xC3, 0x7E])
            for len in [2047, 4096, 65_536 + 13, 1 << 20] {
                let plain = (0..<len).map { _ in UInt8.random(in: 0...255, using: &rng) }
                for offset in [0, 1, 2, 3] {
                    var scalar = plain
                    cws_mask_with(Int32(CWS_SIMD_SCALAR.rawValue), &scalar, len, key, offset)
                    if !scalar[0..<64].elementsEqual(referenceMask(Array(plain[0..<64]), key: [0x9A, 0x01, 0xC3, 0x7E], offset: offset)) {
                        failures.append("scalar len \(len) offset \(offset) differs from the definition")
                    }
                    for level in levels where cws_simd_supported(level) == 1 {
                        for misalign in [1, 7] {
                            var buf = [UInt8](repeating: 0, count: misalign) + plain
                            buf.withUnsafeMutableBytes { raw in
                                cws_mask_with(level, raw.baseAddress! + misalign, len, key, offset)
                            }
                            if !buf[misalign...].elementsEqual(scalar) { failures.append("level \(level) len \(len) misalign \(misalign)") }
                        }
                    }
                }
            }
            return failures
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func simdLevelNames() {
        #expect(String(cString: cws_simd_name(0)) == "scalar")
        #expect(cws_simd_supported(0) == 1)
        #expect(cws_simd_active() >= 0 && cws_simd_supported(cws_simd_active()) == 1)
    }
}

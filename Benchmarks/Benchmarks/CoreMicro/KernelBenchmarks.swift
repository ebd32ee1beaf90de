// Masking and UTF-8 validation, each beside a baseline measured in the same
// run: memcpy of the same size for masking; the C core's scalar level
// (a byte-at-a-time DFA with a 16-byte ASCII skip) and Swift's own validators
// for UTF-8. Throughput is messages per second; bytes per second is
// size / p50 time.
import Benchmark
import CWebSocket
import WebSocketProtocol

#if canImport(Glibc)
import Glibc
#endif

/// A 64-byte aligned buffer that lives as long as the benchmark process.
func alignedBuffer(_ size: Int, fill: UInt8) -> UnsafeMutableRawBufferPointer {
    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 64)
    b.initializeMemory(as: UInt8.self, repeating: fill)
    return UnsafeMutableRawBufferPointer(rebasing: b[0..<size])
}

func sizeName(_ size: Int) -> String {
    size >= 1024 ? "\(size >> 10) KiB" : "\(size) B"
}

func registerMaskingBenchmarks() {
    let key: UInt32 = 0x3D21_FA37
    for size in [16, 1024, 65_536] {
        // In place, like the engine's unmasking of a received payload.
        Benchmark("mask \(sizeName(size)) (Masking.apply, dispatching)") { benchmark in
            let buf = alignedBuffer(size, fill: 0x5A)
            defer { buf.deallocate() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                Masking.apply(buf, key: key)
            }
            blackHole(buf[size - 1])
        }
        Benchmark("mask \(sizeName(size)) (scalar level)") { benchmark in
            let buf = alignedBuffer(size, fill: 0x5A)
            defer { buf.deallocate() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                cws_mask_with(SIMDLevel.scalar.rawValue, buf.baseAddress, size, key, 0)
            }
            blackHole(buf[size - 1])
        }
        Benchmark("memcpy \(sizeName(size)) (baseline for mask)") { benchmark in
            let src = alignedBuffer(size, fill: 0x5A)
            let dst = alignedBuffer(size, fill: 0)
            defer { src.deallocate(); dst.deallocate() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                memcpy(dst.baseAddress!, src.baseAddress!, size)
                blackHole(dst.baseAddress)
            }
        }
    }
}

/// `unit` repeated to `bytes`, padded with ASCII so no character is cut.
func textOf(_ unit: String, bytes: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes)
    let u = Array(unit.utf8)
    while out.count + u.count <= bytes { out += u }
    while out.count < bytes { out.append(0x61) }
    return out
}

let utf8Corpora: [(String, String)] = [
    ("ASCII", "The quick brown fox jumps over the lazy dog. 0123456789 "),
    // About half the characters outside ASCII (two bytes each).
    ("Latin-1", "Ça été très éprouvé: übermäßig größer, señoría ñandú, øæå ÀÉÎÕÜ. "),
    ("CJK", "東京都の天気は晴れです。漢字とかなの文章。"),
    ("emoji", "😀🚀🎉👍🔥💡"),
]

func registerUTF8Benchmarks() {
    let size = 65_536
    for (name, unit) in utf8Corpora {
        let text = textOf(unit, bytes: size)
        precondition(String(validating: text, as: UTF8.self) != nil)
        Benchmark("utf8 validate 64 KiB \(name) (cws_utf8_validate, dispatching)") { benchmark in
            text.withUnsafeBytes { raw in
                for _ in benchmark.scaledIterations {
                    blackHole(cws_utf8_validate(raw.baseAddress, raw.count, nil))
                }
            }
        }
        // The engine's path: incremental, whole message in one chunk.
        Benchmark("utf8 validate 64 KiB \(name) (UTF8Validator.feed, incremental)") { benchmark in
            text.withUnsafeBytes { raw in
                for _ in benchmark.scaledIterations {
                    var v = UTF8Validator()
                    do { try v.feed(raw) } catch { fatalError("\(error)") }
                    blackHole(v.isComplete)
                }
            }
        }
        Benchmark("utf8 validate 64 KiB \(name) (scalar DFA level)") { benchmark in
            text.withUnsafeBytes { raw in
                for _ in benchmark.scaledIterations {
                    blackHole(cws_utf8_validate_with(SIMDLevel.scalar.rawValue, raw.baseAddress, raw.count, nil))
                }
            }
        }
        // Swift's validation as most code would call it: it builds a String.
        Benchmark("utf8 validate 64 KiB \(name) (Swift String(validating:as:))") { benchmark in
            text.withUnsafeBufferPointer { p in
                for _ in benchmark.scaledIterations {
                    blackHole(String(validating: p, as: UTF8.self))
                }
            }
        }
        // Swift's validator alone, without building a String.
        Benchmark("utf8 validate 64 KiB \(name) (Swift UTF8Span(validating:))") { benchmark in
            let span = text.span
            for _ in benchmark.scaledIterations {
                blackHole((try? UTF8Span(validating: span)) != nil)
            }
        }
    }
}

// Quick throughput of the C core's hot kernels, every SIMD level side by side
// in one run (the machine is shared and noisy: compare ratios, not absolutes).
//
//   swift run -c release --package-path Benchmarks CoreThroughput [seconds-per-cell]
import CWebSocket
import WebSocketProtocol

#if canImport(Glibc)
import Glibc
#endif

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

let cellSeconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 0.2 : 0.2

/// Best-of-5 bytes per second of `body` run over `size` bytes repeatedly.
func measure(size: Int, _ body: () -> Void) -> Double {
    var best = 0.0
    for _ in 0..<5 {
        var iterations = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            for _ in 0..<max(1, 65_536 / max(size, 1)) { body(); iterations += 1 }
            elapsed = now() - start
        } while elapsed < cellSeconds / 5
        best = max(best, Double(iterations * size) / elapsed)
    }
    return best
}

func gbps(_ v: Double) -> String {
    let s = String(Int((v / 1e9 * 10).rounded()))
    return String(s.dropLast()) .isEmpty ? "0.\(s)" : "\(s.dropLast()).\(s.last!)"
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

let levels = SIMDLevel.allCases.filter(\.isSupported)
print("CPU SIMD levels: \(levels.map(\.name).joined(separator: ", ")); GB/s, best of 5, single thread")

// MARK: masking
print("\nmasking in place (cws_mask_with), vs memcpy of the same size")
print(pad("size", 10) + levels.map { pad($0.name, 10) }.joined() + pad("cws_mask", 10) + pad("memcpy", 10)
    + pad("best/scalar", 13))
for size in [16, 64, 256, 1024, 16_384, 65_536, 16 << 20] {
    let buf = UnsafeMutableRawPointer.allocate(byteCount: size + 64, alignment: 64)
    let dst = UnsafeMutableRawPointer.allocate(byteCount: size + 64, alignment: 64)
    memset(buf, 0x5A, size + 64)
    var row = pad(size >= 1 << 20 ? "\(size >> 20) MiB" : size >= 1024 ? "\(size >> 10) KiB" : "\(size) B", 10)
    var rates: [Double] = []
    for level in levels {
        let r = measure(size: size) { cws_mask_with(level.rawValue, buf, size, 0x3D21_FA37, 0) }
        rates.append(r)
        row += pad(gbps(r), 10)
    }
    // The dispatching entry point real code calls: word loop for tiny buffers.
    let auto = measure(size: size) { cws_mask(buf, size, 0x3D21_FA37, 0) }
    let m = measure(size: size) { memcpy(dst, buf, size) }
    row += pad(gbps(auto), 10) + pad(gbps(m), 10) + pad(String(format2(rates.max()! / rates[0])) + "x", 13)
    print(row)
    buf.deallocate(); dst.deallocate()
}

func format2(_ v: Double) -> String {
    let hundredths = Int((v * 100).rounded())
    return "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
}

// MARK: UTF-8
func textOf(_ unit: String, bytes: Int) -> [UInt8] {
    var out: [UInt8] = []
    let u = Array(unit.utf8)
    while out.count + u.count <= bytes { out += u }
    while out.count < bytes { out.append(0x61) }
    return out
}

let corpora: [(String, [UInt8])] = [
    ("ASCII", textOf("The quick brown fox jumps over the lazy dog. 0123456789 ", bytes: 65_536)),
    ("Latin-1", textOf("Größenwahn à la française, señor. ", bytes: 65_536)),
    ("CJK", textOf("東京都の天気は晴れです。漢字とかなの文章。", bytes: 65_536)),
    ("emoji", textOf("😀🚀🎉👍🔥💡", bytes: 65_536)),
]
print("\nUTF-8 validation of 64 KiB (cws_utf8_validate_with)")
print(pad("text", 10) + levels.map { pad($0.name, 10) }.joined() + pad("Swift", 10) + pad("best/scalar", 13))
for (name, text) in corpora {
    var row = pad(name, 10)
    var rates: [Double] = []
    text.withUnsafeBytes { raw in
        for level in levels {
            let r = measure(size: raw.count) {
                precondition(cws_utf8_validate_with(level.rawValue, raw.baseAddress, raw.count, nil) == 0)
            }
            rates.append(r)
            row += pad(gbps(r), 10)
        }
        let swift = measure(size: raw.count) {
            precondition(String(validating: raw.bindMemory(to: UInt8.self), as: UTF8.self) != nil)
        }
        row += pad(gbps(swift), 10)
    }
    print(row + pad(format2(rates.max()! / rates[0]) + "x", 13))
}

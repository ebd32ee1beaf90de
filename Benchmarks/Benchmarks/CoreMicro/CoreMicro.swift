// Micro benchmarks of per-message hot paths with malloc counts (package-benchmark):
// frame parse and encode, handshake parse, envelope decode and encode (here);
// masking and UTF-8 validation beside their baselines (KernelBenchmarks.swift);
// permessage-deflate per message (DeflateBenchmarks.swift); one channel
// message prepared for 10,000 recipients (FanOutBenchmarks.swift).
//
//   swift package --package-path Benchmarks benchmark --target CoreMicro --scale
//
// Each operation handles one message (or one handshake); buffers are prepared
// before startMeasurement(), so the malloc count is the per-message path's own.
// --scale shows kilo-scaled benchmarks per operation; the others are already.
import Benchmark
import CWebSocket
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// `count` masked client frames of `size` bytes each, back to back.
func maskedFrames(size: Int, count: Int) -> [UInt8] {
    let payload = (0..<size).map { UInt8(truncatingIfNeeded: 97 + $0 % 26) }
    let one = cws_frame_header_size(UInt64(size), 1) + size
    var out = [UInt8](repeating: 0, count: one * count)
    out.withUnsafeMutableBytes { raw in
        payload.withUnsafeBytes { p in
            for i in 0..<count {
                _ = cws_frame_encode(raw.baseAddress! + i * one, 1, 0, UInt8(CWS_OP_BINARY.rawValue),
                                     p.baseAddress, size, 1, 0x37fa_213d)
            }
        }
    }
    return out
}

let handshake = Array("""
    GET /chat?room=lobby HTTP/1.1\r
    Host: 127.0.0.1:8080\r
    Connection: Upgrade\r
    Pragma: no-cache\r
    Cache-Control: no-cache\r
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r
    Upgrade: websocket\r
    Origin: http://127.0.0.1:8080\r
    Sec-WebSocket-Version: 13\r
    Accept-Encoding: gzip, deflate, br, zstd\r
    Accept-Language: en-US,en;q=0.9\r
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r
    \r\n
    """.utf8)

let envelopeText = Array(#"{"channel":"lobby","cmd":"say","param":{"text":"hello, world","n":42,"tags":["a","b"]}}"#.utf8)

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 10_000
    )

    for size in [16, 4096] {
        Benchmark("frame parse \(size) B (server role, unmask in place)") { benchmark in
            var frames = maskedFrames(size: size, count: 64)
            var parser = cws_parser()
            var ev = cws_frame_event()
            benchmark.startMeasurement()
            frames.withUnsafeMutableBytes { raw in
                var left = benchmark.scaledIterations.count
                while left > 0 {
                    cws_parser_init(&parser, CWS_ROLE_SERVER, 0)
                    var off = 0
                    var n = 0
                    while off < raw.count, n < left {
                        var consumed = 0
                        let r = cws_parse(&parser, raw.baseAddress! + off, raw.count - off, &consumed, &ev)
                        off += consumed
                        if r == CWS_PARSE_EVENT, ev.frame_end != 0 { n += 1 }
                        precondition(r >= 0)
                    }
                    blackHole(ev.payload_len)
                    left -= n
                }
            }
        }

        Benchmark("frame encode \(size) B (server role, unmasked)") { benchmark in
            let payload = [UInt8](repeating: 0x61, count: size)
            var out = [UInt8](repeating: 0, count: size + 14)
            benchmark.startMeasurement()
            out.withUnsafeMutableBytes { o in
                payload.withUnsafeBytes { p in
                    for _ in benchmark.scaledIterations {
                        blackHole(cws_frame_encode(o.baseAddress, 1, 0, UInt8(CWS_OP_BINARY.rawValue),
                                                   p.baseAddress, size, 0, 0))
                    }
                }
            }
        }
    }

    Benchmark("handshake parse + validate + 101 response") { benchmark in
        var request = cws_http_request()
        var info = cws_upgrade_info()
        var response = [UInt8](repeating: 0, count: 512)
        benchmark.startMeasurement()
        handshake.withUnsafeBytes { h in
            response.withUnsafeMutableBytes { o in
                for _ in benchmark.scaledIterations {
                    cws_http_request_init(&request, 8192)
                    let n = cws_http_parse(&request, h.baseAddress, h.count)
                    precondition(n == h.count)
                    precondition(cws_upgrade_validate(&request, &info) == 0)
                    blackHole(cws_upgrade_response(o.baseAddress, o.count, info.key.ptr, info.key.len, nil,
                                                   "permessage-deflate"))
                }
            }
        }
    }

    Benchmark("envelope decode (87 B)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! Envelope.parse(envelopeText))
        }
    }

    Benchmark("envelope encode (87 B)") { benchmark in
        let envelope = try! Envelope.parse(envelopeText)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(envelope.encoded())
        }
    }

    registerMaskingBenchmarks()
    registerUTF8Benchmarks()
    registerDeflateBenchmarks()
    registerFanOutBenchmarks()
}

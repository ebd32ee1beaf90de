// permessage-deflate per message, through the C core's codec API the engine
// uses (cws_deflater_message / cws_inflater_feed), at the engine's defaults:
// zlib level 1, memLevel 8, 15-bit window. Without context takeover the codec
// resets after every message (one shared codec per loop); with it the window
// carries over (one codec per connection).
//
// Sixteen different JSON-like messages go round in turn, so a codec with
// context takeover sees chat-like traffic, not one message repeated. The
// output buffer is reused, as the engine reuses its per-loop zbuf.
import Benchmark
import CWebSocket

#if canImport(Glibc)
import Glibc
#endif

/// Chat-like JSON text of exactly `n` bytes; `seed` varies the content.
func jsonLike(_ n: Int, seed: Int) -> [UInt8] {
    var s: [UInt8] = []
    var i = seed * 7919
    while s.count < n {
        s += Array(#"{"from":"user-\#(i % 97)","channel":"room-\#(i % 13)","cmd":"say","param":{"text":"message number \#(i) at \#(i &* 2654435761 % 100_000)","n":\#(i % 1000)}},"#.utf8)
        i += 1
    }
    return Array(s.prefix(n))
}

/// One codec and its messages, kept across the benchmark's iterations.
final class DeflateCase {
    let messages: [[UInt8]]
    var compressed: [[UInt8]] = []
    var out = cws_buffer()
    var next = 0
    let deflater: OpaquePointer
    let inflater: OpaquePointer

    init(size: Int, takeover: Bool) {
        messages = (0..<16).map { jsonLike(size, seed: $0) }
        deflater = cws_deflater_new(1, 8, 15, takeover ? 1 : 0)!
        inflater = cws_inflater_new(15, takeover ? 1 : 0)!
        // The inflate benchmark replays this stream in order, round and round:
        // message k refers back only to messages 0..<k, which the replay has
        // just produced, so every lap is a valid continuation of the stream.
        let source = cws_deflater_new(1, 8, 15, takeover ? 1 : 0)!
        for m in messages {
            var b = cws_buffer()
            precondition(m.withUnsafeBytes { cws_deflater_message(source, $0.baseAddress, $0.count, &b) } == 0)
            compressed.append(Array(UnsafeBufferPointer(start: b.data, count: b.len)))
            cws_buffer_free(&b)
        }
        cws_deflater_free(source)
        // Warm up: zlib allocates its window lazily, the buffer grows once.
        for _ in 0..<16 { deflateOne() }
        for _ in 0..<16 { precondition(inflateOne() == 0) }
        if getenv("CWS_MICRO_VERBOSE") != nil {
            let total = compressed.reduce(0) { $0 + $1.count }
            // stderr: the benchmark tool reads the process's stdout.
            let line = "deflate \(size) B takeover=\(takeover): \(total / 16) B per message compressed, "
                + "codec memory \(cws_deflater_memory(deflater)) / \(cws_inflater_memory(inflater)) B\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
    }

    deinit {
        cws_buffer_free(&out)
        cws_deflater_free(deflater)
        cws_inflater_free(inflater)
    }

    @inline(__always) func deflateOne() {
        let m = messages[next]
        next = (next + 1) & 15
        out.len = 0
        let rc = m.withUnsafeBytes { cws_deflater_message(deflater, $0.baseAddress, $0.count, &out) }
        precondition(rc == 0)
    }

    /// Inflates the next message of the stream whole, validating UTF-8 as the
    /// engine does for a text message.
    @inline(__always) func inflateOne() -> Int32 {
        let c = compressed[next]
        next = (next + 1) & 15
        out.len = 0
        var utf8 = cws_utf8_state()
        cws_utf8_init(&utf8)
        return c.withUnsafeBytes { cws_inflater_feed(inflater, $0.baseAddress, $0.count, 1, &out, 16 << 20, &utf8) }
    }
}

func registerDeflateBenchmarks() {
    var config = Benchmark.defaultConfiguration
    config.scalingFactor = .one
    config.maxIterations = 20_000
    for size in [1024, 16_384] {
        for takeover in [false, true] {
            let label = "\(sizeName(size)) JSON, \(takeover ? "context takeover" : "no context takeover")"
            var deflateCase: DeflateCase?
            var inflateCase: DeflateCase?
            Benchmark("deflate \(label)", configuration: config) { benchmark in
                let c = deflateCase!
                for _ in benchmark.scaledIterations { c.deflateOne() }
                blackHole(c.out.len)
            } setup: {
                deflateCase = DeflateCase(size: size, takeover: takeover)
            } teardown: {
                deflateCase = nil
            }
            Benchmark("inflate \(label)", configuration: config) { benchmark in
                let c = inflateCase!
                for _ in benchmark.scaledIterations { precondition(c.inflateOne() == 0) }
                blackHole(c.out.len)
            } setup: {
                inflateCase = DeflateCase(size: size, takeover: takeover)
            } teardown: {
                inflateCase = nil
            }
        }
    }
}

import OffThePool
import ChildProcess
import CWebSocket
import Foundation
import Glibc
import Testing

// permessage-deflate through the server engine over loopback, on both backends.
// The client compresses and inflates with the C core's own codec (independent
// contexts, client side), frames with RSV1 itself, and checks what the server
// negotiated and sent. Interop with a third-party client (Python websockets) is
// the last test; it skips when python3 or websockets is missing.

private let opText = UInt8(CWS_OP_TEXT.rawValue)
private let opBinary = UInt8(CWS_OP_BINARY.rawValue)
private let opCont = UInt8(CWS_OP_CONTINUATION.rawValue)
private let opClose = UInt8(CWS_OP_CLOSE.rawValue)
private let rsv1 = UInt8(CWS_RSV1)

private struct Message: Equatable {
    var opcode: UInt8
    var payload: [UInt8]
    var compressed: Bool
    var closeCode: UInt16? {
        opcode == opClose && payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
    }
}

private final class DeflateClient {
    let fd: Int32
    private var buf: [UInt8] = []
    private var parser = cws_parser()
    private var deflater: OpaquePointer?
    private var inflater: OpaquePointer?
    private(set) var response = ""
    private(set) var extensions: String? = nil

    init(port: UInt16, offer: String? = "permessage-deflate; client_max_window_bits") throws {
        fd = try loopbackSocket(port: port, readTimeout: 10)
        cws_parser_init(&parser, CWS_ROLE_CLIENT, 0)
        var req = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let offer { req += "Sec-WebSocket-Extensions: \(offer)\r\n" }
        req += "\r\n"
        try send(Array(req.utf8))
        response = try readHead()
        guard response.hasPrefix("HTTP/1.1 101") else { throw EngineTestError(description: "no 101: \(response)") }
        for line in response.split(separator: "\r\n") where line.lowercased().hasPrefix("sec-websocket-extensions:") {
            extensions = line.dropFirst("sec-websocket-extensions:".count).trimmingCharacters(in: .whitespaces)
        }
        if let ext = extensions {
            // The client's side of the agreement.
            let params = ext.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            let serverTakeover = !params.contains("server_no_context_takeover")
            let clientTakeover = !params.contains("client_no_context_takeover")
            var clientBits: Int32 = 15
            if let p = params.first(where: { $0.hasPrefix("client_max_window_bits=") }) {
                clientBits = Int32(p.split(separator: "=")[1])!
            }
            parser.rsv_allowed = rsv1
            deflater = cws_deflater_new(6, 8, max(clientBits, 9), clientTakeover ? 1 : 0)
            inflater = cws_inflater_new(15, serverTakeover ? 1 : 0)
        }
    }

    deinit {
        close(fd)
        if let deflater { cws_deflater_free(deflater) }
        if let inflater { cws_inflater_free(inflater) }
    }

    func send(_ bytes: [UInt8]) throws { try sendAll(fd, bytes, toleratingReset: true) }

    private func fill() throws -> Bool {
        var tmp = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buf += tmp[0..<n]
                return true
            }
            if n == 0 || errno == ECONNRESET { return false }
            if errno == EINTR { continue }
            throw EngineTestError(description: "recv: errno \(errno)")
        }
    }

    private func readHead() throws -> String {
        while true {
            if buf.count >= 4 {
                for i in 0...(buf.count - 4) where buf[i] == 13 && buf[i + 1] == 10 && buf[i + 2] == 13 && buf[i + 3] == 10 {
                    let head = String(decoding: buf[0..<i], as: UTF8.self)
                    buf.removeFirst(i + 4)
                    return head
                }
            }
            guard try fill() else { throw EngineTestError(description: "EOF before response head") }
        }
    }

    func compress(_ payload: [UInt8]) -> [UInt8] {
        var b = cws_buffer()
        defer { cws_buffer_free(&b) }
        let rc = payload.withUnsafeBytes { cws_deflater_message(deflater, $0.baseAddress, $0.count, &b) }
        precondition(rc == 0)
        return Array(UnsafeBufferPointer(start: b.data, count: b.len))
    }

    func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: payload.count + Int(CWS_MAX_HEADER_SIZE))
        let n = out.withUnsafeMutableBytes { o in
            payload.withUnsafeBytes { p in
                cws_frame_encode(o.baseAddress, fin ? 1 : 0, rsv, opcode, p.baseAddress, p.count, 1, 0x3713_5A5A)
            }
        }
        return Array(out[0..<n])
    }

    /// Sends a message, compressed or not, in `pieces` frames.
    func sendMessage(_ opcode: UInt8, _ payload: [UInt8], compressed: Bool = true, pieces: Int = 1) throws {
        let body = compressed ? compress(payload) : payload
        let step = max(1, (body.count + pieces - 1) / pieces)
        var out: [UInt8] = []
        var i = 0
        repeat {
            let end = min(body.count, i + step)
            let first = i == 0
            out += frame(first ? opcode : opCont, Array(body[i..<end]), fin: end == body.count,
                         rsv: first && compressed ? rsv1 : 0)
            i = end
        } while i < body.count
        try send(out)
    }

    /// The next message (control frames come back as they are).
    func readMessage() throws -> Message {
        var opcode: UInt8 = 0
        var compressed = false
        var payload: [UInt8] = []
        var frame: [UInt8] = []
        while true {
            var pos = 0
            var done = false
            var finished: Message? = nil
            while pos < buf.count && !done {
                var consumed = 0
                var ev = cws_frame_event()
                let rc = buf.withUnsafeMutableBytes { raw in cws_parse(&parser, raw.baseAddress! + pos, raw.count - pos, &consumed, &ev) }
                pos += consumed
                if rc < 0 { throw EngineTestError(description: "server sent a bad frame: \(rc)") }
                if rc == CWS_PARSE_NEED_MORE { break }
                if ev.frame_start == 1 && ev.header.opcode != opCont { opcode = ev.header.opcode; compressed = ev.header.rsv & rsv1 != 0 }
                if ev.payload_len > 0 { frame += UnsafeBufferPointer(start: ev.payload, count: ev.payload_len) }
                if ev.frame_end == 1 {
                    payload += frame
                    frame = []
                    if ev.header.fin == 1 {
                        done = true
                        finished = Message(opcode: opcode, payload: payload, compressed: compressed)
                    }
                }
            }
            buf.removeFirst(pos)
            if var m = finished {
                if m.compressed {
                    var b = cws_buffer()
                    defer { cws_buffer_free(&b) }
                    let rc = m.payload.withUnsafeBytes { cws_inflater_feed(inflater, $0.baseAddress, $0.count, 1, &b, 1 << 30, nil) }
                    if rc != 0 { throw EngineTestError(description: "server's deflate data: \(rc)") }
                    m.payload = Array(UnsafeBufferPointer(start: b.data, count: b.len))
                }
                return m
            }
            guard try fill() else { throw EngineTestError(description: "EOF while reading") }
        }
    }

    func readClose() throws -> UInt16? {
        while true {
            let m = try readMessage()
            if m.opcode == opClose { return m.closeCode }
        }
    }
}

private func text(_ n: Int, seed: Int = 0) -> [UInt8] {
    var s: [UInt8] = []
    var i = seed
    while s.count < n {
        s += Array("{\"cmd\":\"chat\",\"param\":{\"text\":\"héllo \(i)\"}},".utf8)
        i += 1
    }
    // Cut at a character boundary.
    var end = n
    while end > 0 && end < s.count && s[end] & 0xC0 == 0x80 { end -= 1 }
    return Array(s.prefix(end))
}

private func binary(_ n: Int) -> [UInt8] {
    var x: UInt32 = 2_463_534_242
    return (0..<n).map { i in
        x ^= x << 13; x ^= x >> 17; x ^= x << 5
        return i % 3 == 0 ? UInt8(truncatingIfNeeded: x) : UInt8(i & 0x3F)
    }
}

private func deflateServer(_ backend: EngineBackend, _ tweak: (inout cws_server_config) -> Void = { _ in }) throws -> EngineServer? {
    try EngineServer(backend) { cfg in
        cfg.deflate.enabled = 1
        cfg.max_message_size = 8 << 20
        tweak(&cfg)
    }
}

@Suite("Deflate engine", .serialized)
struct DeflateEngineTests {
    @Test(arguments: EngineBackend.allCases)
    func offByDefault(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try DeflateClient(port: srv.port)
        #expect(c.extensions == nil)
        // RSV1 without the extension is a protocol error.
        try c.send(c.frame(opText, Array("x".utf8), rsv: rsv1))
        #expect(try c.readClose() == 1002)
    }

    @Test(arguments: EngineBackend.allCases)
    func negotiatedOverTheWire(_ backend: EngineBackend) throws {
        guard let srv = try deflateServer(backend, { $0.deflate.client_max_window_bits = 11 }) else { return }
        let c = try DeflateClient(port: srv.port, offer: "foo, permessage-deflate; bad, permessage-deflate; client_max_window_bits")
        #expect(c.extensions == "permessage-deflate; server_no_context_takeover; client_max_window_bits=11")
        let d = try DeflateClient(port: srv.port, offer: "permessage-deflate; server_max_window_bits=8")
        #expect(d.extensions == "permessage-deflate; server_no_context_takeover; server_max_window_bits=8")
        let payload = [UInt8](repeating: 0x61, count: 3000) + text(3000)
        try d.sendMessage(opText, payload)
        #expect(try d.readMessage() == Message(opcode: opText, payload: payload, compressed: true))
    }

    /// Echo round trips, 0 B to 4 MiB, text and binary, whole and in pieces,
    /// under each context-takeover combination.
    @Test(arguments: EngineBackend.allCases)
    func roundTrips(_ backend: EngineBackend) async throws {
        // Seconds of client-side compression in a debug build: off the pool.
        let failures = try await offThePool { () -> [String] in
            var failures: [String] = []
            let setups: [(String, (inout cws_server_config) -> Void, String)] = [
                ("shared", { _ in }, "permessage-deflate; client_max_window_bits"),
                ("server takeover", { $0.deflate.server_no_context_takeover = 0 }, "permessage-deflate"),
                ("client nct", { $0.deflate.server_no_context_takeover = 0 }, "permessage-deflate; client_no_context_takeover"),
                ("small windows", { $0.deflate.server_no_context_takeover = 0; $0.deflate.mem_level = 4 },
                 "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"),
            ]
            let sizes = [0, 1, 63, 64, 1000, 65_537, 1 << 20, 4 << 20]
            let payloads = Dictionary(uniqueKeysWithValues: sizes.map { ($0, (text($0), binary($0))) })
            for (k, (name, tweak, offer)) in setups.enumerated() {
                guard let srv = try deflateServer(backend, tweak) else { return failures }
                let c = try DeflateClient(port: srv.port, offer: offer)
                if c.extensions == nil { failures.append("\(name): not negotiated") }
                // 4 MiB under the first two setups only: the client side is slow in debug builds.
                for size in sizes where size < 4 << 20 || k < 2 {
                    let (t, b) = payloads[size]!
                    for (op, payload) in [(opText, t), (opBinary, b)] {
                        for pieces in size > 1000 ? [1, 7] : [1, 2] {
                            try c.sendMessage(op, payload, pieces: pieces)
                            let m = try c.readMessage()
                            if !(m.opcode == op && m.payload == payload) { failures.append("\(name) size \(size) pieces \(pieces): not echoed") }
                            // Below the default min_size (64) the echo goes out as is; large
                            // ones compress (small ones may go out as is when not smaller).
                            if payload.count < 64 && m.compressed { failures.append("\(name) size \(size): compressed") }
                            if payload.count >= 1000 && !m.compressed { failures.append("\(name) size \(size): not compressed") }
                        }
                    }
                    // Uncompressed messages still work on a compressed connection.
                    try c.sendMessage(opText, t, compressed: false, pieces: 2)
                    if try c.readMessage().payload != t { failures.append("\(name) size \(size): uncompressed not echoed") }
                }
            }
            return failures
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test(arguments: EngineBackend.allCases)
    func bombClosesWith1009(_ backend: EngineBackend) throws {
        guard let srv = try deflateServer(backend, { $0.max_message_size = 1 << 20 }) else { return }
        let c = try DeflateClient(port: srv.port)
        let zeros = [UInt8](repeating: 0, count: 10 << 20)
        let bomb = c.compress(zeros)
        #expect(bomb.count < 16 << 10)
        try c.send(c.frame(opBinary, bomb, rsv: rsv1))
        #expect(try c.readClose() == 1009)
        // In pieces too (the reassembly path).
        let d = try DeflateClient(port: srv.port)
        try d.sendMessage(opBinary, zeros, pieces: 9)
        #expect(try d.readClose() == 1009)
        // The server still works afterwards (the shared contexts were reset).
        let e = try DeflateClient(port: srv.port)
        try e.sendMessage(opText, text(5000))
        #expect(try e.readMessage().payload == text(5000))
    }

    /// With max_inflate_ratio, inflating stops at ratio x the compressed
    /// bytes (+64 KiB): a bomb costs the loop what the peer sent, not what it
    /// expands to, and is counted.
    @Test(arguments: EngineBackend.allCases)
    func inflateRatioStopsABombEarly(_ backend: EngineBackend) throws {
        guard let srv = try deflateServer(backend, {
            $0.max_message_size = 16 << 20
            $0.deflate.max_inflate_ratio = 64
        }) else { return }
        let zeros = [UInt8](repeating: 0, count: 16 << 20)
        for pieces in [1, 9] {
            let c = try DeflateClient(port: srv.port)
            try c.sendMessage(opBinary, zeros, pieces: pieces)
            #expect(try c.readClose() == 1009, "pieces: \(pieces)")
        }
        var st = cws_server_stats()
        cws_server_get_stats(srv.server, &st)
        #expect(st.inflate_refused == 2)
        // Ordinary text compresses far less than 64:1 and passes.
        let e = try DeflateClient(port: srv.port)
        try e.sendMessage(opText, text(200_000))
        #expect(try e.readMessage().payload == text(200_000))
    }

    @Test(arguments: EngineBackend.allCases)
    func corruptDataClosesWith1007(_ backend: EngineBackend) throws {
        guard let srv = try deflateServer(backend) else { return }
        let c = try DeflateClient(port: srv.port)
        try c.send(c.frame(opBinary, [0xFF, 0xFF, 0xFF, 0xFF, 0x00], rsv: rsv1))
        #expect(try c.readClose() == 1007)
        // Invalid UTF-8 inside compressed text, found in the first piece of a
        // fragmented message before the rest is sent.
        let d = try DeflateClient(port: srv.port)
        var t = [UInt8](repeating: 0x61, count: 100_000)
        t[3] = 0xC0
        let z = d.compress(t)
        try d.send(d.frame(opText, Array(z.prefix(z.count / 2)), fin: false, rsv: rsv1))
        #expect(try d.readClose() == 1007)
    }

    @Test(arguments: EngineBackend.allCases)
    func rsv1OnContinuationIs1002(_ backend: EngineBackend) throws {
        guard let srv = try deflateServer(backend) else { return }
        let c = try DeflateClient(port: srv.port)
        let z = c.compress(text(1000))
        try c.send(c.frame(opText, Array(z.prefix(10)), fin: false, rsv: rsv1)
            + c.frame(opCont, Array(z.dropFirst(10)), fin: true, rsv: rsv1))
        #expect(try c.readClose() == 1002)
        // And on a control frame.
        let d = try DeflateClient(port: srv.port)
        try d.send(d.frame(UInt8(CWS_OP_PING.rawValue), [], rsv: rsv1))
        #expect(try d.readClose() == 1002)
    }

    /// One message to many connections with different agreements: each gets a
    /// frame it can inflate (shared variant, a smaller window, its own context).
    @Test(arguments: EngineBackend.allCases)
    func fanOut(_ backend: EngineBackend) throws {
        guard let srv = try deflateServer(backend, { $0.deflate.server_no_context_takeover = 0 }) else { return }
        let offers = ["permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover",
                      "permessage-deflate; server_no_context_takeover; server_max_window_bits=9", "permessage-deflate", nil,
                      "permessage-deflate; server_no_context_takeover"]
        let clients = try offers.map { try DeflateClient(port: srv.port, offer: $0) }
        try srv.events.wait("opens") { srv.events.opened.count == clients.count }
        let ids = srv.events.opened
        for round in 0..<3 {
            let payload = text(4000, seed: round)
            let m = payload.withUnsafeBytes { cws_msg_new(opText, $0.baseAddress, $0.count) }!
            cws_send_msg_many(srv.server, ids, ids.count, m)
            cws_msg_release(m)
            for (i, c) in clients.enumerated() {
                let got = try c.readMessage()
                #expect(got.payload == payload && got.compressed == (offers[i] != nil), "client \(i) round \(round)")
            }
        }
    }

    /// Interop with Python's websockets client: compression on by default, and
    /// the window / context-takeover variants, both directions.
    @Test(arguments: EngineBackend.allCases)
    func pythonWebsocketsInterop(_ backend: EngineBackend) throws {
        guard let probe = try? ChildProcess("python3", ["-c", "import websockets"]) else {
            print("skipping websockets interop: no python3")
            return
        }
        if probe.wait() != 0 {
            print("skipping websockets interop: python3 has no websockets module (pip install websockets)")
            return
        }
        guard let srv = try deflateServer(backend, { $0.max_message_size = 16 << 20 }) else { return }
        let script = """
        import asyncio, os, sys
        from websockets.asyncio.client import connect
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory as F
        async def run(port, factory):
            kw = {} if factory is None else {"extensions": [factory], "compression": None}
            async with connect(f"ws://127.0.0.1:{port}", max_size=None, **kw) as ws:
                ext = ws.response.headers.get("Sec-WebSocket-Extensions")
                assert ext and ext.startswith("permessage-deflate"), ext
                for n in [0, 10, 100, 1000, 70000, 1 << 20]:
                    s = ("{\\"cmd\\":\\"x\\",\\"n\\":%d}" % n) * (n // 16 + 1)
                    s = s[:n]
                    await ws.send(s); assert await ws.recv() == s, n
                    b = os.urandom(n // 2) + bytes(n - n // 2)
                    await ws.send(b); assert await ws.recv() == b, n
                await ws.send(["abc" * 1000, "déf" * 1000]); assert await ws.recv() == "abc" * 1000 + "déf" * 1000
        port = int(sys.argv[1])
        for f in [None, F(client_max_window_bits=9), F(server_max_window_bits=10), F(client_no_context_takeover=True),
                  F(server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=9, client_max_window_bits=9)]:
            asyncio.run(run(port, f))
        print("interop ok")
        """
        let p = try ChildProcess("python3", ["-c", script, String(srv.port)], output: .capture)
        let log = p.readToEnd()
        #expect(p.wait() == 0, "\(log)")
        #expect(log.contains("interop ok"))
    }
}

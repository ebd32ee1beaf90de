import CWebSocket
import Foundation
import Glibc
import Testing

// End-to-end tests of the C server engine over real loopback sockets, run on
// both backends. The client is a tiny blocking socket client that frames with
// the C core (masked, client role) and reads with cws_parse in client role.
// Reads have a deadline (SO_RCVTIMEO) that fails the test; nothing is timed.

enum EngineBackend: String, CaseIterable, Sendable {
    case epoll, uring
    var raw: UInt8 {
        switch self {
        case .epoll: return UInt8(CWS_BACKEND_EPOLL.rawValue)
        case .uring: return UInt8(CWS_BACKEND_URING.rawValue)
        }
    }
}

struct EngineTestError: Error, CustomStringConvertible {
    var description: String
}

// MARK: - server

/// What the callbacks saw; shared with the loop threads.
final class EngineEvents: @unchecked Sendable {
    private let lock = NSLock()
    private var _opened: [cws_conn_id] = []
    private var _closed: [cws_conn_id: UInt16] = [:]
    private var _messages = 0
    var server: OpaquePointer? // set before start, read-only afterwards

    func open(_ id: cws_conn_id) { lock.withLock { _opened.append(id) } }
    func close(_ id: cws_conn_id, _ code: UInt16) {
        lock.withLock {
            precondition(_closed[id] == nil, "on_close twice for one connection")
            _closed[id] = code
            _turnsAtClose[id] = _turns[UInt32((id >> 24) & 0xFF)] ?? 0
        }
    }
    func message() { lock.withLock { _messages += 1 } }

    /// When set, the next message is answered with `count` binary messages of
    /// `size` bytes instead of its echo (all queued within one callback).
    private var _burst: (count: Int, size: Int)?
    func setBurst(count: Int, size: Int) { lock.withLock { _burst = (count, size) } }
    func takeBurst() -> (count: Int, size: Int)? { lock.withLock { defer { _burst = nil }; return _burst } }

    /// When set, the next message is answered with `count` fan-outs of
    /// itself to every open connection, all queued within one callback.
    private var _fanOut: Int?
    func setFanOut(count: Int) { lock.withLock { _fanOut = count } }
    func takeFanOut() -> Int? { lock.withLock { defer { _fanOut = nil }; return _fanOut } }

    /// When set, a message makes the callback call cws_server_stop (on the
    /// loop thread); what it returned is kept here.
    private var _stopFromCallback = false
    private var _stopResult: Int32?
    var stopFromCallback: Bool {
        get { lock.withLock { _stopFromCallback } }
        set { lock.withLock { _stopFromCallback = newValue } }
    }
    var stopResult: Int32? {
        get { lock.withLock { _stopResult } }
        set { lock.withLock { _stopResult = newValue } }
    }

    /// Every message is echoed this many times (default 1), so a client can
    /// have a lot queued for it from little input.
    private var _echoRepeat = 1
    var echoRepeat: Int {
        get { lock.withLock { _echoRepeat } }
        set { lock.withLock { _echoRepeat = newValue } }
    }
    /// When set, each connection's first message stops reading it (from the
    /// callback, on the loop thread), and no message is echoed: every
    /// message's first four bytes are kept, little-endian, in `sequence`.
    private var _pauseOnFirst = false
    private var _paused: Set<cws_conn_id> = []
    private var _sequence: [UInt32] = []
    var pauseOnFirst: Bool {
        get { lock.withLock { _pauseOnFirst } }
        set { lock.withLock { _pauseOnFirst = newValue } }
    }
    /// True for the first message of a connection in pauseOnFirst mode.
    func recordSequence(_ id: cws_conn_id, _ value: UInt32) -> Bool {
        lock.withLock {
            _sequence.append(value)
            return _paused.insert(id).inserted
        }
    }
    var sequence: [UInt32] { lock.withLock { _sequence } }
    /// Connections stopped by their first message.
    var pausedCount: Int { lock.withLock { _paused.count } }

    /// When set, the next message's callback waits for it (blocking that
    /// loop: its inbox fills while other threads send).
    private var _hold: DispatchSemaphore?
    func holdNextMessage(_ semaphore: DispatchSemaphore) { lock.withLock { _hold = semaphore } }
    func takeHold() -> DispatchSemaphore? { lock.withLock { defer { _hold = nil }; return _hold } }

    /// on_drain calls, and what cws_buffered_amount said in each.
    private var _drains: [(id: cws_conn_id, buffered: Int64)] = []
    func drained(_ id: cws_conn_id, buffered: Int64) { lock.withLock { _drains.append((id, buffered)) } }
    var drains: [(id: cws_conn_id, buffered: Int64)] { lock.withLock { _drains } }
    var messageCount: Int { lock.withLock { _messages } }

    var opened: [cws_conn_id] { lock.withLock { _opened } }

    /// on_turn calls by loop, and each close's loop's count when it came.
    private var _turns: [UInt32: Int] = [:]
    private var _turnsAtClose: [cws_conn_id: Int] = [:]
    func turned(_ loop: UInt32) { lock.withLock { _turns[loop, default: 0] += 1 } }
    func turns(_ loop: UInt32) -> Int { lock.withLock { _turns[loop] ?? 0 } }
    func turnsAtClose(_ id: cws_conn_id) -> Int? { lock.withLock { _turnsAtClose[id] } }
    func closeCode(_ id: cws_conn_id) -> UInt16? { lock.withLock { _closed[id] } }
    var closedCount: Int { lock.withLock { _closed.count } }

    /// Polls until `cond` holds, failing after a few seconds.
    func wait(_ what: String, _ cond: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(5)
        while !cond() {
            if Date() > deadline { throw EngineTestError(description: "timed out waiting for \(what)") }
            usleep(2000)
        }
    }
}

private func events(_ ctx: UnsafeMutableRawPointer?) -> EngineEvents {
    Unmanaged<EngineEvents>.fromOpaque(ctx!).takeUnretainedValue()
}

private let onRequest: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<cws_http_request>?,
                                       UnsafePointer<cws_upgrade_info>?) -> Void = { _, req, http, upgrade in
    if upgrade != nil {
        _ = cws_request_accept(req, nil, nil)
        return
    }
    let path = http!.pointee.path
    let p = String(decoding: UnsafeRawBufferPointer(start: path.ptr, count: path.len), as: UTF8.self)
    if p == "/hello" {
        cws_request_respond(req, 200, "text/plain", nil, "hello", 5)
    } else if p == "/moved" {
        cws_request_respond(req, 303, nil, "Location: /hello\r\n", nil, 0)
    }
    // anything else: unanswered -> the engine says 404
}

private let onOpen: @convention(c) (UnsafeMutableRawPointer?, cws_conn_id, UnsafeMutableRawPointer?) -> Void = { ctx, id, _ in
    events(ctx).open(id)
}

/// Echo from inside the callback, on the loop thread.
private let onMessage: @convention(c) (UnsafeMutableRawPointer?, cws_conn_id, UnsafeMutableRawPointer?, UInt8,
                                       UnsafeRawPointer?, Int) -> Void = { ctx, id, _, opcode, data, len in
    let ev = events(ctx)
    ev.message()
    if let hold = ev.takeHold() {
        hold.wait()
        return
    }
    if ev.pauseOnFirst {
        var seq: UInt32 = 0
        if len >= 4, let data { memcpy(&seq, data, 4) }
        if ev.recordSequence(id, UInt32(littleEndian: seq)) { precondition(cws_pause_reading(ev.server, id) == 0) }
        return
    }
    if let count = ev.takeFanOut() {
        let ids = ev.opened
        let m = cws_msg_new(opcode, data, len)
        for _ in 0..<count { ids.withUnsafeBufferPointer { cws_send_msg_many(ev.server, $0.baseAddress, $0.count, m) } }
        cws_msg_release(m)
        return
    }
    if let burst = ev.takeBurst() {
        let payload = [UInt8](repeating: 0xB5, count: burst.size)
        for _ in 0..<burst.count { _ = cws_send(ev.server, id, UInt8(CWS_OP_BINARY.rawValue), payload, payload.count) }
        return
    }
    if ev.stopFromCallback {
        ev.stopResult = cws_server_stop(ev.server, 1000)
        return
    }
    let repeats = ev.echoRepeat
    for _ in 0..<repeats {
        let rc = cws_send(ev.server, id, opcode, data, len)
        // Repeated echoes may overflow the queue, which closes the connection.
        if repeats > 1 && rc != 0 { break }
        precondition(rc == 0, "cws_send from the loop thread failed: \(rc)")
    }
}

private let onTurn: @convention(c) (UnsafeMutableRawPointer?, UInt32) -> Void = { ctx, loop in
    events(ctx).turned(loop)
}

private let onClose: @convention(c) (UnsafeMutableRawPointer?, cws_conn_id, UnsafeMutableRawPointer?, UInt16,
                                     UnsafeRawPointer?, Int) -> Void = { ctx, id, _, code, _, _ in
    events(ctx).close(id, code)
}

final class EngineServer {
    let events = EngineEvents()
    let server: OpaquePointer
    let port: UInt16
    private var stopped = false

    /// nil (with the reason printed) when the backend is not available here.
    init?(_ backend: EngineBackend, host: String = "127.0.0.1", configure: (inout cws_server_config) -> Void = { _ in }) throws {
        var cfg = cws_server_config()
        cws_server_config_init(&cfg)
        cfg.backend = backend.raw
        cfg.loops = 2
        cfg.callbacks.ctx = Unmanaged.passUnretained(events).toOpaque()
        cfg.callbacks.on_request = onRequest
        cfg.callbacks.on_open = onOpen
        cfg.callbacks.on_message = onMessage
        cfg.callbacks.on_close = onClose
        cfg.callbacks.on_drain = onDrain
        cfg.callbacks.on_turn = onTurn
        configure(&cfg)
        var err = [CChar](repeating: 0, count: 256)
        let s = host.withCString { host -> OpaquePointer? in
            cfg.host = host
            return cws_server_create(&cfg, &err, err.count)
        }
        guard let s else {
            let msg = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if backend == .uring && msg.hasPrefix("io_uring unavailable") {
                print("skipping io_uring: \(msg)")
                return nil
            }
            throw EngineTestError(description: "cws_server_create: \(msg)")
        }
        server = s
        port = cws_server_port(s)
        events.server = s
        let rc = cws_server_start(s)
        if rc != 0 { throw EngineTestError(description: "cws_server_start: \(rc)") }
    }

    func stop(timeoutMs: UInt32 = 2000) {
        if stopped { return }
        stopped = true
        cws_server_stop(server, timeoutMs)
    }

    deinit {
        stop()
        // Every opened connection got exactly one on_close.
        precondition(events.closedCount == events.opened.count, "on_close missing")
        cws_server_destroy(server)
    }
}

// MARK: - client

struct Frame: Equatable {
    var opcode: UInt8
    var payload: [UInt8]
    var closeCode: UInt16? {
        opcode == UInt8(CWS_OP_CLOSE.rawValue) && payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
    }
}

/// A blocking TCP connection to 127.0.0.1:port with Nagle off and a read
/// deadline, so a missing answer fails the test instead of hanging it.
func loopbackSocket(port: UInt16, readTimeout seconds: Int, ipv6: Bool = false) throws -> Int32 {
    let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw EngineTestError(description: "socket: \(errno)") }
    var tv = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let rc: Int32
    if ipv6 {
        var addr = sockaddr_in6()
        addr.sin6_family = sa_family_t(AF_INET6)
        addr.sin6_port = port.bigEndian
        addr.sin6_addr = in6addr_loopback
        rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    } else {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
    guard rc == 0 else {
        close(fd)
        throw EngineTestError(description: "connect: \(errno)")
    }
    return fd
}

/// Writes every byte. With `toleratingReset`, a peer that already closed
/// (EPIPE / ECONNRESET) ends the write quietly: the test then reads why.
func sendAll(_ fd: Int32, _ bytes: [UInt8], toleratingReset: Bool = false) throws {
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
        if n < 0 {
            if errno == EINTR { continue }
            if toleratingReset && (errno == EPIPE || errno == ECONNRESET) { return }
            throw EngineTestError(description: "send: errno \(errno)")
        }
        off += n
    }
}

final class EngineClient {
    let fd: Int32
    private var buf: [UInt8] = []
    private var parser = cws_parser()
    private var current: [UInt8] = []

    init(port: UInt16, ipv6: Bool = false) throws {
        fd = try loopbackSocket(port: port, readTimeout: 5, ipv6: ipv6)
        cws_parser_init(&parser, CWS_ROLE_CLIENT, 0)
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws { try sendAll(fd, bytes) }

    /// More bytes into buf; false on EOF or reset.
    private func fill() throws -> Bool {
        var tmp = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buf += tmp[0..<n]
                return true
            }
            if n == 0 { return false }
            if errno == EINTR { continue }
            if errno == ECONNRESET { return false }
            if errno == EAGAIN || errno == EWOULDBLOCK { throw EngineTestError(description: "read timed out") }
            throw EngineTestError(description: "recv: errno \(errno)")
        }
    }

    /// Sends an upgrade request and returns the response head.
    func handshake(path: String = "/ws", version: String? = "13") throws -> String {
        var req = "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if let version { req += "Sec-WebSocket-Version: \(version)\r\n" }
        req += "\r\n"
        try send(Array(req.utf8))
        return try readHead()
    }

    func readHead() throws -> String {
        while true {
            if let end = findHeadEnd() {
                let head = String(decoding: buf[0..<end], as: UTF8.self)
                buf.removeFirst(end + 4)
                return head
            }
            guard try fill() else { throw EngineTestError(description: "EOF before response head") }
        }
    }

    private func findHeadEnd() -> Int? {
        guard buf.count >= 4 else { return nil }
        for i in 0...(buf.count - 4) where buf[i] == 13 && buf[i + 1] == 10 && buf[i + 2] == 13 && buf[i + 3] == 10 {
            return i
        }
        return nil
    }

    /// Everything until EOF (for plain HTTP responses).
    func readToEOF() throws -> [UInt8] {
        while try fill() {}
        defer { buf = [] }
        return buf
    }

    /// 1 if the server closed the TCP connection (EOF or reset) before sending anything else.
    func expectEOF() throws -> Bool {
        if !buf.isEmpty { return false }
        return try !fill() && buf.isEmpty
    }

    func sendFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) throws {
        var out = [UInt8](repeating: 0, count: payload.count + Int(CWS_MAX_HEADER_SIZE))
        let n = out.withUnsafeMutableBytes { o in
            payload.withUnsafeBytes { p in
                cws_frame_encode(o.baseAddress, fin ? 1 : 0, 0, opcode, p.baseAddress, p.count, masked ? 1 : 0, 0x1234_5678)
            }
        }
        try send(Array(out[0..<n]))
    }

    func sendText(_ s: String) throws { try sendFrame(UInt8(CWS_OP_TEXT.rawValue), Array(s.utf8)) }

    func sendClose(_ code: UInt16, _ reason: String = "") throws {
        try sendFrame(UInt8(CWS_OP_CLOSE.rawValue), [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }

    /// The next whole frame from the server.
    func readFrame() throws -> Frame {
        while true {
            var pos = 0
            var done: Frame? = nil
            while pos < buf.count && done == nil {
                var consumed = 0
                var ev = cws_frame_event()
                let rc = buf.withUnsafeMutableBytes { raw in
                    cws_parse(&parser, raw.baseAddress! + pos, raw.count - pos, &consumed, &ev)
                }
                pos += consumed
                if rc < 0 { throw EngineTestError(description: "server sent a bad frame: \(rc)") }
                if rc == CWS_PARSE_NEED_MORE { break }
                if ev.payload_len > 0 { current += UnsafeBufferPointer(start: ev.payload, count: ev.payload_len) }
                if ev.frame_end == 1 {
                    done = Frame(opcode: ev.header.opcode, payload: current)
                    current = []
                }
            }
            buf.removeFirst(pos)
            if let done { return done }
            guard try fill() else { throw EngineTestError(description: "EOF while reading a frame") }
        }
    }
}

// MARK: - tests

private let opText = UInt8(CWS_OP_TEXT.rawValue)
private let opBinary = UInt8(CWS_OP_BINARY.rawValue)
private let opCont = UInt8(CWS_OP_CONTINUATION.rawValue)
private let opPing = UInt8(CWS_OP_PING.rawValue)
private let opPong = UInt8(CWS_OP_PONG.rawValue)
private let opClose = UInt8(CWS_OP_CLOSE.rawValue)

func openClient(_ srv: EngineServer) throws -> EngineClient { try openClient(port: srv.port) }

/// `count` clients, upgraded, once the server has seen every one open.
func openClients(_ srv: EngineServer, count: Int) throws -> [EngineClient] {
    let clients = try (0..<count).map { _ in try openClient(srv) }
    try srv.events.wait("\(count) opens") { srv.events.opened.count == count }
    return clients
}

/// Sends "fan" from the first client with the server set to fan it out
/// `count` times to every open connection within one callback; reads them
/// back on every client and returns how many frames were not that message.
func fanOutAndRead(_ srv: EngineServer, _ clients: [EngineClient], count: Int) throws -> Int {
    srv.events.setFanOut(count: count)
    try clients[0].sendText("fan")
    let expected = Frame(opcode: UInt8(CWS_OP_TEXT.rawValue), payload: Array("fan".utf8))
    var wrong = 0
    for c in clients {
        for _ in 0..<count where try c.readFrame() != expected { wrong += 1 }
    }
    return wrong
}

func openClient(port: UInt16) throws -> EngineClient {
    let c = try EngineClient(port: port)
    let head = try c.handshake()
    guard head.hasPrefix("HTTP/1.1 101") else { throw EngineTestError(description: "no 101: \(head)") }
    return c
}

@Suite("Engine", .serialized)
struct EngineTests {
    @Test(arguments: EngineBackend.allCases)
    func handshakeAcceptAndReject(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try EngineClient(port: srv.port)
        let head = try c.handshake()
        #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols"))
        #expect(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))

        let bad = try EngineClient(port: srv.port)
        let refused = try bad.handshake(version: nil)
        #expect(refused.hasPrefix("HTTP/1.1 426"))
        #expect(refused.contains("Sec-WebSocket-Version: 13"))
        #expect(try bad.expectEOF())
        #expect(String(cString: cws_server_backend_name(srv.server)) == (backend == .uring ? "io_uring" : "epoll"))
    }

    @Test(arguments: EngineBackend.allCases)
    func plainHTTP(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try EngineClient(port: srv.port)
        try c.send(Array("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let r = String(decoding: try c.readToEOF(), as: UTF8.self)
        #expect(r.hasPrefix("HTTP/1.1 404"))

        let h = try EngineClient(port: srv.port)
        try h.send(Array("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let ok = String(decoding: try h.readToEOF(), as: UTF8.self)
        #expect(ok.hasPrefix("HTTP/1.1 200 OK"))
        #expect(ok.hasSuffix("\r\n\r\nhello"))

        let m = try EngineClient(port: srv.port)
        try m.send(Array("GARBAGE\r\n\r\n".utf8))
        #expect(String(decoding: try m.readToEOF(), as: UTF8.self).hasPrefix("HTTP/1.1 400"))
    }

    @Test(arguments: EngineBackend.allCases)
    func echoSizes(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try openClient(srv)
        for size in [0, 125, 126, 65535, 65536, 1 << 20] {
            let bin = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            try c.sendFrame(opBinary, bin)
            #expect(try c.readFrame() == Frame(opcode: opBinary, payload: bin), "binary \(size)")
            let text = (0..<size).map { UInt8(97 + $0 % 26) }
            try c.sendFrame(opText, text)
            #expect(try c.readFrame() == Frame(opcode: opText, payload: text), "text \(size)")
        }
        var st = cws_server_stats()
        cws_server_get_stats(srv.server, &st)
        #expect(st.messages_in == 12 && st.messages_out == 12 && st.connections == 1)
    }

    @Test(arguments: EngineBackend.allCases)
    func fragmentedWithPing(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try openClient(srv)
        try c.sendFrame(opText, Array("hel".utf8), fin: false)
        try c.sendFrame(opPing, Array("p1".utf8))
        try c.sendFrame(opCont, Array("lo ".utf8), fin: false)
        try c.sendFrame(opPong, Array("unsolicited".utf8))
        try c.sendFrame(opCont, Array("wörld".utf8), fin: true)
        #expect(try c.readFrame() == Frame(opcode: opPong, payload: Array("p1".utf8)))
        #expect(try c.readFrame() == Frame(opcode: opText, payload: Array("hello wörld".utf8)))
    }

    @Test(arguments: EngineBackend.allCases)
    func closeHandshakeEchoesCode(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try openClient(srv)
        try c.sendClose(4001, "bye")
        let f = try c.readFrame()
        #expect(f.closeCode == 4001)
        #expect(try c.expectEOF())
        let id = srv.events.opened[0]
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        #expect(srv.events.closeCode(id) == 4001)
        // The id is stale now and never reaches another connection.
        #expect(cws_send(srv.server, id, opText, "x", 1) == -ENOENT)
        #expect(cws_close(srv.server, id, 1000, nil, 0) == -ENOENT)

        let e = try openClient(srv)
        try e.sendFrame(opClose, [])
        #expect(try e.readFrame().closeCode == 1000)
        #expect(try e.expectEOF())
    }

    @Test(arguments: EngineBackend.allCases)
    func invalidUTF8FailsMidFrame(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let c = try openClient(srv)
        // A 100-byte text frame of which only the first 10 bytes are sent; the
        // bad byte is among them, so the server must fail without the rest.
        var frame = [UInt8](repeating: 0, count: 200)
        var payload = [UInt8](repeating: 0x61, count: 100)
        payload[5] = 0xFF
        let n = frame.withUnsafeMutableBytes { o in
            payload.withUnsafeBytes { cws_frame_encode(o.baseAddress, 1, 0, opText, $0.baseAddress, 100, 1, 0x0BAD_F00D) }
        }
        let headerLen = n - 100
        try c.send(Array(frame[0..<(headerLen + 10)]))
        #expect(try c.readFrame().closeCode == 1007)
        let id = srv.events.opened[0]
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        #expect(srv.events.closeCode(id) == 1007)
    }

    @Test(arguments: EngineBackend.allCases)
    func protocolErrorAndOversize(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_message_size = 1000 }) else { return }
        let c = try openClient(srv)
        try c.sendFrame(opText, Array("unmasked".utf8), masked: false)
        #expect(try c.readFrame().closeCode == 1002)
        #expect(try c.expectEOF())

        let big = try openClient(srv)
        try big.sendFrame(opBinary, [UInt8](repeating: 1, count: 1001))
        #expect(try big.readFrame().closeCode == 1009)

        // Fragments that are each small but add up to too much.
        let frag = try openClient(srv)
        try frag.sendFrame(opBinary, [UInt8](repeating: 1, count: 600), fin: false)
        try frag.sendFrame(opCont, [UInt8](repeating: 1, count: 600), fin: true)
        #expect(try frag.readFrame().closeCode == 1009)
    }

    @Test(arguments: EngineBackend.allCases)
    func idlePingThenDrop(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: {
            $0.idle_timeout_ms = 150
            $0.pong_timeout_ms = 150
        }) else { return }
        let c = try openClient(srv)
        #expect(try c.readFrame() == Frame(opcode: opPing, payload: []))
        try c.sendFrame(opPong, [])
        // Answered: the next idle period brings another ping, not a drop.
        #expect(try c.readFrame() == Frame(opcode: opPing, payload: []))
        // Unanswered: dropped without a close frame, reported as 1006.
        #expect(try c.expectEOF())
        let id = srv.events.opened[0]
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        #expect(srv.events.closeCode(id) == 1006)
    }

    /// A burst larger than max_send_queue, queued within one callback:
    /// the close policy fails the connection with 1008 after what fit.
    @Test(arguments: EngineBackend.allCases)
    func sendQueueOverflowCloses(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_send_queue = 64 * 1024 }) else { return }
        srv.events.setBurst(count: 8, size: 16 * 1024)
        let c = try openClient(srv)
        try c.sendText("go")
        var delivered = 0
        while true {
            let f = try c.readFrame()
            if f.opcode == opClose {
                #expect(f.closeCode == 1008)
                break
            }
            #expect(f.opcode == opBinary && f.payload.count == 16 * 1024)
            delivered += 1
        }
        #expect(delivered > 0 && delivered < 8)
        let id = srv.events.opened[0]
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        #expect(srv.events.closeCode(id) == 1008)
    }

    /// The drop policy keeps the connection and counts what it dropped.
    @Test(arguments: EngineBackend.allCases)
    func sendQueueOverflowDrops(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: {
            $0.max_send_queue = 64 * 1024
            $0.overflow_policy = UInt8(CWS_OVERFLOW_DROP.rawValue)
        }) else { return }
        srv.events.setBurst(count: 8, size: 16 * 1024)
        let c = try openClient(srv)
        try c.sendText("go")
        try c.sendText("after")  // echoed once the burst is out: marks its end
        var delivered = 0
        while true {
            let f = try c.readFrame()
            if f.opcode == opText {
                #expect(f.payload == Array("after".utf8))
                break
            }
            #expect(f.opcode == opBinary && f.payload.count == 16 * 1024)
            delivered += 1
        }
        #expect(delivered > 0 && delivered < 8)
        var stats = cws_server_stats()
        cws_server_get_stats(srv.server, &stats)
        #expect(stats.dropped == UInt64(8 - delivered))
        #expect(srv.events.closedCount == 0)
    }

    @Test(arguments: EngineBackend.allCases)
    func gracefulStopSendsGoingAway(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let clients = try (0..<4).map { _ in try openClient(srv) }
        try srv.events.wait("opens") { srv.events.opened.count == 4 }
        let done = DispatchSemaphore(value: 0)
        let server = srv
        nonisolated(unsafe) let s = server
        Thread.detachNewThread {
            s.stop(timeoutMs: 3000)
            done.signal()
        }
        for c in clients {
            #expect(try c.readFrame().closeCode == 1001)
            try c.sendClose(1001)
            #expect(try c.expectEOF())
        }
        done.wait()
        #expect(srv.events.closedCount == 4)
        for id in srv.events.opened { #expect(srv.events.closeCode(id) == 1001) }
    }

    @Test(arguments: EngineBackend.allCases)
    func sendFromOtherThreadAndMany(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let clients = try (0..<6).map { _ in try openClient(srv) }
        try srv.events.wait("opens") { srv.events.opened.count == 6 }
        let ids = srv.events.opened
        #expect(cws_send(srv.server, ids[0], opText, "direct", 6) == 0)
        let m = cws_msg_new(opText, "fan-out", 7)
        ids.withUnsafeBufferPointer { cws_send_msg_many(srv.server, $0.baseAddress, $0.count, m) }
        cws_msg_release(m)
        #expect(try clients[0].readFrame() == Frame(opcode: opText, payload: Array("direct".utf8)))
        for c in clients { #expect(try c.readFrame() == Frame(opcode: opText, payload: Array("fan-out".utf8))) }
        #expect(cws_close(srv.server, ids[1], 4321, "go", 2) == 0)
        #expect(try clients[1].readFrame() == Frame(opcode: opClose, payload: [0x10, 0xE1] + Array("go".utf8)))
        try clients[1].sendClose(4321)
        #expect(try clients[1].expectEOF())
        #expect(cws_send(srv.server, 0, opText, "x", 1) == -ENOENT)
    }
}

private let onDrain: @convention(c) (UnsafeMutableRawPointer?, cws_conn_id, UnsafeMutableRawPointer?) -> Void = { ctx, id, _ in
    let ev = events(ctx)
    ev.drained(id, buffered: cws_buffered_amount(ev.server, id))
}

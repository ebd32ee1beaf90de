import CWebSocket
import Foundation
import Glibc
import Testing

/// The upgrades that on_request deferred, for the test to answer from its own thread.
final class DeferredLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _ids: [cws_conn_id] = []
    func add(_ id: cws_conn_id) { lock.withLock { _ids.append(id) } }
    var ids: [cws_conn_id] { lock.withLock { _ids } }
    func reset() { lock.withLock { _ids = [] } }
}

/// One log for the suite, which is serialized: a C callback cannot capture.
let deferredLog = DeferredLog()

/// Upgrades on /later are deferred; everything else as in EngineTests (accepted at once).
private let onDeferringRequest: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<cws_http_request>?,
                                                UnsafePointer<cws_upgrade_info>?) -> Void = { _, req, http, upgrade in
    let path = http!.pointee.path
    let p = String(decoding: UnsafeRawBufferPointer(start: path.ptr, count: path.len), as: UTF8.self)
    guard upgrade != nil else { return }
    if p == "/later" {
        let id = cws_request_defer(req)
        precondition(id != 0, "cws_request_defer failed")
        // A second answer inside on_request is refused: the request is answered ("later").
        precondition(cws_request_accept(req, nil, nil) == 0)
        deferredLog.add(id)
    } else {
        _ = cws_request_accept(req, nil, nil)
    }
}

/// Runs `body` on a thread of its own after `delay` microseconds (an answer
/// from "somewhere else", as an awaited session lookup would give it).
private func answerLater(_ delay: useconds_t = 100_000, _ body: @escaping @Sendable () -> Void) {
    Thread.detachNewThread {
        usleep(delay)
        body()
    }
}

private final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: Int32?
    /// Set by the answering thread once the call returned: the client may
    /// see the answer on the wire before that, so readers wait for it.
    var value: Int32? {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

/// Upgrade decisions answered later, from another thread: held without
/// reading, answered in order, bounded by the handshake timeout and the stop.
@Suite("Engine deferred upgrades", .serialized)
struct EngineDeferredUpgradeTests {
    static func server(_ backend: EngineBackend, configure: (inout cws_server_config) -> Void = { _ in }) throws -> EngineServer? {
        deferredLog.reset()
        return try EngineServer(backend) {
            $0.callbacks.on_request = onDeferringRequest
            configure(&$0)
        }
    }

    static func upgradeRequest(path: String = "/later", protocols: String? = nil) -> [UInt8] {
        var req = "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let protocols { req += "Sec-WebSocket-Protocol: \(protocols)\r\n" }
        return Array((req + "\r\n").utf8)
    }

    static func masked(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        var out = [UInt8](repeating: 0, count: payload.count + Int(CWS_MAX_HEADER_SIZE))
        let n = out.withUnsafeMutableBytes { o in
            payload.withUnsafeBytes { cws_frame_encode(o.baseAddress, 1, 0, UInt8(CWS_OP_TEXT.rawValue), $0.baseAddress, $0.count, 1, 0x0102_0304) }
        }
        return Array(out[0..<n])
    }

    @Test(arguments: EngineBackend.allCases)
    func acceptFromAnotherThreadThenEcho(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend) else { return }
        let client = try EngineClient(port: srv.port)
        try client.send(Self.upgradeRequest(protocols: "v2, v1"))
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        let id = deferredLog.ids[0]
        #expect(srv.stats.upgrades_deferred == 1)
        let events = srv.events, rc = Box()
        answerLater { rc.value = cws_deferred_accept(events.server, id, "v1", nil) }
        let head = try client.readHead()
        try srv.events.wait("the answer's return") { rc.value != nil }
        #expect(rc.value == 0)
        #expect(head.hasPrefix("HTTP/1.1 101"), "\(head)")
        #expect(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        #expect(head.contains("Sec-WebSocket-Protocol: v1"))
        #expect(srv.events.opened == [id], "the id from cws_request_defer is the connection's")
        try client.sendText("hello")
        #expect(try client.readFrame() == Frame(opcode: UInt8(CWS_OP_TEXT.rawValue), payload: Array("hello".utf8)))
        #expect(srv.stats.upgrades_deferred == 0)
        #expect(srv.stats.connections == 1)
        // Answered once: a second answer is refused.
        #expect(cws_deferred_accept(srv.server, id, nil, nil) == -ENOENT)
        #expect(cws_deferred_respond(srv.server, id, 403, nil, nil, nil, 0) == -ENOENT)
    }

    /// Frames a client sends without waiting for the 101, in the same write as
    /// the head and after it, are held while the decision is out and then
    /// delivered in order.
    @Test(arguments: EngineBackend.allCases)
    func pipelinedFramesArriveAfterTheAcceptInOrder(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend) else { return }
        let client = try EngineClient(port: srv.port)
        try client.send(Self.upgradeRequest() + Self.masked("one") + Self.masked("two"))
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        try client.send(Self.masked("three")) // reaches the kernel while the socket is not read
        usleep(100_000)
        #expect(srv.events.messageCount == 0, "nothing is delivered before the answer")
        let events = srv.events, id = deferredLog.ids[0], rc = Box()
        answerLater { rc.value = cws_deferred_accept(events.server, id, nil, nil) }
        let head = try client.readHead()
        #expect(head.hasPrefix("HTTP/1.1 101"), "\(head)")
        #expect(!head.contains("Sec-WebSocket-Protocol"))
        for word in ["one", "two", "three"] {
            #expect(try client.readFrame().payload == Array(word.utf8))
        }
        try srv.events.wait("the answer's return") { rc.value != nil }
        #expect(rc.value == 0)
    }

    @Test(arguments: EngineBackend.allCases)
    func respond401WithBody(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend) else { return }
        let client = try EngineClient(port: srv.port)
        try client.send(Self.upgradeRequest())
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        let events = srv.events, id = deferredLog.ids[0], rc = Box()
        answerLater {
            rc.value = cws_deferred_respond(events.server, id, 401, "text/plain", "WWW-Authenticate: Bearer\r\n",
                                            "no session", 10)
        }
        let answer = String(decoding: try client.readToEOF(), as: UTF8.self)
        #expect(answer.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(answer)")
        #expect(answer.contains("WWW-Authenticate: Bearer\r\n"))
        #expect(answer.contains("Content-Length: 10\r\n"))
        #expect(answer.hasSuffix("\r\n\r\nno session"))
        try srv.events.wait("the answer's return") { rc.value != nil }
        #expect(rc.value == 0)
        #expect(srv.events.opened.isEmpty)
        #expect(cws_deferred_accept(srv.server, id, nil, nil) == -ENOENT)
        #expect(srv.stats.upgrades_deferred == 0)
    }

    /// Unanswered within the handshake timeout: 503 and closed; the late
    /// answer is refused, so its caller keeps (and frees) what it passed.
    @Test(arguments: EngineBackend.allCases)
    func timeoutIsAnswered503AndALateAcceptIsRefused(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend, configure: { $0.handshake_timeout_ms = 300; $0.close_timeout_ms = 300 }) else { return }
        let client = try EngineClient(port: srv.port)
        try client.send(Self.upgradeRequest())
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        let answer = String(decoding: try client.readToEOF(), as: UTF8.self)
        #expect(answer.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(answer)")
        #expect(answer.contains("Retry-After: "))
        let user = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        #expect(cws_deferred_accept(srv.server, deferredLog.ids[0], nil, user) == -ENOENT)
        user.deallocate()
        #expect(srv.events.opened.isEmpty)
        #expect(srv.stats.upgrades_deferred == 0)
        try srv.events.wait("the socket freed") { srv.stats.sockets == 0 }
    }

    /// Deferred upgrades count against max_connections: with one waiting,
    /// the next upgrade (answered at once) is over the cap.
    @Test(arguments: EngineBackend.allCases)
    func deferredUpgradesCountAgainstMaxConnections(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend, configure: { $0.max_connections = 1 }) else { return }
        let waiting = try EngineClient(port: srv.port)
        try waiting.send(Self.upgradeRequest())
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        let extra = try EngineClient(port: srv.port)
        let refused = try extra.handshake()
        #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
        #expect(srv.stats.refused_full == 1)
        #expect(cws_deferred_accept(srv.server, deferredLog.ids[0], nil, nil) == 0)
        #expect(try waiting.readHead().hasPrefix("HTTP/1.1 101"))
    }

    /// The client leaves while its request waits. Whichever way the race
    /// goes, the contract holds: the answer is refused (-ENOENT, the caller
    /// keeps user) or taken, and then on_open and on_close both come for it.
    /// (epoll sees the hang-up while not reading; io_uring only once reading.)
    @Test(arguments: EngineBackend.allCases)
    func aClientThatLeavesWhileWaiting(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend) else { return }
        var client: EngineClient? = try EngineClient(port: srv.port)
        try client!.send(Self.upgradeRequest() + Self.masked("early"))
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        client = nil // closed
        usleep(100_000)
        let id = deferredLog.ids[0]
        let rc = cws_deferred_accept(srv.server, id, nil, nil)
        if rc == 0 {
            try srv.events.wait("on_open and on_close") { srv.events.opened == [id] && srv.events.closeCode(id) != nil }
        } else {
            #expect(rc == -ENOENT)
            #expect(srv.events.opened.isEmpty)
        }
        try srv.events.wait("the socket freed") { srv.stats.sockets == 0 }
        #expect(srv.stats.upgrades_deferred == 0)
        withExtendedLifetime(client) {}
    }

    /// A stop answers every waiting request 503 and closes it; answers after
    /// that are refused. (ASan: no record, message or socket left behind.)
    @Test(arguments: EngineBackend.allCases)
    func stopAnswersPendingDeferrals(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend) else { return }
        var clients: [EngineClient] = []
        for _ in 0..<3 {
            let c = try EngineClient(port: srv.port)
            try c.send(Self.upgradeRequest() + Self.masked("early"))
            clients.append(c)
        }
        try srv.events.wait("the deferrals") { deferredLog.ids.count == 3 }
        let open = try openClient(port: srv.port) // a plain one, for contrast: closed with 1001
        srv.stop()
        for c in clients {
            let answer = String(decoding: try c.readToEOF(), as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(answer)")
        }
        #expect(try open.readFrame().closeCode == 1001)
        for id in deferredLog.ids { #expect(cws_deferred_accept(srv.server, id, nil, nil) == -ENOENT) }
        #expect(srv.stats.upgrades_deferred == 0)
        #expect(srv.stats.sockets == 0)
        #expect(srv.events.opened.count == 1)
    }

    /// Clients waiting for a decision keep what they sent after the head, but
    /// not in the loop's shared receive buffers (io_uring: 256 per loop):
    /// before, a few hundred pre-authentication clients that sent frames
    /// behind their heads held all but one of them until their answers came,
    /// and the loop read one buffer a turn for everyone else.
    @Test(arguments: EngineBackend.allCases)
    func waitingClientsLeaveTheLoopsBuffersToOthers(_ backend: EngineBackend) throws {
        guard let srv = try Self.server(backend, configure: { $0.loops = 1 }) else { return }
        let waiting = 300, frames = 32
        let words = (0..<frames).map { "frame \($0) " + String(repeating: "x", count: 1000) }
        let pipelined = words.flatMap { Self.masked($0) }
        var clients: [EngineClient] = []
        for _ in 0..<waiting {
            let client = try EngineClient(port: srv.port)
            try client.send(Self.upgradeRequest() + Array(pipelined[..<1000]))
            try client.send(Array(pipelined[1000...])) // a completion of its own, after the deferral
            clients.append(client)
        }
        try srv.events.wait("every deferral") { deferredLog.ids.count == waiting }
        try srv.events.wait("no receive buffer held by a waiting client") { srv.stats.receive_buffers_held == 0 }
        // Another client on the same loop is read and answered.
        let other = try openClient(srv)
        try other.sendText("still heard")
        #expect(try other.readFrame().payload == Array("still heard".utf8))
        // Accepted, each waiting client's frames arrive whole and in order.
        for id in deferredLog.ids { #expect(cws_deferred_accept(srv.server, id, nil, nil) == 0) }
        for client in clients {
            #expect(try client.readHead().hasPrefix("HTTP/1.1 101"))
            for word in words { #expect(try client.readFrame().payload == Array(word.utf8)) }
        }
        #expect(srv.stats.input_held_bytes == 0)
        #expect(srv.stats.receive_buffers_held == 0)
    }

    /// A client waiting for its decision that sends on and on keeps, in the
    /// server, what epoll would keep for it (a message and one read): io_uring
    /// may already have read far more for it before its reading stopped (every
    /// free buffer), and past that bound it is closed rather than held.
    @Test(arguments: EngineBackend.allCases)
    func aWaitingClientThatFloodsIsHeldToOneMessage(_ backend: EngineBackend) throws {
        let maxMessage = 16 << 10
        guard let srv = try Self.server(backend, configure: { $0.loops = 1; $0.max_message_size = UInt64(maxMessage) })
        else { return }
        let client = try EngineClient(port: srv.port)
        let frame = Self.masked(String(repeating: "y", count: 1000))
        var flood = Self.upgradeRequest()
        while flood.count < 2 << 20 { flood += frame }
        // The head and the flood at once: much of it is read before the deferral stops reading.
        let flags = fcntl(client.fd, F_GETFL)
        _ = fcntl(client.fd, F_SETFL, flags | O_NONBLOCK)
        var offset = 0
        while offset < flood.count {
            let n = flood[offset...].withUnsafeBytes { write(client.fd, $0.baseAddress, $0.count) }
            if n > 0 { offset += n; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        _ = fcntl(client.fd, F_SETFL, flags)
        try srv.events.wait("the deferral") { deferredLog.ids.count == 1 }
        usleep(200_000)
        #expect(srv.stats.input_held_bytes <= UInt64(maxMessage + 64 << 10), "\(srv.stats.input_held_bytes) bytes kept")
        #expect(srv.stats.receive_buffers_held == 0)
    }
}

import CWebSocket
import Foundation
import ChildProcess
import Glibc
import Synchronization
import Testing

// Faults a production server meets: peers that stop reading, resets while
// sends are queued, descriptor numbers reused by the kernel. Each test runs on
// both backends; deadlines only catch hangs, nothing is timed.

/// A `fault_inject` string: a literal, so nothing is left to free (a
/// strdup'd one never was, and LeakSanitizer said so).
private func faults(_ spec: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(spec.utf8Start).assumingMemoryBound(to: CChar.self)
}

private let opText = UInt8(CWS_OP_TEXT.rawValue)
private let opBinary = UInt8(CWS_OP_BINARY.rawValue)

extension EngineClient {
    /// A tiny receive buffer: the server's writes to this client block soon.
    func shrinkReceiveBuffer() {
        var size: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// close() will send an RST instead of a FIN.
    func resetOnClose() {
        var lg = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, socklen_t(MemoryLayout<linger>.size))
    }
}

extension EngineServer {
    var stats: cws_server_stats {
        var st = cws_server_stats()
        cws_server_get_stats(server, &st)
        return st
    }
}

/// 16 MiB queued for a client that never reads: far more than the kernel's
/// socket buffers hold, so a send stays in flight.
private func pinnedClient(_ srv: EngineServer) throws -> EngineClient {
    srv.events.setBurst(count: 256, size: 64 * 1024)
    let c = try openClient(srv)
    c.shrinkReceiveBuffer()
    try c.sendText("go")
    try srv.events.wait("the burst queued") { srv.stats.messages_out >= 256 }
    return c
}

@Suite("Engine faults", .serialized)
struct EngineFaultTests {
    /// A graceful stop ends within its timeout even when a peer has stopped
    /// reading with megabytes queued (io_uring used to keep the SEND, and so the
    /// connection and the loop, alive for as long as the peer held out).
    @Test(arguments: EngineBackend.allCases)
    func stopIsNotPinnedByANonReadingPeer(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_send_queue = 32 << 20 }) else { return }
        var client: EngineClient? = try pinnedClient(srv)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let s = srv
        let started = monotonicMilliseconds()
        Thread.detachNewThread {
            s.stop(timeoutMs: 500)
            done.signal()
        }
        // A hang detector, not a measurement: the stop's own bound is 0.5 s.
        let returned = done.wait(timeout: .now() + 10) == .success
        #expect(returned, "cws_server_stop(500) still blocked after 10 s")
        if returned { print("\(backend): stop(500) with 16 MiB queued to a non-reading peer took \(monotonicMilliseconds() - started) ms") }
        // Resetting the client ends the pin, so a failing run still finishes.
        client?.resetOnClose()
        client = nil
        if !returned { done.wait() }
        #expect(srv.stats.sockets == 0)
    }

    /// A close whose frame cannot be written (the peer reads nothing) frees the
    /// connection and its queue once the close timeout passes.
    @Test(arguments: EngineBackend.allCases)
    func closeTimeoutFreesANonReadingPeer(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: {
            $0.max_send_queue = 32 << 20
            $0.close_timeout_ms = 200
        }) else { return }
        let client = try pinnedClient(srv)
        let id = srv.events.opened[0]
        #expect(cws_close(srv.server, id, 1000, nil, 0) == 0)
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        // The client is still connected and still not reading.
        try srv.events.wait("the connection freed") { srv.stats.sockets == 0 }
        withExtendedLifetime(client) {}
    }

    /// Many connections with queued sends, reset at random while new ones
    /// connect: descriptor numbers are reused lowest-first, so a write that
    /// reached a closed number would land on another client's socket. Every
    /// client checks that it only ever receives its own token.
    @Test(arguments: EngineBackend.allCases)
    func resetsNeverLeakBytesToAnotherConnection(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_send_queue = 1 << 20 }) else { return }
        srv.events.echoRepeat = 48
        let workers = 4, perWorker = 1000
        let failures = Mutex<[String]>([])
        let port = srv.port
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var rng = Rng(state: UInt64(w + 1) &* 0x9E37_79B9)
            for i in 0..<perWorker {
                let token = Array("worker \(w) connection \(i) ".utf8) + [UInt8](repeating: UInt8(65 + w), count: 200)
                do {
                    let c = try EngineClient(port: port)
                    let head = try c.handshake()
                    guard head.hasPrefix("HTTP/1.1 101") else { throw EngineTestError(description: "no 101: \(head)") }
                    try c.sendFrame(opBinary, token)
                    try c.sendFrame(opBinary, token)
                    // Reset most connections after reading a few frames (the
                    // rest of the 96 echoes still queued), read the others out.
                    let resetAfter = rng.next() % 4 == 0 ? 96 : Int(rng.next() % 8)
                    for _ in 0..<resetAfter {
                        let f = try c.readFrame()
                        if f.payload != token {
                            throw EngineTestError(description: "foreign bytes: got \(f.payload.prefix(40)) for \(token.prefix(40))")
                        }
                    }
                    if resetAfter < 96 { c.resetOnClose() }
                } catch {
                    failures.withLock { $0.append("\(w)/\(i): \(error)") }
                }
            }
        }
        let seen = failures.withLock { $0 }
        #expect(seen.isEmpty, "\(seen.count) clients failed, first: \(seen.prefix(3))")
        try srv.events.wait("every connection freed") { srv.stats.sockets == 0 }
    }
}

/// Tests/Support/EngineTestHost, built next to the test bundle.
private var engineTestHost: String? { ChildProcess.builtProduct("EngineTestHost") }

/// utime + stime of a process, in clock ticks.
private func cpuTicks(_ pid: pid_t) -> Int {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return -1 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After "pid (comm)": state is field 3, utime 14 and stime 15.
    return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
}

@Suite("Engine limits", .serialized)
struct EngineLimitTests {
    /// At the descriptor limit the listener stays ready (the connection waits
    /// in the backlog), and retrying at once spun both backends at 100% CPU.
    /// The server pauses accepting, and serves again once descriptors free up.
    @Test(arguments: EngineBackend.allCases)
    func descriptorLimitPausesAccepting(_ backend: EngineBackend) throws {
        guard let exe = engineTestHost else {
            print("SKIPPED: no EngineTestHost next to the test bundle (swift build --build-tests builds it)")
            return
        }
        let host = try ChildProcess(exe, [backend.rawValue, "64"], output: .capture)
        let banner = host.readLine()
        guard banner.hasPrefix("port "), let port = UInt16(banner.dropFirst(5).prefix { $0.isNumber }) else {
            if backend == .uring { print("SKIPPED: io_uring host did not start: \(banner)"); return }
            throw EngineTestError(description: "no port from EngineTestHost: \(banner)")
        }
        // More connections than the host has descriptors: the last ones wait
        // in its backlog while its accepts fail.
        var held = try (0..<80).map { _ in try loopbackSocket(port: port, readTimeout: 5) }
        let before = cpuTicks(host.pid)
        usleep(1_000_000)
        let spent = cpuTicks(host.pid) - before
        // Free 30 descriptors; the backlog, then a new request, are served.
        for fd in held.prefix(30) { close(fd) }
        held.removeFirst(30)
        let probe = try EngineClient(port: port)
        try probe.send(Array("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let reply = String(decoding: try probe.readToEOF(), as: UTF8.self)
        var stats: [String: Int] = [:]
        for line in reply.split(separator: "\n") {
            let kv = line.split(separator: "=")
            if kv.count == 2, let v = Int(kv[1]) { stats[String(kv[0])] = v }
        }
        print("\(backend): at the descriptor limit for 1 s: \(spent) ticks of CPU, \(stats["accept_errors"] ?? -1) failed accepts")
        #expect(reply.hasPrefix("HTTP/1.1 200"), "\(reply)")
        #expect((stats["accept_pauses"] ?? 0) >= 1)
        // A spinning server fails tens of thousands of accepts a second; a
        // paused one retries every 250 ms and when a connection closes.
        #expect((stats["accept_errors"] ?? Int.max) < 200, "\(stats)")
        let ws = try openClient(port: port)
        try ws.sendText("still serving")
        #expect(try ws.readFrame() == Frame(opcode: opText, payload: Array("still serving".utf8)))
        for fd in held { close(fd) }
        host.kill(SIGTERM)
        #expect(host.wait() == 0)
    }

    /// One upgrade over max_connections is answered 503 with Retry-After,
    /// while there are still descriptors to answer with.
    @Test(arguments: EngineBackend.allCases)
    func maxConnectionsAnswers503(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_connections = 2 }) else { return }
        let a = try openClient(srv)
        let b = try openClient(srv)
        let extra = try EngineClient(port: srv.port)
        let refused = try extra.handshake()
        #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
        #expect(refused.contains("Retry-After: "))
        #expect(try extra.expectEOF())
        #expect(srv.stats.refused_full == 1)
        try a.sendClose(1000)
        #expect(try a.readFrame().closeCode == 1000)
        let id = srv.events.opened[0]
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        _ = try openClient(srv) // room again
        withExtendedLifetime(b) {}
    }
}

/// The server pointer, for the thread that stops it.
private final class ServerBox: @unchecked Sendable {
    let server: OpaquePointer
    init(_ server: OpaquePointer) { self.server = server }
}

@Suite("Engine loops", .serialized)
struct EngineLoopTests {
    /// A loop whose thread starts after the stop began still stops. CI hung
    /// on it: a stop from a callback on loop 0 (the client had connected
    /// while the server was still starting) woke only the loops started so
    /// far, and loop 1, created a moment later, served on for good, so the
    /// stop's join never returned. Here the stop begins before the start,
    /// which makes every loop such a loop.
    @Test(arguments: EngineBackend.allCases)
    func aLoopThatStartsAfterTheStopBeganStops(_ backend: EngineBackend) throws {
        var cfg = cws_server_config()
        cws_server_config_init(&cfg)
        cfg.backend = backend.raw
        cfg.loops = 2
        var err = [CChar](repeating: 0, count: 256)
        let created = "127.0.0.1".withCString { host -> OpaquePointer? in
            cfg.host = host
            return cws_server_create(&cfg, &err, err.count)
        }
        guard let created else {
            print("SKIPPED: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
            return
        }
        let box = ServerBox(created)
        #expect(cws_server_stop(box.server, 0) == 0) // nothing started: nothing to wait for
        #expect(cws_server_start(box.server) == 0)
        let stopped = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = cws_server_stop(box.server, 100)
            stopped.signal()
        }
        // A hang detector: the loops stop in their first turn, or never.
        let done = stopped.wait(timeout: .now() + 10) == .success
        #expect(done, "the loops did not stop")
        if done { cws_server_destroy(box.server) } // else it stays: a thread still waits on it
    }

    /// A loop that cannot start makes start fail (it used to report success
    /// while the loop's listener stayed bound with nobody reading its backlog).
    @Test(arguments: EngineBackend.allCases)
    func loopThatCannotStartFailsStart(_ backend: EngineBackend) throws {
        #expect(throws: EngineTestError.self) {
            _ = try EngineServer(backend) { $0.fault_inject = faults("start:1") }
        }
    }

    /// A loop that dies later takes its listener and its connections down
    /// (on_close for each), refuses sends, and the other loop serves every
    /// new connection.
    @Test(arguments: EngineBackend.allCases)
    func loopThatDiesClosesItsListenerAndConnections(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.fault_inject = faults("wait:0") })
        else { return }
        // Connect until a connection lands on loop 0 (the id carries the loop).
        var clients: [EngineClient] = []
        var victim: (EngineClient, cws_conn_id)?
        for _ in 0..<64 where victim == nil {
            let c = try EngineClient(port: srv.port)
            // On loop 0 the loop may die before its 101 is written (io_uring
            // submits it with the wait that fails): EOF instead of a head.
            let head = try? c.handshake()
            clients.append(c)
            try srv.events.wait("on_open") { srv.events.opened.count == clients.count }
            let id = srv.events.opened.last!
            if (id >> 24) & 0xFF == 0 { victim = (c, id) }
            else { #expect(head?.hasPrefix("HTTP/1.1 101") == true, "\(head ?? "EOF")") }
        }
        guard let (dead, deadID) = victim else { throw EngineTestError(description: "no connection on loop 0") }
        #expect(try dead.expectEOF())
        try srv.events.wait("on_close of the dead loop's connection") { srv.events.closeCode(deadID) != nil }
        #expect(srv.events.closeCode(deadID) == 1006)
        #expect(srv.stats.loops_failed == 1)
        // One more on_turn after the closes, on the dying loop: what they
        // queued for the application's work on that loop still runs. After
        // it, the loop says it turns no more.
        try srv.events.wait("a turn after the dead loop's closes") {
            srv.events.turns(0) > srv.events.turnsAtClose(deadID)!
        }
        #expect(cws_server_wake_loop(srv.server, 0) == -EPIPE)
        #expect(cws_server_wake_loop(srv.server, 1) == 0)
        #expect(cws_server_wake_loop(srv.server, 2) == -ENOENT)
        #expect(cws_send(srv.server, deadID, opText, "x", 1) == -ENOENT)
        // Every new connection is served (none waits in the dead loop's backlog).
        for i in 0..<16 {
            let c = try openClient(srv)
            try c.sendText("alive \(i)")
            #expect(try c.readFrame() == Frame(opcode: opText, payload: Array("alive \(i)".utf8)))
        }
    }

    /// cws_server_stop from a callback cannot join the loop it runs on: it
    /// begins the stop, returns -EDEADLK, and a later stop from another
    /// thread waits.
    @Test(arguments: EngineBackend.allCases)
    func stopFromACallbackBeginsTheStop(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        srv.events.stopFromCallback = true
        let c = try openClient(srv)
        try c.sendText("stop")
        #expect(try c.readFrame().closeCode == 1001)
        try srv.events.wait("the callback's stop") { srv.events.stopResult != nil }
        #expect(srv.events.stopResult == -EDEADLK)
        try c.sendClose(1001)
        srv.stop()
        #expect(srv.events.closedCount == 1)
    }

    /// cws_server_destroy from a callback would free the loop it runs on:
    /// it aborts with a message instead of deadlocking or corrupting memory.
    @Test(arguments: EngineBackend.allCases)
    func destroyFromACallbackAbortsLoudly(_ backend: EngineBackend) throws {
        guard let exe = engineTestHost else {
            print("SKIPPED: no EngineTestHost next to the test bundle")
            return
        }
        let host = try ChildProcess(exe, [backend.rawValue, "1024", "destroy-in-callback"], output: .capture)
        let banner = host.readLine()
        guard banner.hasPrefix("port "), let port = UInt16(banner.dropFirst(5).prefix { $0.isNumber }) else {
            if backend == .uring { print("SKIPPED: io_uring host did not start: \(banner)"); return }
            throw EngineTestError(description: "no port from EngineTestHost: \(banner)")
        }
        let c = try openClient(port: port)
        try c.sendText("destroy")
        #expect(host.wait() == 128 + SIGABRT)
        // Line by line, not to the end: a crash reporter the runtime starts
        // (Swift's backtracer) may hold the output open after the host died.
        var output = ""
        for _ in 0..<50 where !output.contains("cws_server_destroy called from a callback") {
            let line = host.readLine(timeoutMilliseconds: 2000)
            if line.isEmpty { break }
            output += line
        }
        #expect(output.contains("cws_server_destroy called from a callback"), "\(output)")
    }
}

@Suite("Engine HTTP", .serialized)
struct EngineHTTPTests {
    private func exchange(_ srv: EngineServer, _ request: String) throws -> String {
        let c = try EngineClient(port: srv.port)
        try c.send(Array(request.utf8))
        return String(decoding: try c.readToEOF(), as: UTF8.self)
    }

    @Test(arguments: EngineBackend.allCases)
    func headHasTheHeadersButNoBody(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let head = try exchange(srv, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(head.contains("Content-Length: 5\r\n"))
        #expect(head.hasSuffix("\r\n\r\n"), "a body after the head: \(head)")
    }

    /// RFC 9112 3.2: exactly one Host in HTTP/1.1 (at most one in 1.0), for
    /// pages as for upgrades.
    @Test(arguments: EngineBackend.allCases)
    func hostIsRequiredOnce(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        #expect(try exchange(srv, "GET /hello HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        #expect(try exchange(srv, "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        #expect(try exchange(srv, "GET /hello HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.1 200 "))
        #expect(try exchange(srv, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n").hasPrefix("HTTP/1.1 200 "))
    }

    @Test(arguments: EngineBackend.allCases)
    func unknownVersionIs505(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        #expect(try exchange(srv, "GET /hello HTTP/1.9\r\nHost: a\r\n\r\n").hasPrefix("HTTP/1.1 505 HTTP Version Not Supported"))
    }

    @Test(arguments: EngineBackend.allCases)
    func statusLinesHaveTheirReasonPhrase(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend) else { return }
        let moved = try exchange(srv, "GET /moved HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(moved.hasPrefix("HTTP/1.1 303 See Other\r\n"), "\(moved)")
        #expect(moved.contains("Location: /hello\r\n"))
    }
}

@Suite("Engine listeners", .serialized)
struct EngineListenerTests {
    /// "::" is every address: IPv4 clients reach it too (it used to bind
    /// IPv6-only, so 127.0.0.1 was refused).
    @Test(arguments: EngineBackend.allCases)
    func unspecifiedIPv6IsDualStack(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, host: "::") else { return }
        for ipv6 in [false, true] {
            let c = try EngineClient(port: srv.port, ipv6: ipv6)
            #expect(try c.handshake().hasPrefix("HTTP/1.1 101"), "ipv6: \(ipv6)")
        }
    }

    /// A second server on a port that is already served fails with a clear
    /// error (SO_REUSEPORT used to let it bind silently and take a share of
    /// the connections), unless it asks to share the port.
    @Test(arguments: EngineBackend.allCases)
    func secondServerOnAPortIsRefusedUnlessShared(_ backend: EngineBackend) throws {
        for host in ["127.0.0.1", "::"] {
            guard let first = try EngineServer(backend, host: host) else { return }
            let port = first.port
            #expect(throws: EngineTestError.self, "second server on \(host) port \(port)") {
                _ = try EngineServer(backend, host: host) { $0.port = port }
            }
            do {
                _ = try EngineServer(backend, host: host) { $0.port = port }
            } catch {
                #expect("\(error)".contains("already in use"), "\(error)")
            }
            let shared = try EngineServer(backend, host: host) {
                $0.port = port
                $0.share_port = 1
            }
            #expect(shared?.port == port)
        }
    }
}

@Suite("io_uring probe")
struct UringProbeTests {
    /// Creates a server with the probe told to treat `missing` as absent.
    private func create(_ backend: UInt8, missing: String) -> (OpaquePointer?, String) {
        var cfg = cws_server_config()
        cws_server_config_init(&cfg)
        cfg.backend = backend
        cfg.loops = 1
        var err = [CChar](repeating: 0, count: 256)
        let s = "127.0.0.1".withCString { host in
            missing.withCString { disable -> OpaquePointer? in
                cfg.host = host
                cfg.uring_disable = disable
                return cws_server_create(&cfg, &err, err.count)
            }
        }
        return (s, String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// A kernel with buffer rings but no multishot recv (5.19), or without
    /// cancel-by-fd or multishot accept: auto picks epoll, and asking for
    /// io_uring fails with the reason, instead of every connection closing
    /// right after accept.
    @Test(arguments: ["recv-multishot", "cancel-fd", "accept-multishot", "sendmsg"])
    func missingOperationFallsBackToEpoll(_ missing: String) throws {
        let (real, realErr) = create(UInt8(CWS_BACKEND_URING.rawValue), missing: "")
        guard let real else {
            print("SKIPPED: io_uring is not available here at all: \(realErr)")
            return
        }
        cws_server_destroy(real)

        let (auto, autoErr) = create(UInt8(CWS_BACKEND_AUTO.rawValue), missing: missing)
        #expect(auto != nil, "auto backend failed: \(autoErr)")
        if let auto {
            #expect(String(cString: cws_server_backend_name(auto)) == "epoll")
            cws_server_destroy(auto)
        }
        let (forced, forcedErr) = create(UInt8(CWS_BACKEND_URING.rawValue), missing: missing)
        #expect(forced == nil)
        if let forced { cws_server_destroy(forced) }
        let step = missing.replacingOccurrences(of: "-", with: " ")
        #expect(forcedErr.contains("io_uring unavailable") && forcedErr.contains(step.split(separator: " ")[0]),
                "\(forcedErr)")
    }
}

/// Milliseconds on the monotonic clock (for what the tests print, never for what they assert).
func monotonicMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}


import OffThePool
import Foundation
import Logging
import Synchronization
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// Opens once; every `wait` before that suspends.
private final class Gate: Sendable {
    private let state = Locked<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let go = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(continuation)
                return false
            }
            if go { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// `echo` after awaiting (a random short sleep, or the gate), `sleep` awaits
/// a minute, `fail` throws after awaiting; counts what it handled and the
/// cancellations it saw.
private final class AwaitingHandler: AsyncEnvelopeHandler {
    let gate: Gate?
    let handled = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
    let concurrent = Atomic<Int>(0)
    let mostConcurrent = Atomic<Int>(0)

    init(gate: Gate? = nil) { self.gate = gate }

    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws {
        let now = concurrent.wrappingAdd(1, ordering: .relaxed).newValue
        if now > mostConcurrent.load(ordering: .relaxed) { mostConcurrent.store(now, ordering: .relaxed) }
        defer { concurrent.wrappingSubtract(1, ordering: .relaxed) }
        handled.wrappingAdd(1, ordering: .relaxed)
        switch message.cmd {
        case "echo":
            if let gate { await gate.wait() } else { await pause(for: .microseconds(Int.random(in: 0...800))) }
            service.write(Envelope(cmd: "echo", param: message.param), to: connection)
        case "sleep":
            do {
                try await Task.sleep(for: .seconds(60))
            } catch {
                cancelled.wrappingAdd(1, ordering: .relaxed)
                throw error
            }
        case "fail":
            await pause(for: .milliseconds(1))
            throw TestHandler.TestFailure(description: "async boom")
        default:
            return
        }
    }
}

private func asyncRoutes(_ handler: AwaitingHandler, limits: Limits = Limits()) -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.socket("/ws", handler: handler, limits: limits)
    return routes
}

@Suite struct AsyncHandlerTests {
    /// Three clients, each with 300 messages in flight at once: every
    /// connection's echoes come back in the order sent, though each message
    /// awaits a random time, and a connection's messages never overlap.
    @Test(arguments: backends, executions) func eachConnectionIsHandledInOrder(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let handler = AwaitingHandler()
        guard let service = try startService(backend, routes: asyncRoutes(handler), configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let count = 300
        let port = service.port
        let received = try await offThePool { () -> [[Int]] in
            let clients = try (0..<3).map { _ in try TestClient.connect(port: port, path: "/ws?ch=a") }
            for n in 0..<count {
                for (c, client) in clients.enumerated() { try client.send(text: #"{"cmd":"echo","param":\#(c * 100_000 + n)}"#) }
            }
            return try clients.map { client in
                var got: [Int] = []
                while got.count < count {
                    got.append(try client.receiveEnvelope(cmd: "echo", timeout: .seconds(20))["param"] as? Int ?? -1)
                }
                return got
            }
        }
        for c in 0..<3 { #expect(received[c] == (0..<count).map { c * 100_000 + $0 }) }
        #expect(handler.handled.load(ordering: .relaxed) == 3 * count)
        #expect(handler.mostConcurrent.load(ordering: .relaxed) <= 3, "one message at a time per connection")
    }

    /// A handler that cannot keep up: the server stops reading the socket
    /// once `maxQueuedMessages` wait, so the client's writes block and the
    /// backlog stays bounded; once the handler moves on, everything sent
    /// arrives, in order.
    @Test(arguments: backends, executions) func aSlowHandlerHoldsTheClientBack(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let gate = Gate()
        let handler = AwaitingHandler(gate: gate)
        var limits = Limits.unlimited
        limits.maxQueuedMessages = 16
        guard let service = try startService(backend, routes: asyncRoutes(handler, limits: limits), configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        let most = 200_000
        // One block on a thread of its own, from the handshake to the last
        // echo: the test's task may wait tens of seconds for a thread of the
        // cooperative pool while the whole suite runs (past the idle timeout).
        let bound = limits.maxQueuedMessages + 65_536 / 220 + 2 // + what one read delivers after the stop
        let run = try await offThePool { () -> (sent: Int, blocked: Int, order: [Int], deepest: Int) in
            let client = try TestClient.connect(port: port, path: "/ws?ch=a")
            // The 101 may reach the client before the server has run on_open.
            guard eventually({ !service.connections().isEmpty }), let queue = service.connections().first?.queue else {
                throw ClientError("the connection did not open")
            }
            // Write without blocking until the kernel refuses more.
            let flags = fcntl(client.fd, F_GETFL)
            _ = fcntl(client.fd, F_SETFL, flags | O_NONBLOCK)
            var sent = 0
            var rest: [UInt8] = []
            let filler = String(repeating: "f", count: 200)
            while sent < most {
                let bytes = FrameEncoder.encode(.text, payload: Array(#"{"cmd":"echo","param":[\#(sent),"\#(filler)"]}"#.utf8),
                                                maskKey: UInt32.random(in: 0...UInt32.max))
                let n = bytes.withUnsafeBytes { write(client.fd, $0.baseAddress, $0.count) }
                if n == bytes.count { sent += 1; continue }
                if n > 0 { rest = Array(bytes[n...]); sent += 1 }
                if n < 0 && errno == EINTR { continue }
                break
            }
            _ = fcntl(client.fd, F_SETFL, flags)
            let blocked = queue.deepest
            gate.open()
            if !rest.isEmpty { try TestClient.writeAll(client.fd, rest) }
            var order: [Int] = []
            while order.count < sent {
                let echo = try client.receiveEnvelope(cmd: "echo", timeout: .seconds(30))
                order.append((echo["param"] as? [Any])?.first as? Int ?? -1)
            }
            return (sent, blocked, order, queue.deepest)
        }
        #expect(run.sent < most, "the client's writes blocked: the server stopped reading")
        #expect(run.blocked <= bound, "backlog \(run.blocked) when the client was blocked, sent \(run.sent)")
        #expect(run.order == Array(0..<run.sent))
        #expect(run.deepest <= bound)
    }

    /// The connection closes while its handler waits: the task is cancelled.
    @Test(arguments: backends, executions) func closingCancelsTheConnectionsTask(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let handler = AwaitingHandler()
        guard let service = try startService(backend, routes: asyncRoutes(handler), configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        // The waits run on a thread of their own too: the test's task may not
        // be scheduled for seconds while other suites' tests hold the pool.
        let (started, cancelled, gone) = try await offThePool { () -> (Bool, Bool, Bool) in
            let client = try TestClient.connect(port: port, path: "/ws?ch=a")
            try client.send(text: #"{"cmd":"sleep"}"#)
            try client.send(text: #"{"cmd":"echo","param":1}"#)
            let started = eventually { handler.handled.load(ordering: .relaxed) == 1 }
            try client.sendClose()
            return (started, eventually { handler.cancelled.load(ordering: .relaxed) == 1 },
                    eventually { service.connections().isEmpty })
        }
        #expect(started && cancelled && gone)
        #expect(handler.handled.load(ordering: .relaxed) == 1, "what waited behind it is dropped")
    }

    @Test(arguments: backends, executions) func aThrownErrorIsToldToTheClient(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let handler = AwaitingHandler()
        guard let service = try startService(backend, routes: asyncRoutes(handler), configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        let (message, echoed) = try await offThePool { () -> (String?, Int?) in
            let client = try TestClient.connect(port: port, path: "/ws?ch=a")
            try client.send(text: #"{"cmd":"fail"}"#)
            let error = try client.receiveEnvelope(cmd: "error")
            try client.send(text: #"{"cmd":"echo","param":2}"#)
            return ((error["param"] as? [String: Any])?["message"] as? String,
                    try client.receiveEnvelope(cmd: "echo")["param"] as? Int)
        }
        #expect(message == "async boom")
        #expect(echoed == 2)
    }
}

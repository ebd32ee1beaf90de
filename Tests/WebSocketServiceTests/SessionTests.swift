import OffThePool
import Foundation
import Logging
import Synchronization
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// What a session's task saw, for the test to check.
private final class SessionLog: Sendable {
    let sessions = Atomic<Int>(0)
    let writes = Atomic<Int>(0)
    /// The most that waited for the client right after one of its writes.
    let mostBuffered = Atomic<Int>(0)
    /// Writes that found more than the high-water mark waiting before them (they waited).
    let waitedWrites = Atomic<Int>(0)
    private let errors = Locked<[String]>([])

    func record(_ error: any Error) { errors.withLock { $0.append("\(type(of: error))") } }
    var errorKinds: [String] { errors.withLock { $0 } }
}

/// The sessions shape of the API: one task per connection reading an
/// `AsyncSequence` of its messages and writing through an `OutboundWriter`
/// that waits while the client reads slowly.
@Suite struct SessionTests {
    /// Three clients with 300 messages each in flight: each session's echoes
    /// come back in order though every message awaits a random time.
    @Test(arguments: backends, executions) func aSessionHandlesItsMessagesInOrder(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let log = SessionLog()
        var routes = WebSocketRoutes()
        routes.socket("/s") { inbound, outbound, _ in
            log.sessions.wrappingAdd(1, ordering: .relaxed)
            for await message in inbound {
                await pause(for: .microseconds(Int.random(in: 0...800)))
                try await outbound.write(cmd: "echo", param: message.param)
            }
        }
        guard let service = try startService(backend, routes: routes, configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        let count = 300
        let received = try await offThePool { () -> [[Int]] in
            let clients = try (0..<3).map { _ in try TestClient.connect(port: port, path: "/s?ch=a") }
            for n in 0..<count {
                for (c, client) in clients.enumerated() { try client.send(text: #"{"cmd":"go","param":\#(c * 100_000 + n)}"#) }
            }
            return try clients.map { client in
                try (0..<count).map { _ in try client.receiveEnvelope(cmd: "echo", timeout: .seconds(20))["param"] as? Int ?? -1 }
            }
        }
        for c in 0..<3 { #expect(received[c] == (0..<count).map { c * 100_000 + $0 }) }
        #expect(log.sessions.load(ordering: .relaxed) == 3, "one session per connection")
    }

    /// A raw session gets whole text and binary messages, owned, and writes both.
    @Test(arguments: backends, executions) func aRawSessionEchoesTextAndBinary(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        var routes = WebSocketRoutes()
        routes.raw("/raw") { inbound, outbound, _ in
            for await message in inbound {
                switch message {
                case .text(let text): try await outbound.write(.text(text.uppercased()))
                case .binary(let bytes): try await outbound.write(.binary(bytes.reversed()))
                }
            }
        }
        guard let service = try startService(backend, routes: routes, configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        let got = try await offThePool { () -> [TestClient.Received] in
            let client = try TestClient.connect(port: port, path: "/raw")
            try client.send(text: "hello")
            try client.send(.binary, [1, 2, 3])
            try client.send(text: "héllo")
            return try (0..<3).map { _ in try client.receive() }
        }
        #expect(got == [.text("HELLO"), .binary([3, 2, 1]), .text("HÉLLO")])
    }

    /// 32 MiB written to a client that reads slowly through a 2 MiB send
    /// queue: without waiting, the queue would overflow and the connection
    /// be closed with 1008. The writer keeps what waits near the high-water
    /// mark, and every message arrives, in order.
    @Test(arguments: backends, executions) func anAwaitedWriteWaitsForASlowReader(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let log = SessionLog()
        let highWater = 256 << 10
        let size = 16 << 10
        let count = 2048
        var routes = WebSocketRoutes()
        routes.raw("/flood", limits: .unlimited) { inbound, outbound, _ in
            for await _ in inbound {
                for n in 0..<count {
                    if outbound.bufferedAmount > highWater { log.waitedWrites.wrappingAdd(1, ordering: .relaxed) }
                    var payload = [UInt8](repeating: UInt8(n & 0xFF), count: size)
                    withUnsafeBytes(of: UInt32(n).littleEndian) { payload.replaceSubrange(0..<4, with: $0) }
                    try await outbound.write(.binary(payload))
                    log.writes.wrappingAdd(1, ordering: .relaxed)
                    let buffered = outbound.bufferedAmount
                    if buffered > log.mostBuffered.load(ordering: .relaxed) { log.mostBuffered.store(buffered, ordering: .relaxed) }
                }
            }
        }
        guard let service = try startService(backend, routes: routes, configure: { c in
            c.asyncExecution = execution
            c.sendHighWater = highWater
            c.maxSendQueue = 2 << 20
        }) else { return }
        defer { service.stop() }
        let port = service.port
        let order = try await offThePool { () -> [Int] in
            let client = try TestClient.connect(port: port, path: "/flood")
            var small: Int32 = 64 << 10
            setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            try client.send(text: "go")
            var order: [Int] = []
            for _ in 0..<count {
                guard case .binary(let bytes) = try client.receive(timeout: .seconds(30)), bytes.count == size else {
                    throw ClientError("expected a \(size)-byte binary message")
                }
                order.append(Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16)
                if order.count % 256 == 0 { usleep(20_000) } // a slow reader
            }
            return order
        }
        #expect(order == Array(0..<count))
        #expect(log.writes.load(ordering: .relaxed) == count)
        #expect(log.waitedWrites.load(ordering: .relaxed) > 0, "the writer had to wait")
        // One message over the mark at most (a write goes out once what waits
        // is below it); the amount read right after a write may count that
        // message twice, for the instant its loop takes it from the inbox
        // (queued, not yet marked taken: cws_buffered_amount never misses
        // one). CI saw 278,596 against the single count's 278,592.
        #expect(log.mostBuffered.load(ordering: .relaxed) <= highWater + 2 * (size + 64))
        #expect(service.status().limits.closeCodes[1008] == nil)
    }

    /// A client that goes away while its session waits to write: the wait
    /// ends with `ConnectionClosedError` (no task is left waiting), and so
    /// does every later write.
    @Test(arguments: backends, executions) func aWaitingWriteEndsWhenTheClientLeaves(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let log = SessionLog()
        let ended = Atomic<Int>(0)
        var routes = WebSocketRoutes()
        routes.raw("/flood", limits: .unlimited) { inbound, outbound, _ in
            defer { ended.wrappingAdd(1, ordering: .relaxed) }
            for await _ in inbound {
                do {
                    while true { try await outbound.write(.binary([UInt8](repeating: 7, count: 64 << 10))) }
                } catch {
                    log.record(error)
                }
                do { try await outbound.write(.text("after")) } catch { log.record(error) }
            }
        }
        guard let service = try startService(backend, routes: routes, configure: { $0.sendHighWater = 128 << 10; $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        try await offThePool {
            let client = try TestClient.connect(port: port, path: "/flood")
            var small: Int32 = 64 << 10
            setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            try client.send(text: "go")
            // The session fills what the writer allows and waits.
            guard eventually({ service.connections().first.map { $0.drainWaiterCount == 1 } ?? false }) else {
                throw ClientError("the session never waited")
            }
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            shutdown(client.fd, Int32(SHUT_RDWR))
        }
        #expect(await eventuallyAsync { ended.load(ordering: .relaxed) == 1 }, "the session ended")
        // The inbound sequence may end first (the task is cancelled then): either way nothing hangs.
        #expect(log.errorKinds.allSatisfy { $0 == "ConnectionClosedError" || $0 == "CancellationError" })
        #expect(service.connections().isEmpty)
    }

    /// A session whose write to another connection fails because that one
    /// left ends like any failing session: its own connection is closed with
    /// 1011, not left open with nothing reading it.
    @Test(arguments: backends, executions) func anotherConnectionsClosingEndsTheSession(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        let other = Locked<Connection?>(nil)
        var routes = WebSocketRoutes()
        routes.raw("/b") { inbound, _, context in
            other.withLock { $0 = context.connection }
            for await _ in inbound {}
        }
        routes.raw("/a") { inbound, _, context in
            for await _ in inbound {
                guard let b = other.withLock({ $0 }) else { continue }
                try await context.server.writer(for: b).write(.text("to b")) // b is gone: throws
            }
        }
        guard let service = try startService(backend, routes: routes, configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        let got = try await offThePool { () -> TestClient.Received in
            let b = try TestClient.connect(port: port, path: "/b")
            guard eventually({ other.withLock { $0 } != nil }) else { throw ClientError("b's session never started") }
            try b.sendClose(code: 1000)
            _ = try b.receive() // the server's close
            guard eventually({ service.connections().count == 0 }) else { throw ClientError("b did not close") }
            let a = try TestClient.connect(port: port, path: "/a")
            try a.send(text: "go")
            return try a.receive()
        }
        #expect(got == .close(code: 1011, reason: ""))
    }

    /// A session that returns closes its connection with 1000; one that throws, with 1011.
    @Test(arguments: backends, executions) func theEndOfASessionClosesTheConnection(_ backend: Configuration.Backend, _ execution: Configuration.AsyncExecution) async throws {
        struct Refusal: Error {}
        var routes = WebSocketRoutes()
        routes.raw("/once") { inbound, outbound, _ in
            for await message in inbound {
                if message == .text("fail") { throw Refusal() }
                try await outbound.write(.text("bye"))
                return
            }
        }
        guard let service = try startService(backend, routes: routes, configure: { $0.asyncExecution = execution }) else { return }
        defer { service.stop() }
        let port = service.port
        let (returned, threw) = try await offThePool { () -> ([TestClient.Received], TestClient.Received) in
            let first = try TestClient.connect(port: port, path: "/once")
            try first.send(text: "hi")
            let returned = [try first.receive(), try first.receive()]
            let second = try TestClient.connect(port: port, path: "/once")
            try second.send(text: "fail")
            return (returned, try second.receive())
        }
        #expect(returned == [.text("bye"), .close(code: 1000, reason: "")])
        #expect(threw == .close(code: 1011, reason: ""))
    }
}

/// `eventually` for async tests: polls without holding a thread.
func eventuallyAsync(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}

import OffThePool
import Foundation
import Logging
import ServiceLifecycle
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// A server made but not started (`run()` starts it); nil, with the reason
/// printed, where the kernel refuses io_uring.
private func makeServer(_ backend: Configuration.Backend, routes: WebSocketRoutes) throws -> WebSocketServer? {
    var configuration = Configuration(host: "127.0.0.1", port: 0, loops: 2, backend: backend)
    configuration.shutdownTimeout = .seconds(5)
    do {
        return try WebSocketServer(routes: routes, configuration: configuration, logger: LogCapture().logger)
    } catch {
        guard backend == .uring && error.description.contains("io_uring unavailable") else { throw error }
        print("SKIPPED on io_uring: \(error)")
        return nil
    }
}

private func echoRoutes() -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.raw("/raw", handler: Echo())
    return routes
}

/// A client whose echo came back: the server runs and has opened it. The
/// port is bound before `run()` starts the loops, so the upgrade waits in the
/// backlog until then.
private func connectedClient(port: Int) throws -> TestClient {
    let client = try TestClient.connect(port: port, path: "/raw", timeout: .seconds(30))
    try client.send(text: "ping")
    guard try client.receive(timeout: .seconds(30)) == .text("ping") else { throw ClientError("no echo") }
    return client
}

/// What the client sees when the server stops: the close frame, then (after
/// answering it) the end of the stream.
private func closeSeen(by client: TestClient) throws -> TestClient.Received {
    let received = try client.receive(timeout: .seconds(30))
    try client.sendClose(code: 1001)
    try client.waitForEOF(timeout: .seconds(30))
    return received
}

/// Blocking client code that starts on a thread of its own at once (not
/// when the test next gets a thread): a client that must answer the
/// server's close within its timeout is reading before the stop begins.
private final class Running<T: Sendable>: @unchecked Sendable {
    // Written by the thread before `done` is signalled, read after waiting for it.
    private var result: Result<T, any Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () throws -> T) {
        Thread.detachNewThread { [self] in
            result = Result { try body() }
            done.signal()
        }
    }

    var value: T {
        get async throws {
            try await offThePool { [self] in
                done.wait()
                return try result!.get()
            }
        }
    }
}

/// Whether the port refuses connections, within a bound that only guards against a hang.
private func portRefuses(_ port: Int) -> Bool {
    eventually(timeout: .seconds(30)) {
        (try? TestClient.connect(port: port, path: "/raw", timeout: .milliseconds(200))) == nil
    }
}

/// The tests and the servers' tasks run on threads of their own (the
/// executor the async handlers use): the other suites' blocking tests hold
/// the cooperative pool's few threads, sometimes for longer than a close
/// timeout, and neither the group nor a test's client may wait for one.
@Suite(.serialized) struct ServiceLifecycleTests {
    /// In a ServiceGroup: the group's graceful shutdown closes the client
    /// with 1001, waits for its answer, and the group's run returns.
    @Test(arguments: backends) func gracefulShutdownOfTheGroupClosesWith1001(_ backend: Configuration.Backend) async throws {
        guard let server = try makeServer(backend, routes: echoRoutes()) else { return }
        let executor = HandlerExecutor(threads: 2)
        defer { executor.shutdown() }
        try await withTaskExecutorPreference(executor) {
            let group = ServiceGroup(services: [server], logger: LogCapture().logger)
            let running = Task(executorPreference: executor) { try await group.run() }
            let port = server.port
            let client = try await offThePool { try connectedClient(port: port) }
            let seen = Running { try closeSeen(by: client) }

            await group.triggerGracefulShutdown()
            #expect(try await seen.value == .close(code: 1001, reason: ""))
            try await running.value
            #expect(try await offThePool { portRefuses(port) }, "the port still accepts connections after the group's run returned")
            #expect(server.status().loopsFailed == 0)
        }
    }

    /// Cancelling the task that runs the server is a graceful stop too: the
    /// client still gets its 1001, and run() returns rather than throws.
    @Test(arguments: backends) func cancellationStopsGracefully(_ backend: Configuration.Backend) async throws {
        guard let server = try makeServer(backend, routes: echoRoutes()) else { return }
        let executor = HandlerExecutor(threads: 2)
        defer { executor.shutdown() }
        try await withTaskExecutorPreference(executor) {
            let running = Task(executorPreference: executor) { try await server.run() }
            let port = server.port
            let client = try await offThePool { try connectedClient(port: port) }
            let seen = Running { try closeSeen(by: client) }

            running.cancel()
            #expect(try await seen.value == .close(code: 1001, reason: ""))
            try await running.value
            #expect(try await offThePool { portRefuses(port) })
        }
    }

    /// A stop begun by a handler (on a loop thread) ends run() as well, so a
    /// group learns that its server is gone; shutdown() afterwards returns at once.
    @Test(arguments: backends) func aStopFromAHandlerEndsRun(_ backend: Configuration.Backend) async throws {
        var routes = WebSocketRoutes()
        routes.raw("/raw", handler: RawHandlerFunction { service, _, _, _ in service.stop(timeout: .seconds(5)) })
        guard let server = try makeServer(backend, routes: routes) else { return }
        let executor = HandlerExecutor(threads: 2)
        defer { executor.shutdown() }
        try await withTaskExecutorPreference(executor) {
            let running = Task(executorPreference: executor) { try await server.run() }
            let port = server.port
            let seen = try await offThePool {
                let client = try TestClient.connect(port: port, path: "/raw", timeout: .seconds(30))
                try client.send(text: "stop")
                return try closeSeen(by: client)
            }
            #expect(seen == .close(code: 1001, reason: ""))
            try await running.value
            await server.shutdown()
            #expect(try await offThePool { portRefuses(port) })
        }
    }

    /// shutdown() from async code with a client that never answers the
    /// close: it returns once the timeout has closed what was left.
    @Test(arguments: backends) func shutdownReturnsWhenAClientNeverAnswers(_ backend: Configuration.Backend) async throws {
        guard let server = try makeServer(backend, routes: echoRoutes()) else { return }
        try server.start()
        let port = server.port
        let client = try await offThePool { try connectedClient(port: port) }
        await server.shutdown(timeout: .milliseconds(300))
        // The server closed first and then dropped the connection: the client sees its 1001 and the end.
        let received = try await offThePool { () -> TestClient.Received in
            let received = try client.receive(timeout: .seconds(30))
            try client.waitForEOF(timeout: .seconds(30))
            return received
        }
        #expect(received == .close(code: 1001, reason: ""))
        #expect(try await offThePool { portRefuses(port) })
    }
}

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

/// Whether the port refuses connections, within a bound that only guards against a hang.
private func portRefuses(_ port: Int) -> Bool {
    eventually(timeout: .seconds(30)) {
        (try? TestClient.connect(port: port, path: "/raw", timeout: .milliseconds(200))) == nil
    }
}

/// The tasks run on threads of their own (the executor the async handlers
/// use): the other suites' blocking tests hold the cooperative pool's few
/// threads, and the group must not wait for one to close its clients.
@Suite(.serialized) struct ServiceLifecycleTests {
    /// In a ServiceGroup: the group's graceful shutdown closes the client
    /// with 1001, waits for its answer, and the group's run returns.
    @Test(arguments: backends) func gracefulShutdownOfTheGroupClosesWith1001(_ backend: Configuration.Backend) async throws {
        guard let server = try makeServer(backend, routes: echoRoutes()) else { return }
        let executor = HandlerExecutor(threads: 2)
        defer { executor.shutdown() }
        let group = ServiceGroup(services: [server], logger: LogCapture().logger)
        let running = Task(executorPreference: executor) { try await group.run() }
        let port = server.port
        let client = try await offThePool { try connectedClient(port: port) }

        await group.triggerGracefulShutdown()
        #expect(try await offThePool { try closeSeen(by: client) } == .close(code: 1001, reason: ""))
        try await running.value
        #expect(try await offThePool { portRefuses(port) }, "the port still accepts connections after the group's run returned")
        #expect(server.status().loopsFailed == 0)
    }

    /// Cancelling the task that runs the server is a graceful stop too: the
    /// client still gets its 1001, and run() returns rather than throws.
    @Test(arguments: backends) func cancellationStopsGracefully(_ backend: Configuration.Backend) async throws {
        guard let server = try makeServer(backend, routes: echoRoutes()) else { return }
        let executor = HandlerExecutor(threads: 2)
        defer { executor.shutdown() }
        let running = Task(executorPreference: executor) { try await server.run() }
        let port = server.port
        let client = try await offThePool { try connectedClient(port: port) }

        running.cancel()
        #expect(try await offThePool { try closeSeen(by: client) } == .close(code: 1001, reason: ""))
        try await running.value
        #expect(try await offThePool { portRefuses(port) })
    }

    /// A stop begun by a handler (on a loop thread) ends run() as well, so a
    /// group learns that its server is gone; shutdown() afterwards returns at once.
    @Test(arguments: backends) func aStopFromAHandlerEndsRun(_ backend: Configuration.Backend) async throws {
        var routes = WebSocketRoutes()
        routes.raw("/raw", handler: RawHandlerFunction { service, _, _, _ in service.stop(timeout: .seconds(5)) })
        guard let server = try makeServer(backend, routes: routes) else { return }
        let executor = HandlerExecutor(threads: 2)
        defer { executor.shutdown() }
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

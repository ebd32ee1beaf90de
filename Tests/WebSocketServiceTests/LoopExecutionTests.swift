import OffThePool
import CWebSocket
import Foundation
import Synchronization
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// Where each step of the sessions ran, for the test to check.
private final class ThreadLog: Sendable {
    let onLoop = Atomic<Int>(0)
    let offLoop = Atomic<Int>(0)
    let started = Atomic<Int>(0)
    let ended = Atomic<Int>(0)

    func here(_ server: WebSocketServer) {
        if cws_server_is_loop_thread(server.server) != 0 { onLoop.add(1, ordering: .relaxed) }
        else { offLoop.add(1, ordering: .relaxed) }
    }
}

/// `AsyncExecution.eventLoops`: a connection's task runs on its own loop's
/// thread, also after what it awaited elsewhere resumes it, and a task still
/// suspended when the loops stop finishes on the handler threads.
@Suite struct LoopExecutionTests {
    private static func echoRoutes(_ log: ThreadLog) -> WebSocketRoutes {
        var routes = WebSocketRoutes()
        routes.raw("/raw") { inbound, outbound, context in
            for await message in inbound {
                log.here(context.server) // resumed by the loop's delivery
                if case .text(let text) = message, text.hasPrefix("sleep") {
                    await pause(for: .milliseconds(2)) // resumed from another thread, the pause timer's
                    log.here(context.server)
                }
                try await outbound.write(message)
            }
        }
        return routes
    }

    @Test(arguments: backends, executions)
    func eachStepRunsWhereTheConfigurationSays(_ backend: Configuration.Backend,
                                               _ execution: Configuration.AsyncExecution) async throws {
        let log = ThreadLog()
        guard let service = try startService(backend, routes: Self.echoRoutes(log), configure: {
            $0.asyncExecution = execution
        }) else { return }
        defer { service.stop() }
        let port = service.port
        let count = 200
        let echoed = try await offThePool { () -> [String] in
            let clients = try (0..<2).map { _ in try TestClient.connect(port: port, path: "/raw") }
            for n in 0..<count {
                for client in clients { try client.send(text: n % 10 == 0 ? "sleep \(n)" : "m \(n)") }
            }
            return try clients.flatMap { client in
                try (0..<count).map { _ -> String in
                    guard case .text(let text) = try client.receive() else { return "not text" }
                    return text
                }
            }
        }
        let expected = (0..<count).map { $0 % 10 == 0 ? "sleep \($0)" : "m \($0)" }
        #expect(echoed == expected + expected, "each connection's echoes in order")
        let steps = 2 * count + 2 * (count / 10)
        switch execution {
        case .eventLoops:
            #expect(log.onLoop.load(ordering: .relaxed) == steps)
            #expect(log.offLoop.load(ordering: .relaxed) == 0)
        case .handlerThreads:
            #expect(log.offLoop.load(ordering: .relaxed) == steps)
            #expect(log.onLoop.load(ordering: .relaxed) == 0)
        }
    }

    /// The stop closes every connection, which cancels its task; a task that
    /// was waiting resumes after its loop's last turn and still runs to its end.
    @Test(arguments: backends, executions)
    func tasksWaitingAtTheStopRunToTheirEnd(_ backend: Configuration.Backend,
                                            _ execution: Configuration.AsyncExecution) async throws {
        let log = ThreadLog()
        var routes = WebSocketRoutes()
        routes.raw("/wait") { inbound, _, _ in
            log.started.add(1, ordering: .relaxed)
            defer { log.ended.add(1, ordering: .relaxed) }
            // Waits until cancelled, ignoring the inbound messages.
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(60)) }
            _ = inbound
        }
        guard let service = try startService(backend, routes: routes, configure: { $0.asyncExecution = execution }) else { return }
        let port = service.port
        let clients = try await offThePool { try (0..<3).map { _ in try TestClient.connect(port: port, path: "/wait") } }
        #expect(eventually { log.started.load(ordering: .relaxed) == 3 })
        await offThePool { service.stop(timeout: .milliseconds(200)) }
        #expect(eventually { log.ended.load(ordering: .relaxed) == 3 }, "every task ended after the stop")
        _ = clients
    }
}

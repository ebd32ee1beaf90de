import OffThePool
import Foundation
import Logging
import Testing
@testable import WebSocketService

/// What the awaited decisions saw, shared with the handler threads.
private final class DecisionLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _service: WebSocketServer?
    private var _onExecutor: [Bool] = []
    private var _released = 0
    private var _decided = 0
    var service: WebSocketServer? {
        get { lock.withLock { _service } }
        set { lock.withLock { _service = newValue } }
    }
    /// Whether each decision ran on the service's handler executor.
    var onExecutor: [Bool] { lock.withLock { _onExecutor } }
    func ran() {
        let here = service?.asyncExecutor.isCurrent ?? false
        lock.withLock { _onExecutor.append(here) }
    }
    var decided: Int { lock.withLock { _decided } }
    func decide() { lock.withLock { _decided += 1 } }
    /// Tokens freed: a token lives as long as the connection's handler does.
    var released: Int { lock.withLock { _released } }
    func release() { lock.withLock { _released += 1 } }
}

/// Freed with the Connection that holds it (through its handler).
private final class Token: Sendable {
    let log: DecisionLog
    init(_ log: DecisionLog) { self.log = log }
    deinit { log.release() }
}

/// Answers every message with the connection's subprotocol; holds a token.
private struct SaysProtocol: RawHandler {
    let token: Token?
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        service.send(Array((connection.subprotocol ?? "none").utf8), opcode: .text, to: connection)
    }
}

/// The README's session store.
private actor Sessions {
    struct Session { var userID: String }
    struct Unknown: Error {}
    func lookup(_ sid: String) async throws -> Session {
        await pause(for: .milliseconds(10))
        guard sid == "s1" else { throw Unknown() }
        return Session(userID: "bob")
    }
}

/// Upgrade decisions that await: held by the engine meanwhile, run on the
/// handler threads, bounded by the handshake timeout.
@Suite struct AsyncUpgradeTests {
    private static func routes(_ log: DecisionLog) -> WebSocketRoutes {
        var routes = WebSocketRoutes()
        // An envelope endpoint whose authenticate awaits a session lookup.
        routes.socket("/ws", handler: TestHandler(), authenticate: { request in
            await pause(for: .milliseconds(50))
            log.ran()
            guard request.queryItem("session") == "good" else { return .refuse(status: 401, message: "no session") }
            return .accept(Profile(userID: "alice"))
        })
        routes.raw("/raw", handler: Echo(), authenticate: { _ in
            await pause(for: .milliseconds(50))
            log.ran()
            return .refuse(status: 401, message: "raw: no session")
        })
        // The whole decision awaits, then picks the client's last offer.
        routes.socket("/pick") { (request: ServerRequest) async -> UpgradeDecision in
            await pause(for: .milliseconds(50))
            log.ran()
            return .accept(profile: nil, channel: nil, handler: .raw(SaysProtocol(token: nil)),
                           subprotocol: request.subprotocols.last)
        }
        // Slower than the handshake timeout.
        routes.socket("/slow") { (_: ServerRequest) async -> UpgradeDecision in
            let token = Token(log)
            await pause(for: .milliseconds(800))
            log.decide()
            return .accept(profile: nil, channel: "late", handler: .raw(SaysProtocol(token: token)))
        }
        // The README's example, in its shape.
        let sessions = Sessions()
        routes.socket("/readme", handler: TestHandler()) { request async in
            guard let session = try? await sessions.lookup(request.cookie("sid") ?? "") else {
                return .refuse(status: 401, message: "sign in first")
            }
            return .accept(Profile(userID: session.userID))
        }
        return routes
    }

    @Test(arguments: backends) func theReadmeExampleAuthenticatesFromACookie(_ backend: Configuration.Backend) async throws {
        let log = DecisionLog()
        guard let service = try startService(backend, routes: Self.routes(log)) else { return }
        defer { service.stop() }
        let port = service.port
        let (me, refused) = try await offThePool {
            let client = try TestClient.connect(port: port, path: "/readme", headers: ["Cookie: sid=s1"])
            return (try client.whoami(), try TestClient.http(port: port, TestClient.upgradeRequest(path: "/readme")))
        }
        #expect(me.userID == "bob")
        #expect(refused.status == 401 && refused.body == "sign in first")
    }

    @Test(arguments: backends) func anAwaitedAuthenticateAcceptsWithAProfileAndAChannel(_ backend: Configuration.Backend) async throws {
        let log = DecisionLog()
        guard let service = try startService(backend, routes: Self.routes(log)) else { return }
        defer { service.stop() }
        log.service = service
        let port = service.port
        let (me, open) = try await offThePool {
            let client = try TestClient.connect(port: port, path: "/ws?session=good&ch=room")
            return (try client.whoami(), service.connections().count)
        }
        #expect(me.userID == "alice")
        #expect(me.channels == ["room"])
        #expect(log.onExecutor == [true], "the decision ran on the handler executor")
        #expect(open == 1)
    }

    @Test(arguments: backends) func anAwaitedAuthenticateRefusesWith401(_ backend: Configuration.Backend) async throws {
        let log = DecisionLog()
        guard let service = try startService(backend, routes: Self.routes(log)) else { return }
        defer { service.stop() }
        log.service = service
        let port = service.port
        let (envelope, raw) = try await offThePool {
            (try TestClient.http(port: port, TestClient.upgradeRequest(path: "/ws?session=stale")),
             try TestClient.http(port: port, TestClient.upgradeRequest(path: "/raw")))
        }
        #expect(envelope.status == 401)
        #expect(envelope.body == "no session")
        #expect(raw.status == 401)
        #expect(raw.body == "raw: no session")
        #expect(log.onExecutor == [true, true])
        #expect(service.connections().isEmpty)
    }

    @Test(arguments: backends) func anAwaitedDecisionPicksASubprotocol(_ backend: Configuration.Backend) async throws {
        let log = DecisionLog()
        guard let service = try startService(backend, routes: Self.routes(log)) else { return }
        defer { service.stop() }
        log.service = service
        let port = service.port
        let reply = try await offThePool { () -> TestClient.Received in
            let client = try TestClient.connect(port: port, path: "/pick", headers: ["Sec-WebSocket-Protocol: graphql-ws, mqtt"])
            try client.send(text: "?")
            return try client.receive()
        }
        #expect(reply == .text("mqtt"))
        #expect(log.onExecutor == [true])
    }

    /// A decision that comes after the handshake timeout: the client got 503,
    /// and the Connection made from the late decision is freed (its handler's
    /// token with it); it never opened.
    @Test(arguments: backends) func aDecisionSlowerThanTheHandshakeTimeoutLeaksNothing(_ backend: Configuration.Backend) async throws {
        let log = DecisionLog()
        guard let service = try startService(backend, routes: Self.routes(log), configure: {
            $0.handshakeTimeout = .milliseconds(300)
        }) else { return }
        defer { service.stop() }
        let port = service.port
        let answer = try await offThePool { try TestClient.http(port: port, TestClient.upgradeRequest(path: "/slow")) }
        #expect(answer.status == 503)
        #expect(eventually { log.decided == 1 && log.released == 1 }, "the late Connection was released")
        #expect(service.connections().isEmpty)
        #expect(service.channels().isEmpty, "the late decision's channel was never joined")
    }
}

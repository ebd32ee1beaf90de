import ChildProcess
import Foundation
import Logging
import Testing
@testable import WebSocketService

/// `Sec-WebSocket-Protocol` negotiation (RFC 6455 1.9, 4.2.2): the endpoint
/// picks one of the client's offers, the 101 names it, the connection knows it.
@Suite struct SubprotocolTests {
    /// Answers every message with the connection's subprotocol.
    struct WhichProtocol: RawHandler {
        func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
            service.send(Array((connection.subprotocol ?? "none").utf8), opcode: .text, to: connection)
        }
    }

    private static func routes() -> WebSocketRoutes {
        var routes = WebSocketRoutes()
        routes.raw("/graphql", handler: WhichProtocol(), subprotocols: ["graphql-transport-ws", "graphql-ws"])
        routes.raw("/plain", handler: WhichProtocol())
        // An application bug: it names a protocol nobody offered.
        routes.socket("/wrong") { _ in .accept(profile: nil, channel: nil, handler: .raw(WhichProtocol()), subprotocol: "mqtt") }
        return routes
    }

    private static func upgrade(_ port: Int, _ path: String, offering: [String]) throws -> (status: Int, head: String) {
        let request = TestClient.upgradeRequest(path: path, headers: offering.map { "Sec-WebSocket-Protocol: \($0)" })
        let answer = try TestClient.http(port: port, request, timeout: .seconds(2))
        return (answer.status, answer.head)
    }

    @Test(arguments: backends) func theEndpointsPreferenceAmongTheOffers(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: Self.routes()) else { return }
        defer { service.stop() }
        // Offered in two headers, in the client's order; the server's preference wins.
        let client = try TestClient.connect(port: service.port, path: "/graphql",
                                            headers: ["Sec-WebSocket-Protocol: graphql-ws", "Sec-WebSocket-Protocol: x, graphql-transport-ws"])
        try client.send(text: "?")
        #expect(try client.receive() == .text("graphql-transport-ws"))
        let only = try TestClient.connect(port: service.port, path: "/graphql", headers: ["Sec-WebSocket-Protocol: graphql-ws"])
        try only.send(text: "?")
        #expect(try only.receive() == .text("graphql-ws"))
        // No common protocol, or an endpoint without any: no header (the client decides whether to go on).
        let none = try TestClient.connect(port: service.port, path: "/graphql", headers: ["Sec-WebSocket-Protocol: stomp"])
        try none.send(text: "?")
        #expect(try none.receive() == .text("none"))
        let plain = try TestClient.connect(port: service.port, path: "/plain", headers: ["Sec-WebSocket-Protocol: graphql-ws"])
        try plain.send(text: "?")
        #expect(try plain.receive() == .text("none"))
        // Names compare exactly.
        #expect(WebSocketRoutes.subprotocol(["graphql-ws"], offered: ["GraphQL-WS"]) == nil)
    }

    @Test(arguments: backends) func the101NamesTheChoiceAndNothingElse(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: Self.routes()) else { return }
        defer { service.stop() }
        let port = service.port
        let chosen = try TestClient.connect(port: port, path: "/graphql", headers: ["Sec-WebSocket-Protocol: graphql-ws"])
        withExtendedLifetime(chosen) {}
        // The raw 101 head, read by hand.
        let fd = try TestClient.tcp(port: port)
        defer { close(fd) }
        try TestClient.writeAll(fd, Array(TestClient.upgradeRequest(path: "/graphql", headers: ["Sec-WebSocket-Protocol: a, graphql-ws"]).utf8))
        var head = ""
        let deadline = ContinuousClock.now + .seconds(5)
        while !head.contains("\r\n\r\n") { head += String(decoding: try TestClient.readSome(fd, deadline: deadline), as: UTF8.self) }
        #expect(head.hasPrefix("HTTP/1.1 101"))
        #expect(head.lowercased().contains("sec-websocket-protocol: graphql-ws\r\n"))
        let fd2 = try TestClient.tcp(port: port)
        defer { close(fd2) }
        try TestClient.writeAll(fd2, Array(TestClient.upgradeRequest(path: "/plain", headers: ["Sec-WebSocket-Protocol: a"]).utf8))
        var head2 = ""
        while !head2.contains("\r\n\r\n") { head2 += String(decoding: try TestClient.readSome(fd2, deadline: deadline), as: UTF8.self) }
        #expect(head2.hasPrefix("HTTP/1.1 101") && !head2.lowercased().contains("sec-websocket-protocol"))
        // A choice the client did not offer is refused rather than sent.
        #expect(try Self.upgrade(port, "/wrong", offering: ["stomp"]).status == 500)
        #expect(try Self.upgrade(port, "/wrong", offering: []).status == 500)
    }

    /// A real client that needs its protocol: Python's websockets offers two
    /// and checks the server's answer.
    @Test(arguments: backends) func pythonWebsocketsGetsItsProtocol(_ backend: Configuration.Backend) throws {
        guard let python = InteropTests.python else { return }
        guard let service = try startService(backend, routes: Self.routes()) else { return }
        defer { service.stop() }
        let script = #"""
        import asyncio, sys
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake

        async def main(port):
            async with connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=["graphql-ws", "graphql-transport-ws"],
                               open_timeout=5, close_timeout=5) as ws:
                assert ws.subprotocol == "graphql-transport-ws", ws.subprotocol
                await ws.send("?")
                assert await asyncio.wait_for(ws.recv(), 5) == "graphql-transport-ws"
            # The server naming a protocol the client did not offer would fail the client; ours refuses instead.
            try:
                async with connect(f"ws://127.0.0.1:{port}/wrong", subprotocols=["stomp"], open_timeout=5):
                    raise SystemExit("connected to /wrong")
            except InvalidHandshake as e:
                assert "500" in str(e), e
            print("subprotocol ok")

        asyncio.run(asyncio.wait_for(main(int(sys.argv[1])), 30))
        """#
        let process = try ChildProcess(python, ["-c", script, String(service.port)], output: .capture)
        let output = process.readToEnd()
        #expect(process.wait() == 0, "\(output)")
        #expect(output.contains("subprotocol ok"), "\(output)")
    }
}

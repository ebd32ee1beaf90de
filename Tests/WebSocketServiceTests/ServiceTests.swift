import Foundation
import Logging
import Synchronization
import Testing
@testable import WebSocketService

private func testRoutes(_ configure: (inout WebSocketRoutes) -> Void = { _ in }) -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.page("/") { _ in .html("<h1>hello</h1>") }
    routes.socket("/ws", handler: TestHandler())
    configure(&routes)
    return routes
}

private struct Presence: Equatable {
    var userID: String
    var connected: Bool
}

/// The param of an online-update.
private func presence(_ envelope: [String: Any]) -> Presence? {
    guard envelope["cmd"] as? String == "online-update", let param = envelope["param"] as? [String: Any],
          let userID = param["userID"] as? String, let connected = param["connected"] as? Bool else { return nil }
    return Presence(userID: userID, connected: connected)
}

/// The service over real loopback sockets, on each backend.
@Suite(.serialized) struct ServiceTests {
    @Test(arguments: backends) func upgradeJoinsTheQueryChannel(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=room%201")
        let me = try client.whoami()
        #expect(me.channels == ["room 1"])
        #expect(service.connections(in: "room 1").map(\.id) == [me.id])
        #expect(service.connection(me.id)?.channels == ["room 1"])
    }

    @Test(arguments: backends) func upgradeWithoutChannelJoinsARandomOne(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let a = try TestClient.connect(port: service.port, path: "/ws")
        let b = try TestClient.connect(port: service.port, path: "/ws?ch=")
        let (ma, mb) = (try a.whoami(), try b.whoami())
        #expect(ma.channels.count == 1 && ma.channels[0].hasPrefix("channel-"))
        #expect(mb.channels.count == 1 && mb.channels[0].hasPrefix("channel-"))
        #expect(ma.channels != mb.channels)
        #expect(ma.userID == ma.id.uuidString.lowercased(), "an anonymous user is its connection")
    }

    @Test(arguments: backends) func pagesAndUnknownPaths(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let page = try TestClient.http(port: service.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(page.status == 200)
        #expect(page.body == "<h1>hello</h1>")
        #expect(page.head.lowercased().contains("content-type: text/html"))
        #expect(try TestClient.http(port: service.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").status == 404)
        #expect(try TestClient.http(port: service.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").status == 405)
        #expect(try TestClient.http(port: service.port, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").status == 426)
        #expect(try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/other")).status == 404)
    }

    @Test(arguments: backends) func originOutsideTheAllowListIsRefused(_ backend: Configuration.Backend) throws {
        let routes = testRoutes { $0.allowedOrigins = ["https://good.example"] }
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }
        let refused = try TestClient.http(port: service.port,
                                          TestClient.upgradeRequest(path: "/ws", headers: ["Origin: https://evil.example"]))
        #expect(refused.status == 403)
        let good = try TestClient.connect(port: service.port, headers: ["Origin: https://good.example"])
        _ = try good.whoami()
        let noOrigin = try TestClient.connect(port: service.port) // not a browser
        _ = try noOrigin.whoami()
        #expect(service.connections().count == 2)
    }

    @Test(arguments: backends) func authenticationHookDecides(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.socket("/ws", handler: TestHandler()) { request in
            guard let session = request.cookie("session") else { return .refuse(status: 401) }
            guard session != "banned" else { return .refuse(status: 403, message: "banned") }
            return .accept(Profile(userID: "user-\(session)", name: request.header("X-Name") ?? ""))
        }
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }
        #expect(try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/ws")).status == 401)
        let banned = try TestClient.http(port: service.port,
                                         TestClient.upgradeRequest(path: "/ws", headers: ["Cookie: a=b; session=banned"]))
        #expect(banned.status == 403)
        #expect(banned.body == "banned")
        let client = try TestClient.connect(port: service.port, headers: ["Cookie: session=42", "X-Name: Ada"])
        let me = try client.whoami()
        #expect(me.userID == "user-42")
        #expect(service.connection(me.id)?.profile == Profile(userID: "user-42", name: "Ada"))
        #expect(service.connections().count == 1)
    }

    @Test(arguments: backends) func envelopeRoundTrip(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=r")
        let me = try client.whoami()
        // The param comes back byte for byte: never re-serialized.
        let param = #"{"b": [1, 2.50, "é\u00e9"],  "a" :null}"#
        try client.send(text: #"{"cmd":"echo","param":"# + param + "}")
        #expect(try client.receive() == .text(#"{"cmd":"echo","param":"# + param + "}"))
        // Server-initiated, with from and channel.
        let from = UUID()
        #expect(service.writeConnection(cmd: "note", param: try RawJSON(validating: "[1,2]"), id: me.id, from: from,
                                        channel: "r"))
        #expect(try client.receive() == .text(#"{"from":"\#(from.uuidString.lowercased())","channel":"r","cmd":"note","param":[1,2]}"#))
        #expect(!service.writeConnection(cmd: "x", param: .null, id: UUID()), "unknown id")
    }

    @Test(arguments: backends) func badJSONIsAnsweredAndTheConnectionStays(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port)
        for bad in ["not json", #"{"cmd":1}"#, #"{"param":{}}"#, #"{"cmd":"echo","param":[1,]}"#] {
            try client.send(text: bad)
            let reply = try client.receiveJSON()
            #expect(reply["cmd"] as? String == "error", "\(bad)")
            #expect(((reply["param"] as? [String: Any])?["message"] as? String)?.hasPrefix("bad message") == true)
        }
        try client.send(.binary, [1, 2, 3])
        let binaryReply = try client.receiveJSON()
        #expect(binaryReply["cmd"] as? String == "error")
        try client.send(text: #"{"cmd":"echo","param":7}"#)
        #expect(try client.receive() == .text(#"{"cmd":"echo","param":7}"#))
    }

    @Test(arguments: backends) func handlerErrorIsLoggedAndReported(_ backend: Configuration.Backend) throws {
        let capture = LogCapture()
        guard let service = try startService(backend, routes: testRoutes(), logger: capture.logger) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port)
        let me = try client.whoami()
        try client.send(text: #"{"cmd":"fail"}"#)
        #expect(try client.receive() == .text(#"{"cmd":"error","param":{"message":"boom"}}"#))
        try client.send(text: #"{"cmd":"echo","param":"still here"}"#)
        #expect(try client.receive() == .text(#"{"cmd":"echo","param":"still here"}"#))
        let logged = capture.entries.withLock { $0 }.filter { $0.level == .warning && $0.message == "handler failed" }
        #expect(logged.count == 1)
        #expect(logged.first?.metadata["error"] == "boom")
        #expect(logged.first?.metadata["connection"] == me.id.uuidString.lowercased())
    }

    @Test(arguments: backends) func joinAndLeaveTellTheOtherMembers(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let a = try TestClient.connect(port: service.port, path: "/ws?ch=room")
        _ = try a.whoami()
        let b = try TestClient.connect(port: service.port, path: "/ws?ch=room")
        let mb = try b.whoami()
        // a hears b's upgrade join.
        let joinedB = try a.receiveJSON()
        #expect(joinedB["cmd"] as? String == "online-update")
        #expect(joinedB["channel"] as? String == "room")
        #expect(joinedB["from"] as? String == mb.id.uuidString.lowercased())
        #expect(presence(joinedB) == Presence(userID: mb.userID, connected: true))

        let c = try TestClient.connect(port: service.port, path: "/ws?ch=elsewhere")
        let mc = try c.whoami()
        #expect(service.join(mc.id, "room"))
        #expect(!service.join(mc.id, "room"), "already a member")
        #expect(!service.join(UUID(), "room"), "unknown connection")
        for client in [a, b] {
            let update = try client.receiveJSON()
            #expect(update["cmd"] as? String == "online-update")
            #expect(presence(update) == Presence(userID: mc.userID, connected: true))
        }
        #expect(Set(service.connections(in: "room").map(\.id)).count == 3)
        #expect(service.connection(mc.id)?.channels == ["elsewhere", "room"])

        #expect(service.leave(mc.id, "room"))
        #expect(!service.leave(mc.id, "room"), "not a member any more")
        for client in [a, b] {
            let update = try client.receiveJSON()
            #expect(presence(update) == Presence(userID: mc.userID, connected: false))
        }
        // A handler joining through the connection; c hears nothing about itself.
        try c.send(text: #"{"cmd":"join","param":"room"}"#)
        #expect(try c.receive() == .text(#"{"cmd":"joined","param":true}"#))
        _ = try a.receiveJSON()
        _ = try b.receiveJSON()
        // Closing tells the remaining members.
        try b.sendClose()
        for client in [a, c] {
            let update = try client.receiveEnvelope(cmd: "online-update")
            #expect(presence(update) == Presence(userID: mb.userID, connected: false))
        }
        #expect(service.connections(in: "room").count == 2)
        #expect(service.connections(in: "elsewhere").map(\.id) == [mc.id])
    }

    @Test(arguments: backends) func writeAllReachesEveryConnection(_ backend: Configuration.Backend) throws {
        let routes = testRoutes { $0.raw("/raw", handler: Echo()) }
        guard let service = try startService(backend, routes: routes, configure: { $0.announcesPresence = false })
        else { return }
        defer { service.stop() }
        let clients = try (0..<4).map { i in try TestClient.connect(port: service.port, path: "/ws?ch=c\(i % 2)") }
        for client in clients { _ = try client.whoami() }
        let raw = try TestClient.connect(port: service.port, path: "/raw")
        try raw.send(text: "ping")
        #expect(try raw.receive() == .text("ping"))
        #expect(service.connections().count == 5)
        #expect(service.writeAll(cmd: "news", param: RawJSON(string: "hi")) == 4, "raw endpoints are left out")
        for client in clients {
            #expect(try client.receive() == .text(#"{"cmd":"news","param":"hi"}"#))
        }
        let except = try clients[0].whoami().id
        #expect(service.writeChannel(cmd: "c0", param: .null, channel: "c0", except: except) == 1)
        #expect(try clients[2].receive() == .text(#"{"channel":"c0","cmd":"c0","param":null}"#))
        #expect(service.writeChannel(cmd: "none", param: .null, channel: "nobody") == 0)
    }

    @Test(arguments: backends) func statusAndConnections(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        let a1 = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let a2 = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let b1 = try TestClient.connect(port: service.port, path: "/ws?ch=b")
        let ids = try [a1, a2, b1].map { try $0.whoami().id }
        let message = #"{"cmd":"echo","param":"12345"}"#
        try b1.send(text: message)
        _ = try b1.receiveEnvelope(cmd: "echo")

        let status = service.status()
        #expect(status.connections == 3)
        #expect(status.channels == ["a": 2, "b": 1])
        #expect(status.backend == (backend == .uring ? "io_uring" : "epoll"))
        #expect(status.accepted >= 3)
        #expect(status.messagesIn >= 4)
        #expect(status.bytesIn >= UInt64(3 * #"{"cmd":"whoami"}"#.utf8.count + message.utf8.count))
        #expect(status.messagesOut >= 4)
        #expect(status.uptime > 0)

        #expect(service.connections().map(\.id) == ids, "oldest first")
        #expect(service.connections(in: "a").map(\.id) == Array(ids[0..<2]))
        #expect(service.connections(in: "b").map(\.id) == [ids[2]])
        #expect(service.connections(in: "c").isEmpty)
        let b = try #require(service.connection(ids[2]))
        #expect(b.counters.messagesIn == 2)
        #expect(b.counters.bytesIn == UInt64(#"{"cmd":"whoami"}"#.utf8.count + message.utf8.count))
        #expect(b.counters.messagesOut == 2)
        #expect(b.remoteAddress.hasPrefix("127.0.0.1:"))
        #expect(b.path == "/ws")
        #expect(b.engineID != 0)
        #expect(abs(b.started.timeIntervalSinceNow) < 60)
    }

    @Test(arguments: backends) func closeReachesTheClientWithItsCode(_ backend: Configuration.Backend) throws {
        let closes = Locked<[(UUID, UInt16)]>([])
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        defer { service.stop() }
        service.onClose = { connection, code, _ in closes.withLock { $0.append((connection.id, code.rawValue)) } }
        let client = try TestClient.connect(port: service.port)
        let me = try client.whoami()
        #expect(service.close(me.id, code: CloseCode(rawValue: 4001), reason: "bye"))
        #expect(try client.receive() == .close(code: 4001, reason: "bye"))
        try client.sendClose(code: 4001)
        try client.waitForEOF()
        #expect(eventually { closes.withLock { $0.count } == 1 })
        #expect(closes.withLock { $0.first?.0 } == me.id)
        #expect(service.connection(me.id) == nil)
        #expect(!service.close(me.id), "already gone")

        // Asked by the handler itself.
        let other = try TestClient.connect(port: service.port)
        try other.send(text: #"{"cmd":"close","param":4002}"#)
        #expect(try other.receive() == .close(code: 4002, reason: "asked"))
    }

    @Test(arguments: backends) func openAndCloseCallbacksRunOncePerConnection(_ backend: Configuration.Backend) throws {
        let opens = Locked<[UUID: Int]>([:])
        let closes = Locked<[UUID: Int]>([:])
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        service.onOpen = { connection in
            // Open comes after the first join.
            #expect(connection.channels.count == 1)
            opens.withLock { $0[connection.id, default: 0] += 1 }
        }
        service.onClose = { connection, _, _ in
            #expect(connection.channels.isEmpty)
            closes.withLock { $0[connection.id, default: 0] += 1 }
        }
        var clients = try (0..<6).map { _ in try TestClient.connect(port: service.port) }
        let ids = try clients.map { try $0.whoami().id }
        #expect(opens.withLock { $0 } == Dictionary(uniqueKeysWithValues: ids.map { ($0, 1) }))
        try clients[0].sendClose()                // client-initiated close handshake
        try clients[0].waitForEOF()
        service.close(ids[1], code: .goingAway)    // server-initiated
        #expect(try clients[1].receive() == .close(code: 1001, reason: ""))
        try clients[1].sendClose(code: 1001)
        clients.remove(at: 2)                     // TCP dropped without a close frame
        #expect(eventually { closes.withLock { $0.count } == 3 })
        // Graceful stop closes the rest (these clients never answer, so keep the wait short).
        service.stop(timeout: .milliseconds(200))
        #expect(closes.withLock { $0 } == Dictionary(uniqueKeysWithValues: ids.map { ($0, 1) }))
        #expect(opens.withLock { $0.count } == 6)
        #expect(service.connections().isEmpty)
        #expect(service.channels().isEmpty)
    }

    @Test(arguments: backends) func gracefulStopSendsGoingAway(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: testRoutes()) else { return }
        let client = try TestClient.connect(port: service.port)
        _ = try client.whoami()
        let stopper = Thread { service.stop(timeout: .seconds(3)) }
        stopper.start()
        #expect(try client.receive() == .close(code: 1001, reason: ""))
        try client.sendClose(code: 1001)
        try client.waitForEOF()
    }

    @Test(arguments: backends) func echoModeTextAndBinary(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("*", handler: Echo())
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }
        for path in ["/", "/anything?x=1"] {
            let client = try TestClient.connect(port: service.port, path: path)
            for size in [0, 1, 125, 126, 65535, 65536, 1 << 20] {
                // Exactly `size` bytes, with 1- to 4-byte characters.
                let text = String(repeating: "aé€😀", count: size / 10) + String(repeating: "a", count: size % 10)
                try client.send(text: text)
                #expect(try client.receive(timeout: .seconds(10)) == .text(text), "text of \(text.utf8.count) bytes")
                let seed = UInt8.random(in: 0...255)
                let binary = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                    for i in 0..<size { buffer[i] = UInt8(truncatingIfNeeded: i &* 131) ^ seed }
                    count = size
                }
                try client.send(.binary, binary)
                #expect(try client.receive(timeout: .seconds(10)) == .binary(binary), "binary of \(size) bytes")
            }
            // A fragmented message comes back whole.
            try client.send(.text, Array("frag".utf8), fin: false)
            try client.send(.continuation, Array("mented".utf8))
            #expect(try client.receive() == .text("fragmented"))
        }
    }
}

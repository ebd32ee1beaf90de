import Logging
import Testing
import WebSocketService

// The README's example, kept here word for word (but port 0) so it compiles
// and works as documented.
private struct Chat: EnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        guard message.cmd == "say", let channel = message.channel else { return }
        service.writeChannel(cmd: "said", param: message.param, channel: channel, from: connection.id)
    }
}

@Suite struct ReadmeExampleTests {
    @Test func readmeChatExample() throws {
        var routes = WebSocketRoutes()
        routes.page("/") { _ in .html("<h1>hello</h1>") }
        // A client may name any channel: only its members may write to it.
        let membersOnly = Authorization(command: { connection, message in
            guard let channel = message.channel, !connection.channels.contains(channel) else { return .allow }
            return .refuse("not a member of \(channel)")
        })
        routes.socket("/ws", handler: Chat(), authorization: membersOnly) { request in
            .accept(Profile(userID: request.queryItem("user") ?? "guest"))
        }
        let service = try WebSocketServer(routes: routes, configuration: .init(host: "127.0.0.1", port: 0))
        try service.start()
        defer { service.stop() }

        let page = try TestClient.http(port: service.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(page.status == 200 && page.body == "<h1>hello</h1>")

        let alice = try TestClient.connect(port: service.port, path: "/ws?ch=room&user=alice")
        let bob = try TestClient.connect(port: service.port, path: "/ws?ch=room&user=bob")
        // Bob's join tells Alice; wait for it so Bob is a member before Alice speaks.
        _ = try alice.receiveEnvelope(cmd: "online-update")
        try alice.send(text: #"{"channel":"room","cmd":"say","param":{"text":"hi"}}"#)
        for client in [alice, bob] {
            let said = try client.receiveEnvelope(cmd: "said")
            #expect(said["channel"] as? String == "room")
            #expect((said["param"] as? [String: Any])?["text"] as? String == "hi")
        }

        // Mallory is in another room and names this one: refused, and nobody in it hears her.
        let mallory = try TestClient.connect(port: service.port, path: "/ws?ch=elsewhere&user=mallory")
        try mallory.send(text: #"{"channel":"room","cmd":"say","param":{"text":"spoof"}}"#)
        let refused = try mallory.receiveEnvelope(cmd: "error")
        #expect((refused["param"] as? [String: Any])?["code"] as? String == "command-refused")
        #expect((refused["param"] as? [String: Any])?["message"] as? String == "not a member of room")
        // Alice speaks again: the next "said" Bob hears is hers, not Mallory's.
        try alice.send(text: #"{"channel":"room","cmd":"say","param":{"text":"after"}}"#)
        let next = try bob.receiveEnvelope(cmd: "said")
        #expect((next["param"] as? [String: Any])?["text"] as? String == "after")
    }
}

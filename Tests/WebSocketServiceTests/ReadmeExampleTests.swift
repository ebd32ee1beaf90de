import OffThePool
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

/// The README's async example's store.
private actor History {
    private var lines: [String: [String]] = [:]
    func append(_ line: String, to channel: String) { lines[channel, default: []].append(line) }
    func recent(_ channel: String) -> [String] { Array(lines[channel, default: []].suffix(50)) }
}

@Suite struct ReadmeExampleTests {
    /// The README's TLS example, word for word but port 0: it compiles, and
    /// without those files on this machine the server refuses to start, naming one.
    @Test func readmeTLSExample() throws {
        let routes = WebSocketRoutes()
        var configuration = Configuration(host: "::", port: 0)
        configuration.tls = Configuration.TLS(identities: [
            .init(certificateChainFile: "/etc/ssl/example.com/fullchain.pem", privateKeyFile: "/etc/ssl/example.com/key.pem"),
            .init(serverName: "chat.example.org", certificateChainFile: "/etc/ssl/org/fullchain.pem",
                  privateKeyFile: "/etc/ssl/org/key.pem"),
        ])
        #expect(throws: WebSocketServer.Error.self) {
            let server = try WebSocketServer(routes: routes, configuration: configuration)
            // After the certificate was renewed on disk: new connections get it, open ones keep theirs.
            try server.reloadTLS()
        }
    }

    @Test func readmeAsyncChatExample() async throws {
        let history = History()
        var routes = WebSocketRoutes()
        // The first channel is the query's `ch`: ws://host:8080/chat?ch=lobby
        routes.socket("/chat") { inbound, outbound, context in
            for await message in inbound {
                guard let channel = message.channel, context.connection.channels.contains(channel) else {
                    try await outbound.write(cmd: "error", param: RawJSON(string: "join the channel first"))
                    continue
                }
                switch message.cmd {
                case "say":
                    guard let line = try? message.param.decode(String.self) else {
                        try await outbound.write(cmd: "error", param: RawJSON(string: "say takes a string"))
                        continue
                    }
                    await history.append(line, to: channel)
                    context.server.writeChannel(cmd: "said", param: message.param, channel: channel, from: context.connection.id)
                case "history":
                    try await outbound.write(cmd: "history", param: RawJSON(encoding: await history.recent(channel)))
                default:
                    try await outbound.write(cmd: "error", param: RawJSON(string: "unknown command \(message.cmd)"))
                }
            }
        }
        let server = try WebSocketServer(routes: routes, configuration: .init(host: "127.0.0.1", port: 0))
        try server.start()
        defer { server.stop() }

        let port = server.port
        let (said, history2, refused, unknown) = try await offThePool { () -> ([String], [String]?, String?, String?) in
            let alice = try TestClient.connect(port: port, path: "/chat?ch=lobby")
            let bob = try TestClient.connect(port: port, path: "/chat?ch=lobby")
            _ = try alice.receiveEnvelope(cmd: "online-update")
            try alice.send(text: #"{"channel":"lobby","cmd":"say","param":"hi"}"#)
            try alice.send(text: #"{"channel":"lobby","cmd":"say","param":"again"}"#)
            var said: [String] = []
            for _ in 0..<2 { said.append(try bob.receiveEnvelope(cmd: "said")["param"] as? String ?? "?") }
            // Both says were stored before Bob asks: his session's history comes after them.
            try bob.send(text: #"{"channel":"lobby","cmd":"history"}"#)
            let history = try bob.receiveEnvelope(cmd: "history")["param"] as? [String]
            try bob.send(text: #"{"channel":"elsewhere","cmd":"say","param":"spoof"}"#)
            let refused = try bob.receiveEnvelope(cmd: "error")["param"] as? String
            try bob.send(text: #"{"channel":"lobby","cmd":"dance"}"#)
            let unknown = try bob.receiveEnvelope(cmd: "error")["param"] as? String
            // A malformed say is answered; the connection stays open.
            try bob.send(text: #"{"channel":"lobby","cmd":"say","param":{"not":"a string"}}"#)
            guard try bob.receiveEnvelope(cmd: "error")["param"] as? String == "say takes a string" else {
                throw ClientError("a malformed say was not answered")
            }
            try bob.send(text: #"{"channel":"lobby","cmd":"history"}"#)
            guard try bob.receiveEnvelope(cmd: "history")["param"] as? [String] == ["hi", "again"] else {
                throw ClientError("the session did not go on after a malformed say")
            }
            return (said, history, refused, unknown)
        }
        #expect(said == ["hi", "again"])
        #expect(history2 == ["hi", "again"])
        #expect(refused == "join the channel first")
        #expect(unknown == "unknown command dance")
    }

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

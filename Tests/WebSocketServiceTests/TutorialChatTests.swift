import OffThePool
import Testing
import WebSocketService

// The tutorial "A chat server in ten minutes" (WebSocketService.docc): its final
// ChatRoutes.swift, ChatStore.swift and ChatPage.swift are in TutorialChat/,
// byte for byte (scripts/docs compares them with the catalog's Resources), and
// run here against test clients the way the tutorial's last step describes.
@Suite struct TutorialChatTests {
    @Test func tutorialChatServer() async throws {
        let server = try WebSocketServer(routes: chatRoutes(), configuration: .init(host: "127.0.0.1", port: 0))
        try server.start()
        defer { server.stop() }
        let port = server.port

        let page = try TestClient.http(port: port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(page.status == 200 && page.body.contains("/_ws/socket.js") && page.body.contains("/live?ch="))

        typealias Result = (said: [String], history: [[String: String]], refused: String?, refusedMessage: String?,
                            next: String?, unknown: String?, typingAtBob: String?, typingAtAlice: String?)
        let result = try await offThePool { () -> Result in
            let alice = try TestClient.connect(port: port, path: "/chat?ch=lobby&user=alice")
            let bob = try TestClient.connect(port: port, path: "/chat?ch=lobby&user=bob")
            // Bob's join tells Alice; once she has heard it, he is a member.
            _ = try alice.receiveEnvelope(cmd: "online-update")
            try alice.send(text: #"{"channel":"lobby","cmd":"say","param":"hi"}"#)
            var said: [String] = []
            for client in [alice, bob] {
                let line = try client.receiveEnvelope(cmd: "said")["param"] as? [String: String]
                said.append("\(line?["user"] ?? "?"): \(line?["text"] ?? "?")")
            }
            // Stored before it was sent: Bob's history has it.
            try bob.send(text: #"{"channel":"lobby","cmd":"history"}"#)
            let history = try bob.receiveEnvelope(cmd: "history")["param"] as? [[String: String]] ?? []

            // Mallory is in another room: the Authorization refuses her line, and nobody in lobby hears it.
            let mallory = try TestClient.connect(port: port, path: "/chat?ch=elsewhere&user=mallory")
            try mallory.send(text: #"{"channel":"lobby","cmd":"say","param":"spoof"}"#)
            let refusal = try mallory.receiveEnvelope(cmd: "error")["param"] as? [String: Any]
            try alice.send(text: #"{"channel":"lobby","cmd":"say","param":"after"}"#)
            let next = (try bob.receiveEnvelope(cmd: "said")["param"] as? [String: String])?["text"]
            // A handler's error goes back to that client; the connection stays open.
            try bob.send(text: #"{"channel":"lobby","cmd":"dance"}"#)
            let unknown = (try bob.receiveEnvelope(cmd: "error")["param"] as? [String: Any])?["message"] as? String

            // The synchronous endpoint: typing signals to the room's others, not to the typist.
            let aliceLive = try TestClient.connect(port: port, path: "/live?ch=lobby/typing&user=alice")
            let bobLive = try TestClient.connect(port: port, path: "/live?ch=lobby/typing&user=bob")
            _ = try aliceLive.receiveEnvelope(cmd: "online-update")
            try aliceLive.send(text: #"{"channel":"lobby/typing","cmd":"typing"}"#)
            let typingAtBob = try bobLive.receiveEnvelope(cmd: "typing")["param"] as? String
            try bobLive.send(text: #"{"channel":"lobby/typing","cmd":"typing"}"#)
            // Had Alice heard her own signal, this would be "alice".
            let typingAtAlice = try aliceLive.receiveEnvelope(cmd: "typing")["param"] as? String
            return (said, history, refusal?["code"] as? String, refusal?["message"] as? String,
                    next, unknown, typingAtBob, typingAtAlice)
        }
        #expect(result.said == ["alice: hi", "alice: hi"])
        #expect(result.history == [["user": "alice", "text": "hi"]])
        #expect(result.refused == "command-refused")
        #expect(result.refusedMessage == "not a member of lobby")
        #expect(result.next == "after")
        #expect(result.unknown == "unknown command dance")
        #expect(result.typingAtBob == "alice")
        #expect(result.typingAtAlice == "bob")
    }
}

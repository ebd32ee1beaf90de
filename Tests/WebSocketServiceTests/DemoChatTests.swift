import Foundation
import Testing

/// The demo chat (wsdemo, as a process) under a user who fills a room.
@Suite(.serialized) struct DemoChatTests {
    /// One user says twenty messages of 900 KB (18 MB, past the 16 MiB send
    /// queue): the room's history keeps at most 4 MiB of them, so the
    /// next `hello` gets its reply and the history instead of a 1008 close.
    @Test(arguments: ["epoll", "uring"]) func aFullRoomStillAnswersHello(_ backend: String) throws {
        guard let executable = DemoServer.executable else {
            print("SKIPPED: wsdemo is not built")
            return
        }
        let server = try DemoServer(executable: executable, arguments: ["--backend", backend])
        let alice = try TestClient.connect(port: server.port, path: "/ws?ch=room&user=alice")
        let text = String(repeating: "a", count: 900_000)
        for n in 0..<20 {
            try alice.send(text: #"{"channel":"room","cmd":"say","param":{"n":\#(n),"text":"\#(text)"}}"#)
            // Her own message comes back (the sender is a member): read it so her queue stays short.
            let said = try alice.receiveEnvelope(cmd: "say", timeout: .seconds(20))
            #expect((said["param"] as? [String: Any])?["n"] as? Int == n)
        }
        let bob = try TestClient.connect(port: server.port, path: "/ws?ch=room&user=bob")
        try bob.send(text: #"{"channel":"room","cmd":"hello"}"#)
        let hello = try bob.receiveEnvelope(cmd: "hello", timeout: .seconds(20))
        #expect((hello["param"] as? [String: Any])?["userID"] as? String == "bob")
        let history = try bob.receive(timeout: .seconds(20))
        guard case .text(let body) = history else {
            Issue.record("expected the history, got \(history)")
            return
        }
        #expect(body.utf8.count <= (4 << 20) + 4096, "history is bounded in bytes: \(body.utf8.count)")
        let kept = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        let items = try #require(kept["param"] as? [[String: Any]])
        // The newest are kept, whole.
        #expect((1...4).contains(items.count))
        #expect(((items.last?["param"] as? [String: Any])?["n"] as? Int) == 19)
        // Bob is still served.
        try bob.send(text: #"{"channel":"room","cmd":"say","param":"still here"}"#)
        #expect(try bob.receiveEnvelope(cmd: "say", timeout: .seconds(20))["param"] as? String == "still here")
    }
}

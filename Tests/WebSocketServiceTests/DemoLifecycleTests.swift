import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// wsdemo as a process: its ServiceGroup's signals.
@Suite(.serialized) struct DemoLifecycleTests {
    /// SIGTERM shuts the demo's ServiceGroup down gracefully: the client
    /// gets a close frame with 1001, and the process exits with status 0.
    @Test(arguments: ["epoll", "uring"]) func sigtermClosesWith1001AndExitsCleanly(_ backend: String) throws {
        guard let executable = DemoServer.executable else {
            print("SKIPPED: wsdemo is not built")
            return
        }
        let server = try DemoServer(executable: executable, arguments: ["--backend", backend])
        let alice = try TestClient.connect(port: server.port, path: "/ws?ch=room&user=alice")
        // A round trip: the connection is open on the server before the signal.
        try alice.send(text: #"{"channel":"room","cmd":"hello"}"#)
        _ = try alice.receiveEnvelope(cmd: "hello", timeout: .seconds(20))

        kill(server.process.pid, SIGTERM)
        var close: TestClient.Received?
        // What was on its way (the room's history) comes first; the close ends it.
        for _ in 0..<100 where close == nil {
            let received = try alice.receive(timeout: .seconds(30))
            if case .close = received { close = received }
        }
        #expect(close == .close(code: 1001, reason: ""))
        try alice.sendClose(code: 1001)
        // A bound that only guards against a hang: the stop's own timeout is 3 s.
        let exited = eventually(timeout: .seconds(60)) { !server.process.isRunning }
        #expect(exited, "wsdemo still runs a minute after SIGTERM")
        if exited { #expect(server.process.wait() == 0) }
    }
}

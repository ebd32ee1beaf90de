import Foundation
import Testing
@testable import WebSocketService

/// Sends the application ordered arrive in that order, whichever threads
/// made them: a send on the connection's own loop thread waits behind the
/// sends other threads made before it (they wait in the loop's inbox).
/// Runs `body` on a new thread and waits until it is done.
private func onAnotherThread(_ body: @escaping @Sendable () -> Void) {
    let done = DispatchSemaphore(value: 0)
    Thread {
        body()
        done.signal()
    }.start()
    done.wait()
}

@Suite struct SendOrderTests {
    @Test(arguments: backends) func aLoopSendWaitsBehindEarlierSendsFromOtherThreads(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("/ws", handler: RawHandlerFunction { service, connection, message, _ in
            guard message.text == "go" else { return }
            // Another thread sends first and is done before this one sends;
            // then this (loop) thread sends, and closes.
            onAnotherThread {
                for i in 0..<3 { service.send(Array("other \(i)".utf8), opcode: .text, to: connection) }
            }
            service.send(Array("loop".utf8), opcode: .text, to: connection)
            service.close(connection, code: CloseCode(rawValue: 4000), reason: "after all")
        }, limits: .unlimited)
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port)
        try client.send(text: "go")
        var got: [TestClient.Received] = []
        for _ in 0..<5 { got.append(try client.receive()) }
        #expect(got == [.text("other 0"), .text("other 1"), .text("other 2"), .text("loop"),
                        .close(code: 4000, reason: "after all")])
    }

    @Test(arguments: backends) func aLoopFanOutWaitsBehindEarlierSendsFromOtherThreads(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.socket("/ws", handler: EnvelopeHandlerFunction { service, connection, message, _ in
            guard message.cmd == "go" else { return }
            onAnotherThread { service.write(Envelope(cmd: "first"), to: connection) }
            service.writeChannel(cmd: "second", param: .null, channel: "room")
        }, limits: .unlimited)
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=room")
        try client.send(text: #"{"cmd":"go"}"#)
        #expect(try client.receive() == .text(#"{"cmd":"first","param":null}"#))
        #expect(try client.receive() == .text(#"{"channel":"room","cmd":"second","param":null}"#))
    }
}

import Foundation
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct ServiceStopTests {
    /// Once stop() has returned the port refuses connections, before the
    /// server is destroyed. On io_uring the armed multishot accept held the
    /// closed listener, which stayed in the SO_REUSEPORT group and took
    /// connections nobody served until `cws_server_destroy`.
    @Test(arguments: backends)
    func aStoppedServerRefusesConnectionsAtOnce(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: WebSocketRoutes()) else { return }
        let port = service.port
        service.stop(timeout: .seconds(1))
        #expect(throws: (any Error).self, "port \(port) still accepts after stop()") {
            Glibc.close(try TestClient.tcp(port: port))
        }
    }

    /// stop() from a handler runs on a loop thread, which cannot wait for
    /// itself: the stop begins (1001 to every client), the handler returns,
    /// and a thread of the service's own finishes it, so the port is free
    /// afterwards without anyone calling stop() again.
    @Test(arguments: backends)
    func stopFromAHandlerFinishesOnItsOwn(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("*", handler: RawHandlerFunction { service, _, _, _ in service.stop(timeout: .seconds(1)) })
        guard let service = try startService(backend, routes: routes) else { return }
        let port = service.port
        let client = try TestClient.connect(port: port, path: "/raw")
        try client.send(text: "stop")
        #expect(try client.receive() == .close(code: 1001, reason: ""))
        try client.sendClose(code: 1001)
        try client.waitForEOF()
        // Nobody calls stop() again: the service's own thread joins the loops
        // and the listeners go away (a hang detector, not a measurement).
        var refused = false
        for _ in 0..<500 where !refused {
            refused = (try? TestClient.connect(port: port, path: "/raw", timeout: .milliseconds(200))) == nil
            if !refused { usleep(10_000) }
        }
        #expect(refused, "the port still accepts connections after a stop from a handler")
        #expect(service.status().loopsFailed == 0)
    }
}

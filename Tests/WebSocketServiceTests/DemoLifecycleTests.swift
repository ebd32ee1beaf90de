import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// wsdemo as a process: its ServiceGroup's signals and its /metrics page.
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

    /// /metrics is Prometheus' text format: the connection gauge and the
    /// message counters, with the traffic in them once a sample has been taken.
    @Test(arguments: ["epoll", "uring"]) func metricsPageShowsConnectionsAndMessages(_ backend: String) throws {
        guard let executable = DemoServer.executable else {
            print("SKIPPED: wsdemo is not built")
            return
        }
        let server = try DemoServer(executable: executable, arguments: ["--backend", backend])
        let alice = try TestClient.connect(port: server.port, path: "/ws?ch=room&user=alice")
        for n in 0..<3 {
            try alice.send(text: #"{"channel":"room","cmd":"say","param":\#(n)}"#)
            _ = try alice.receiveEnvelope(cmd: "say", timeout: .seconds(20))
        }
        func scrape() throws -> (status: Int, head: String, values: [String: Double]) {
            let page = try TestClient.http(port: server.port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            var values: [String: Double] = [:]
            for line in page.body.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let value = Double(parts[1]) { values[String(parts[0])] = value }
            }
            return (page.status, page.head, values)
        }
        // The demo samples once a second: poll until a sample has the traffic (a hang guard, not a measurement).
        var last = try scrape()
        var sampled = false
        for _ in 0..<600 {
            last = try scrape()
            sampled = last.values["websocket_connections"] == 1 && (last.values["websocket_messages_in_total"] ?? 0) >= 3
            if sampled { break }
            usleep(100_000)
        }
        #expect(last.status == 200)
        #expect(last.head.lowercased().contains("content-type: text/plain; version=0.0.4"))
        #expect(sampled, "no sample with the traffic: \(last.values)")
        #expect((last.values["websocket_messages_out_total"] ?? 0) >= 3)
        #expect((last.values["websocket_bytes_in_total"] ?? 0) > 0)
        #expect(last.values["websocket_upgrades_accepted_total"] == 1)
    }
}

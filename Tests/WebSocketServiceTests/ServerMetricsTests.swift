import Foundation
import MetricsTestKit
import Testing
@testable import WebSocketService

/// Each server reports to a TestMetrics of its own (`MetricsReporting.factory`):
/// no process-wide bootstrap, so the suites cannot see each other's numbers.
@Suite struct ServerMetricsTests {
    /// Traffic, refusals and closes, as reported on demand: the engine's
    /// totals arrive as counters, the open connections as a gauge.
    @Test(arguments: backends) func trafficRefusalsAndCloses(_ backend: Configuration.Backend) throws {
        let metrics = TestMetrics()
        var routes = WebSocketRoutes()
        routes.raw("/raw", handler: Echo())
        guard let service = try startService(backend, routes: routes, configure: {
            // A turn of the sampling thread would report too; the test asks for each report itself.
            $0.metrics = .init(interval: .seconds(3600), factory: metrics)
        }) else { return }
        defer { service.stop() }

        let client = try TestClient.connect(port: service.port, path: "/raw")
        for text in ["a", "bb", "ccc"] {
            try client.send(text: text)
            #expect(try client.receive() == .text(text))
        }
        service.reportMetrics()
        #expect(try metrics.expectGauge("websocket_connections").lastValue == 1)
        #expect(try metrics.expectCounter("websocket_messages_in_total").totalValue == 3)
        #expect(try metrics.expectCounter("websocket_bytes_in_total").totalValue == 6)
        #expect(try metrics.expectCounter("websocket_messages_out_total").totalValue == 3)
        // The engine counts what it queues out as frames (a 2-byte header each here) and what comes in as payload.
        #expect(try metrics.expectCounter("websocket_bytes_out_total").totalValue == 6 + 3 * 2)
        #expect(try metrics.expectCounter("websocket_upgrades_accepted_total").totalValue == 1)

        // No route: the service answers 404. Version 8: the engine answers 426 before the service sees it.
        #expect(try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/nowhere")).status == 404)
        let oldVersion = TestClient.upgradeRequest(path: "/raw")
            .replacingOccurrences(of: "Sec-WebSocket-Version: 13", with: "Sec-WebSocket-Version: 8")
        #expect(try TestClient.http(port: service.port, oldVersion).status == 426)

        try client.sendClose(code: 1000)
        try client.waitForEOF()
        // The close callback may run just after the client saw the end (a hang guard, not a measurement).
        #expect(eventually { service.connections().isEmpty })
        service.reportMetrics()
        #expect(try metrics.expectCounter("websocket_upgrades_refused_total", [("status", "404")]).totalValue == 1)
        #expect(try metrics.expectCounter("websocket_handshakes_failed_total").totalValue == 1)
        #expect(try metrics.expectCounter("websocket_closes_total", [("code", "1000")]).totalValue == 1)
        #expect(try metrics.expectGauge("websocket_connections").lastValue == 0)
        // Reported once: a second report adds nothing.
        service.reportMetrics()
        #expect(try metrics.expectCounter("websocket_messages_in_total").totalValue == 3)
    }

    /// The stop reports what no turn of the sampling thread did: a scrape
    /// after the stop sees the whole run, closes included.
    @Test(arguments: backends) func theStopReportsTheLastNumbers(_ backend: Configuration.Backend) throws {
        let metrics = TestMetrics()
        var routes = WebSocketRoutes()
        routes.raw("/raw", handler: Echo())
        guard let service = try startService(backend, routes: routes, configure: {
            $0.metrics = .init(prefix: "ws_", interval: .seconds(3600), factory: metrics)
        }) else { return }
        let client = try TestClient.connect(port: service.port, path: "/raw")
        try client.send(text: "hello")
        #expect(try client.receive() == .text("hello"))
        // The client never answers the 1001: the timeout closes it (1006) or the close was seen first (1001).
        service.stop(timeout: .milliseconds(300))
        #expect(try metrics.expectCounter("ws_messages_in_total").totalValue == 1)
        #expect(metrics.counterTotal(label: "ws_closes_total") == 1)
        #expect(try metrics.expectGauge("ws_connections").lastValue == 0)
    }

    /// Nobody asks: the sampling thread reports on its own turns.
    @Test(arguments: backends) func theSamplingThreadReports(_ backend: Configuration.Backend) throws {
        let metrics = TestMetrics()
        var routes = WebSocketRoutes()
        routes.raw("/raw", handler: Echo())
        guard let service = try startService(backend, routes: routes, configure: {
            $0.metrics = .init(interval: .milliseconds(10), factory: metrics)
        }) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/raw")
        try client.send(text: "hello")
        #expect(try client.receive() == .text("hello"))
        // A hang guard, not a measurement: some turn after the echo reports it.
        #expect(eventually { (try? metrics.expectCounter("websocket_messages_in_total").totalValue) == 1 })
        #expect(eventually { (try? metrics.expectGauge("websocket_connections").lastValue) == 1 })
    }

    /// Close codes become few dimension values whatever a client sends.
    @Test func closeCodesAreBucketed() {
        #expect(ServerMetrics.codeDimension(1000) == "1000")
        #expect(ServerMetrics.codeDimension(1011) == "1011")
        #expect(ServerMetrics.codeDimension(3001) == "3xxx")
        #expect(ServerMetrics.codeDimension(4999) == "4xxx")
        #expect(ServerMetrics.codeDimension(2000) == "other")
    }
}

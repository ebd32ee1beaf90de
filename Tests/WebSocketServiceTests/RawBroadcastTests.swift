import Foundation
import Testing
@testable import WebSocketRedis
@testable import WebSocketService

/// `writeChannel(raw:...)` and `writeAll(raw:...)`: bytes below the
/// envelope, to raw endpoints' connections as well as envelope ones.
@Suite struct RawBroadcastTests {
    @Test(arguments: backends) func rawBytesReachRawAndEnvelopeMembersFramedOnce(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("/raw", handler: Echo(), limits: .unlimited)
        routes.socket("/ws", handler: TestHandler())
        guard let service = try startService(backend, routes: routes, configure: { $0.announcesPresence = false }) else { return }
        defer { service.stop() }
        let first = try TestClient.connect(port: service.port, path: "/raw")
        let second = try TestClient.connect(port: service.port, path: "/raw")
        let envelope = try TestClient.connect(port: service.port, path: "/ws?ch=room")
        #expect(eventually { service.connections().count == 3 })
        let raws = service.connections().filter { !$0.handler.speaksEnvelope }
        try #require(raws.count == 2)
        for connection in raws { #expect(service.join(connection, "room")) }
        // The second raw connection is the one left out (`except`): which client is it?
        try first.send(.text, Array("which".utf8))
        #expect(try first.receive() == .text("which"))
        let firstID = try #require(service.connections().filter { !$0.handler.speaksEnvelope }.min { $0.started < $1.started }).id
        let secondID = try #require(raws.first { $0.id != firstID }).id

        let bytes: [UInt8] = [0, 1, 2, 0xFF, 0xC0]  // not UTF-8: binary only
        #expect(service.writeChannel(raw: bytes, opcode: .binary, channel: "room", except: secondID) == 2)
        #expect(try first.receive() == .binary(bytes))
        #expect(try envelope.receive() == .binary(bytes))
        #expect(service.writeAll(raw: Array("to all".utf8), opcode: .text) == 3)
        for client in [first, second, envelope] { #expect(try client.receive() == .text("to all"), "nothing before it") }

        // Invalid text and control opcodes send nothing.
        #expect(service.writeChannel(raw: bytes, opcode: .text, channel: "room") == 0)
        #expect(service.writeAll(raw: [], opcode: .ping) == 0)
        #expect(service.writeChannel(raw: [], opcode: .binary, channel: "nobody") == 0)
        service.writeAll(raw: Array("marker".utf8), opcode: .text)
        for client in [first, second, envelope] { #expect(try client.receive() == .text("marker")) }
        #expect(firstID != secondID)
    }

    @Test(arguments: RedisConfiguration.PubSub.allCases)
    func rawBroadcastsCrossServers(_ pubSub: RedisConfiguration.PubSub) throws {
        guard let cluster = try Cluster.start(servers: 2, pubSub: pubSub) else { return }
        let (a, b) = (cluster.services[0], cluster.services[1])
        let onA = try TestClient.connect(port: a.port, path: "/ws?ch=room")
        let onB = try TestClient.connect(port: b.port, path: "/ws?ch=room")
        let elsewhere = try TestClient.connect(port: b.port, path: "/ws?ch=other")
        #expect(cluster.waitSubscribed("room"))
        let bytes: [UInt8] = [9, 8, 7, 0xFF]
        #expect(a.writeChannel(raw: bytes, opcode: .binary, channel: "room") == 1)
        #expect(try onA.nextRaw() == .binary(bytes))
        #expect(try onB.nextRaw() == .binary(bytes), "through Redis, as binary")
        b.writeAll(raw: Array("everyone".utf8), opcode: .text)
        for client in [onA, onB, elsewhere] { #expect(try client.nextRaw() == .text("everyone")) }
        for service in cluster.services { #expect(service.status().backplane.notPropagated == 0) }
    }
}

extension TestClient {
    /// The next message that is not an envelope (skips presence and other JSON envelopes).
    func nextRaw(timeout: Duration = .seconds(5)) throws -> Received {
        while true {
            let got = try receive(timeout: timeout)
            if case .text(let text) = got, text.hasPrefix("{") { continue }
            return got
        }
    }
}

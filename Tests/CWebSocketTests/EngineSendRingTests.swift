import CWebSocket
import Testing

/// A connection's send queue is a ring, allocated with its first message
/// (the 101). A busy connection keeps a small ring so steady traffic does
/// not allocate; one quiet since its handshake should hold none: 10,000 idle
/// connections kept 64 B each (80 B as malloc chunks) until their idle pings.
@Suite("Engine send rings", .serialized)
struct EngineSendRingTests {
    @Test(arguments: EngineBackend.allCases)
    func connectionsQuietSinceTheir101HoldNoRing(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.loops = 1 }) else { return }
        defer { srv.stop() }
        let clients = try openClients(srv, count: 50)
        try expectRings(srv, 0)
        // One of them echoes: a connection with traffic keeps its ring, and the
        // others still hold none.
        try clients[7].sendText("busy")
        #expect(try clients[7].readFrame() == Frame(opcode: UInt8(CWS_OP_TEXT.rawValue), payload: Array("busy".utf8)))
        try expectRings(srv, 1)
    }

    private func expectRings(_ srv: EngineServer, _ expected: UInt64) throws {
        var stats = cws_server_stats()
        let settled = Result { try srv.events.wait("send rings to settle at \(expected)") {
            cws_server_get_stats(srv.server, &stats)
            return stats.send_rings == expected
        } }
        #expect((try? settled.get()) != nil, "send rings held: \(stats.send_rings)")
    }
}

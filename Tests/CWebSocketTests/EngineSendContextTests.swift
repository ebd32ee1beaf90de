import CWebSocket
import Testing

/// io_uring keeps each sendmsg's msghdr and iovecs in a context of its own
/// (2 KiB) until the completion, then on a free list for the next one. A
/// burst to many connections at once has as many in flight (21 MB at 10,000
/// subscribers): once two ticks pass without needing them the loop keeps
/// 256, so that memory goes back; but bursts that come turn after turn reuse
/// theirs (freeing all but 256 at each completion cost a malloc and its page
/// faults per send).
@Suite("Engine send contexts", .serialized)
struct EngineSendContextTests {
    @Test(arguments: EngineBackend.allCases)
    func aBurstToManyConnectionsKeepsAtMost256Contexts(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.loops = 1 }) else { return }
        defer { srv.stop() }
        let clients = try openClients(srv, count: 300)
        // Two messages to each of the 300 within one callback: one sendmsg
        // (a context) per connection, all submitted in the same turn.
        #expect(try fanOutAndRead(srv, clients, count: 2) == 0)
        // Once the completions are in: 300 were used, 256 are kept (fewer
        // would mean the burst never had that many in flight), 44 freed.
        let kept = backend == .uring ? 256 : 0
        var stats = cws_server_stats()
        let settled = Result { try srv.events.wait("the send contexts to settle at \(kept)") {
            cws_server_get_stats(srv.server, &stats)
            return stats.send_contexts == UInt64(kept)
        } }
        #expect((try? settled.get()) != nil, "send contexts held: \(stats.send_contexts)")
    }

    @Test(arguments: EngineBackend.allCases)
    func burstsTurnAfterTurnReuseTheirContexts(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.loops = 1 }) else { return }
        defer { srv.stop() }
        let clients = try openClients(srv, count: 300)
        var wrong = 0
        for _ in 0..<5 { wrong += try fanOutAndRead(srv, clients, count: 2) }
        #expect(wrong == 0)
        // Five bursts of 300 sends, each after the last one's completions:
        // 300 contexts made, reused by the next four (44 more if the loop was
        // kept from the next burst for two whole ticks and trimmed them; with
        // a free list capped at 256 it was 300 + 4 x 44).
        var stats = cws_server_stats()
        cws_server_get_stats(srv.server, &stats)
        let made = backend == .uring ? 300...344 : 0...0
        #expect(made.contains(Int(stats.send_contexts_made)), "send contexts made: \(stats.send_contexts_made)")
    }
}

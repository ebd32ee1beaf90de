import CWebSocket
import Testing

/// io_uring sends a queue of more than 64 messages by copying the small ones
/// into a 256 KiB gather buffer. A chat room's join burst queues hundreds of
/// presence messages for every member at once; with a gather buffer per
/// backed-up connection, a 2,000-member room had 500 MB of them in flight,
/// each a copy of the same shared messages, and glibc kept that heap after
/// they were freed: 45 KB of RSS per connection once the room was idle,
/// against 2 KB on epoll. A loop now holds at most 8 MiB of gather buffers;
/// connections past that send 64 iovecs of the shared messages themselves.
@Suite("Engine send gather buffers", .serialized)
struct EngineSendGatherTests {
    static let gatherSize: UInt64 = 256 << 10
    static let loopBound: UInt64 = 8 << 20

    @Test(arguments: EngineBackend.allCases)
    func aBurstToManyBackedUpConnectionsHoldsAtMost8MiBOfGatherBuffers(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.loops = 1 }) else { return }
        defer { srv.stop() }
        let clients = try openClients(srv, count: 300)
        // 100 messages to each of the 300 within one callback: every queue is
        // past 64 entries when the turn's sends go out.
        #expect(try fanOutAndRead(srv, clients, count: 100) == 0)
        var stats = cws_server_stats()
        cws_server_get_stats(srv.server, &stats)
        if backend == .uring {
            // Some sends gathered (the bound is not vacuous), and never more
            // than 8 MiB at once: 300 buffers would be 75 MiB.
            #expect(stats.send_gather_bytes_peak >= Self.gatherSize, "peak: \(stats.send_gather_bytes_peak)")
            #expect(stats.send_gather_bytes_peak <= Self.loopBound, "peak: \(stats.send_gather_bytes_peak)")
        } else {
            #expect(stats.send_gather_bytes_peak == 0)
        }
        // The loop keeps up to 8 for the next burst; once the burst's 300 send
        // contexts have gone unused for two ticks (and are trimmed to 256),
        // those go back to the kernel too.
        let settled = Result { try srv.events.wait("gather buffers to go back") {
            cws_server_get_stats(srv.server, &stats)
            return stats.send_gather_bytes == 0
        } }
        #expect((try? settled.get()) != nil, "gather bytes held: \(stats.send_gather_bytes)")
    }
}

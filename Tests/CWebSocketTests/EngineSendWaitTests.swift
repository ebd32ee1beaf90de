import CWebSocket
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a sender on another thread can learn and wait for: the bytes waiting
/// for a connection (`cws_buffered_amount`), the drain signal
/// (`cws_request_drain` → `on_drain`), and the bound on a loop's inbox
/// (`max_inbox_bytes` → -EAGAIN), on both backends.
@Suite("Engine send waiting", .serialized)
struct EngineSendWaitTests {
    static let payloadSize = 4096
    /// A server frame of `payloadSize` bytes: a 2-byte header and a 2-byte length.
    static let framedSize = payloadSize + 4

    static func payload(_ seq: UInt32) -> [UInt8] {
        var payload = [UInt8](repeating: 0xC3, count: payloadSize)
        withUnsafeBytes(of: seq.littleEndian) { payload.replaceSubrange(0..<4, with: $0) }
        return payload
    }

    static func send(_ srv: EngineServer, _ id: cws_conn_id, _ seq: UInt32) -> Int32 {
        payload(seq).withUnsafeBytes { cws_send(srv.server, id, UInt8(CWS_OP_BINARY.rawValue), $0.baseAddress, $0.count) }
    }

    static func stats(_ srv: EngineServer) -> cws_server_stats {
        var stats = cws_server_stats()
        cws_server_get_stats(srv.server, &stats)
        return stats
    }

    /// A loop that cannot read its inbox (its thread is held in a callback)
    /// takes sends from other threads up to max_inbox_bytes and refuses the
    /// rest with -EAGAIN; what it took is counted as buffered, is delivered in
    /// order once the loop runs again, and a drain request is not refused.
    @Test(arguments: EngineBackend.allCases)
    func aBusyLoopsInboxIsBounded(_ backend: EngineBackend) throws {
        let cap = 1 << 20
        guard let srv = try EngineServer(backend, configure: { $0.max_inbox_bytes = UInt64(cap) }) else { return }
        let client = try openClient(srv)
        let id = try #require(srv.events.opened.first)
        let hold = DispatchSemaphore(value: 0)
        srv.events.holdNextMessage(hold)
        try client.send(EngineFlowControlTests.frame(0))
        try srv.events.wait("the held message") { srv.events.messageCount == 1 }

        var accepted: UInt32 = 0
        var refusal: Int32 = 0
        while accepted < 10_000 {
            let rc = Self.send(srv, id, accepted)
            if rc != 0 {
                refusal = rc
                break
            }
            accepted += 1
        }
        #expect(refusal == -EAGAIN, "a send past the cap is refused, not queued without bound")
        // Each command costs its entry and its message: the cap is reached, not passed.
        let perSend = Self.framedSize + MemoryLayout<cws_cmd_size_probe>.size
        #expect(Int(accepted) * Self.framedSize <= cap)
        #expect(Int(accepted + 1) * perSend > cap, "\(accepted) sends taken below a \(cap)-byte cap")
        #expect(cws_buffered_amount(srv.server, id) == Int64(accepted) * Int64(Self.framedSize))
        #expect(Self.stats(srv).inbox_refused >= 1)
        #expect(cws_request_drain(srv.server, id) == 0, "a drain request is taken even when the inbox is full")

        hold.signal()
        for seq in 0..<accepted {
            let frame = try client.readFrame()
            #expect(frame.opcode == UInt8(CWS_OP_BINARY.rawValue))
            #expect(frame.payload == Self.payload(seq), "message \(seq) arrives whole and in order")
            if frame.payload != Self.payload(seq) { break }
        }
        try srv.events.wait("the drain signal") { srv.events.drains.count == 1 }
        try srv.events.wait("nothing buffered") { cws_buffered_amount(srv.server, id) == 0 }
        #expect(Self.send(srv, id, accepted) == 0, "the inbox takes sends again")
    }

    /// on_drain waits for the peer to read the queue down to send_low_water,
    /// fires once per request, at once when the queue is already low, and
    /// never after the connection closed.
    @Test(arguments: EngineBackend.allCases)
    func theDrainSignalWaitsForThePeerToRead(_ backend: EngineBackend) throws {
        let lowWater = 256 << 10
        guard let srv = try EngineServer(backend, configure: { cfg in
            cfg.send_low_water = UInt64(lowWater)
            cfg.max_send_queue = 64 << 20
        }) else { return }
        let client = try openClient(srv)
        var small: Int32 = 64 << 10
        setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        let id = try #require(srv.events.opened.first)

        // 8 MiB from this thread: far more than the peer's socket buffers take.
        let count: UInt32 = 2048
        for seq in 0..<count { #expect(Self.send(srv, id, seq) == 0) }
        #expect(cws_buffered_amount(srv.server, id) > Int64(lowWater))
        #expect(cws_request_drain(srv.server, id) == 0)
        usleep(300_000)
        #expect(srv.events.drains.isEmpty, "no drain while the peer reads nothing")
        #expect(cws_buffered_amount(srv.server, id) > Int64(lowWater), "the queue is still full")

        for seq in 0..<count {
            let frame = try client.readFrame()
            #expect(frame.payload == Self.payload(seq))
            if frame.payload != Self.payload(seq) { break }
        }
        try srv.events.wait("the drain signal") { srv.events.drains.count == 1 }
        let drain = try #require(srv.events.drains.first)
        #expect(drain.id == id)
        #expect(drain.buffered <= Int64(lowWater), "signalled at the low-water mark, not before")

        // Already drained: signalled straight away, once per request.
        try srv.events.wait("nothing buffered") { cws_buffered_amount(srv.server, id) == 0 }
        #expect(cws_request_drain(srv.server, id) == 0)
        try srv.events.wait("the second drain signal") { srv.events.drains.count == 2 }

        // A connection that closes with a drain request pending gets on_close, not on_drain.
        for seq in 0..<count { _ = Self.send(srv, id, seq) }
        #expect(cws_request_drain(srv.server, id) == 0)
        var linger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        shutdown(client.fd, Int32(SHUT_RDWR))
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        usleep(100_000)
        #expect(srv.events.drains.count == 2)
        #expect(cws_buffered_amount(srv.server, id) == -Int64(ENOENT))
        #expect(cws_request_drain(srv.server, id) == -ENOENT)
    }

    /// A fan-out to a busy loop is held to the same cap, all or nothing for
    /// that loop, and counted per recipient skipped.
    @Test(arguments: EngineBackend.allCases)
    func aFanOutToABusyLoopIsBounded(_ backend: EngineBackend) throws {
        let cap = 256 << 10
        guard let srv = try EngineServer(backend, configure: { cfg in
            cfg.max_inbox_bytes = UInt64(cap)
            cfg.loops = 1
        }) else { return }
        let clients = try (0..<3).map { _ in try openClient(srv) }
        try srv.events.wait("three opens") { srv.events.opened.count == 3 }
        let ids = srv.events.opened
        let hold = DispatchSemaphore(value: 0)
        srv.events.holdNextMessage(hold)
        try clients[0].send(EngineFlowControlTests.frame(0))
        try srv.events.wait("the held message") { srv.events.messageCount == 1 }

        let message = Self.payload(7).withUnsafeBytes { cws_msg_new(UInt8(CWS_OP_BINARY.rawValue), $0.baseAddress, $0.count) }
        defer { cws_msg_release(message) }
        var fanOuts = 0
        while fanOuts < 1000 && Self.stats(srv).inbox_refused == 0 {
            ids.withUnsafeBufferPointer { cws_send_msg_many(srv.server, $0.baseAddress, $0.count, message) }
            fanOuts += 1
        }
        #expect(Self.stats(srv).inbox_refused == 3, "the refused fan-out skipped all three recipients")
        let taken = fanOuts - 1
        // The message is counted once per fan-out, so far more fit than 3 copies a time would.
        #expect(taken * 3 * Self.framedSize > cap)
        for id in ids { #expect(cws_buffered_amount(srv.server, id) == Int64(taken * Self.framedSize)) }
        hold.signal()
        for client in clients {
            for _ in 0..<taken { #expect(try client.readFrame().payload == Self.payload(7)) }
        }
    }
}

/// The inbox entry's size as the engine counts it (cws_cmd: id, message, code, kind).
private struct cws_cmd_size_probe {
    var id: UInt64
    var msg: UnsafeRawPointer?
    var closeCode: UInt16
    var reading: UInt8
}

import CWebSocket
import Foundation
import Glibc
import Testing

// What an abusive peer does to one connection must stay bounded: control
// frames, floods, bombs. Run on both backends; nothing is timed.

private let opText = UInt8(CWS_OP_TEXT.rawValue)
private let opBinary = UInt8(CWS_OP_BINARY.rawValue)
private let opPing = UInt8(CWS_OP_PING.rawValue)
private let opPong = UInt8(CWS_OP_PONG.rawValue)

/// One masked client frame.
private func clientFrame(_ opcode: UInt8, _ payload: [UInt8], key: UInt32) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: payload.count + Int(CWS_MAX_HEADER_SIZE))
    let n = out.withUnsafeMutableBytes { o in
        payload.withUnsafeBytes { cws_frame_encode(o.baseAddress, 1, 0, opcode, $0.baseAddress, $0.count, 1, key) }
    }
    return Array(out[0..<n])
}

/// `count` pings, the i-th carrying `label(i)`, back to back.
private func pingFrames(_ count: Int, _ label: (Int) -> String) -> [UInt8] {
    (0..<count).flatMap { clientFrame(opPing, Array(label($0).utf8), key: 0x0A0B_0C0D) }
}

/// `count` binary messages of 3 bytes, the i-th carrying i (24 bits, little-endian), back to back.
private func numberedMessages(_ count: Int) -> [UInt8] {
    var flood: [UInt8] = []
    flood.reserveCapacity(count * 9)
    for i in 0..<count {
        let payload = [UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i >> 16)]
        flood += clientFrame(opBinary, payload, key: UInt32(truncatingIfNeeded: i))
    }
    return flood
}

@Suite("Engine abuse", .serialized)
struct EngineAbuseTests {
    /// Pings from a peer that does not read: the answers used to bypass the
    /// send-queue limit, one queued message per ping (1,000,000 empty pings:
    /// +263 MiB). Now an unsent pong answers the newest ping in its place.
    @Test(arguments: EngineBackend.allCases)
    func pingFloodKeepsOnePendingPong(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: {
            $0.max_send_queue = 64 << 20
            $0.idle_timeout_ms = 0 // the client reads late on purpose
            $0.max_pings_per_second = .max // the flood is the point here
        }) else { return }
        // 32 MiB the client does not read yet: more than the socket buffers
        // hold, so the server's writes are blocked during the flood. The
        // client's receive buffer is fixed small: left to autotuning it may
        // grow to tcp_rmem's maximum (32 MiB here), the whole burst fits,
        // and run alone the test then saw every ping answered.
        srv.events.setBurst(count: 512, size: 64 * 1024)
        let c = try openClient(srv)
        var receiveBuffer: Int32 = 64 * 1024
        setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size))
        try c.sendText("go")
        try srv.events.wait("the burst queued") { srv.stats.messages_out >= 512 }
        let pings = 20_000
        try c.send(pingFrames(pings) { "ping \($0)" })
        try c.sendText("marker") // echoed after every ping was handled
        var pongs: [[UInt8]] = []
        var binary = 0
        while true {
            let f = try c.readFrame()
            if f.opcode == opPong { pongs.append(f.payload) }
            else if f.opcode == opBinary { binary += 1 }
            else if f.opcode == opText && f.payload == Array("marker".utf8) { break }
            else { throw EngineTestError(description: "unexpected frame \(f.opcode) \(f.closeCode.map(String.init) ?? "")") }
        }
        print("\(backend): \(pings) pings while the writes were blocked got \(pongs.count) pongs")
        #expect(binary == 512)
        // A handful at most (the ones written while the burst drained), and
        // the newest ping is always answered.
        #expect(pongs.count < 100, "\(pongs.count) pongs for \(pings) pings")
        #expect(pongs.last == Array("ping \(pings - 1)".utf8))
        #expect(srv.events.closedCount == 0)
    }

    /// 200,000 small messages in one write, while another client talks: the
    /// flood is read within a per-turn budget (io_uring defers what is over
    /// it to later turns, and stops reading that socket meanwhile), and
    /// nothing is lost or reordered on either connection.
    @Test(arguments: EngineBackend.allCases)
    func floodIsReadInBudgetsWithoutLossOrReordering(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_send_queue = 64 << 20 }) else { return }
        let flooder = try openClient(srv)
        let canary = try openClient(srv)
        let count = 200_000
        let fd = flooder.fd, bytes = numberedMessages(count)
        Thread.detachNewThread { try? sendAll(fd, bytes) } // while this thread reads the echoes
        for i in 0..<20 {
            try canary.sendText("canary \(i)")
            #expect(try canary.readFrame() == Frame(opcode: opText, payload: Array("canary \(i)".utf8)))
        }
        // The echoes, read raw (frame-by-frame parsing of 1 MB would be the
        // test's own bottleneck): each is 0x82 0x03 and the three bytes.
        var echoes = [UInt8](repeating: 0, count: count * 5)
        var got = 0
        while got < echoes.count {
            let n = echoes.withUnsafeMutableBytes { recv(flooder.fd, $0.baseAddress! + got, $0.count - got, 0) }
            // A signal to the process (a child's SIGCHLD) interrupts a recv with a timeout.
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw EngineTestError(description: "flood echoes: recv \(n), errno \(errno), \(got) bytes") }
            got += n
        }
        for i in 0..<count {
            let e = echoes[(i * 5)..<(i * 5 + 5)]
            let want: [UInt8] = [0x82, 3, UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i >> 16)]
            guard Array(e) == want else {
                Issue.record("flood message \(i): got \(Array(e))")
                break
            }
        }
        print("\(backend): \(srv.stats.input_deferred) recv completions deferred past a connection's turn budget")
        #expect(srv.events.closedCount == 0)
    }

    /// A ping never reaches the application, so its rate limits cannot see a
    /// ping flood: the engine closes a peer that sends more than
    /// max_pings_per_second with 1008 (1,000,000 pings used to be answered,
    /// costing a loop a pong each, until the idle timeout 40 s later). Pings
    /// at the limit's pace are answered.
    @Test(arguments: EngineBackend.allCases)
    func aPingFloodIsClosedWith1008(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_pings_per_second = 20 }) else { return }
        let calm = try openClient(srv)
        for i in 0..<10 {
            try calm.sendFrame(opPing, Array("calm \(i)".utf8))
            #expect(try calm.readFrame() == Frame(opcode: UInt8(CWS_OP_PONG.rawValue), payload: Array("calm \(i)".utf8)))
        }
        let flood = try openClient(srv)
        try sendAll(flood.fd, pingFrames(1000) { "p\($0)" }, toleratingReset: true)
        var pongs = 0
        var close: Frame?
        while close == nil, let f = try? flood.readFrame() {
            if f.opcode == UInt8(CWS_OP_PONG.rawValue) { pongs += 1 } else if f.closeCode != nil { close = f }
        }
        #expect(close?.closeCode == 1008)
        #expect(pongs <= 20, "the first 20 pings are answered: \(pongs)")
        try srv.events.wait("the flood's on_close") { srv.events.closedCount == 1 }
        #expect(srv.stats.pings_refused == 1)
        // The calm client is still served.
        try calm.sendFrame(opPing, Array("after".utf8))
        #expect(try calm.readFrame().payload == Array("after".utf8))
    }

    /// Many small messages in one write, each echoed four times, to a client
    /// that reads everything: io_uring sent at most 16 queued messages a
    /// turn (one send in flight, its completion seen once a turn) while a
    /// turn's input queued thousands, so the queue reached max_send_queue and
    /// a client that kept up was closed 1008. Counts every echo, in order.
    @Test(arguments: EngineBackend.allCases)
    func manySmallRepliesKeepUpWithAReadingClient(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: { $0.max_send_queue = 2 << 20 }) else { return }
        let repeats = 4
        srv.events.echoRepeat = repeats
        let c = try openClient(srv)
        let count = 200_000
        let fd = c.fd, bytes = numberedMessages(count)
        Thread.detachNewThread { try? sendAll(fd, bytes, toleratingReset: true) } // while this thread reads
        // Each echo is 0x82 0x03 and the three bytes; read raw, in big reads.
        var echoes = [UInt8](repeating: 0, count: count * repeats * 5)
        var got = 0
        while got < echoes.count {
            let n = echoes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, $0.count - got, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            got += n
        }
        #expect(got == echoes.count, "\(got / 5) of \(count * repeats) echoes, then the connection ended")
        var wrong = 0
        for k in 0..<(got / 5) {
            let i = k / repeats
            let e = echoes[(k * 5)..<(k * 5 + 5)]
            let want: [UInt8] = [0x82, 3, UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i >> 16)]
            if Array(e) != want { wrong += 1 }
        }
        #expect(wrong == 0, "\(wrong) echoes out of order or corrupt")
        #expect(srv.events.closedCount == 0)
    }

    /// A peer that only pings is idle: it gets our keep-alive ping and is
    /// dropped when it does not answer it (its pings used to count as
    /// activity, so it was never pinged and never timed out).
    @Test(arguments: EngineBackend.allCases)
    func aPeerThatOnlyPingsIsIdle(_ backend: EngineBackend) throws {
        guard let srv = try EngineServer(backend, configure: {
            $0.idle_timeout_ms = 200
            $0.pong_timeout_ms = 200
        }) else { return }
        let c = try openClient(srv)
        var sawOurPing = false
        // Ping every 50 ms; read the answers; never answer the server's ping.
        for i in 0..<200 {
            do {
                try c.sendFrame(opPing, Array("\(i)".utf8))
            } catch { break } // the server closed the connection
            usleep(50_000)
            guard let f = try? c.readFrame() else { break }
            if f.opcode == opPing { sawOurPing = true; _ = try? c.readFrame() }
            if sawOurPing && srv.events.closedCount == 1 { break }
        }
        #expect(sawOurPing)
        let id = srv.events.opened[0]
        try srv.events.wait("on_close") { srv.events.closeCode(id) != nil }
        #expect(srv.events.closeCode(id) == 1006)
    }
}

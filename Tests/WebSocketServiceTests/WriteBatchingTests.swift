import OffThePool
import Foundation
import Logging
import Testing
@testable import WebSocketService

/// What a turn queues for a connection goes out in as few writes as the
/// socket takes: small frames are copied into one contiguous span (one write,
/// not one iovec each and a write per 64 of them), and every byte still
/// arrives whole and in order, large messages and partial writes included.
@Suite struct WriteBatchingTests {
    /// "burst N K": N messages from one handler call (one turn), message i of
    /// the sizes `sizes(K)` cycle through, filled by `pattern`.
    struct Burst: RawHandler {
        func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
            let words = String(decoding: message.bytes, as: UTF8.self).split(separator: " ")
            guard words.count == 3, let count = Int(words[1]), let kind = Int(words[2]) else { return }
            let sizes = WriteBatchingTests.sizes(kind)
            for i in 0..<count { service.send(WriteBatchingTests.pattern(i, sizes[i % sizes.count]), opcode: .binary, to: connection) }
        }
    }

    static func sizes(_ kind: Int) -> [Int] {
        switch kind {
        case 0: return Array(1...40)
        case 1: return [0, 1, 125, 126, 1000, 1024, 1025, 5000, 70_000, 3]
        default: return [128]
        }
    }

    /// Byte j of message i is (31 i + j) mod 256. (Made per byte, the
    /// handler's 3 MiB burst took seconds on the loop thread under TSan before
    /// its first byte went out, and the client's 20 s read ran out.)
    static func pattern(_ i: Int, _ size: Int) -> [UInt8] {
        repeating(size, period: 256) { UInt8(truncatingIfNeeded: i &* 31 &+ $0) }
    }

    @Test(arguments: backends) func aTurnOfSmallMessagesIsOneWrite(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("/burst", handler: Burst(), limits: .unlimited)
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/burst")
        #expect(eventually { service.connections().count == 1 })
        let before = service.status().socketWrites
        // 300 frames of 3 to 42 bytes, 7 KiB in all: what a loopback socket takes at once.
        try client.send(text: "burst 300 0")
        let sizes = Self.sizes(0)
        for i in 0..<300 { #expect(try client.receive() == .binary(Self.pattern(i, sizes[i % sizes.count]))) }
        // Every write is counted before it is made, so all of them are by now.
        let writes = service.status().socketWrites - before
        #expect(writes >= 1 && writes <= 2, "\(writes) writes for one turn's 300 small messages (64 per write without the copy)")

        // 20 frames of 130 B (a fan-out burst): more than io_uring's 1 KiB
        // copy in its send context holds, fewer than a write's iovecs.
        let again = service.status().socketWrites
        try client.send(text: "burst 20 2")
        for i in 0..<20 { #expect(try client.receive() == .binary(Self.pattern(i, 128))) }
        let burstWrites = service.status().socketWrites - again
        #expect(burstWrites == 1, "\(burstWrites) writes for one turn's 20 messages of 130 B")
    }

    @Test(arguments: backends) func mixedSizesArriveWholeAndInOrder(_ backend: Configuration.Backend) async throws {
        var routes = WebSocketRoutes()
        routes.raw("/burst", handler: Burst(), limits: .unlimited)
        guard let service = try startService(backend, routes: routes, configure: { $0.maxSendQueue = 64 << 20 }) else { return }
        defer { service.stop() }
        let port = service.port
        // 468 blocking reads, 3 MiB: off the pool. Nil when every message
        // arrived whole and in order.
        let (mismatch, leftOver) = try await offThePool { () -> (String?, Bool) in
            let client = try TestClient.connect(port: port, path: "/burst")
            // 400 messages, 3 MiB: small runs copied together between large ones
            // written from their own blocks, and writes that stop part-way; then
            // fewer than a write's iovecs (io_uring copies those into its send
            // context), and a few.
            let sizes = Self.sizes(1)
            for count in [400, 60, 7] {
                try client.send(text: "burst \(count) 1")
                for i in 0..<count where try client.receive(timeout: .seconds(20)) != .binary(Self.pattern(i, sizes[i % sizes.count])) {
                    return ("message \(i) of \(count) differs", false)
                }
            }
            try client.send(text: "burst 1 0")
            return (nil, try client.receive() != .binary(Self.pattern(0, 1)))
        }
        #expect(mismatch == nil, "\(mismatch ?? "")")
        #expect(!leftOver, "nothing left over")
    }
}

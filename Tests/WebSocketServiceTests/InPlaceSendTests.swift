import Foundation
import Logging
import Testing
@testable import WebSocketService

/// A handler that sends on the bytes it was handed (an echo, a relay) sends
/// the block the message arrived in, framed in place, when the message was
/// gathered across reads: no copy. Counted by `Status.inPlaceSends`; what
/// arrives is the same either way.
@Suite struct InPlaceSendTests {
    /// Sends the message back as it came, then (for "twice") once more as text.
    struct EchoTwice: RawHandler {
        let twice: Bool
        func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
            service.send(message.bytes, opcode: message.opcode, to: connection)
            if twice { service.send(message.bytes, opcode: .text, to: connection) }
        }
    }

    static func payload(_ size: Int, seed: Int) -> [UInt8] {
        // ASCII, so the same bytes are valid text too.
        repeating(size, period: 26) { UInt8(65 + ($0 &+ seed) % 26) }
    }

    @Test(arguments: backends) func echoesOfLargeMessagesSendTheirOwnBlock(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("/echo", handler: EchoTwice(twice: false), limits: .unlimited)
        routes.raw("/twice", handler: EchoTwice(twice: true), limits: .unlimited)
        guard let service = try startService(backend, routes: routes, configure: { $0.maxMessageSize = 4 << 20 }) else {
            return
        }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/echo")
        let start = service.status().inPlaceSends

        // Larger than a read (64 KiB on epoll, 16 KiB buffers on io_uring): gathered, and sent from that block.
        for (i, size) in [200_000, 70_000, 1 << 20].enumerated() {
            let bytes = Self.payload(size, seed: i)
            try client.send(.binary, bytes)
            #expect(try client.receive(timeout: .seconds(20)) == .binary(bytes), "\(size) B")
        }
        #expect(service.status().inPlaceSends - start == 3)

        // A message that arrives in one read is copied into its echo (the read buffer is reused).
        try client.send(.binary, Self.payload(100, seed: 7))
        #expect(try client.receive() == .binary(Self.payload(100, seed: 7)))
        // A fragmented message is gathered in a plain buffer: copied too.
        let first = Self.payload(90_000, seed: 1), second = Self.payload(90_000, seed: 2)
        try client.send(.binary, first, fin: false)
        try client.send(.continuation, second)
        #expect(try client.receive(timeout: .seconds(20)) == .binary(first + second))
        #expect(service.status().inPlaceSends - start == 3, "no in-place send for those")

        // Sent twice, as binary and then as text: the block is framed as
        // binary by the first send, so the second is a copy.
        let other = try TestClient.connect(port: service.port, path: "/twice")
        let bytes = Self.payload(300_000, seed: 3)
        try other.send(.binary, bytes)
        #expect(try other.receive(timeout: .seconds(20)) == .binary(bytes))
        #expect(try other.receive(timeout: .seconds(20)) == .text(String(decoding: bytes, as: UTF8.self)))
        #expect(service.status().inPlaceSends - start == 4)
        // And the first connection still echoes, nothing left over from the others.
        try client.send(.text, Array("after".utf8))
        #expect(try client.receive() == .text("after"))
    }
}

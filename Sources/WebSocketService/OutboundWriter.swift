import CWebSocket
import Foundation

/// A write to a connection that is gone (closed, or closing: nothing more is sent).
public struct ConnectionClosedError: Error, CustomStringConvertible, Sendable {
    public let connectionID: UUID
    public var description: String { "connection \(connectionID.uuidString.lowercased()) is closed" }
}

/// Writes to one connection that wait for room: a write suspends while more
/// than `Configuration.sendHighWater` bytes wait for that client (queued in
/// the server, or on their way to its loop) and resumes once the client has
/// read the queue down to half of it. So a fast producer and a slow client
/// meet in the middle, instead of the server's memory growing or the
/// connection being closed at `maxSendQueue`.
///
/// Cancelling the awaiting task ends the wait with `CancellationError`
/// (nothing of that write was sent). The non-waiting writes of
/// `WebSocketServer` (`write(_:to:)`, `send(_:opcode:to:)`) stay for code on
/// the loop threads and for fan-out.
public struct OutboundWriter: Sendable {
    public let server: WebSocketServer
    public let connection: Connection

    public init(server: WebSocketServer, connection: Connection) {
        self.server = server
        self.connection = connection
    }

    /// An envelope (endpoints with an `EnvelopeHandler`, an `AsyncEnvelopeHandler` or a session).
    public func write(_ envelope: Envelope) async throws {
        let bytes = envelope.encoded()
        try await send { server.sendReporting(bytes, opcode: .text, to: connection) }
    }

    /// `{"cmd","param"}` (and `channel`, `from` when given).
    public func write(cmd: String, param: RawJSON = .null, channel: String? = nil, from: UUID? = nil) async throws {
        try await write(Envelope(from: from, channel: channel, cmd: cmd, param: param))
    }

    /// A whole text or binary message, below the envelope.
    public func write(_ message: WireMessage) async throws {
        switch message {
        case .text(var text):
            // Framed straight from the string's UTF-8 (one copy, the engine's), not via an array first.
            try await send { text.withUTF8 { server.sendReporting(UnsafeRawBufferPointer($0), opcode: .text, to: connection) } }
        case .binary(let bytes):
            try await send { server.sendReporting(bytes, opcode: .binary, to: connection) }
        }
    }

    /// Bytes waiting for this client now: the server's queue for it and what
    /// other threads have sent it that its loop has not taken yet. 0 once it is gone.
    public var bufferedAmount: Int { server.bufferedAmount(of: connection) ?? 0 }

    /// Starts the close handshake.
    public func close(code: CloseCode = .normal, reason: String = "") {
        server.close(connection, code: code, reason: reason)
    }

    /// Waits for room, then runs `attempt` (one engine send) until it is taken.
    private func send(_ attempt: () -> Int32) async throws {
        let highWater = server.configuration.effectiveSendHighWater
        while true {
            guard let buffered = server.bufferedAmount(of: connection) else { throw closed }
            if buffered > highWater {
                try await connection.waitForDrain(server: server)
                continue
            }
            switch attempt() {
            case 0: return
            case -EAGAIN: try await connection.waitForDrain(server: server) // the loop's inbox is full
            case -ENOENT: throw closed
            case let rc: throw POSIXError(POSIXErrorCode(rawValue: -rc) ?? .EIO) // -ENOMEM: nothing was sent
            }
        }
    }

    private var closed: ConnectionClosedError { ConnectionClosedError(connectionID: connection.id) }
}

extension WebSocketServer {
    /// An awaiting writer for one connection (see `OutboundWriter`).
    public func writer(for connection: Connection) -> OutboundWriter {
        OutboundWriter(server: self, connection: connection)
    }

    /// Bytes waiting for the connection (see `OutboundWriter.bufferedAmount`); nil once it is gone.
    public func bufferedAmount(of connection: Connection) -> Int? {
        let amount = cws_buffered_amount(server, connection.engineID)
        return amount < 0 ? nil : Int(amount)
    }
}

/// The awaited writes of one connection that wait for its queue to drain,
/// kept in the connection (no allocation until a write waits) under a stripe
/// of shared locks. Each waiter asks the engine for one drain signal after it
/// is registered, so a signal cannot fall between the check and the wait; a
/// signal wakes every waiter, and each checks again.
struct DrainWaiters {
    fileprivate var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    fileprivate var nextToken: UInt64 = 0
    fileprivate var closed = false
}

extension Connection {
    func waitForDrain(server: WebSocketServer) async throws {
        let token = withDrainWaiters { d -> UInt64 in
            d.nextToken &+= 1
            return d.nextToken
        }
        let closedError = ConnectionClosedError(connectionID: id)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let refusal = withDrainWaiters { d -> (any Error)? in
                    if d.closed { return closedError }
                    if Task.isCancelled { return CancellationError() }
                    d.waiters[token] = continuation
                    return nil
                }
                if let refusal {
                    continuation.resume(throwing: refusal)
                    return
                }
                switch server.requestDrain(self) {
                case 0: break
                case -ENOENT: drainClosed()
                case let rc: // -ENOMEM: this wait alone fails; the connection may well be open
                    withDrainWaiters { $0.waiters.removeValue(forKey: token) }?
                        .resume(throwing: POSIXError(POSIXErrorCode(rawValue: -rc) ?? .EIO))
                }
            }
        } onCancel: {
            withDrainWaiters { $0.waiters.removeValue(forKey: token) }?.resume(throwing: CancellationError())
        }
    }

    /// The engine's drain signal (a loop thread).
    func drained() {
        for waiter in takeDrainWaiters(closing: false) { waiter.resume() }
    }

    /// The connection closed: every waiter ends with `ConnectionClosedError`, and so does every later wait.
    func drainClosed() {
        let error = ConnectionClosedError(connectionID: id)
        for waiter in takeDrainWaiters(closing: true) { waiter.resume(throwing: error) }
    }

    private func takeDrainWaiters(closing: Bool) -> [CheckedContinuation<Void, any Error>] {
        withDrainWaiters { d in
            if closing { d.closed = true }
            guard !d.waiters.isEmpty else { return [] }
            defer { d.waiters = [:] }
            return Array(d.waiters.values)
        }
    }

    /// Writes waiting for the drain signal now (tests).
    var drainWaiterCount: Int { withDrainWaiters { $0.waiters.count } }
}

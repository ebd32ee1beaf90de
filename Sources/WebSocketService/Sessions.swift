import CWebSocket
import Logging

/// A whole text or binary message below the envelope, owned (a
/// `RawMessage`'s bytes are the engine's and last one call).
public enum WireMessage: Sendable, Hashable {
    case text(String)
    case binary([UInt8])
}

/// What a session's code has of its connection besides the two streams.
public struct SessionContext: Sendable {
    public let server: WebSocketServer
    public let connection: Connection
    /// The connection's logger (its id in the metadata).
    public var logger: Logger { connection.logger }
}

/// A connection's inbound messages, in the order they came. It ends when the
/// connection closes. While more than `Limits.maxQueuedMessages` wait to be
/// taken, the server stops reading the socket (TCP holds the client back) and
/// reads again once half are taken. Iterate it once, from the session's task.
public struct InboundMessages<Element: Sendable>: AsyncSequence, Sendable {
    let queue: InboundQueue<Element>
    let server: WebSocketServer
    let engineID: UInt64

    public struct AsyncIterator: AsyncIteratorProtocol {
        let queue: InboundQueue<Element>
        let server: WebSocketServer
        let engineID: UInt64

        public mutating func next() async -> Element? {
            let (server, engineID) = (server, engineID)
            return await queue.next(resume: { _ = cws_resume_reading(server.server, engineID) })
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(queue: queue, server: server, engineID: engineID)
    }
}

/// The envelopes of an envelope endpoint's connection.
public typealias InboundEnvelopes = InboundMessages<Message>
/// The whole messages of a raw endpoint's connection.
public typealias InboundWireMessages = InboundMessages<WireMessage>

/// The code of an envelope endpoint written as one task per connection: it
/// reads `inbound` and writes through `outbound` (which waits while the
/// client is slow to read). When it returns the connection is closed with
/// 1000; when it throws, with 1011 (the error is logged). A connection that
/// closes first ends `inbound`, cancels the task, and makes `outbound`'s
/// writes throw `ConnectionClosedError`.
public struct EnvelopeSession: Sendable {
    let body: @Sendable (InboundEnvelopes, OutboundWriter, SessionContext) async throws -> Void

    public init(_ body: @escaping @Sendable (_ inbound: InboundEnvelopes, _ outbound: OutboundWriter,
                                             _ context: SessionContext) async throws -> Void) {
        self.body = body
    }
}

/// `EnvelopeSession` for a raw endpoint: whole text and binary messages.
public struct RawSession: Sendable {
    let body: @Sendable (InboundWireMessages, OutboundWriter, SessionContext) async throws -> Void

    public init(_ body: @escaping @Sendable (_ inbound: InboundWireMessages, _ outbound: OutboundWriter,
                                             _ context: SessionContext) async throws -> Void) {
        self.body = body
    }
}

extension WebSocketRoutes {
    /// An envelope endpoint whose code is one task per connection (see
    /// `EnvelopeSession`); the rest as for an `EnvelopeHandler`:
    ///
    ///     routes.socket("/chat") { inbound, outbound, context in
    ///         for await message in inbound {
    ///             try await outbound.write(cmd: "echo", param: message.param)
    ///         }
    ///     }
    public mutating func socket(
        _ path: String, subprotocols: [String] = [], limits: Limits = Limits(), authorization: Authorization = .none,
        authenticate: @escaping @Sendable (ServerRequest) -> Authentication = { _ in .accept(nil) },
        session: @escaping @Sendable (_ inbound: InboundEnvelopes, _ outbound: OutboundWriter,
                                      _ context: SessionContext) async throws -> Void
    ) {
        envelopeSocket(path, .envelopeSession(EnvelopeSession(session)), subprotocols, limits, authorization, authenticate)
    }

    /// A raw endpoint whose code is one task per connection (see `RawSession`).
    public mutating func raw(
        _ path: String, subprotocols: [String] = [], limits: Limits = Limits(),
        authenticate: @escaping @Sendable (ServerRequest) -> Authentication = { _ in .accept(nil) },
        session: @escaping @Sendable (_ inbound: InboundWireMessages, _ outbound: OutboundWriter,
                                      _ context: SessionContext) async throws -> Void
    ) {
        rawSocket(path, .rawSession(RawSession(session)), subprotocols, limits, authenticate)
    }
}

extension WebSocketServer {
    /// A session's task: its body, then the close that its end means.
    func runSession(_ connection: Connection,
                    _ body: (OutboundWriter, SessionContext) async throws -> Void) async {
        do {
            try await body(writer(for: connection), SessionContext(server: self, connection: connection))
            close(connection, code: .normal)
        } catch {
            // This connection closed first: nothing to say to anyone. (Another
            // connection's closing, from a write to it, ends this session like
            // any error: its own connection must not stay open unread.)
            if Task.isCancelled { return }
            if let closed = error as? ConnectionClosedError, closed.connectionID == connection.id { return }
            connection.logger.warning("session failed", metadata: ["error": "\(LogText.clip("\(error)"))"])
            close(connection, code: .internalError)
        }
    }

    func startSessionTask(_ connection: Connection) {
        switch connection.handler {
        case .asyncEnvelope(let handler):
            guard let queue = connection.queue else { return }
            connection.task = Task(executorPreference: taskExecutor(for: connection)) { await self.runAsync(handler, connection, queue) }
        case .envelopeSession(let session):
            guard let queue = connection.queue else { return }
            let inbound = InboundMessages(queue: queue, server: self, engineID: connection.engineID)
            connection.task = Task(executorPreference: taskExecutor(for: connection)) {
                await self.runSession(connection) { try await session.body(inbound, $0, $1) }
            }
        case .rawSession(let session):
            guard let queue = connection.rawQueue else { return }
            let inbound = InboundMessages(queue: queue, server: self, engineID: connection.engineID)
            connection.task = Task(executorPreference: taskExecutor(for: connection)) {
                await self.runSession(connection) { try await session.body(inbound, $0, $1) }
            }
        case .envelope, .raw:
            return
        }
    }
}

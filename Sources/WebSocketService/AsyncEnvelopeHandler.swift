import Logging

/// The application's code for an envelope endpoint, when it must wait (a
/// database, another service). A connection's messages are handled one at a
/// time, in the order they came, by a task of the connection's own, which
/// is cancelled when the connection closes; the tasks run on threads of the
/// service's own (`Configuration.handlerThreads`). While more than
/// `Limits.maxQueuedMessages` wait, the server stops reading the socket (TCP
/// holds the client back) and reads again once half of them are done.
///
/// A thrown error is sent to that client as an `error` envelope, as for
/// `EnvelopeHandler`; the connection stays open.
public protocol AsyncEnvelopeHandler: Sendable {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws
}

/// An async handler from a closure.
public struct AsyncEnvelopeHandlerFunction: AsyncEnvelopeHandler {
    private let body: @Sendable (WebSocketServer, Connection, Message, Logger) async throws -> Void

    public init(_ body: @escaping @Sendable (_ service: WebSocketServer, _ connection: Connection, _ message: Message,
                                             _ logger: Logger) async throws -> Void) {
        self.body = body
    }

    public func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws {
        try await body(service, connection, message, logger)
    }
}


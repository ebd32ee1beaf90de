import Logging

/// One envelope a client sent.
public struct Message: Sendable {
    public var cmd: String
    /// The client's `param` bytes, as sent (`null` when absent).
    public var param: RawJSON
    /// The channel the client named, if any.
    public var channel: String?
}

/// The application's code for an envelope endpoint. It runs on the event
/// loop thread that owns the connection and must not block: work that needs
/// to wait goes to a task that writes later through the service.
///
/// A thrown error is logged and sent to that client as
/// `{"cmd":"error","param":{"message":...}}`; the connection stays open
/// (call `service.close` to end it).
public protocol EnvelopeHandler: Sendable {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws
}

/// A handler from a closure.
public struct EnvelopeHandlerFunction: EnvelopeHandler {
    private let body: @Sendable (WebSocketServer, Connection, Message, Logger) throws -> Void

    public init(_ body: @escaping @Sendable (_ service: WebSocketServer, _ connection: Connection, _ message: Message,
                                             _ logger: Logger) throws -> Void) {
        self.body = body
    }

    public func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        try body(service, connection, message, logger)
    }
}

/// A whole text or binary message, below the envelope. The bytes belong to
/// the engine and are valid only during the `handle` call: copy them
/// (`copyBytes()`) to keep them.
public struct RawMessage {
    /// `.text` (valid UTF-8) or `.binary`.
    public let opcode: Opcode
    public let bytes: UnsafeRawBufferPointer

    public var isText: Bool { opcode == .text }
    public func copyBytes() -> [UInt8] { Array(bytes) }
    /// The text of a text message.
    public var text: String? { isText ? String(decoding: bytes, as: UTF8.self) : nil }
}

/// The application's code for a raw endpoint: every message as it came,
/// without the envelope. Runs on the loop thread; must not block.
public protocol RawHandler: Sendable {
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger)
}

/// A raw handler from a closure.
public struct RawHandlerFunction: RawHandler {
    private let body: @Sendable (WebSocketServer, Connection, RawMessage, Logger) -> Void

    public init(_ body: @escaping @Sendable (_ service: WebSocketServer, _ connection: Connection, _ message: RawMessage,
                                             _ logger: Logger) -> Void) {
        self.body = body
    }

    public func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        body(service, connection, message, logger)
    }
}

/// What runs a connection's messages.
public enum ConnectionHandler: Sendable {
    case envelope(any EnvelopeHandler)
    /// Envelopes, one at a time in order, on the connection's own task.
    case asyncEnvelope(any AsyncEnvelopeHandler)
    case raw(any RawHandler)
    /// One task for the whole connection, reading envelopes from a sequence.
    case envelopeSession(EnvelopeSession)
    /// One task for the whole connection, reading whole messages from a sequence.
    case rawSession(RawSession)

    /// It takes `{"channel","cmd","param"}` envelopes (`writeAll` reaches it).
    var speaksEnvelope: Bool {
        switch self {
        case .envelope, .asyncEnvelope, .envelopeSession: return true
        case .raw, .rawSession: return false
        }
    }
}

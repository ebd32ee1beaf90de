import Logging
import WebSocketService

/// The chat's commands:
/// - `hello` (channel: the room, default the first joined): answers `hello`
///   with `{id, userID, channels, online}` (`online`: the room's user ids, one
///   per connection), then `history` with the room's last `say` envelopes
///   (the library's channel history, `Configuration.history`), so a new page
///   shows the latest lines; a page that reconnects is sent what it missed
///   by the library itself, and drops what it has seen by the id it puts in
///   each message;
/// - `say` (param: any JSON, the page sends `{id, name, text}`): broadcast to the
///   channel named in the envelope (default: the first joined), sender included;
/// - `join` / `leave` (param: `{"channel": name}`).
struct ChatHandler: EnvelopeHandler {
    /// `say` envelopes kept per room.
    static let historyLength = 50
    /// Bytes of them kept per room: the `history` reply stays far below the
    /// send queue's limit (16 MiB), so however much one user says, `hello`
    /// never gets anyone closed (the maximum message is 1 MiB, so the
    /// newest few are always kept).
    static let historyBytes = 4 << 20
    /// Rooms whose history is kept; past it the room written least recently goes.
    static let historyRooms = 1000

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    struct ChannelParam: Decodable {
        var channel: String
    }

    struct Hello: Encodable {
        var id: String
        var userID: String
        var channels: [String]
        var online: [String]
    }

    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        switch message.cmd {
        case "hello":
            let room = message.channel ?? connection.channels.first
            let online = room.map { service.connections(in: $0).map(\.userID) } ?? []
            let hello = Hello(id: connection.id.uuidString.lowercased(), userID: connection.userID,
                              channels: connection.channels, online: online)
            service.write(Envelope(cmd: "hello", param: try RawJSON(encoding: hello)), to: connection)
            if let room, connection.channels.contains(room), let kept = service.history(room) {
                let list = Array("[".utf8) + Array(kept.messages.map(\.envelope.bytes).joined(separator: Array(",".utf8)))
                    + Array("]".utf8)
                service.write(Envelope(channel: room, cmd: "history", param: try RawJSON(validating: list)), to: connection)
            }
        case "say":
            guard let channel = message.channel ?? connection.channels.first else {
                throw Failure(description: "join a channel first")
            }
            guard connection.channels.contains(channel) else {
                throw Failure(description: "not a member of \(channel)")
            }
            service.writeChannel(cmd: "say", param: message.param, channel: channel, from: connection.id)
        case "join":
            let channel = try message.param.decode(ChannelParam.self).channel
            guard !channel.isEmpty else { throw Failure(description: "empty channel name") }
            service.join(connection, channel)
        case "leave":
            service.leave(connection, try message.param.decode(ChannelParam.self).channel)
        default:
            throw Failure(description: "unknown command \(message.cmd)")
        }
    }
}

/// Echo: every text and binary message back, unchanged.
struct EchoHandler: RawHandler {
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        service.send(message.bytes, opcode: message.opcode, to: connection)
    }
}

/// `--raw`: a room below the envelope. A connection to /ws?ch=ROOM joins
/// ROOM (default "room") and every message it sends goes, as it came, to
/// every member, sender included: `writeChannel(raw:)`, framed once (the raw
/// fan-out benchmark, against a peer that publishes the same bytes).
struct RoomRelayHandler: RawHandler {
    let room: String

    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        service.writeChannel(raw: [UInt8](message.bytes), opcode: message.opcode, channel: room)
    }
}

/// Envelope echo: `{"cmd","param"}` back with the same cmd and param (the
/// benchmark's envelope echo, beside its async forms).
struct EnvelopeEchoHandler: EnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) {
        service.write(Envelope(cmd: message.cmd, param: message.param), to: connection)
    }
}

/// `--async`: an envelope handler run as an `AsyncEnvelopeHandler` (a task
/// per connection, off the loop), so a benchmark compares the two paths on
/// the same work.
struct AsyncAdapter<Sync: EnvelopeHandler>: AsyncEnvelopeHandler {
    let sync: Sync
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws {
        try sync.handle(service: service, connection: connection, message: message, logger: logger)
    }
}

/// `--session`: the same handler as the body of an envelope session; its
/// errors go back to the client as `{"cmd":"error","param":{"message"}}` and
/// the session goes on, as an `EnvelopeHandler`'s would.
func sessionRunning(_ sync: some EnvelopeHandler) -> @Sendable (InboundEnvelopes, OutboundWriter, SessionContext) async throws -> Void {
    { inbound, outbound, context in
        for await message in inbound {
            do {
                try sync.handle(service: context.server, connection: context.connection, message: message,
                                logger: context.logger)
            } catch {
                try await outbound.write(cmd: "error", param: RawJSON(encoding: ["message": "\(error)"]))
            }
        }
    }
}

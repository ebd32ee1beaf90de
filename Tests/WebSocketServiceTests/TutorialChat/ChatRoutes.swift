import Logging
import WebSocketService

/// One line of the chat, as clients receive it.
struct Line: Codable, Sendable {
    var user: String
    var text: String
}

/// What a client did wrong; its text goes back in an `error` envelope.
struct ChatError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The chat's commands. Each connection's messages come here one at a time,
/// in the order it sent them, on a task of the connection's own.
struct ChatCommands: AsyncEnvelopeHandler {
    let store: ChatStore

    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws {
        switch message.cmd {
        case "join":
            service.join(connection, try message.param.decode(String.self))
        case "say":
            guard let room = message.channel else { throw ChatError("say in a room") }
            let line = Line(user: connection.userID, text: try message.param.decode(String.self))
            // Stored before anyone hears it: a `history` that comes later includes it.
            await store.append(line, to: room)
            service.writeChannel(cmd: "said", param: try RawJSON(encoding: line), channel: room, from: connection.id)
        case "history":
            guard let room = message.channel else { throw ChatError("name a room") }
            let lines = await store.recent(in: room)
            // Waits while this client is slow to read what was sent to it before.
            try await service.writer(for: connection).write(cmd: "history", param: RawJSON(encoding: lines),
                                                            channel: room)
        default:
            throw ChatError("unknown command \(message.cmd)")
        }
    }
}

/// Typing signals: many a second while someone types, worthless a moment
/// later, so never stored and never awaited. A synchronous handler runs on
/// the connection's event loop (no task, no queue, no thread hop) and must
/// not block.
struct TypingSignals: EnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        guard message.cmd == "typing", let room = message.channel else { return }
        service.writeChannel(cmd: "typing", param: RawJSON(string: connection.userID), channel: room,
                             except: connection.id)
    }
}

func chatRoutes() -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    // The page; it loads the browser client from /_ws/socket.js, which every
    // WebSocketRoutes serves.
    routes.page("/") { _ in .html(chatPage) }
    let identify: @Sendable (ServerRequest) -> Authentication = { request in
        // Who is it? A real server checks a cookie or a token here.
        .accept(Profile(userID: request.queryItem("user") ?? "guest"))
    }
    // Runs before either handler sees a message: only a room's members speak in it.
    let membersOnly = Authorization(command: { connection, message in
        guard let room = message.channel, !connection.channels.contains(room) else { return .allow }
        return .refuse("not a member of \(room)")
    })
    routes.socket("/chat", handler: ChatCommands(store: ChatStore()), authorization: membersOnly,
                  authenticate: identify)
    // ws://127.0.0.1:8080/live?ch=lobby/typing: the signals have a channel of
    // their own, so /chat connections do not hear them.
    routes.socket("/live", handler: TypingSignals(), authorization: membersOnly, authenticate: identify)
    return routes
}

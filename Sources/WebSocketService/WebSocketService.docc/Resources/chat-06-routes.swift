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
            guard let room = message.channel, connection.channels.contains(room) else {
                throw ChatError("join the room first")
            }
            let line = Line(user: connection.userID, text: try message.param.decode(String.self))
            // Stored before anyone hears it: a `history` that comes later includes it.
            await store.append(line, to: room)
            service.writeChannel(cmd: "said", param: try RawJSON(encoding: line), channel: room, from: connection.id)
        case "history":
            guard let room = message.channel, connection.channels.contains(room) else {
                throw ChatError("join the room first")
            }
            let lines = await store.recent(in: room)
            // Waits while this client is slow to read what was sent to it before.
            try await service.writer(for: connection).write(cmd: "history", param: RawJSON(encoding: lines),
                                                            channel: room)
        default:
            throw ChatError("unknown command \(message.cmd)")
        }
    }
}

func chatRoutes() -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.socket("/chat", handler: ChatCommands(store: ChatStore())) { request in
        .accept(Profile(userID: request.queryItem("user") ?? "guest"))
    }
    return routes
}

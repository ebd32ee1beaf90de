import WebSocketService

/// One line of the chat, as clients receive it.
struct Line: Codable, Sendable {
    var user: String
    var text: String
}

func chatRoutes() -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.socket("/chat", authenticate: { request in
        // Who is it? A real server checks a cookie or a token here.
        .accept(Profile(userID: request.queryItem("user") ?? "guest"))
    }) { inbound, outbound, context in
        let connection = context.connection
        for await message in inbound {
            // A throw here would end the session (close 1011): answer bad input instead.
            switch message.cmd {
            case "join":
                guard let room = try? message.param.decode(String.self) else {
                    try await outbound.write(cmd: "error", param: RawJSON(string: "join takes a room name"))
                    continue
                }
                context.server.join(connection, room)
            case "say":
                guard let room = message.channel, connection.channels.contains(room),
                      let text = try? message.param.decode(String.self) else {
                    try await outbound.write(cmd: "error", param: RawJSON(string: "say takes text, in a room you joined"))
                    continue
                }
                let line = Line(user: connection.userID, text: text)
                context.server.writeChannel(cmd: "said", param: try RawJSON(encoding: line), channel: room,
                                            from: connection.id)
            default:
                try await outbound.write(cmd: "error", param: RawJSON(string: "unknown command \(message.cmd)"))
            }
        }
    }
    return routes
}

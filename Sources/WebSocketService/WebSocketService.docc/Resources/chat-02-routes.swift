import WebSocketService

/// The chat's routes: one socket endpoint for now.
func chatRoutes() -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    // ws://127.0.0.1:8080/chat?ch=lobby: the connection joins `lobby` first.
    routes.socket("/chat") { inbound, outbound, context in
        // One task per connection: this loop sees its messages in order.
        for await message in inbound {
            guard message.cmd == "say", let room = message.channel else { continue }
            context.server.writeChannel(cmd: "said", param: message.param, channel: room,
                                        from: context.connection.id)
        }
    }
    return routes
}

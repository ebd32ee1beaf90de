/// What an endpoint gives each connection it accepts: the handler, the
/// limits and the permission checks. An endpoint registered with fixed ones
/// (`WebSocketRoutes.socket(_:handler:...)`, `raw`, the sessions) makes one
/// and every connection shares it: an idle connection carries a reference,
/// not its own 150 bytes of copies. A custom `socket(_:upgrade:)` decision
/// may differ per connection, so each of its connections gets its own.
final class EndpointSettings: Sendable {
    let handler: ConnectionHandler
    let limits: Limits
    let authorization: Authorization

    init(handler: ConnectionHandler, limits: Limits, authorization: Authorization) {
        self.handler = handler
        self.limits = limits
        self.authorization = authorization
    }
}

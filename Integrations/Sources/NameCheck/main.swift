import Hummingbird
import ServiceLifecycle
import Vapor
import WebSocketService

// Every public type of WebSocketService, named unqualified beside the three
// frameworks' own names. A collision is a compile error here ("'X' is
// ambiguous for type lookup in this context"), as Service and Routes were.
typealias PublicNames = (
    AsyncEnvelopeHandlerFunction, Authentication, Authorization, BackplaneConfiguration, BackplaneError,
    BackplaneStatus, ClientScript.Type, CloseCode, ClusterMember, Configuration, Connection,
    ConnectionClosedError, ConnectionHandler, Envelope, EnvelopeHandlerFunction, EnvelopeSession, FrameEncoder.Type,
    FrameParser, HTTPHeader, Handshake.Type, InboundEnvelopes, InboundWireMessages, JSONSyntaxError, LimitStatus,
    Limits, Masking.Type, Message, Opcode, OutboundWriter, Profile, RawHandlerFunction, RawJSON, RawMessage,
    RawSession, SIMDLevel, ServerRequest, ServerResponse, SessionContext, UpgradeDecision, Verdict,
    WebSocketRoutes, WebSocketServer, WireMessage
)

// The protocols, adopted the way an application does.
struct Chat: EnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        service.writeChannel(cmd: "say", param: message.param, channel: message.channel ?? "lobby", from: connection.id)
    }
}

struct Lookup: AsyncEnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws {
        try await service.writer(for: connection).write(cmd: "found", param: message.param)
    }
}

struct Echo: RawHandler {
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        service.send(message.copyBytes(), opcode: message.opcode, to: connection)
    }
}

func makeRoutes() -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.socket("/chat", handler: Chat())
    routes.socket("/lookup", handler: Lookup())
    routes.raw("/echo", handler: Echo())
    routes.socket("/session") { inbound, outbound, _ in
        for await message in inbound { try await outbound.write(cmd: "echo", param: message.param) }
    }
    routes.page("/health") { (_: ServerRequest) -> ServerResponse in .text("ok") }
    return routes
}

// Hummingbird's and Vapor's own names still mean theirs.
let hummingbirdRouter = Hummingbird.Router()
let vaporRoutes: Vapor.Routes.Type = Vapor.Routes.self
let configuration = Configuration(host: "127.0.0.1", port: 0)
_ = (hummingbirdRouter, vaporRoutes, configuration, makeRoutes())
print("names ok")

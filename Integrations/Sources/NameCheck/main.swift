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

// A Hummingbird application and the WebSocket server in one ServiceGroup: one
// SIGTERM stops both gracefully (the clients get 1001). `NameCheck --serve`
// runs it on 127.0.0.1:8081 (HTTP) and :8080 (WebSocket).
func serveBoth() async throws {
    let logger = Logger(label: "integrations")
    let router = Hummingbird.Router()
    router.get("/hello") { _, _ in "hello from Hummingbird" }
    let app = Hummingbird.Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 8081)), logger: logger)
    let sockets = try WebSocketServer(routes: makeRoutes(), configuration: Configuration(host: "127.0.0.1", port: 8080),
                                      logger: logger)
    let group = ServiceGroup(services: [app, sockets], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    try await group.run()
}

// Vapor's own names still mean Vapor's.
let vaporRoutes: Vapor.Routes.Type = Vapor.Routes.self
_ = vaporRoutes
if CommandLine.arguments.contains("--serve") {
    try await serveBoth()
} else {
    print("names ok")
}

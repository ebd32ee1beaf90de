import Foundation

/// What an authentication hook decides from a request's headers and cookies.
public enum Authentication: Sendable {
    /// Upgrade. A nil profile is an anonymous user whose userID is the connection id.
    case accept(Profile?)
    /// Answer with this status instead (401, 403...).
    case refuse(status: Int, message: String? = nil)
}

/// What a socket endpoint decides for one upgrade request.
public enum UpgradeDecision: Sendable {
    /// Upgrade, join `channel` first (nil: no channel), run messages through
    /// `handler` within `limits`, with `authorization`'s checks. `subprotocol`
    /// must be one of `ServerRequest.subprotocols` (the 101 names it); nil: none.
    case accept(profile: Profile?, channel: String?, handler: ConnectionHandler, limits: Limits = Limits(),
                authorization: Authorization = .none, subprotocol: String? = nil)
    case refuse(ServerResponse)
}

/// Pages and socket endpoints by exact path. A route at path `"*"` answers
/// every path that has no route of its own.
public struct WebSocketRoutes: Sendable {
    /// Origins allowed to open sockets (exact `Origin` values such as
    /// "https://example.com"). Empty: any origin. An upgrade with an Origin
    /// outside the list gets 403. A request without Origin (not a browser) is
    /// allowed: cross-site WebSocket hijacking needs a browser, and browsers
    /// always send Origin.
    public var allowedOrigins: Set<String> = []

    typealias PageRoute = @Sendable (ServerRequest) -> ServerResponse
    typealias SocketRoute = @Sendable (ServerRequest) -> UpgradeDecision
    typealias AsyncSocketRoute = @Sendable (ServerRequest) async -> UpgradeDecision

    /// How an endpoint decides an upgrade: at once, on the loop thread (the
    /// fastest path: no task, nothing held), or by awaiting, on the handler
    /// executor, while the engine holds the request (bounded by the
    /// handshake timeout).
    struct SocketDecider: Sendable {
        enum Decide: Sendable {
            case now(SocketRoute)
            case later(AsyncSocketRoute)
        }
        let decide: Decide
        /// A registered endpoint's handler, limits and checks, made once and
        /// shared by every connection it accepts (its decisions carry these
        /// same values); nil: each accepted connection gets its own.
        let shared: EndpointSettings?

        static func now(_ route: @escaping SocketRoute) -> SocketDecider { SocketDecider(decide: .now(route), shared: nil) }
    }

    private(set) var pages: [String: PageRoute] = [:]
    private(set) var sockets: [String: SocketDecider] = [:]
    /// Set by `admin(hosts:authorize:)`; nil: the admin pages are not served.
    var adminAuthorization: AdminAccess?

    /// WebSocketRoutes that serve only the browser client, at `ClientScript.path`.
    public init() {
        pages[ClientScript.path] = { ClientScript.response($0) }
    }

    /// A page: GET (and HEAD) requests on `path`.
    public mutating func page(_ path: String, _ respond: @escaping @Sendable (ServerRequest) -> ServerResponse) {
        pages[path] = respond
    }

    /// A socket endpoint with full control over each upgrade.
    public mutating func socket(_ path: String, upgrade: @escaping @Sendable (ServerRequest) -> UpgradeDecision) {
        sockets[path] = SocketDecider(decide: .now(upgrade), shared: nil)
    }

    /// A socket endpoint whose decision awaits (a session store, a key set).
    /// The engine holds the request, without reading the socket, until the
    /// decision is made; it runs on the server's handler threads (see
    /// `Configuration.handlerThreads`), never on a loop. A decision not made
    /// within `Configuration.handshakeTimeout` (counted from the TCP accept)
    /// is answered 503 for it, and what it returns then is dropped.
    @_disfavoredOverload
    public mutating func socket(_ path: String, upgrade: @escaping @Sendable (ServerRequest) async -> UpgradeDecision) {
        sockets[path] = SocketDecider(decide: .later(upgrade), shared: nil)
    }

    /// An envelope endpoint: `authenticate` sees the request (headers,
    /// cookies) and gives the profile or refuses; the first channel is the
    /// query's `ch`, or a random one when it has none. Each connection is
    /// held to `limits`, and `authorization` may refuse its joins (the first
    /// channel's too) and its commands. `subprotocols`: the ones the endpoint
    /// speaks, most preferred first; the first that the client offers is chosen.
    public mutating func socket(
        _ path: String, handler: some EnvelopeHandler, subprotocols: [String] = [], limits: Limits = Limits(),
        authorization: Authorization = .none,
        authenticate: @escaping @Sendable (ServerRequest) -> Authentication = { _ in .accept(nil) }
    ) {
        envelopeSocket(path, .envelope(handler), subprotocols, limits, authorization, authenticate)
    }

    /// An envelope endpoint whose `authenticate` awaits (see
    /// `socket(_:upgrade:)` for how the request is held meanwhile).
    @_disfavoredOverload
    public mutating func socket(
        _ path: String, handler: some EnvelopeHandler, subprotocols: [String] = [], limits: Limits = Limits(),
        authorization: Authorization = .none,
        authenticate: @escaping @Sendable (ServerRequest) async -> Authentication
    ) {
        awaitingEnvelopeSocket(path, .envelope(handler), subprotocols, limits, authorization, authenticate)
    }

    /// An envelope endpoint whose handler awaits (see `AsyncEnvelopeHandler`); the
    /// rest as for an `EnvelopeHandler`.
    public mutating func socket(
        _ path: String, handler: some AsyncEnvelopeHandler, subprotocols: [String] = [], limits: Limits = Limits(),
        authorization: Authorization = .none,
        authenticate: @escaping @Sendable (ServerRequest) -> Authentication = { _ in .accept(nil) }
    ) {
        envelopeSocket(path, .asyncEnvelope(handler), subprotocols, limits, authorization, authenticate)
    }

    /// An envelope endpoint whose handler and `authenticate` both await.
    @_disfavoredOverload
    public mutating func socket(
        _ path: String, handler: some AsyncEnvelopeHandler, subprotocols: [String] = [], limits: Limits = Limits(),
        authorization: Authorization = .none,
        authenticate: @escaping @Sendable (ServerRequest) async -> Authentication
    ) {
        awaitingEnvelopeSocket(path, .asyncEnvelope(handler), subprotocols, limits, authorization, authenticate)
    }

    private mutating func awaitingEnvelopeSocket(
        _ path: String, _ connectionHandler: ConnectionHandler, _ subprotocols: [String], _ limits: Limits,
        _ authorization: Authorization, _ authenticate: @escaping @Sendable (ServerRequest) async -> Authentication
    ) {
        let settings = EndpointSettings(handler: connectionHandler, limits: limits, authorization: authorization)
        sockets[path] = SocketDecider(decide: .later { (request: ServerRequest) async -> UpgradeDecision in
            Self.envelopeDecision(await authenticate(request), request, settings, subprotocols)
        }, shared: settings)
    }

    mutating func envelopeSocket(
        _ path: String, _ connectionHandler: ConnectionHandler, _ subprotocols: [String], _ limits: Limits,
        _ authorization: Authorization, _ authenticate: @escaping @Sendable (ServerRequest) -> Authentication
    ) {
        let settings = EndpointSettings(handler: connectionHandler, limits: limits, authorization: authorization)
        sockets[path] = SocketDecider(decide: .now { request in
            Self.envelopeDecision(authenticate(request), request, settings, subprotocols)
        }, shared: settings)
    }

    private static func envelopeDecision(
        _ authentication: Authentication, _ request: ServerRequest, _ settings: EndpointSettings, _ subprotocols: [String]
    ) -> UpgradeDecision {
        switch authentication {
        case .refuse(let status, let message):
            return .refuse(.status(status, message))
        case .accept(let profile):
            return .accept(profile: profile, channel: channel(of: request), handler: settings.handler,
                           limits: settings.limits, authorization: settings.authorization,
                           subprotocol: subprotocol(subprotocols, offered: request.subprotocols))
        }
    }

    private static func rawDecision(
        _ authentication: Authentication, _ request: ServerRequest, _ settings: EndpointSettings, _ subprotocols: [String]
    ) -> UpgradeDecision {
        switch authentication {
        case .refuse(let status, let message): return .refuse(.status(status, message))
        case .accept(let profile):
            return .accept(profile: profile, channel: nil, handler: settings.handler, limits: settings.limits,
                           authorization: settings.authorization,
                           subprotocol: subprotocol(subprotocols, offered: request.subprotocols))
        }
    }

    /// A raw endpoint: whole text and binary messages, no envelope, no
    /// channel; `limits`' rates apply (its envelope caps do not).
    public mutating func raw(
        _ path: String, handler: some RawHandler, subprotocols: [String] = [], limits: Limits = Limits(),
        authenticate: @escaping @Sendable (ServerRequest) -> Authentication = { _ in .accept(nil) }
    ) {
        rawSocket(path, .raw(handler), subprotocols, limits, authenticate)
    }

    mutating func rawSocket(
        _ path: String, _ connectionHandler: ConnectionHandler, _ subprotocols: [String], _ limits: Limits,
        _ authenticate: @escaping @Sendable (ServerRequest) -> Authentication
    ) {
        let settings = EndpointSettings(handler: connectionHandler, limits: limits, authorization: .none)
        sockets[path] = SocketDecider(decide: .now { request in
            Self.rawDecision(authenticate(request), request, settings, subprotocols)
        }, shared: settings)
    }

    /// A raw endpoint whose `authenticate` awaits (see `socket(_:upgrade:)`
    /// for how the request is held meanwhile).
    @_disfavoredOverload
    public mutating func raw(
        _ path: String, handler: some RawHandler, subprotocols: [String] = [], limits: Limits = Limits(),
        authenticate: @escaping @Sendable (ServerRequest) async -> Authentication
    ) {
        let settings = EndpointSettings(handler: .raw(handler), limits: limits, authorization: .none)
        sockets[path] = SocketDecider(decide: .later { (request: ServerRequest) async -> UpgradeDecision in
            Self.rawDecision(await authenticate(request), request, settings, subprotocols)
        }, shared: settings)
    }

    /// The first of `supported` that the client offered (subprotocol names
    /// compare exactly, RFC 6455 4.1), or nil.
    public static func subprotocol(_ supported: [String], offered: [String]) -> String? {
        supported.first { offered.contains($0) }
    }

    /// The query's `ch`, or a random channel name.
    public static func channel(of request: ServerRequest) -> String {
        if let ch = request.queryItem("ch"), !ch.isEmpty { return ch }
        return "channel-" + UUID().uuidString.lowercased()
    }

    func page(for path: String) -> PageRoute? { pages[path] ?? pages["*"] }
    func socket(for path: String) -> SocketDecider? { sockets[path] ?? sockets["*"] }

    func originAllowed(_ origin: String?) -> Bool {
        guard !allowedOrigins.isEmpty, let origin else { return true }
        return allowedOrigins.contains(origin)
    }
}

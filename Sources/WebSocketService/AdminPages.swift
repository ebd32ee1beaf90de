import Foundation

/// The admin pages: server-rendered HTML, no external assets, no script but
/// the tap page's own (allowed by a per-response CSP nonce).
///
/// Cross-site requests: the engine hands the service request heads only (no
/// bodies), so the send form is a GET carrying a per-process secret token;
/// a request without the token, from another site (`Sec-Fetch-Site`) or
/// with a foreign `Origin` is refused with 403. Every response carries
/// `Referrer-Policy: no-referrer` so the token does not leak to other sites.
final class AdminPages: Sendable {
    static let root = "/admin/sockets"
    /// Rows shown per table (the rest are counted).
    static let maxRows = 500

    let access: AdminAccess

    init(access: AdminAccess) {
        self.access = access
    }

    static func serves(_ path: String) -> Bool { path == root || path.hasPrefix(root + "/") }

    // MARK: - Dispatch

    func page(_ request: ServerRequest, service: WebSocketServer) -> ServerResponse {
        if let refusal = refusal(request, service) { return refusal }
        guard request.method == "GET" || request.method == "HEAD" else {
            return ServerResponse(status: 405, headers: [HTTPHeader("Allow", "GET, HEAD")], body: Array("Method Not Allowed".utf8))
        }
        switch request.path {
        case Self.root, Self.root + "/": return overview(service)
        case Self.root + "/channel": return channel(request.queryItem("name") ?? "", service)
        case Self.root + "/connection": return connection(request, service)
        case Self.root + "/send": return send(request, service)
        case Self.root + "/disconnect": return disconnect(request, service)
        case Self.root + "/tap": return tapPage()
        default: return Self.html("Not found", "<p>No admin page here.</p>", status: 404)
        }
    }

    /// The tap's socket endpoint (same path as the tap page).
    func socket(for path: String, service: WebSocketServer) -> WebSocketRoutes.SocketRoute? {
        guard path == Self.root + "/tap" else { return nil }
        return { [self] request in
            if let refusal = refusal(request, service) { return .refuse(refusal) }
            if let refusal = Self.crossSiteRefusal(request) {
                service.noticeAboutRequest("admin tap refused", ["reason": "\(LogText.clip(refusal))", "remote": "\(request.remoteAddress)"])
                return .refuse(.status(403, refusal))
            }
            guard service.tap.watchers < TrafficTap.maxWatchers else {
                return .refuse(.status(503, "too many tap watchers"))
            }
            return .accept(profile: Profile(userID: "admin-tap"), channel: nil, handler: .raw(TapWatcher()))
        }
    }
}

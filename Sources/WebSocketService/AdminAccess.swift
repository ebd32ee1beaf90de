import Foundation

extension WebSocketRoutes {
    /// Serves the admin pages under `/admin/sockets`: connections, channels,
    /// one connection with a form that sends it a message, and a live tap of
    /// the traffic. `authorize` sees every admin request (headers, cookies,
    /// remote address; the tap's upgrade too) and refusal is a 403. Without
    /// this call the pages are not served at all.
    ///
    /// `hosts` are the names the pages answer to ("admin.example.com",
    /// "localhost", "127.0.0.1", "::1"; compared without the port, ignoring
    /// case): a request whose `Host` is another gets 421 before `authorize`
    /// runs. That is what keeps a page on another site from reaching them by
    /// rebinding its own name to this server's address (DNS rebinding), where
    /// `Origin` and `Host` agree and only the name gives it away.
    public mutating func admin(hosts: Set<String>, authorize: @escaping @Sendable (ServerRequest) -> Bool) {
        adminAuthorization = AdminAccess(hosts: Set(hosts.map { AdminAccess.hostName($0) }), authorize: authorize)
    }
}

/// Who may see the admin pages: the names they answer to, and the application's check.
struct AdminAccess: Sendable {
    let hosts: Set<String>
    let authorize: @Sendable (ServerRequest) -> Bool

    /// "Example.COM:8080" → "example.com", "[::1]:80" → "::1", "::1" stays.
    static func hostName(_ host: String) -> String {
        let lower = host.lowercased()
        if lower.hasPrefix("[") {
            guard let close = lower.firstIndex(of: "]") else { return lower }
            return String(lower[lower.index(after: lower.startIndex)..<close])
        }
        // More than one colon: a bare IPv6 address, no port.
        if lower.filter({ $0 == ":" }).count == 1, let colon = lower.firstIndex(of: ":") {
            return String(lower[..<colon])
        }
        return lower
    }

    func hostAllowed(_ request: ServerRequest) -> Bool {
        guard let host = request.header("Host") else { return false }
        return hosts.contains(Self.hostName(host))
    }
}

/// Who may use the admin pages and their form: the host check, the
/// application's check, and the CSRF rules for what changes state.
extension AdminPages {
    /// Secret for this process; embedded only in pages that passed `authorize`.
    static let csrfToken: String = {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(generator.next() as UInt64, radix: 16).leftPadded(to: 16) }.joined()
    }()

    /// 421 for a foreign Host, 403 for a refused check, nil to go on.
    func refusal(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse? {
        guard access.hostAllowed(request) else {
            service.limitCounters.adminHostsRefused.wrappingAdd(1, ordering: .relaxed)
            return .status(421, "Misdirected Request: not an admin host")
        }
        guard access.authorize(request) else { return .status(403) }
        return nil
    }

    /// Why a state-changing request is refused, or nil: it must carry the
    /// token and must not come from another site.
    static func crossSiteRefusal(_ request: ServerRequest) -> String? {
        if let site = request.header("Sec-Fetch-Site")?.lowercased(), site != "same-origin", site != "none" {
            return "cross-site request (Sec-Fetch-Site: \(site))"
        }
        if let origin = request.origin {
            let host = request.header("Host") ?? ""
            guard !host.isEmpty, origin == "http://" + host || origin == "https://" + host else {
                return "foreign origin \(origin)"
            }
        }
        guard let token = request.queryItem("token"), constantTimeEqual(token, csrfToken) else {
            return "missing or wrong CSRF token"
        }
        return nil
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in x.indices { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

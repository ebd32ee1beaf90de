import Foundation
import Testing
@testable import WebSocketService

/// WebSocketRoutes with the test handler at /ws (the user is the query's `user`) and,
/// when `authorize` is given, the admin pages.
private func adminRoutes(authorize: (@Sendable (ServerRequest) -> Bool)?) -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.socket("/ws", handler: TestHandler()) { request in
        .accept(request.queryItem("user").map { Profile(userID: $0) })
    }
    if let authorize { routes.admin(hosts: ["127.0.0.1", "localhost"], authorize: authorize) }
    return routes
}

/// Admin allowed for requests that carry `X-Admin: yes`.
private let byHeader: @Sendable (ServerRequest) -> Bool = { $0.header("X-Admin") == "yes" }

private func get(_ port: Int, _ target: String, _ headers: [String] = ["X-Admin: yes"]) throws
    -> (status: Int, head: String, body: String) {
    let lines = ["GET \(target) HTTP/1.1", "Host: 127.0.0.1:\(port)"] + headers
    return try TestClient.http(port: port, lines.joined(separator: "\r\n") + "\r\n\r\n")
}

private func header(_ name: String, in head: String) -> String? {
    for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix(name.lowercased() + ":") {
        return line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
    }
    return nil
}

private func query(_ items: [(String, String)]) -> String {
    items.map { "\($0.0)=\(AdminPages.percentEncode($0.1))" }.joined(separator: "&")
}

private let token = AdminPages.csrfToken

/// The token with its first character changed to another hex digit: as long
/// as the token, so only the comparison can refuse it. (Prefixing "0" to
/// `token.dropFirst()` gave the token itself whenever it began with "0",
/// 1 process in 16, and the refused request was accepted.)
private func wrongToken(for token: String) -> String {
    let first = token.first == "0" ? "1" : "0"
    return first + token.dropFirst()
}

@Suite(.serialized) struct AdminTests {
    @Test(arguments: backends) func withoutAnAuthorizationCheckNothingIsServed(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: nil)) else { return }
        defer { service.stop() }
        for path in ["/admin/sockets", "/admin/sockets/", "/admin/sockets/tap", "/admin/sockets/connection?id=x",
                     "/admin/sockets/send?token=\(token)"] {
            #expect(try get(service.port, path).status == 404, "\(path)")
        }
        let tap = try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/admin/sockets/tap?token=\(token)"))
        #expect(tap.status == 404)
    }

    @Test(arguments: backends) func aFailingCheckIs403(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        for path in ["/admin/sockets", "/admin/sockets/channel?name=a", "/admin/sockets/tap", "/admin/sockets/nope",
                     "/admin/sockets/send?token=\(token)&id=\(UUID())&cmd=x&param=1"] {
            let answer = try get(service.port, path, ["X-Admin: no"])
            #expect(answer.status == 403, "\(path)")
            #expect(!answer.body.contains(token), "the token only goes to authorized pages")
        }
        let tap = try TestClient.http(port: service.port,
                                      TestClient.upgradeRequest(path: "/admin/sockets/tap?token=\(token)", headers: ["X-Admin: no"]))
        #expect(tap.status == 403)
        #expect(try get(service.port, "/admin/sockets/nope").status == 404)
        let post = try TestClient.http(port: service.port,
                                       "POST /admin/sockets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Admin: yes\r\nContent-Length: 0\r\n\r\n")
        #expect(post.status == 405)
    }

    /// A page on another site that rebinds its name to this server sends
    /// its own name as Host (and as Origin, which then agrees): 421 before
    /// the check runs, on every admin path and the tap's upgrade. A declared
    /// name is served whatever its case and port.
    @Test(arguments: backends) func onlyTheDeclaredHostsReachTheAdminPages(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        let port = service.port
        for host in ["evil.example:\(port)", "evil.example", "127.0.0.2:\(port)", "localhost.evil.example"] {
            for path in ["/admin/sockets", "/admin/sockets/send?token=\(token)&id=\(UUID())&cmd=x&param=1"] {
                let answer = try TestClient.http(port: port, "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nX-Admin: yes\r\n"
                                                 + "Origin: http://\(host)\r\nSec-Fetch-Site: same-origin\r\n\r\n")
                #expect(answer.status == 421, "\(host) \(path)")
                #expect(!answer.body.contains(token))
            }
            let tap = TestClient.upgradeRequest(path: "/admin/sockets/tap?token=\(token)",
                                                headers: ["X-Admin: yes", "Origin: http://\(host)"])
                .replacingOccurrences(of: "Host: 127.0.0.1\r\n", with: "Host: \(host)\r\n")
            #expect(try TestClient.http(port: port, tap).status == 421, "tap with Host \(host)")
        }
        let noHost = try TestClient.http(port: port, "GET /admin/sockets HTTP/1.0\r\nX-Admin: yes\r\n\r\n")
        #expect(noHost.status == 421, "HTTP/1.0 without Host")
        for host in ["LocalHost:\(port)", "127.0.0.1"] {
            let answer = try TestClient.http(port: port, "GET /admin/sockets HTTP/1.1\r\nHost: \(host)\r\nX-Admin: yes\r\n\r\n")
            #expect(answer.status == 200, "\(host)")
        }
        #expect(service.status().limits.adminHostsRefused == 4 * 3 + 1)
        #expect(AdminAccess.hostName("[::1]:8080") == "::1")
        #expect(AdminAccess.hostName("::1") == "::1")
        #expect(AdminAccess.hostName("Example.COM:80") == "example.com")
    }

    @Test(arguments: backends) func pagesListConnectionsAndChannels(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        let alice = try TestClient.connect(port: service.port, path: "/ws?ch=room%201&user=alice")
        let bob = try TestClient.connect(port: service.port, path: "/ws?ch=room%201&user=%3Cscript%3Ebob")
        let (a, b) = (try alice.whoami().id, try bob.whoami().id)
        try alice.send(text: #"{"cmd":"echo","param":"12345"}"#)
        _ = try alice.receiveEnvelope(cmd: "echo")

        let overview = try get(service.port, "/admin/sockets")
        #expect(overview.status == 200)
        #expect(header("Content-Type", in: overview.head)?.hasPrefix("text/html") == true)
        #expect(header("Content-Security-Policy", in: overview.head)?.contains("default-src 'none'") == true)
        #expect(header("Referrer-Policy", in: overview.head) == "no-referrer")
        #expect(overview.body.contains(a.uuidString.lowercased()))
        #expect(overview.body.contains(b.uuidString.lowercased()))
        #expect(overview.body.contains("<td class=user>alice</td>"))
        #expect(overview.body.contains("&lt;script&gt;bob"), "user names are escaped")
        #expect(!overview.body.contains("<script>bob"))
        #expect(overview.body.contains("/admin/sockets/channel?name=room%201"))
        #expect(overview.body.contains(">room 1</a></td><td>2</td>"), "the channel and its member count")
        // alice: two messages in (whoami, echo), bytes as sent.
        let counters = service.connection(a)!.counters
        #expect(overview.body.contains("<td>\(counters.messagesIn)</td><td>\(counters.bytesIn)</td>"))
        #expect(!overview.body.contains("<script"), "no script on the overview")

        let channel = try get(service.port, "/admin/sockets/channel?name=room%201")
        #expect(channel.status == 200)
        #expect(channel.body.contains("2 member(s)"))
        #expect(channel.body.contains(a.uuidString.lowercased()) && channel.body.contains(b.uuidString.lowercased()))
        #expect(try get(service.port, "/admin/sockets/channel?name=nobody").status == 404)

        let page = try get(service.port, "/admin/sockets/connection?id=\(a.uuidString.lowercased())")
        #expect(page.status == 200)
        #expect(page.body.contains("<form id=send method=get action=\"/admin/sockets/send\">"))
        #expect(page.body.contains("name=token value=\"\(token)\""))
        #expect(page.body.contains("name=channel value=\"room 1\""))
        #expect(try get(service.port, "/admin/sockets/connection?id=\(UUID())").status == 404)
        #expect(try get(service.port, "/admin/sockets/connection?id=garbage").status == 404)
    }

    @Test(arguments: backends) func sendNeedsTheTokenAndASameSiteRequest(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let id = try client.whoami().id
        let fields = [("id", id.uuidString), ("cmd", "notice"), ("param", "1")]
        let refused: [(String, [String])] = [
            (query(fields), []),
            (query(fields + [("token", wrongToken(for: token))]), []),
            (query(fields + [("token", token + "0")]), []),
            (query(fields + [("token", token)]), ["Sec-Fetch-Site: cross-site"]),
            (query(fields + [("token", token)]), ["Sec-Fetch-Site: same-site"]),
            (query(fields + [("token", token)]), ["Origin: http://evil.example"]),
            (query(fields + [("token", token)]), ["Origin: null"]),
        ]
        for (q, headers) in refused {
            let answer = try get(service.port, "/admin/sockets/send?" + q, ["X-Admin: yes"] + headers)
            #expect(answer.status == 403, "\(q) \(headers)")
        }
        // Same origin, with the token: accepted.
        let ok = try get(service.port, "/admin/sockets/send?" + query(fields + [("token", token)]),
                         ["X-Admin: yes", "Sec-Fetch-Site: same-origin", "Origin: http://127.0.0.1:\(service.port)"])
        #expect(ok.status == 303)
        // Nothing from the refused ones reached the client: the first message is the accepted one.
        let first = try client.receiveJSON()
        #expect(first["cmd"] as? String == "notice")
    }

    /// Whatever the per-process token begins with, the wrong one differs from it.
    @Test func theWrongTokenDiffersFromTheTokenWhateverItsFirstDigit() {
        for digit in "0123456789abcdef" {
            let token = String(digit) + AdminPages.csrfToken.dropFirst()
            let wrong = wrongToken(for: token)
            #expect(wrong != token && wrong.count == token.count, "\(token)")
            #expect(!AdminPages.constantTimeEqual(wrong, token))
        }
    }

    @Test(arguments: backends) func sendValidatesTheFormAndDelivers(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        let target = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let other = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let id = try target.whoami().id
        _ = try other.whoami()
        func send(_ fields: [(String, String)]) throws -> (status: Int, head: String, body: String) {
            try get(service.port, "/admin/sockets/send?" + query(fields + [("token", token)]))
        }
        let badJSON = try send([("id", id.uuidString), ("cmd", "notice"), ("param", "{not json")])
        #expect(badJSON.status == 400)
        #expect(badJSON.body.contains("id=form-error>param is not JSON"))
        #expect(badJSON.body.contains("{not json</textarea>"), "the form keeps what was typed")
        #expect(try send([("id", id.uuidString), ("cmd", "notice"), ("param", "")]).status == 400)
        #expect(try send([("id", id.uuidString), ("cmd", "notice"), ("param", "1 2")]).status == 400)
        #expect(try send([("id", id.uuidString), ("cmd", "  "), ("param", "1")]).status == 400)
        #expect(try send([("id", id.uuidString), ("cmd", String(repeating: "x", count: 201)), ("param", "1")]).status == 400)
        #expect(try send([("id", "nope"), ("cmd", "notice"), ("param", "1")]).status == 400)
        #expect(try send([("id", UUID().uuidString), ("cmd", "notice"), ("param", "1")]).status == 404)

        let ok = try send([("id", id.uuidString), ("channel", "a"), ("cmd", "notice"), ("param", #" {"text": "hi & bye"} "#)])
        #expect(ok.status == 303)
        #expect(header("Location", in: ok.head) == "/admin/sockets/connection?id=\(id.uuidString.lowercased())&sent=notice")
        // The target may still have `other`'s join (an online-update sent
        // across loops) ahead of the notice: skip to the notice.
        let got = try target.receiveEnvelope(cmd: "notice")
        #expect(got["cmd"] as? String == "notice")
        #expect(got["channel"] as? String == "a")
        #expect((got["param"] as? [String: Any])?["text"] as? String == "hi & bye")
        // Only the target: the other connection's next message is its own echo.
        try other.send(text: #"{"cmd":"echo","param":0}"#)
        #expect(try other.receiveJSON()["cmd"] as? String == "echo")

        let confirmed = try get(service.port, header("Location", in: ok.head)!)
        #expect(confirmed.body.contains("id=notice>Sent <code>notice</code>"))
    }

    @Test(arguments: backends) func tapCopiesTrafficToWatchersOnly(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        #expect(try TestClient.http(port: service.port,
                                    TestClient.upgradeRequest(path: "/admin/sockets/tap", headers: ["X-Admin: yes"])).status == 403,
                "the tap needs the token")
        let page = try get(service.port, "/admin/sockets/tap")
        #expect(page.status == 200)
        let csp = header("Content-Security-Policy", in: page.head) ?? ""
        #expect(csp.contains("script-src 'nonce-") && csp.contains("connect-src 'self'"))
        #expect(page.body.contains("data-token=\"\(token)\""))

        let watcher = try TestClient.connect(port: service.port, path: "/admin/sockets/tap?token=\(token)",
                                             headers: ["X-Admin: yes", "Origin: http://127.0.0.1"]) // Host: 127.0.0.1
        #expect(eventually { service.tap.watchers == 1 })
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=t&user=carol")
        try client.send(text: #"{"cmd":"echo","param":"tapped"}"#)
        _ = try client.receiveEnvelope(cmd: "echo")
        var seen: [[String: Any]] = []
        while !(seen.contains { $0["dir"] as? String == "out" && ($0["text"] as? String ?? "").contains(#""cmd":"echo""#) }) {
            seen.append(try watcher.receiveJSON())
        }
        let inbound = seen.first { $0["dir"] as? String == "in" && ($0["text"] as? String ?? "").contains("tapped") }
        #expect(inbound?["user"] as? String == "carol")
        #expect(inbound?["bytes"] as? Int == #"{"cmd":"echo","param":"tapped"}"#.utf8.count)
        #expect(!seen.contains { $0["user"] as? String == "admin-tap" }, "a watcher's own traffic is not tapped")
        try watcher.sendClose()
        #expect(eventually { service.tap.watchers == 0 })

        // A foreign origin cannot open the tap, token or not.
        let foreign = try TestClient.http(port: service.port, TestClient.upgradeRequest(
            path: "/admin/sockets/tap?token=\(token)", headers: ["X-Admin: yes", "Origin: http://evil.example"]))
        #expect(foreign.status == 403)
    }

    @Test(arguments: backends) func theClientScriptAndItsHeartbeat(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: nil)) else { return }
        defer { service.stop() }
        let script = try get(service.port, ClientScript.path, [])
        #expect(script.status == 200)
        #expect(header("Content-Type", in: script.head)?.hasPrefix("text/javascript") == true)
        #expect(script.body == ClientScript.javaScript)
        #expect(script.body.contains("var Socket = WebSocketClient.Socket;"))
        // The heartbeat probe is answered by the service; the handler (which
        // throws on unknown commands) never sees it.
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=h")
        try client.send(text: #"{"cmd":"_heartbeat","param":null}"#)
        let reply = try client.receiveJSON()
        #expect(reply["cmd"] as? String == "_heartbeat")
        _ = try client.whoami()
    }

    /// The connection page's disconnect form closes that connection (1001)
    /// and no other; without the token it is refused and closes nothing.
    @Test(arguments: backends) func theDisconnectFormClosesThatConnectionOnly(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: adminRoutes(authorize: byHeader)) else { return }
        defer { service.stop() }
        let alice = try TestClient.connect(port: service.port, path: "/ws?ch=d&user=alice")
        let bob = try TestClient.connect(port: service.port, path: "/ws?ch=d&user=bob")
        #expect(eventually { service.status().connections == 2 })
        let id = try #require(service.connections(in: "d").first { $0.userID == "alice" }).id.uuidString.lowercased()
        let page = try get(service.port, "/admin/sockets/connection?id=\(id)")
        #expect(page.body.contains("<form id=disconnect method=get action=\"/admin/sockets/disconnect\">"))
        #expect(try get(service.port, "/admin/sockets/disconnect?token=\(wrongToken(for: token))&id=\(id)").status == 403)
        #expect(try get(service.port, "/admin/sockets/disconnect?token=\(token)&id=\(UUID())").status == 404)
        #expect(service.status().connections == 2)
        let done = try get(service.port, "/admin/sockets/disconnect?token=\(token)&id=\(id)")
        #expect(done.status == 303 && header("Location", in: done.head) == "/admin/sockets")
        var got: TestClient.Received
        repeat { got = try alice.receive() } while got != .close(code: 1001, reason: "disconnected by an admin") && !alice.closedByPeer
        #expect(got == .close(code: 1001, reason: "disconnected by an admin"))
        _ = try bob.whoami() // still served
    }

    @Test func escapingAndAges() {
        #expect(AdminPages.escape(#"<a href="x">'&'</a>"#) == "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;")
        #expect(AdminPages.percentEncode("a b/é&=") == "a%20b%2F%C3%A9%26%3D")
        #expect(AdminPages.age(59) == "59s")
        #expect(AdminPages.age(61) == "1m 1s")
        #expect(AdminPages.age(3 * 3600 + 120) == "3h 2m")
        #expect(AdminPages.age(90000) == "1d 1h")
        #expect(AdminPages.csrfToken.count == 64)
        #expect(AdminPages.constantTimeEqual("abc", "abc") && !AdminPages.constantTimeEqual("abc", "abd")
                && !AdminPages.constantTimeEqual("abc", "ab"))
    }
}

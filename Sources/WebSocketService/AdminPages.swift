import Foundation
import Logging

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

    /// Secret for this process; embedded only in pages that passed `authorize`.
    static let csrfToken: String = {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(generator.next() as UInt64, radix: 16).leftPadded(to: 16) }.joined()
    }()

    let access: AdminAccess

    init(access: AdminAccess) {
        self.access = access
    }

    /// 421 for a foreign Host, 403 for a refused check, nil to go on.
    private func refusal(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse? {
        guard access.hostAllowed(request) else {
            service.limitCounters.adminHostsRefused.wrappingAdd(1, ordering: .relaxed)
            return .status(421, "Misdirected Request: not an admin host")
        }
        guard access.authorize(request) else { return .status(403) }
        return nil
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

    // MARK: - Pages

    private func overview(_ service: WebSocketServer) -> ServerResponse {
        let status = service.status()
        var body = "<h2>Status</h2><table class=kv>"
        let rows: [(String, String)] = [
            ("backend", status.backend), ("uptime", Self.age(status.uptime)), ("connections", "\(status.connections)"),
            ("accepted (TCP)", "\(status.accepted)"),
            ("messages in / out", "\(status.messagesIn) / \(status.messagesOut)"),
            ("bytes in / out", "\(status.bytesIn) / \(status.bytesOut)"), ("dropped", "\(status.dropped)"),
        ] + Self.backplaneRows(status.backplane)
        for (name, value) in rows { body += "<tr><th>\(Self.escape(name))</th><td>\(Self.escape(value))</td></tr>" }
        body += "</table>"
        body += "<h2>Connections</h2>" + Self.connectionTable(service.connections())
        body += "<h2>Channels</h2>"
        let channels = service.channels().sorted { $0.key < $1.key }
        if channels.isEmpty {
            body += "<p class=muted>No channels.</p>"
        } else {
            body += "<table id=channels><tr><th>channel</th><th>members</th></tr>"
            for (name, members) in channels.prefix(Self.maxRows) {
                body += "<tr><td><a href=\"\(Self.channelLink(name))\">\(Self.escape(name))</a></td><td>\(members)</td></tr>"
            }
            body += "</table>" + Self.more(channels.count)
        }
        return Self.html("Sockets", body)
    }

    private static func backplaneRows(_ b: BackplaneStatus) -> [(String, String)] {
        guard b.kind != "in-process" else { return [("backplane", "in-process (one server)")] }
        return [
            ("backplane", "\(b.kind) \(b.pubSub.map { "(\($0) pub/sub) " } ?? "")\(b.endpoint ?? "") "
                + (b.connected ? "connected" : "DISCONNECTED")
                + (b.connected ? "" : b.lastError.map { ": \($0)" } ?? "")),
            ("backplane published / received", "\(b.published) / \(b.received)"),
            ("backplane not propagated", "\(b.notPropagated)"),
            ("backplane subscriptions / disconnects", "\(b.subscriptions) / \(b.disconnects)"),
        ]
    }

    private func channel(_ name: String, _ service: WebSocketServer) -> ServerResponse {
        let members = service.connections(in: name)
        let title = "Channel " + name
        guard !members.isEmpty else {
            return Self.html(title, "<p>Channel <b>\(Self.escape(name))</b> has no members.</p>", status: 404)
        }
        return Self.html(title, "<p>\(members.count) member(s).</p>" + Self.connectionTable(members))
    }

    private func connection(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse {
        guard let id = UUID(uuidString: request.queryItem("id") ?? ""), let connection = service.connection(id) else {
            return Self.html("Connection", "<p>No such connection (it may have closed).</p>", status: 404)
        }
        var notice = ""
        if let sent = request.queryItem("sent") {
            notice = "<p class=ok id=notice>Sent <code>\(Self.escape(sent))</code> to this connection.</p>"
        }
        let form = SendForm(id: id, channel: connection.channels.first ?? "", cmd: "", param: "{}")
        return Self.html("Connection " + Self.short(id), notice + Self.details(connection) + Self.sendForm(form, error: nil))
    }

    struct SendForm {
        var id: UUID
        var channel: String
        var cmd: String
        var param: String
    }

    /// The send form's target: validates, sends, then redirects (303) to
    /// the connection page so a reload does not send again.
    private func send(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse {
        if let refusal = Self.crossSiteRefusal(request) {
            service.logger.notice("admin send refused", metadata: ["reason": "\(refusal)", "remote": "\(request.remoteAddress)"])
            return Self.html("Refused", "<p class=err>\(Self.escape(refusal))</p>", status: 403)
        }
        guard let id = UUID(uuidString: request.queryItem("id") ?? "") else {
            return Self.html("Send", "<p class=err>The form needs a connection id.</p>", status: 400)
        }
        let form = SendForm(id: id, channel: request.queryItem("channel") ?? "",
                            cmd: (request.queryItem("cmd") ?? "").trimmingCharacters(in: .whitespaces),
                            param: request.queryItem("param") ?? "")
        guard let connection = service.connection(id) else {
            return Self.html("Send", "<p class=err>That connection has closed.</p>", status: 404)
        }
        func invalid(_ message: String) -> ServerResponse {
            Self.html("Connection " + Self.short(id), Self.details(connection) + Self.sendForm(form, error: message), status: 400)
        }
        guard !form.cmd.isEmpty else { return invalid("cmd must not be empty.") }
        guard form.cmd.utf8.count <= 200, form.channel.utf8.count <= 200 else { return invalid("cmd and channel are limited to 200 bytes.") }
        let param: RawJSON
        do {
            param = try RawJSON(validating: form.param)
        } catch {
            return invalid("param is not JSON: \(error)")
        }
        let sent = service.writeConnection(cmd: form.cmd, param: param, id: id,
                                           channel: form.channel.isEmpty ? nil : form.channel)
        guard sent else { return Self.html("Send", "<p class=err>That connection has closed.</p>", status: 404) }
        service.logger.info("admin sent a message", metadata: [
            "connection": "\(id.uuidString.lowercased())", "cmd": "\(form.cmd)", "remote": "\(request.remoteAddress)",
        ])
        let location = Self.root + "/connection?id=" + id.uuidString.lowercased() + "&sent=" + Self.percentEncode(form.cmd)
        return ServerResponse(status: 303, headers: Self.securityHeaders(nonce: nil) + [HTTPHeader("Location", location)],
                            body: Array("See Other".utf8))
    }

    private func tapPage() -> ServerResponse {
        let body = """
        <p>Traffic as it happens (at most \(Int(TrafficTap.eventsPerSecond)) events per second; the rest are counted as \
        skipped). <span id=tap-state class=muted>connecting…</span> <label><input type=checkbox id=pause> pause</label></p>
        <table id=tap data-token="\(Self.csrfToken)"><thead><tr><th>time</th><th>dir</th><th>connection</th><th>user</th>\
        <th>to</th><th>bytes</th><th>message</th></tr></thead><tbody></tbody></table>
        """
        let script = """
        "use strict";
        (function () {
          var table = document.getElementById("tap"), rows = table.tBodies[0], state = document.getElementById("tap-state");
          var pause = document.getElementById("pause"), max = 500, skipped = 0;
          var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname +
            "?token=" + encodeURIComponent(table.dataset.token);
          var ws = new WebSocket(url);
          ws.onopen = function () { state.textContent = "live"; };
          ws.onclose = function (e) { state.textContent = "closed (" + e.code + "): reload to watch again"; };
          function cell(tr, text, href) {
            var td = tr.insertCell();
            if (href) { var a = document.createElement("a"); a.href = href; a.textContent = text; td.appendChild(a); }
            else td.textContent = text;
          }
          ws.onmessage = function (m) {
            var e = JSON.parse(m.data);
            skipped += e.skipped;
            if (pause.checked) return;
            var tr = rows.insertRow(0);
            tr.className = e.dir;
            cell(tr, new Date(e.t).toISOString().slice(11, 23));
            cell(tr, e.dir === "in" ? "→ in" : "← out");
            if (e.conn) cell(tr, e.conn.slice(0, 8), "connection?id=" + e.conn); else cell(tr, "fan-out");
            cell(tr, e.user || "");
            cell(tr, String(e.to));
            cell(tr, String(e.bytes));
            cell(tr, e.binary ? "(binary)" : e.text);
            while (rows.rows.length > max) rows.deleteRow(rows.rows.length - 1);
            if (skipped) state.textContent = "live, " + skipped + " skipped";
          };
        })();
        """
        return Self.html("Live tap", body, script: script)
    }

    // MARK: - Pieces

    private static func connectionTable(_ connections: [Connection]) -> String {
        guard !connections.isEmpty else { return "<p class=muted>No connections.</p>" }
        var html = "<table id=connections><tr><th>id</th><th>user</th><th>path</th><th>remote</th><th>channels</th>"
            + "<th>msgs in</th><th>bytes in</th><th>msgs out</th><th>bytes out</th><th>age</th></tr>"
        let now = Date()
        for c in connections.prefix(maxRows) {
            let counters = c.counters
            let channels = c.channels.map { "<a href=\"\(channelLink($0))\">\(escape($0))</a>" }.joined(separator: " ")
            html += "<tr data-id=\"\(c.id.uuidString.lowercased())\"><td><a href=\"\(connectionLink(c.id))\"><code>\(short(c.id))</code></a></td>"
                + "<td class=user>\(escape(c.userID))</td><td>\(escape(c.path))</td><td>\(escape(c.remoteAddress))</td>"
                + "<td>\(channels)</td><td>\(counters.messagesIn)</td><td>\(counters.bytesIn)</td>"
                + "<td>\(counters.messagesOut)</td><td>\(counters.bytesOut)</td>"
                + "<td>\(age(now.timeIntervalSince(c.started)))</td></tr>"
        }
        return html + "</table>" + more(connections.count)
    }

    private static func details(_ c: Connection) -> String {
        let counters = c.counters
        let rows: [(String, String)] = [
            ("id", c.id.uuidString.lowercased()), ("user", c.userID), ("name", c.profile.name), ("path", c.path),
            ("remote", c.remoteAddress), ("age", age(Date().timeIntervalSince(c.started))),
            ("messages in / out", "\(counters.messagesIn) / \(counters.messagesOut)"),
            ("bytes in / out", "\(counters.bytesIn) / \(counters.bytesOut)"),
        ]
        var html = "<table class=kv id=details>"
        for (name, value) in rows { html += "<tr><th>\(escape(name))</th><td>\(escape(value))</td></tr>" }
        let channels = c.channels.map { "<a href=\"\(channelLink($0))\">\(escape($0))</a>" }.joined(separator: " ")
        return html + "<tr><th>channels</th><td>\(channels)</td></tr></table>"
    }

    private static func sendForm(_ form: SendForm, error: String?) -> String {
        var html = "<h2>Send a message</h2>"
        if let error { html += "<p class=err id=form-error>\(escape(error))</p>" }
        html += """
        <form id=send method=get action="\(root)/send">
        <input type=hidden name=token value="\(escape(csrfToken))">
        <input type=hidden name=id value="\(form.id.uuidString.lowercased())">
        <label>channel <input id=send-channel name=channel value="\(escape(form.channel))"></label>
        <label>cmd <input id=send-cmd name=cmd required value="\(escape(form.cmd))"></label>
        <label>param (JSON) <textarea id=send-param name=param rows=4>\(escape(form.param))</textarea></label>
        <button id=send-button>Send</button>
        </form>
        """
        return html
    }

    private static func more(_ count: Int) -> String {
        count > maxRows ? "<p class=muted>and \(count - maxRows) more.</p>" : ""
    }

    static func connectionLink(_ id: UUID) -> String { root + "/connection?id=" + id.uuidString.lowercased() }
    static func channelLink(_ name: String) -> String { root + "/channel?name=" + percentEncode(name) }
    static func short(_ id: UUID) -> String { String(id.uuidString.lowercased().prefix(8)) }

    static func age(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m \(s % 60)s" }
        if s < 86400 { return "\(s / 3600)h \(s % 3600 / 60)m" }
        return "\(s / 86400)d \(s % 86400 / 3600)h"
    }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for ch in text.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    static func percentEncode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    static func securityHeaders(nonce: String?) -> [HTTPHeader] {
        var csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        if let nonce { csp += "; script-src 'nonce-\(nonce)'; connect-src 'self'" }
        return [
            HTTPHeader("Content-Security-Policy", csp), HTTPHeader("X-Frame-Options", "DENY"),
            HTTPHeader("Referrer-Policy", "no-referrer"), HTTPHeader("Cache-Control", "no-store"),
            HTTPHeader("X-Content-Type-Options", "nosniff"),
        ]
    }

    static func html(_ title: String, _ body: String, status: Int = 200, script: String? = nil) -> ServerResponse {
        var nonce: String?
        if script != nil {
            var generator = SystemRandomNumberGenerator()
            nonce = String(generator.next() as UInt64, radix: 36) + String(generator.next() as UInt64, radix: 36)
        }
        var page = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title)) · admin</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
          nav a { margin-right: 1rem; } h1 { font-size: 1.3rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; }
          table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
          th { background: #f4f4f4; } .kv th { width: 11rem; } .muted { color: #777; } .err { color: #b00; } .ok { color: #070; }
          form { display: grid; gap: .5rem; max-width: 36rem; } form label { display: grid; gap: .2rem; }
          textarea { font-family: ui-monospace, monospace; } tr.in td:nth-child(2) { color: #05a; } tr.out td:nth-child(2) { color: #a50; }
          #tap td:nth-child(2), #tap td:first-child { white-space: nowrap; }
          #tap td:last-child { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; max-width: 40rem; }
        </style></head><body>
        <nav><a href="\(root)">Connections &amp; channels</a><a href="\(root)/tap">Live tap</a></nav>
        <h1>\(escape(title))</h1>
        \(body)
        """
        if let script, let nonce { page += "\n<script nonce=\"\(nonce)\">\n\(script)\n</script>" }
        page += "\n</body></html>\n"
        return ServerResponse(status: status, contentType: "text/html; charset=utf-8", headers: securityHeaders(nonce: nonce),
                            body: Array(page.utf8))
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

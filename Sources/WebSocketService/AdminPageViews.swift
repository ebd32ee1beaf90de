import Foundation
import Logging

/// Each admin page's HTML, and the send form's handling.
extension AdminPages {
    func overview(_ service: WebSocketServer) -> ServerResponse {
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

    func channel(_ name: String, _ service: WebSocketServer) -> ServerResponse {
        let members = service.connections(in: name)
        let title = "Channel " + name
        guard !members.isEmpty else {
            return Self.html(title, "<p>Channel <b>\(Self.escape(name))</b> has no members.</p>", status: 404)
        }
        return Self.html(title, "<p>\(members.count) member(s).</p>" + Self.connectionTable(members))
    }

    func connection(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse {
        guard let id = UUID(uuidString: request.queryItem("id") ?? ""), let connection = service.connection(id) else {
            return Self.html("Connection", "<p>No such connection (it may have closed).</p>", status: 404)
        }
        var notice = ""
        if let sent = request.queryItem("sent") {
            notice = "<p class=ok id=notice>Sent <code>\(Self.escape(sent))</code> to this connection.</p>"
        }
        let form = SendForm(id: id, channel: connection.channels.first ?? "", cmd: "", param: "{}")
        return Self.html("Connection " + Self.short(id),
                         notice + Self.details(connection) + Self.sendForm(form, error: nil) + Self.disconnectForm(id))
    }

    /// The disconnect form's target: closes the connection with 1001 (a
    /// client that reconnects, as the browser client does, comes back),
    /// then redirects (303) to the overview.
    func disconnect(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse {
        if let refusal = Self.crossSiteRefusal(request) {
            service.logger.notice("admin disconnect refused", metadata: ["reason": "\(refusal)", "remote": "\(request.remoteAddress)"])
            return Self.html("Refused", "<p class=err>\(Self.escape(refusal))</p>", status: 403)
        }
        guard let id = UUID(uuidString: request.queryItem("id") ?? ""),
              service.close(id, code: .goingAway, reason: "disconnected by an admin") else {
            return Self.html("Disconnect", "<p class=err>No such connection (it may have closed).</p>", status: 404)
        }
        service.logger.info("admin disconnected a connection", metadata: [
            "connection": "\(id.uuidString.lowercased())", "remote": "\(request.remoteAddress)",
        ])
        return ServerResponse(status: 303, headers: Self.securityHeaders(nonce: nil) + [HTTPHeader("Location", Self.root)],
                              body: Array("See Other".utf8))
    }

    struct SendForm {
        var id: UUID
        var channel: String
        var cmd: String
        var param: String
    }

    /// The send form's target: validates, sends, then redirects (303) to
    /// the connection page so a reload does not send again.
    func send(_ request: ServerRequest, _ service: WebSocketServer) -> ServerResponse {
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

    func tapPage() -> ServerResponse {
        let body = """
        <p>Traffic as it happens (at most \(Int(TrafficTap.eventsPerSecond)) events per second; the rest are counted as \
        skipped). <span id=tap-state class=muted>connecting…</span> <label><input type=checkbox id=pause> pause</label></p>
        <table id=tap data-token="\(Self.csrfToken)"><thead><tr><th>time</th><th>dir</th><th>connection</th><th>user</th>\
        <th>to</th><th>bytes</th><th>message</th></tr></thead><tbody></tbody></table>
        """
        return Self.html("Live tap", body, script: Self.tapScript)
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

    private static func disconnectForm(_ id: UUID) -> String {
        """
        <h2>Disconnect</h2>
        <form id=disconnect method=get action="\(root)/disconnect">
        <input type=hidden name=token value="\(escape(csrfToken))">
        <input type=hidden name=id value="\(id.uuidString.lowercased())">
        <button id=disconnect-button>Close with 1001</button>
        </form>
        """
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
}

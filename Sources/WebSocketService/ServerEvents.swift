import CWebSocket
import Foundation
import Logging

// The engine's callbacks, on the loop threads: requests (pages, admin,
// upgrades and their checks), opens, messages (limits, the envelope, the
// handler) and closes (channels left, presence, counters).
extension WebSocketServer {
    func handleRequest(_ req: OpaquePointer, _ http: UnsafePointer<cws_http_request>,
                       _ upgrade: UnsafePointer<cws_upgrade_info>?) {
        let request = Self.makeRequest(http, remote: String(cString: cws_request_remote(req)), isUpgrade: upgrade != nil,
                                       tlsServerName: cws_request_tls_server_name(req).map { String(cString: $0) })
        guard request.isUpgrade else {
            if let admin, AdminPages.serves(request.path) {
                respond(req, admin.page(request, service: self))
                return
            }
            if let page = routes.page(for: request.path) {
                guard request.method == "GET" || request.method == "HEAD" else {
                    respond(req, ServerResponse(status: 405, headers: [HTTPHeader("Allow", "GET, HEAD")],
                                              body: Array("Method Not Allowed".utf8)))
                    return
                }
                respond(req, page(request))
            } else if routes.socket(for: request.path) != nil {
                respond(req, ServerResponse(status: 426, headers: [HTTPHeader("Upgrade", "websocket")],
                                          body: Array("Upgrade Required".utf8)))
            }
            return // unanswered: the engine sends 404
        }
        guard let route = admin?.socket(for: request.path, service: self).map(WebSocketRoutes.SocketDecider.now)
            ?? routes.socket(for: request.path) else {
            refuseUpgrade(.now(req), .status(404))
            return
        }
        guard routes.originAllowed(request.origin) else {
            noticeAboutRequest("origin refused", ["origin": "\(LogText.clip(request.origin ?? ""))",
                                                  "remote": "\(request.remoteAddress)"])
            refuseUpgrade(.now(req), .status(403))
            return
        }
        switch route.decide {
        case .now(let decide):
            complete(.now(req), request, decide(request), shared: route.shared)
        case .later(let decide):
            // The request is a copy already (makeRequest); the engine keeps
            // what the 101 needs and stops reading until the answer.
            let engineID = cws_request_defer(req)
            guard engineID != 0 else {
                refuseUpgrade(.now(req), .status(503))
                return
            }
            // Kept until it is done, so a stop can cancel a decision that
            // still awaits (the engine has answered it 503 by then).
            pendingDecisions.withLock { tasks in
                tasks[engineID] = Task(executorPreference: asyncExecutor) {
                    let decision = await decide(request)
                    self.pendingDecisions.withLock { _ = $0.removeValue(forKey: engineID) }
                    self.complete(.later(engineID), request, decision, shared: route.shared)
                }
            }
        }
    }

    /// Where an upgrade decision's answer goes: the request still inside
    /// on_request (on the loop thread), or one the engine holds for it.
    enum UpgradeAnswer {
        case now(OpaquePointer)
        case later(cws_conn_id)
    }

    /// Carries out an upgrade decision; `shared`: the endpoint's settings
    /// when it has fixed ones (the decision's handler, limits and checks are
    /// those), else nil.
    func complete(_ answer: UpgradeAnswer, _ request: ServerRequest, _ decision: UpgradeDecision,
                  shared: EndpointSettings?) {
        switch decision {
        case .refuse(let response):
            refuseUpgrade(answer, response)
        case .accept(let profile, let channel, let handler, let limits, let authorization, let subprotocol):
            if let subprotocol, !request.subprotocols.contains(subprotocol) {
                // A client fails a connection whose 101 names a subprotocol it did not offer.
                logger.error("upgrade decision chose a subprotocol the client did not offer",
                             metadata: ["subprotocol": "\(LogText.clip(subprotocol))", "path": "\(LogText.clip(request.path))"])
                refuseUpgrade(answer, .status(500))
                return
            }
            let client = ClientAddress.resolve(request, trustedProxies: configuration.trustedProxies)
            let connection = Connection(
                id: UUID(), profile: profile, remoteAddress: request.remoteAddress, clientAddress: client,
                path: request.path, firstChannel: channel, subprotocol: subprotocol,
                recoveryPositions: historyStore.isEmpty ? nil : ChannelPosition.recoveryPositions(request),
                settings: shared ?? EndpointSettings(handler: handler, limits: limits, authorization: authorization),
                logger: logger)
            if let channel, let reason = joinRefusal(connection, channel, askHook: true) {
                limitCounters.joinsRefused.wrappingAdd(1, ordering: .relaxed)
                let tooLong = channel.utf8.count > limits.maxChannelNameBytes
                refuseUpgrade(answer, .status(tooLong ? 400 : 403, reason))
                return
            }
            if let most = configuration.maxConnectionsPerAddress {
                guard addresses.reserve(client, limit: most) else {
                    limitCounters.refusedPerAddress.wrappingAdd(1, ordering: .relaxed)
                    refuseUpgrade(answer, ServerResponse(status: 429, headers: [HTTPHeader("Retry-After", "5")],
                                                 body: Array("Too many connections from \(client)".utf8)))
                    return
                }
            }
            // The engine holds this reference until on_close.
            let user = Unmanaged.passRetained(connection)
            let accepted: Bool
            switch answer {
            case .now(let req):
                let engineID = subprotocol.map { $0.withCString { cws_request_accept(req, $0, user.toOpaque()) } }
                    ?? cws_request_accept(req, nil, user.toOpaque())
                if engineID != 0 { connection.setEngineID(engineID) }
                accepted = engineID != 0
            case .later(let engineID):
                // Before the answer: the loop may run on_open before this thread sees the result.
                connection.setEngineID(engineID)
                let rc = subprotocol.map { $0.withCString { cws_deferred_accept(server, engineID, $0, user.toOpaque()) } }
                    ?? cws_deferred_accept(server, engineID, nil, user.toOpaque())
                if rc != 0 { lateDecision(request, rc) }
                accepted = rc == 0
            }
            guard accepted else {
                // Refused by the engine (timed out, stopped, the client left): the reference is ours again.
                user.release()
                if configuration.maxConnectionsPerAddress != nil { addresses.release(client) }
                return
            }
            metrics?.upgradesAccepted.increment()
        }
    }

    /// An upgrade answered with a status instead of 101, counted by that status.
    private func refuseUpgrade(_ answer: UpgradeAnswer, _ response: ServerResponse) {
        // Counted once it is the answer: a late one was not (the engine's 503 was).
        if respond(answer, response) { metrics?.upgradeRefused(status: response.status) }
    }

    /// False when the engine no longer waits for this answer.
    @discardableResult
    private func respond(_ answer: UpgradeAnswer, _ response: ServerResponse) -> Bool {
        switch answer {
        case .now(let req):
            respond(req, response)
            return true
        case .later(let engineID):
            let rc = response.contentType.withCString { type in
                response.body.withUnsafeBytes { body in
                    if let lines = response.headerLines {
                        lines.withCString {
                            cws_deferred_respond(server, engineID, Int32(response.status), type, $0, body.baseAddress, body.count)
                        }
                    } else {
                        cws_deferred_respond(server, engineID, Int32(response.status), type, nil, body.baseAddress, body.count)
                    }
                }
            }
            if rc != 0 { lateDecision(nil, rc) }
            return rc == 0
        }
    }

    /// An awaited decision the engine no longer waits for (past the
    /// handshake timeout, a stop, or the client left): it was answered 503.
    private func lateDecision(_ request: ServerRequest?, _ rc: Int32) {
        logger.debug("upgrade decision came too late", metadata: ["path": "\(LogText.clip(request?.path ?? ""))", "rc": "\(rc)"])
    }

    private func respond(_ req: OpaquePointer, _ response: ServerResponse) {
        response.contentType.withCString { type in
            response.body.withUnsafeBytes { body in
                if let lines = response.headerLines {
                    lines.withCString { cws_request_respond(req, Int32(response.status), type, $0, body.baseAddress, body.count) }
                } else {
                    cws_request_respond(req, Int32(response.status), type, nil, body.baseAddress, body.count)
                }
            }
        }
    }

    private static func string(_ slice: cws_slice) -> String {
        guard let ptr = slice.ptr else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: slice.len), as: UTF8.self)
    }

    private static func makeRequest(_ http: UnsafePointer<cws_http_request>, remote: String, isUpgrade: Bool,
                                    tlsServerName: String?) -> ServerRequest {
        let count = Int(http.pointee.header_count)
        let offset = MemoryLayout<cws_http_request>.offset(of: \cws_http_request.headers)!
        let first = (UnsafeRawPointer(http) + offset).assumingMemoryBound(to: cws_http_header.self)
        var headers: [HTTPHeader] = []
        headers.reserveCapacity(count)
        for i in 0..<min(count, Int(CWS_HTTP_MAX_HEADERS)) {
            headers.append(HTTPHeader(string(first[i].name), string(first[i].value)))
        }
        let query = http.pointee.query.ptr == nil ? nil : string(http.pointee.query)
        var request = ServerRequest(method: string(http.pointee.method), path: string(http.pointee.path), query: query,
                                    headers: headers, remoteAddress: remote, isUpgrade: isUpgrade)
        request.tlsServerName = tlsServerName
        return request
    }

    func opened(_ connection: Connection) {
        state.withLock { s in
            s.byID[connection.id] = connection
        }
        if let channel = connection.firstChannel { join(connection, channel, askHook: false) }
        startSessionTask(connection)
        tap.opened(connection)
        // The service's logger: the connection's own is made only when a handler needs it.
        logger.debug("open", metadata: ["connection": "\(connection.id.uuidString.lowercased())",
                                        "remote": "\(connection.remoteAddress)", "path": "\(connection.path)"])
        hooks.withLock { $0.onOpen }?(connection)
    }

    func received(_ connection: Connection, opcode: UInt8, _ data: UnsafeRawBufferPointer) {
        connection.countIn(data.count)
        guard admitInbound(connection, bytes: data.count) else { return }
        if tap.isWatched { tap.received(data, opcode: opcode, from: connection, service: self) }
        switch connection.handler {
        case .raw(let handler):
            handler.handle(service: self, connection: connection,
                           message: RawMessage(opcode: Opcode(rawValue: opcode) ?? .binary, bytes: data),
                           logger: connection.logger)
        case .rawSession:
            let message: WireMessage = opcode == Opcode.text.rawValue ? .text(String(decoding: data, as: UTF8.self))
                                                                      : .binary(Array(data))
            let engineID = connection.engineID
            connection.rawQueue?.push(message) { _ = cws_pause_reading(server, engineID) }
        case .envelope, .asyncEnvelope, .envelopeSession:
            guard opcode == Opcode.text.rawValue else {
                write(.error("binary messages are not accepted here: send JSON text"), to: connection)
                return
            }
            let envelope: Envelope
            do {
                envelope = try Envelope.parse(data)
            } catch {
                connection.logger.debug("bad envelope", metadata: ["error": "\(error)"])
                write(.error("bad message: \(error)"), to: connection)
                return
            }
            guard envelopeWithinCaps(envelope, connection) else { return }
            // The browser client's heartbeat probe: answered here, never seen by handlers.
            if envelope.cmd == ClientScript.heartbeatCommand {
                write(Envelope(cmd: ClientScript.heartbeatCommand), to: connection)
                return
            }
            let message = Message(cmd: envelope.cmd, param: envelope.param, channel: envelope.channel)
            guard commandAuthorized(message, connection) else { return }
            guard case .envelope(let handler) = connection.handler else {
                let engineID = connection.engineID
                connection.queue?.push(message) { _ = cws_pause_reading(server, engineID) }
                return
            }
            do {
                try handler.handle(service: self, connection: connection, message: message, logger: connection.logger)
            } catch {
                // Per message: debug; the warning is rationed (a client can make every message fail).
                let metadata: Logger.Metadata = ["cmd": "\(LogText.clip(envelope.cmd))", "error": "\(LogText.clip("\(error)"))"]
                connection.logger.debug("handler failed", metadata: metadata)
                warnAbout(connection, "handler failed", metadata)
                write(.error("\(error)"), to: connection)
            }
        }
    }

    func closed(_ connection: Connection, code: UInt16, reason: String) {
        // Counted before the connection leaves the tables: whoever sees it
        // gone (connections(), the connections gauge) sees its close counted.
        limitCounters.closed(code: code)
        metrics?.closed(code: code)
        let engineID = connection.engineID
        var updates: [(channel: String, presence: [UInt8], ids: [cws_conn_id])] = []
        var left: [String] = []
        state.withLock { s in
            s.byID[connection.id] = nil
            // Read under the lock: a join racing with this close either
            // happened before (and is undone here) or finds the connection gone.
            let channels = connection.withJoined { joined in
                defer { joined.removeAll() }
                return joined
            }
            for channel in channels {
                guard s.channels[channel]?.removeValue(forKey: engineID) != nil else { continue }
                left.append(channel)
                let members = s.channels[channel] ?? [:]
                if members.isEmpty {
                    s.channels[channel] = nil
                    if isDistributed { lastLocalMemberLeft(channel) }
                }
                // Remote members may remain when no local one does.
                if !members.isEmpty || isDistributed, let presence = presenceUpdate(connection, channel: channel, connected: false) {
                    updates.append((channel, presence, Self.recipients(members, except: nil, bytes: presence.count)))
                }
            }
        }
        for update in updates {
            fanOut(update.presence, to: update.ids)
            if isDistributed { publishPresence(update.presence, channel: update.channel) }
        }
        if isDistributed { for channel in left { backplane.membersChanged(channel: channel) } }
        if historyInBackplane, !left.isEmpty { dropHistoryCopies(left) }
        if configuration.maxConnectionsPerAddress != nil { addresses.release(connection.clientAddress) }
        connection.queue?.finish()
        connection.rawQueue?.finish()
        connection.task?.cancel()
        connection.drainClosed()
        tap.closed(connection)
        connection.logger.debug("closed", metadata: ["code": "\(code)"])
        hooks.withLock { $0.onClose }?(connection, CloseCode(rawValue: code), reason)
    }
}

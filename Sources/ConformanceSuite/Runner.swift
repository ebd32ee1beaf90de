import WebSocketProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the server is and what the cases may assume about it.
public struct Target: Sendable {
    public var host: String
    public var port: Int
    /// The path the upgrade requests go to (an echo endpoint).
    public var path: String
    /// Seconds a case waits for something that should arrive.
    public var deadline: Double
    /// The server's largest message: the limits cases send exactly this
    /// much (echoed) and one byte more (closed with 1009).
    public var maxMessage: Int

    public init(host: String = "127.0.0.1", port: Int, path: String = "/", deadline: Double = 5,
                maxMessage: Int = 16 << 20) {
        self.host = host
        self.port = port
        self.path = path
        self.deadline = deadline
        self.maxMessage = maxMessage
    }
}

public struct Runner: Sendable {
    public var target: Target
    public init(target: Target) { self.target = target }

    /// The table for this target, filtered by group and case id (an id
    /// matches itself and the ids under it: "6.4" runs 6.4.1, 6.4.2...).
    public func cases(groups: [String] = [], ids: [String] = []) -> [Case] {
        Suite.cases(for: target).filter { c in
            (groups.isEmpty || groups.contains { $0.lowercased() == c.group.rawValue })
                && (ids.isEmpty || ids.contains { c.id == $0 || c.id.hasPrefix($0 + ".") })
        }
    }

    /// Runs the cases one after the other, calling `progress` after each.
    public func run(_ cases: [Case], progress: (CaseResult) -> Void = { _ in }) -> [CaseResult] {
        cases.map { c in
            let r = run(c)
            progress(r)
            return r
        }
    }

    public func run(_ c: Case) -> CaseResult {
        let start = ContinuousClock.now
        let verdict: Verdict
        do {
            verdict = try execute(c)
        } catch let e as WireError {
            verdict = .failed(e.description)
        } catch is Socket.Timeout {
            verdict = .failed("nothing arrived within \(seconds(c))s")
        } catch {
            verdict = .failed("\(error)")
        }
        let d = (ContinuousClock.now - start).components
        return CaseResult(testCase: c, verdict: verdict,
                          seconds: Double(d.seconds) + Double(d.attoseconds) / 1e18)
    }

    private func seconds(_ c: Case) -> Double {
        if case .failWithin(let t, _) = c.expect { return t }
        return c.deadline ?? target.deadline
    }

    private func execute(_ c: Case) throws -> Verdict {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds(c) * 1000))
        let socket = try Socket(host: target.host, port: target.port, deadline: deadline)

        if case .none = c.opening {
            try socket.write(c.send, chop: c.chop, deadline: deadline)
            return try checkHTTP(socket, sent: c.send, expect: c.expect, deadline: deadline)
        }

        // The opening handshake.
        var deflate = false
        var extraHeaders: [String] = []
        if case .deflate(let offer, _) = c.opening {
            deflate = true
            extraHeaders.append("Sec-WebSocket-Extensions: \(offer)")
        }
        let (request, key) = Suite.upgradeRequest(host: target.host, path: target.path, headers: extraHeaders)
        var pipelined = false
        if case .pipelined = c.opening { pipelined = true }
        try socket.write(Array(request.utf8) + (pipelined ? c.send : []), deadline: deadline)
        let head = try readHead(socket, deadline: deadline)
        guard let head else { return .failed("the server closed the connection during the opening handshake") }
        guard head.status == 101 else { return .failed("the opening handshake got HTTP \(head.status), not 101") }
        guard head.header("sec-websocket-accept") == Handshake.acceptKey(for: key) else {
            return .failed("wrong Sec-WebSocket-Accept: \(head.header("sec-websocket-accept") ?? "none")")
        }
        if case .deflate(let offer, let takeover) = c.opening {
            let ext = (head.header("sec-websocket-extensions") ?? "").lowercased()
            guard ext.contains("permessage-deflate") else {
                return .skipped("the server did not accept the permessage-deflate offer")
            }
            if offer.contains("server_no_context_takeover") && !ext.contains("server_no_context_takeover") {
                return .failed("server_no_context_takeover was offered, the answer lacks it: \(ext)")
            }
            if takeover && ext.contains("client_no_context_takeover") {
                return .skipped("the server asked for client_no_context_takeover")
            }
        } else if head.header("sec-websocket-extensions") != nil {
            return .failed("the server accepted an extension nobody offered: \(head.header("sec-websocket-extensions")!)")
        }
        let peer = Peer(socket: socket, leftover: head.rest, deflate: deflate)

        if !pipelined { try socket.write(c.send, chop: c.chop, deadline: deadline) }

        func expectMessages(_ messages: [Message]) throws -> String? {
            for (i, m) in messages.enumerated() {
                let e = try peer.next(deadline: deadline)
                guard e == .message(m) else { return "expected \(m) (message \(i + 1)), got \(e)" }
            }
            if !c.then.isEmpty { try socket.write(c.then, chop: c.chop, deadline: deadline) }
            return nil
        }

        /// After the server's close: answer it, then the server must drop TCP.
        func finishClose(echoing code: UInt16) throws -> String? {
            try socket.write(code == 1005 ? close(nil) : close(code), deadline: deadline)
            let e = try? peer.next(deadline: deadline)
            switch e {
            case .eof?: return nil
            case nil: return "the server did not close TCP after the closing handshake"
            case let other?: return "expected TCP close after the closing handshake, got \(other)"
            }
        }

        func expectClose(_ codes: [UInt16], after: [Message]) throws -> Verdict {
            if let problem = try expectMessages(after) { return .failed(problem) }
            let e = try peer.next(deadline: deadline)
            guard case .close(let got, _) = e else {
                return .failed("expected close \(codes.map(String.init).joined(separator: "/")), got \(e)")
            }
            guard codes.contains(got) else {
                return .failed("expected close \(codes.map(String.init).joined(separator: "/")), got close \(got == 1005 ? "(no code)" : String(got))")
            }
            if let problem = try finishClose(echoing: got) { return .failed(problem) }
            return .ok
        }

        switch c.expect {
        case .echo(let messages):
            if let problem = try expectMessages(messages) { return .failed(problem) }
            try socket.write(close(1000), deadline: deadline)
            let e = try peer.next(deadline: deadline)
            guard case .close(let code, _) = e, code == 1000 || code == 1005 else {
                return .failed("expected the close handshake (1000) after the echo, got \(e)")
            }
            let end = try? peer.next(deadline: deadline)
            guard end == .eof else { return .failed("the server did not close TCP after the closing handshake") }
            return .ok

        case .close(let code, let after):
            return try expectClose([code], after: after)
        case .closeAny(let codes, let after):
            return try expectClose(codes, after: after)


        case .failWithin(_, let after):
            if let problem = try expectMessages(after) { return .failed(problem) }
            let e = try peer.next(deadline: deadline)
            switch e {
            case .eof, .close: return .ok
            case .message: return .failed("expected the connection to fail, got \(e)")
            }

        case .httpStatus, .httpStatusAny:
            return .failed("an HTTP expectation needs opening: .none")
        }
    }

    struct Head {
        var status: Int
        var lines: [String]
        var rest: [UInt8]

        func header(_ name: String) -> String? {
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                if line[..<colon].trimmed().lowercased() == name {
                    return String(line[line.index(after: colon)...]).trimmed()
                }
            }
            return nil
        }
    }

    /// The HTTP head of the answer; nil if the server closes before one.
    private func readHead(_ socket: Socket, deadline: ContinuousClock.Instant) throws -> Head? {
        var data: [UInt8] = []
        while true {
            let chunk = try socket.read(deadline: deadline)
            if chunk.isEmpty { return nil }
            data += chunk
            if let end = Suite.headEnd(data) {
                let text = String(decoding: data[0..<end], as: UTF8.self)
                let lines = text.lines()
                let parts = lines[0].split(separator: " ")
                guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
                    throw WireError("not an HTTP answer: \(lines[0].prefix(80))")
                }
                return Head(status: status, lines: lines, rest: Array(data[(end + 4)...]))
            }
            if data.count > 65536 { throw WireError("no end of the HTTP head in 64 KiB") }
        }
    }

    private func checkHTTP(_ socket: Socket, sent: [UInt8], expect: Expect, deadline: ContinuousClock.Instant) throws -> Verdict {
        let head: Head?
        do {
            head = try readHead(socket, deadline: deadline)
        } catch is Socket.Timeout {
            if case .failWithin = expect { return .failed("neither an answer nor a close within the deadline") }
            throw Socket.Timeout()
        }
        switch expect {
        case .failWithin:
            guard let head else { return .ok }
            return head.status == 101 ? .failed("the server accepted the upgrade (101)") : .ok
        case .httpStatus(let status, let header):
            guard let head else { return .failed("the server closed without an HTTP answer (expected \(status))") }
            guard head.status == status else { return .failed("expected HTTP \(status), got \(head.status)") }
            if let header {
                let want = header.split(separator: ":", maxSplits: 1).map { $0.trimmed().lowercased() }
                guard head.header(want[0])?.lowercased() == want[1] else {
                    return .failed("expected the header \"\(header)\", got \"\(head.header(want[0]) ?? "none")\"")
                }
            }
            if status == 101 {
                let request = String(decoding: sent, as: UTF8.self)
                let key = request.lines()
                    .first { $0.lowercased().hasPrefix("sec-websocket-key:") }?
                    .dropFirst("sec-websocket-key:".count).trimmed() ?? ""
                guard head.header("sec-websocket-accept") == Handshake.acceptKey(for: key) else {
                    return .failed("wrong Sec-WebSocket-Accept: \(head.header("sec-websocket-accept") ?? "none")")
                }
            }
            return .ok
        case .httpStatusAny(let statuses):
            guard let head else { return .failed("the server closed without an HTTP answer") }
            guard statuses.contains(head.status) else {
                return .failed("expected HTTP \(statuses.map(String.init).joined(separator: "/")), got \(head.status)")
            }
            return .ok
        default:
            return .failed("a handshake case needs an HTTP expectation")
        }
    }
}

extension StringProtocol {
    func trimmed() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

extension String {
    /// The CRLF-separated lines.
    func lines() -> [String] {
        var out: [String] = []
        var current: [UInt8] = []
        var bytes = Array(utf8)[...]
        while let b = bytes.popFirst() {
            if b == 13 && bytes.first == 10 {
                bytes.removeFirst()
                out.append(String(decoding: current, as: UTF8.self))
                current = []
            } else {
                current.append(b)
            }
        }
        out.append(String(decoding: current, as: UTF8.self))
        return out
    }
}

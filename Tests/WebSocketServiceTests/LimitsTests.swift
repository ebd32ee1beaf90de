import Foundation
import Logging
import Synchronization
import Testing
@testable import WebSocketService

/// Counts the envelopes its handler ran for, then behaves as `TestHandler`.
private final class CountingHandler: EnvelopeHandler {
    let handled = Atomic<Int>(0)
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        handled.wrappingAdd(1, ordering: .relaxed)
        try TestHandler().handle(service: service, connection: connection, message: message, logger: logger)
    }
}

private func routes(_ handler: some EnvelopeHandler, limits: Limits = Limits(), authorization: Authorization = .none) -> WebSocketRoutes {
    var routes = WebSocketRoutes()
    routes.socket("/ws", handler: handler, limits: limits, authorization: authorization) { request in
        .accept(request.queryItem("user").map { Profile(userID: $0) })
    }
    return routes
}

extension TestClient {
    /// Reads until the close frame; its code and reason.
    func closeFrame(timeout: Duration = .seconds(5)) throws -> (code: UInt16, reason: String) {
        let deadline = ContinuousClock.now + timeout
        while true {
            if case .close(let code, let reason) = try receive(timeout: deadline - .now) { return (code, reason) }
        }
    }

    /// The `param` of the next `error` envelope.
    func nextError(timeout: Duration = .seconds(5)) throws -> [String: Any] {
        try receiveEnvelope(cmd: "error", timeout: timeout)["param"] as? [String: Any] ?? [:]
    }
}

/// The service's limits and checks, each on both backends: what passes, what
/// the client is told, and what is counted. Rates are set to 0 per second so
/// that what passes is exactly the burst, whatever the machine's speed.
@Suite struct LimitsTests {
    @Test(arguments: backends) func aFloodOverTheMessageRateIsClosedWith1008(_ backend: Configuration.Backend) throws {
        let handler = CountingHandler()
        var limits = Limits()
        limits.messages = Limits.Rate(perSecond: 0, burst: 20)
        guard let service = try startService(backend, routes: routes(handler, limits: limits)) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        for n in 0..<100 { try client.send(text: #"{"cmd":"leave","param":"nope\#(n)"}"#) }
        let close = try client.closeFrame()
        #expect(close.code == 1008 && close.reason == "rate limit exceeded")
        #expect(handler.handled.load(ordering: .relaxed) == 20, "exactly the burst reached the handler")
        let limitsSeen = service.status().limits
        #expect(limitsSeen.rateLimitCloses == 1)
        #expect(limitsSeen.rateLimited >= 1)
        #expect(eventually { service.status().limits.closeCodes[1008] == 1 })
    }

    @Test(arguments: backends) func theDropPolicyDropsAndSaysSoOnce(_ backend: Configuration.Backend) throws {
        let handler = CountingHandler()
        var limits = Limits()
        limits.messages = Limits.Rate(perSecond: 0, burst: 10)
        limits.ratePolicy = .drop
        guard let service = try startService(backend, routes: routes(handler, limits: limits)) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        for n in 0..<60 { try client.send(text: #"{"cmd":"echo","param":\#(n)}"#) }
        var echoed: [Int] = []
        var notices: [[String: Any]] = []
        // 10 echoes and one notice (the rest fall within its second); then a probe that is dropped too.
        while echoed.count + notices.count < 11 {
            let object = try client.receiveJSON()
            if object["cmd"] as? String == "echo" { echoed.append(object["param"] as? Int ?? -1) }
            if object["cmd"] as? String == "error" { notices.append(object["param"] as? [String: Any] ?? [:]) }
        }
        #expect(echoed == Array(0..<10))
        #expect(notices.count == 1)
        #expect(notices.first?["code"] as? String == "rate-limited")
        #expect(notices.first?["dropped"] as? String == "1", "the first drop is told at once")
        #expect(eventually { service.status().limits.rateLimited == 50 })
        #expect(handler.handled.load(ordering: .relaxed) == 10)
        let connection = try #require(service.connections().first)
        #expect(connection.counters.refused == 50)
        #expect(connection.counters.messagesIn == 60, "dropped messages still count as received")
        #expect(service.status().limits.rateLimitCloses == 0)
    }

    @Test(arguments: backends) func theByteRateLetsABigMessageThroughThenWaits(_ backend: Configuration.Backend) throws {
        let handler = CountingHandler()
        var limits = Limits()
        limits.messages = nil
        limits.bytes = Limits.Rate(perSecond: 0, burst: 1000)
        limits.ratePolicy = .drop
        guard let service = try startService(backend, routes: routes(handler, limits: limits)) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let filler = String(repeating: "x", count: 380)
        // Each message is about 400 bytes: 1000 -> 600 -> 200 -> in debt, so three pass.
        for n in 0..<5 { try client.send(text: #"{"cmd":"echo","param":"\#(filler)\#(n)"}"#) }
        for n in 0..<3 {
            #expect(try client.receiveJSON()["param"] as? String == filler + "\(n)")
        }
        #expect(try client.nextError()["code"] as? String == "rate-limited")
        #expect(eventually { handler.handled.load(ordering: .relaxed) == 3 && service.status().limits.rateLimited == 2 })
    }

    @Test(arguments: backends) func longNamesAreRefusedWithAReason(_ backend: Configuration.Backend) throws {
        let handler = CountingHandler()
        var limits = Limits()
        limits.maxCommandBytes = 16
        limits.maxChannelNameBytes = 32
        guard let service = try startService(backend, routes: routes(handler, limits: limits)) else { return }
        defer { service.stop() }
        let long = String(repeating: "c", count: 33)
        let upgrade = try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/ws?ch=\(long)"))
        #expect(upgrade.status == 400 && upgrade.body.contains("at most 32"))

        let client = try TestClient.connect(port: service.port, path: "/ws?ch=\(String(repeating: "c", count: 32))")
        try client.send(text: #"{"cmd":"\#(String(repeating: "x", count: 17))"}"#)
        #expect(try client.nextError()["code"] as? String == "cmd-too-long")
        try client.send(text: #"{"cmd":"echo","channel":"\#(long)","param":1}"#)
        #expect(try client.nextError()["code"] as? String == "channel-name-too-long")
        try client.send(text: #"{"cmd":"join","param":"\#(long)"}"#)
        let refused = try client.nextError()
        #expect(refused["code"] as? String == "join-refused" && refused["channel"] as? String == long)
        #expect(try client.receiveEnvelope(cmd: "joined")["param"] as? Bool == false)
        #expect(handler.handled.load(ordering: .relaxed) == 1, "only the join reached the handler")
        let seen = service.status().limits
        #expect(seen.namesTooLong == 2 && seen.joinsRefused == 2)
        #expect(service.channels().keys.allSatisfy { $0.utf8.count <= 32 })
    }

    @Test(arguments: backends) func aConnectionJoinsAtMostMaxChannels(_ backend: Configuration.Backend) throws {
        var limits = Limits()
        limits.maxChannels = 3
        guard let service = try startService(backend, routes: routes(TestHandler(), limits: limits)) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=first")
        var joined: [Bool] = []
        for n in 0..<4 {
            try client.send(text: #"{"cmd":"join","param":"room\#(n)"}"#)
            joined.append(try client.receiveEnvelope(cmd: "joined")["param"] as? Bool ?? true)
        }
        #expect(joined == [true, true, false, false], "the first channel counts")
        #expect(try client.whoami().channels == ["first", "room0", "room1"])
        #expect(service.status().limits.joinsRefused == 2)
        // Leaving makes room again.
        try client.send(text: #"{"cmd":"leave","param":"room0"}"#)
        _ = try client.receiveEnvelope(cmd: "left")
        try client.send(text: #"{"cmd":"join","param":"room3"}"#)
        #expect(try client.receiveEnvelope(cmd: "joined")["param"] as? Bool == true)
    }

    @Test(arguments: backends) func authorizationHooksRefuseJoinsAndCommands(_ backend: Configuration.Backend) throws {
        let handler = CountingHandler()
        let authorization = Authorization(
            join: { connection, channel in
                channel.hasPrefix("staff-") && connection.userID != "boss" ? .refuse("staff only") : .allow
            },
            command: { connection, message in
                message.cmd == "close" && connection.userID != "boss" ? .refuse("only the boss closes") : .allow
            })
        guard let service = try startService(backend, routes: routes(handler, authorization: authorization)) else { return }
        defer { service.stop() }

        let upgrade = try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/ws?ch=staff-room&user=eve"))
        #expect(upgrade.status == 403 && upgrade.body.contains("staff only"), "the first channel passes through the hook")
        let boss = try TestClient.connect(port: service.port, path: "/ws?ch=staff-room&user=boss")
        #expect(try boss.whoami().channels == ["staff-room"])

        let eve = try TestClient.connect(port: service.port, path: "/ws?ch=lobby&user=eve")
        try eve.send(text: #"{"cmd":"join","param":"staff-room"}"#)
        let refusal = try eve.nextError()
        #expect(refusal["code"] as? String == "join-refused" && refusal["message"] as? String == "staff only")
        #expect(refusal["channel"] as? String == "staff-room")
        #expect(try eve.receiveEnvelope(cmd: "joined")["param"] as? Bool == false)
        #expect(service.connections(in: "staff-room").count == 1)

        try eve.send(text: #"{"cmd":"close","param":1000}"#)
        let refused = try eve.nextError()
        #expect(refused["code"] as? String == "command-refused" && refused["cmd"] as? String == "close")
        #expect(try eve.whoami().userID == "eve", "still open: the handler did not run")
        let before = handler.handled.load(ordering: .relaxed)
        try boss.send(text: #"{"cmd":"close","param":4000}"#)
        #expect(try boss.closeFrame().code == 4000)
        #expect(handler.handled.load(ordering: .relaxed) == before + 1)
        let seen = service.status().limits
        #expect(seen.joinsRefused == 2 && seen.commandsRefused == 1)
    }

    @Test(arguments: backends) func connectionsPerAddressAreCapped(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: routes(TestHandler()), configure: {
            $0.maxConnectionsPerAddress = 2
        }) else { return }
        defer { service.stop() }
        let first = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let second = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let third = try TestClient.http(port: service.port, TestClient.upgradeRequest(path: "/ws?ch=a"))
        #expect(third.status == 429 && third.head.contains("Retry-After"))
        #expect(service.status().limits.refusedPerAddress == 1)
        // X-Forwarded-For from an untrusted peer changes nothing.
        let spoofed = try TestClient.http(port: service.port,
                                          TestClient.upgradeRequest(path: "/ws?ch=a", headers: ["X-Forwarded-For: 10.9.9.9"]))
        #expect(spoofed.status == 429)
        try first.sendClose()
        #expect(try first.closeFrame().code == 1000)
        #expect(eventually { service.addresses.count("127.0.0.1") == 1 })
        _ = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        withExtendedLifetime(second) {}
    }

    @Test(arguments: backends) func behindATrustedProxyTheForwardedAddressCounts(_ backend: Configuration.Backend) throws {
        guard let service = try startService(backend, routes: routes(TestHandler()), configure: {
            $0.maxConnectionsPerAddress = 1
            $0.trustedProxies = ["127.0.0.1", "10.0.0.2"]
        }) else { return }
        defer { service.stop() }
        // The proxy chain client -> 10.0.0.2 -> us: the client is the last untrusted hop.
        let alice = try TestClient.connect(port: service.port, path: "/ws?ch=a",
                                           headers: ["X-Forwarded-For: 203.0.113.7, 198.51.100.1, 10.0.0.2"])
        _ = try TestClient.connect(port: service.port, path: "/ws?ch=a", headers: ["X-Forwarded-For: 203.0.113.8"])
        let again = try TestClient.http(port: service.port,
                                        TestClient.upgradeRequest(path: "/ws?ch=a", headers: ["X-Forwarded-For: 198.51.100.1"]))
        #expect(again.status == 429, "the second connection from 198.51.100.1")
        let id = try alice.whoami().id
        #expect(service.connection(id)?.clientAddress == "198.51.100.1")
        #expect(ClientAddress.ip(ofPeer: "[::1]:443") == "::1")
        #expect(ClientAddress.ip(ofPeer: "127.0.0.1:80") == "127.0.0.1")
    }

    /// A client whose every message fails writes one warning; the rest are
    /// debug, and every logged client string is clipped.
    @Test(arguments: backends) func aClientCannotFloodTheLog(_ backend: Configuration.Backend) throws {
        let capture = LogCapture()
        struct Failing: EnvelopeHandler {
            struct Failure: Error, CustomStringConvertible { var description: String }
            func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
                throw Failure(description: "cannot do " + (message.param.description))
            }
        }
        guard let service = try startService(backend, routes: routes(Failing(), limits: .unlimited),
                                             logger: capture.logger) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=a")
        let big = String(repeating: "\u{1}\"z", count: 2_000)
        for _ in 0..<200 { try client.send(text: #"{"cmd":"\#(String(repeating: "q", count: 500))","param":"\#(big.replacingOccurrences(of: "\u{1}", with: "\\u0001").replacingOccurrences(of: "\"", with: "\\\""))"}"#) }
        for _ in 0..<200 { _ = try client.nextError(timeout: .seconds(10)) }
        let entries = capture.entries.withLock { $0 }
        let loud = entries.filter { $0.level > .debug && $0.message != "listening" }
        #expect(loud.count == 1, "\(loud.map(\.message))")
        #expect(entries.filter { $0.message == "handler failed" && $0.level == .debug }.count == 200)
        for entry in entries {
            for (_, value) in entry.metadata {
                #expect(value.utf8.count <= 4 * LogText.maxBytes + 32, "a logged value is clipped")
                #expect(!value.contains("\u{1}") && !value.contains("\n"))
            }
        }
        #expect(service.status().limits.warningsSuppressed == 199)
        #expect(LogText.clip("a\"b\\\n\u{7f}é") == #"a\"b\\\x0a\x7f\xc3\xa9"#)
        #expect(LogText.clip(String(repeating: "x", count: 200)).hasSuffix("…(200 bytes)"))
    }
}

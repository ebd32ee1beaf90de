import Foundation
import Logging
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// A received envelope, decoded.
struct SeenEnvelope {
    let channel: String?
    let offset: UInt64?
    let cmd: String
    let param: Any?

    init(_ received: TestClient.Received) throws {
        guard case .text(let text) = received,
              let object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) as? [String: Any],
              let cmd = object["cmd"] as? String else { throw ClientError("not an envelope: \(received)") }
        channel = object["channel"] as? String
        offset = (object["offset"] as? NSNumber)?.uint64Value
        self.cmd = cmd
        param = object["param"]
    }

    var paramObject: [String: Any] { param as? [String: Any] ?? [:] }
    var position: ChannelPosition? {
        guard let epoch = paramObject["epoch"] as? String, let offset = (paramObject["offset"] as? NSNumber)?.uint64Value else { return nil }
        return ChannelPosition(epoch: epoch, offset: offset)
    }
    var recovered: Bool? { paramObject["recovered"] as? Bool }
}

extension TestClient {
    func receiveEnvelope(timeout: Duration = .seconds(5)) throws -> SeenEnvelope { try SeenEnvelope(receive(timeout: timeout)) }

    /// The upgrade path that joins `channel` and asks to recover from `position`.
    static func recoveringPath(_ channel: String, from position: ChannelPosition?) -> String {
        guard let position else { return "/ws?ch=\(channel)" }
        let json = #"{"\#(channel)":{"epoch":"\#(position.epoch)","offset":\#(position.offset)}}"#
        return "/ws?ch=\(channel)&recover=" + json.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
    }
}

/// Says `say` to the channel named, or the first one joined.
struct HistoryChat: EnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        if message.cmd == "say" {
            service.writeChannel(cmd: "say", param: message.param, channel: message.channel ?? connection.channels[0])
        }
    }
}

func startHistoryService(_ backend: Configuration.Backend, _ history: [Configuration.History],
                         configure: (inout Configuration) -> Void = { _ in }) throws -> WebSocketServer? {
    var routes = WebSocketRoutes()
    routes.socket("/ws", handler: HistoryChat(), limits: .unlimited)
    return try startService(backend, routes: routes) { configuration in
        configuration.history = history
        configuration.announcesPresence = false
        configure(&configuration)
    }
}

@Suite struct ChannelHistoryTests {
    @Test(arguments: backends) func aClientThatComesBackGetsExactlyWhatItMissedThenLiveOnes(_ backend: Configuration.Backend) throws {
        guard let service = try startHistoryService(backend, [.init(channels: "room:*")]) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=room:1")
        let joined = try client.receiveEnvelope()
        #expect(joined.cmd == "_joined" && joined.channel == "room:1" && joined.recovered == nil)
        let start = try #require(joined.position)
        #expect(start.offset == 0)
        for i in 1...10 { service.writeChannel(cmd: "say", param: RawJSON(trusted: Array("\(i)".utf8)), channel: "room:1") }
        var last = start
        for i in 1...10 {
            let got = try client.receiveEnvelope()
            #expect(got.offset == UInt64(i) && got.cmd == "say" && (got.param as? Int) == i)
            last.offset = got.offset ?? 0
        }
        // Its socket dies; 100 messages go to the channel meanwhile.
        client.abort()
        #expect(eventually { service.status().connections == 0 })
        for i in 11...110 { service.writeChannel(cmd: "say", param: RawJSON(trusted: Array("\(i)".utf8)), channel: "room:1") }

        let back = try TestClient.connect(port: service.port, path: TestClient.recoveringPath("room:1", from: last))
        let rejoined = try back.receiveEnvelope()
        #expect(rejoined.cmd == "_joined" && rejoined.recovered == true)
        #expect(rejoined.position == ChannelPosition(epoch: start.epoch, offset: 110))
        for i in 11...110 {
            let got = try back.receiveEnvelope()
            #expect(got.offset == UInt64(i) && (got.param as? Int) == i, "\(i)")
            if got.offset != UInt64(i) { return }
        }
        service.writeChannel(cmd: "say", param: RawJSON(trusted: Array("111".utf8)), channel: "room:1")
        let live = try back.receiveEnvelope()
        #expect(live.offset == 111 && (live.param as? Int) == 111)
    }

    /// The seam: messages keep coming while the client rejoins; it sees every
    /// offset once, in order, whichever thread wrote it.
    @Test(arguments: backends) func aRecoveryDuringAStreamHasNoGapAndNoDuplicate(_ backend: Configuration.Backend) throws {
        guard let service = try startHistoryService(backend, [.init(channels: "*", maxMessages: 100_000, maxBytes: 64 << 20)])
        else { return }
        defer { service.stop() }
        let first = try TestClient.connect(port: service.port, path: "/ws?ch=feed")
        let epoch = try #require(try first.receiveEnvelope().position).epoch
        // Writers on other threads and, through a client's `say`, on the
        // loops, until the client that comes back has rejoined.
        let stop = Locked(false)
        let writers = DispatchGroup()
        let speaker = try TestClient.connect(port: service.port, path: "/ws?ch=other")
        _ = try speaker.receiveEnvelope()
        DispatchQueue.global().async(group: writers) {
            for i in 0..<200_000 where !stop.withLock({ $0 }) {
                service.writeChannel(cmd: "say", param: RawJSON(trusted: Array("\(i)".utf8)), channel: "feed")
            }
        }
        DispatchQueue.global().async(group: writers) {
            for i in 0..<200_000 where !stop.withLock({ $0 }) {
                if (try? speaker.send(text: #"{"channel":"feed","cmd":"say","param":\#(i)}"#)) == nil { break }
            }
        }
        // Read some, drop the socket, and come back mid-stream.
        var seen: UInt64 = 0
        for _ in 0..<200 { seen = try #require(try first.receiveEnvelope().offset) }
        first.abort()
        let back = try TestClient.connect(port: service.port,
                                          path: TestClient.recoveringPath("feed", from: ChannelPosition(epoch: epoch, offset: seen)))
        let rejoined = try back.receiveEnvelope()
        #expect(rejoined.recovered == true)
        // Some came after the join too (the writers were still going).
        var next = seen + 1
        let joinedAt = try #require(rejoined.position).offset
        while next <= joinedAt + 100 {
            let got = try back.receiveEnvelope()
            #expect(got.offset == next, "expected offset \(next), got \(got.offset.map(String.init) ?? "none")")
            if got.offset != next { break }
            next += 1
        }
        stop.withLock { $0 = true }
        writers.wait()
        let total = try #require(service.history("feed")).position.offset
        #expect(total > joinedAt + 100)
        while next <= total {
            let got = try back.receiveEnvelope()
            #expect(got.offset == next, "expected offset \(next), got \(got.offset.map(String.init) ?? "none")")
            if got.offset != next { return }
            next += 1
        }
    }

    @Test(arguments: backends) func fromBeforeTheOldestKeptOrAnotherEpochIsNotRecovered(_ backend: Configuration.Backend) throws {
        guard let service = try startHistoryService(backend, [.init(channels: "news", maxMessages: 10)]) else { return }
        defer { service.stop() }
        let history = try #require(service.history("news"))
        for i in 1...50 { service.writeChannel(cmd: "say", param: RawJSON(trusted: Array("\(i)".utf8)), channel: "news") }
        let epoch = history.position.epoch
        // Before the oldest kept (41), another epoch, and ahead of the channel.
        for wanted in [{ ChannelPosition(epoch: epoch, offset: $0 - 11) }, { ChannelPosition(epoch: "another", offset: $0 - 5) },
                       { ChannelPosition(epoch: epoch, offset: $0 + 1) }] as [(UInt64) -> ChannelPosition] {
            let top = try #require(service.history("news")).position.offset
            let position = wanted(top)
            let client = try TestClient.connect(port: service.port, path: TestClient.recoveringPath("news", from: position))
            let joined = try client.receiveEnvelope()
            #expect(joined.recovered == false, "\(position)")
            #expect(joined.position == ChannelPosition(epoch: epoch, offset: top))
            // Nothing replayed: the next message is live.
            service.writeChannel(cmd: "say", param: .null, channel: "news")
            #expect(try client.receiveEnvelope().offset == top + 1)
            client.abort()
        }
        // From the oldest kept one's predecessor it still recovers: 10 kept, 53 the newest.
        let client = try TestClient.connect(port: service.port,
                                            path: TestClient.recoveringPath("news", from: ChannelPosition(epoch: epoch, offset: 43)))
        #expect(try client.receiveEnvelope().recovered == true)
        for offset in 44...53 { #expect(try client.receiveEnvelope().offset == UInt64(offset)) }
    }

    @Test func theBoundsEvictTheOldestFirst() throws {
        guard let service = try startHistoryService(.epoll, [.init(channels: "bytes", maxBytes: 1_000),
                                                             .init(channels: "count", maxMessages: 3)]) else { return }
        defer { service.stop() }
        let big = RawJSON(trusted: Array("\"".utf8) + Array(repeating: UInt8(ascii: "x"), count: 200) + Array("\"".utf8))
        for _ in 1...20 { service.writeChannel(cmd: "say", param: big, channel: "bytes") }
        let bytes = try #require(service.history("bytes"))
        #expect(bytes.position.offset == 20)
        // As many of the newest as fit in 1,000 bytes (each envelope is 254 B: 3).
        let size = try #require(bytes.messages.first).envelope.bytes.count
        #expect(bytes.messages.map(\.offset) == Array(UInt64(21 - 1_000 / size)...20))
        #expect(bytes.messages.count == 3)
        for i in 1...5 { service.writeChannel(cmd: "say", param: RawJSON(trusted: Array("\(i)".utf8)), channel: "count") }
        let count = try #require(service.history("count", since: ChannelPosition(epoch: service.history("count")!.position.epoch, offset: 2)))
        #expect(count.recovered && count.messages.map(\.offset) == [3, 4, 5])
        #expect(String(decoding: count.messages[0].envelope.bytes, as: UTF8.self) == #"{"channel":"count","offset":3,"cmd":"say","param":3}"#)
        let tooOld = try #require(service.history("count", since: ChannelPosition(epoch: count.position.epoch, offset: 1)))
        #expect(!tooOld.recovered && tooOld.messages.isEmpty)
        // A channel no rule names has no history, and its messages no offset.
        #expect(service.history("elsewhere") == nil)
    }

    @Test func messagesOlderThanTheAgeBoundAreNotReplayed() throws {
        guard let service = try startHistoryService(.epoll, [.init(channels: "*", maxAge: .milliseconds(50))]) else { return }
        defer { service.stop() }
        service.writeChannel(cmd: "say", param: .null, channel: "old")
        let epoch = try #require(service.history("old")).position.epoch
        usleep(100_000)
        service.writeChannel(cmd: "say", param: .null, channel: "old")
        let history = try #require(service.history("old", since: ChannelPosition(epoch: epoch, offset: 0)))
        #expect(!history.recovered)
        #expect(service.history("old")?.messages.map(\.offset) == [2])
    }

    @Test func pastTheChannelBoundTheLeastRecentlyWrittenLogGoesAndItsEpochChanges() throws {
        guard let service = try startHistoryService(.epoll, [.init(channels: "*")], configure: { $0.maxHistoryChannels = 2 })
        else { return }
        defer { service.stop() }
        service.writeChannel(cmd: "say", param: .null, channel: "a")
        let epochA = try #require(service.history("a")).position.epoch
        service.writeChannel(cmd: "say", param: .null, channel: "b")
        service.writeChannel(cmd: "say", param: .null, channel: "a")
        service.writeChannel(cmd: "say", param: .null, channel: "c") // drops b, written least recently
        #expect(service.history("a")?.position == ChannelPosition(epoch: epochA, offset: 2))
        let b = try #require(service.history("b")) // a new log: a new epoch, from 0; a (now idlest) goes
        #expect(b.position.offset == 0)
        #expect(service.history("a")?.position.epoch != epochA)
    }

    @Test func aChannelWithoutHistoryAndABadRecoverAreLeftAlone() throws {
        guard let service = try startHistoryService(.epoll, [.init(channels: "kept")]) else { return }
        defer { service.stop() }
        let plain = try TestClient.connect(port: service.port, path: "/ws?ch=plain&recover=%7Bnot%20json")
        try plain.send(text: #"{"cmd":"say","param":1}"#)
        #expect(try plain.receive() == .text(#"{"channel":"plain","cmd":"say","param":1}"#))
        let kept = try TestClient.connect(port: service.port, path: "/ws?ch=kept&recover=%5B1%2C2%5D")
        let joined = try kept.receiveEnvelope()
        #expect(joined.cmd == "_joined" && joined.recovered == nil) // not a position: a fresh join
        try kept.send(text: #"{"cmd":"say","param":2,"offset":99}"#) // a client's offset is not taken
        #expect(try kept.receive() == .text(#"{"channel":"kept","offset":1,"cmd":"say","param":2}"#))
    }
}

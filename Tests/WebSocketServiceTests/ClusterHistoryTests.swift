import Foundation
import Testing
@testable import WebSocketRedis
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

extension TestClient {
    /// The next `_joined` or `said`, skipping presence.
    func nextHistoryEnvelope(timeout: Duration = .seconds(5)) throws -> SeenEnvelope {
        while true {
            let envelope = try receiveEnvelope(timeout: timeout)
            if envelope.cmd == "_joined" || envelope.cmd == "said" { return envelope }
        }
    }

    /// Its `_joined` for the channel it joined at the upgrade.
    func joinedPosition() throws -> SeenEnvelope {
        let joined = try nextHistoryEnvelope()
        guard joined.cmd == "_joined" else { throw ClientError("expected _joined first, got \(joined.cmd)") }
        return joined
    }

    /// `say` with a number: ScaleOutHandler writes it to the channel as `said`.
    func say(_ channel: String, _ number: Int) throws {
        try send(text: #"{"cmd":"say","channel":"\#(channel)","param":\#(number)}"#)
    }
}

/// The messages a client received: offset and param, in order.
private func receive(_ count: Int, on client: TestClient, _ where: String) throws -> [(offset: UInt64, n: Int)] {
    var out: [(UInt64, Int)] = []
    for _ in 0..<count {
        let got = try client.nextHistoryEnvelope()
        guard got.cmd == "said", let offset = got.offset, let n = got.param as? Int else {
            throw ClientError("\(`where`): expected a said with an offset, got \(got.cmd) \(String(describing: got.offset))")
        }
        out.append((offset, n))
    }
    return out
}

/// Histories kept in Redis Streams across servers (ClusterHistory.swift,
/// RedisHistory.swift): one order for every server, and a client that comes
/// back through another server gets exactly what it missed.
@Suite(.serialized) struct ClusterHistoryTests {
    static let rooms = [Configuration.History(channels: "room*", maxMessages: 1_000)]

    @Test(arguments: RedisConfiguration.PubSub.allCases)
    func aClientThatComesBackThroughAnotherServerGetsEveryMessageOnceInOrder(_ pubSub: RedisConfiguration.PubSub) throws {
        guard let cluster = try Cluster.start(pubSub: pubSub, history: Self.rooms) else { return }
        let (a, b, c) = (cluster.services[0], cluster.services[1], cluster.services[2])
        // `_joined` comes once the server's copy is continuous with Redis: nothing after it is missed,
        // with no wait for the subscriptions (the gap plain pub/sub has).
        let x = try TestClient.connect(port: a.port, path: "/ws?ch=room")
        let y = try TestClient.connect(port: b.port, path: "/ws?ch=room")
        let z = try TestClient.connect(port: c.port, path: "/ws?ch=room")
        let start = try #require(try x.joinedPosition().position)
        #expect(start.offset == 0)
        #expect(try y.joinedPosition().position == start, "one epoch for every server")
        #expect(try z.joinedPosition().position == start)

        for n in 0..<20 {
            try y.say("room", 2 * n)
            try z.say("room", 2 * n + 1)
        }
        let seenByX = try receive(40, on: x, "x")
        #expect(seenByX.map(\.offset) == Array(1...40), "offsets one apart")
        #expect(try receive(40, on: y, "y").map(\.n) == seenByX.map(\.n), "one order on every server")
        #expect(try receive(40, on: z, "z").map(\.n) == seenByX.map(\.n))

        // X's socket dies mid-stream; 100 more come meanwhile.
        x.abort()
        for n in 40..<90 {
            try y.say("room", 2 * n)
            try z.say("room", 2 * n + 1)
        }
        let missed = try receive(100, on: y, "y")
        #expect(missed.map(\.offset) == Array(41...140))
        _ = try receive(100, on: z, "z")

        // Back through server B, from offset 40.
        let back = try TestClient.connect(port: b.port,
                                          path: TestClient.recoveringPath("room", from: ChannelPosition(epoch: start.epoch, offset: 40)))
        let rejoined = try back.joinedPosition()
        #expect(rejoined.recovered == true)
        #expect(rejoined.position == ChannelPosition(epoch: start.epoch, offset: 140))
        let replay = try receive(100, on: back, "back")
        #expect(replay.map(\.offset) == missed.map(\.offset) && replay.map(\.n) == missed.map(\.n),
                "exactly the 100 it missed, in order")
        try z.say("room", 1_000)
        let live = try receive(1, on: back, "back live")
        #expect(live.first?.offset == 141 && live.first?.n == 1_000, "then live ones")
        back.expectNothing("said", within: .milliseconds(200))
        for service in cluster.services { #expect(service.status().backplane.notPropagated == 0) }
    }

    /// Redis loses the stream (restarted without persistence): the next
    /// read makes a new epoch; members that were live are told they were not
    /// recovered, and a client coming back with the old epoch is told so too.
    @Test func aStreamRedisLostStartsANewEpoch() throws {
        guard let cluster = try Cluster.start(servers: 2, history: Self.rooms) else { return }
        let (a, b) = (cluster.services[0], cluster.services[1])
        let x = try TestClient.connect(port: a.port, path: "/ws?ch=room")
        let y = try TestClient.connect(port: b.port, path: "/ws?ch=room")
        let first = try #require(try x.joinedPosition().position)
        _ = try y.joinedPosition()
        for n in 0..<5 { try y.say("room", n) }
        #expect(try receive(5, on: x, "x").map(\.offset) == Array(1...5))
        _ = try receive(5, on: y, "y")
        x.abort()

        cluster.redis.kill()
        #expect(eventually { !a.status().backplane.connected && !b.status().backplane.connected })
        try cluster.redis.start()
        #expect(eventually(timeout: .seconds(10)) { a.status().backplane.connected && b.status().backplane.connected })
        #expect(cluster.waitSubscribed("room", on: [b]))
        // Y, live on B, hears that its offsets are of a stream that is gone.
        let told = try y.joinedPosition()
        #expect(told.recovered == false)
        let second = try #require(told.position)
        #expect(second.epoch != first.epoch && second.offset == 0)

        try y.say("room", 100)
        #expect(try receive(1, on: y, "y").first?.offset == 1, "the new stream's first")
        let back = try TestClient.connect(port: a.port,
                                          path: TestClient.recoveringPath("room", from: ChannelPosition(epoch: first.epoch, offset: 5)))
        let rejoined = try back.joinedPosition()
        #expect(rejoined.recovered == false, "another epoch: the application fetches fresh state")
        #expect(rejoined.position == ChannelPosition(epoch: second.epoch, offset: 1))
        try y.say("room", 101)
        #expect(try receive(1, on: back, "back").first?.offset == 2)
    }

    /// A channel past its bound in Redis: a client asking from before the
    /// oldest kept message is told it was not recovered.
    @Test func aPositionOlderThanTheStreamKeepsIsNotRecovered() throws {
        let small = [Configuration.History(channels: "room*", maxMessages: 10)]
        guard let cluster = try Cluster.start(servers: 2, history: small) else { return }
        let (a, b) = (cluster.services[0], cluster.services[1])
        let y = try TestClient.connect(port: b.port, path: "/ws?ch=room")
        let start = try #require(try y.joinedPosition().position)
        for n in 0..<300 { try y.say("room", n) }
        _ = try receive(300, on: y, "y")
        let late = try TestClient.connect(port: a.port,
                                          path: TestClient.recoveringPath("room", from: ChannelPosition(epoch: start.epoch, offset: 1)))
        let rejoined = try late.joinedPosition()
        #expect(rejoined.recovered == false)
        #expect(rejoined.position == ChannelPosition(epoch: start.epoch, offset: 300))
        let recent = try TestClient.connect(port: a.port,
                                            path: TestClient.recoveringPath("room", from: ChannelPosition(epoch: start.epoch, offset: 295)))
        #expect(try recent.joinedPosition().recovered == true)
        #expect(try receive(5, on: recent, "recent").map(\.offset) == Array(296...300))
    }
}

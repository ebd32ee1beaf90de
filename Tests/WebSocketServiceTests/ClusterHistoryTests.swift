import CHiredis
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

    /// Connects to `channel` asking to recover from `position` (in the channel's epoch).
    static func recovering(port: Int, _ channel: String, epoch: String, offset: UInt64) throws -> TestClient {
        try connect(port: port, path: recoveringPath(channel, from: ChannelPosition(epoch: epoch, offset: offset)))
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

    /// X on the first server and Y on the second in "room", both told their
    /// position; the position X was told.
    static func membersOnTwoServers(_ cluster: Cluster) throws -> (x: TestClient, y: TestClient, first: ChannelPosition) {
        let x = try TestClient.connect(port: cluster.services[0].port, path: "/ws?ch=room")
        let y = try TestClient.connect(port: cluster.services[1].port, path: "/ws?ch=room")
        let first = try #require(try x.joinedPosition().position)
        _ = try y.joinedPosition()
        return (x, y, first)
    }

    @Test(arguments: RedisConfiguration.PubSub.allCases, backends)
    func aClientThatComesBackThroughAnotherServerGetsEveryMessageOnceInOrder(_ pubSub: RedisConfiguration.PubSub,
                                                                             _ backend: Configuration.Backend) throws {
        guard let cluster = try Cluster.start(pubSub: pubSub, history: Self.rooms, backend: backend) else { return }
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
        let back = try TestClient.recovering(port: b.port, "room", epoch: start.epoch, offset: 40)
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
    @Test(arguments: backends) func aStreamRedisLostStartsANewEpoch(_ backend: Configuration.Backend) throws {
        guard let cluster = try Cluster.start(servers: 2, history: Self.rooms, backend: backend) else { return }
        let (a, b) = (cluster.services[0], cluster.services[1])
        let (x, y, first) = try Self.membersOnTwoServers(cluster)
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
        let back = try TestClient.recovering(port: a.port, "room", epoch: first.epoch, offset: 5)
        let rejoined = try back.joinedPosition()
        #expect(rejoined.recovered == false, "another epoch: the application fetches fresh state")
        #expect(rejoined.position == ChannelPosition(epoch: second.epoch, offset: 1))
        try y.say("room", 101)
        #expect(try receive(1, on: back, "back").first?.offset == 2)
    }

    /// A stream that expired (no write for `maxAge`) is made again by the next
    /// write, with another epoch: members that were live are told they were
    /// not recovered and get the new stream's messages from its first.
    @Test(arguments: backends) func aStreamThatExpiredStartsOverAndItsFirstMessageArrives(_ backend: Configuration.Backend) throws {
        let brief = [Configuration.History(channels: "room*", maxMessages: 100, maxAge: .seconds(1))]
        guard let cluster = try Cluster.start(servers: 2, history: brief, backend: backend) else { return }
        let (x, y, first) = try Self.membersOnTwoServers(cluster)
        try y.say("room", 1)
        #expect(try receive(1, on: x, "x").first?.offset == 1)
        _ = try receive(1, on: y, "y")
        #expect(eventually(timeout: .seconds(10)) { cluster.redis.cli(["EXISTS", "ws:c:room"]).hasPrefix("0") }, "expired")
        try y.say("room", 2)
        for (name, client) in [("x", x), ("y", y)] {
            let told = try client.joinedPosition()
            #expect(told.recovered == false, "\(name)")
            let now = try #require(told.position)
            #expect(now.epoch != first.epoch && now.offset == 0, "\(name): before the new stream's first")
            let got = try receive(1, on: client, name)
            #expect(got.first?.offset == 1 && got.first?.n == 2, "\(name): the new stream's first message")
        }
    }

    /// Redis refuses the read (here OOM, as it would LOADING after a restart
    /// or CLUSTERDOWN): the server reads again after a backoff, so the
    /// joining member gets `_joined` once Redis takes it.
    @Test(arguments: backends) func aRefusedReadIsTriedAgainUntilRedisTakesIt(_ backend: Configuration.Backend) throws {
        guard let cluster = try Cluster.start(servers: 1, history: Self.rooms, backend: backend) else { return }
        let a = cluster.services[0]
        #expect(cluster.redis.cli(["CONFIG", "SET", "maxmemory-policy", "noeviction"]).hasPrefix("OK"))
        #expect(cluster.redis.cli(["CONFIG", "SET", "maxmemory", "1"]).hasPrefix("OK"))
        let x = try TestClient.connect(port: a.port, path: "/ws?ch=room")
        #expect(cluster.waitSubscribed("room"))
        x.expectNothing("_joined", within: .milliseconds(500))
        #expect(cluster.redis.cli(["CONFIG", "SET", "maxmemory", "0"]).hasPrefix("OK"))
        let joined = try x.joinedPosition()
        #expect(joined.position?.offset == 0)
        try x.say("room", 7)
        #expect(try receive(1, on: x, "x").first?.n == 7)
    }

    /// Redis goes back (a replica promoted without the last writes, here a
    /// RESTORE of an older copy of the stream): its next offsets repeat ones
    /// the members already had, with other messages. The servers see it,
    /// drop the stream and start a new epoch, and members are told they were
    /// not recovered instead of silently missing what follows.
    @Test(arguments: backends) func aStreamThatWentBackStartsANewEpochInsteadOfRepeatingOffsets(_ backend: Configuration.Backend) throws {
        guard let cluster = try Cluster.start(servers: 2, history: Self.rooms, backend: backend) else { return }
        let (x, y, first) = try Self.membersOnTwoServers(cluster)
        for n in 1...3 { try y.say("room", n) }
        #expect(try receive(3, on: x, "x").map(\.offset) == [1, 2, 3])
        _ = try receive(3, on: y, "y")
        let redis = try #require(RedisConnection.open(RedisConfiguration(port: cluster.redis.port)).connection)
        defer { chr_free(redis) }
        func command(_ args: [String], _ extra: [[UInt8]] = []) -> Int32 {
            guard RedisConnection.append(redis, args.map { Array($0.utf8) } + extra) == 0 else { return -1 }
            return chr_reply(redis)
        }
        // The stream as it was at offset 3.
        #expect(command(["EVAL", "return {redis.call('DUMP', KEYS[1])}", "1", "ws:c:room"]) == 0)
        var length = 0
        let dumped = try #require(chr_reply_string(redis, 0, &length).map { Array(UnsafeRawBufferPointer(start: $0, count: length)) })
        for n in 4...5 { try y.say("room", n) }
        #expect(try receive(2, on: x, "x").map(\.offset) == [4, 5])
        _ = try receive(2, on: y, "y")
        #expect(command(["RESTORE", "ws:c:room", "0"], [dumped, Array("REPLACE".utf8)]) == 0)

        // The next write gets offset 4 again, with another message.
        try y.say("room", 6)
        var told = false
        while true {
            let got = try x.nextHistoryEnvelope()
            if got.cmd == "_joined" {
                #expect(got.recovered == false && got.position?.epoch != first.epoch)
                if !told { try y.say("room", 7) }
                told = true
                continue
            }
            // Nothing of the old epoch's repeated offsets; the new stream's first message.
            #expect(told, "told before any message: \(got.offset ?? 0) \(String(describing: got.param))")
            #expect(got.offset == 1 && (got.param as? Int) == 7)
            break
        }
    }

    /// A write right after a channel's first local join (a welcome, say)
    /// goes to Redis before the server has read the stream: its offset is
    /// below the position the read finds, and the member still gets it.
    @Test(arguments: RedisConfiguration.PubSub.allCases, backends)
    func aWriteRightAfterTheFirstJoinReachesTheMember(_ pubSub: RedisConfiguration.PubSub, _ backend: Configuration.Backend) throws {
        guard let cluster = try Cluster.start(servers: 2, pubSub: pubSub, history: Self.rooms, backend: backend) else { return }
        let (a, b) = (cluster.services[0], cluster.services[1])
        let y = try TestClient.connect(port: b.port, path: "/ws?ch=room")
        _ = try y.joinedPosition()
        for n in 1...3 { try y.say("room", n) }
        _ = try receive(3, on: y, "y")
        let x = try TestClient.connect(port: a.port, path: "/ws")
        _ = try x.whoami()
        let connection = try #require(a.connections().first)
        #expect(a.join(connection, "room"))
        a.writeChannel(cmd: "said", param: RawJSON(100), channel: "room")
        let joined = try x.joinedPosition()
        #expect(joined.position?.offset == 3, "placed before the welcome")
        let got = try receive(1, on: x, "x")
        #expect(got.first?.offset == 4 && got.first?.n == 100, "the welcome")
        try y.say("room", 5)
        #expect(try receive(1, on: x, "x").first?.offset == 5, "then live, nothing twice")
    }

    /// A channel past its bound in Redis: a client asking from before the
    /// oldest kept message is told it was not recovered.
    @Test(arguments: backends) func aPositionOlderThanTheStreamKeepsIsNotRecovered(_ backend: Configuration.Backend) throws {
        let small = [Configuration.History(channels: "room*", maxMessages: 10)]
        guard let cluster = try Cluster.start(servers: 2, history: small, backend: backend) else { return }
        let (a, b) = (cluster.services[0], cluster.services[1])
        let y = try TestClient.connect(port: b.port, path: "/ws?ch=room")
        let start = try #require(try y.joinedPosition().position)
        for n in 0..<300 { try y.say("room", n) }
        _ = try receive(300, on: y, "y")
        let late = try TestClient.recovering(port: a.port, "room", epoch: start.epoch, offset: 1)
        let rejoined = try late.joinedPosition()
        #expect(rejoined.recovered == false)
        #expect(rejoined.position == ChannelPosition(epoch: start.epoch, offset: 300))
        let recent = try TestClient.recovering(port: a.port, "room", epoch: start.epoch, offset: 295)
        #expect(try recent.joinedPosition().recovered == true)
        #expect(try receive(5, on: recent, "recent").map(\.offset) == Array(296...300))
    }
}

extension RedisClusterTests {
    /// Histories on a three-master Redis Cluster, sharded: each channel's
    /// stream lives on the master that owns its slot, beside its shard
    /// channel, and a client that comes back through another server is
    /// recovered there.
    @Test func historiesLiveOnEachChannelsOwnMaster() throws {
        guard let redis = try RedisClusterNodes.start() else { return }
        guard let cluster = try Cluster.start(pubSub: .sharded, redis: redis.nodes[0],
                                              history: ClusterHistoryTests.rooms) else { return }
        var probe = RedisConfiguration(port: redis.nodes[0].port)
        probe.pubSub = .sharded
        let router = RedisRouter(probe)
        #expect(router.refresh() == nil)
        // Three rooms, each on another master.
        var rooms: [String: RedisNode] = [:]
        for n in 0..<100 where rooms.count < 3 {
            let owner = router.node(for: "ws:c:room\(n)")
            if !rooms.values.contains(owner) { rooms["room\(n)"] = owner }
        }
        router.closeAll()
        for (room, owner) in rooms.sorted(by: { $0.key < $1.key }) {
            let x = try TestClient.connect(port: cluster.services[0].port, path: "/ws?ch=\(room)")
            let y = try TestClient.connect(port: cluster.services[1].port, path: "/ws?ch=\(room)")
            let start = try #require(try x.joinedPosition().position)
            #expect(try y.joinedPosition().position == start)
            for n in 0..<10 { try y.say(room, n) }
            #expect(try receive(10, on: x, room).map(\.offset) == Array(1...10))
            _ = try receive(10, on: y, room)
            x.abort()
            for n in 10..<30 { try y.say(room, n) }
            _ = try receive(20, on: y, room)
            let node = try #require(redis.nodes.first { $0.port == owner.port })
            // 30 messages and the entry that fixed the epoch at the first read (offset 0).
            #expect(redis.cli(node, ["XLEN", "ws:c:\(room)"]).hasPrefix("31"), "\(room): the stream on its owner")
            let back = try TestClient.recovering(port: cluster.services[2].port, room, epoch: start.epoch, offset: 10)
            #expect(try back.joinedPosition().recovered == true)
            #expect(try receive(20, on: back, room).map(\.n) == Array(10..<30), "\(room): what it missed, in order")
        }
        for service in cluster.services { #expect(service.status().backplane.notPropagated == 0) }
    }
}

extension ScaleOutProcessTests {
    /// The chat across three wsdemo processes (which keep their rooms'
    /// histories in Redis with --redis): a server is killed with SIGKILL
    /// mid-stream; its client comes back through another server with its
    /// position and gets every message once, in order.
    @Test func aClientOfAKilledServerComesBackThroughAnotherWithNothingLost() throws {
        guard RedisServer.executable != nil, let demo = DemoServer.executable else {
            print("SKIPPED: needs redis-server and wsdemo next to the test bundle")
            return
        }
        let redis = try RedisServer()
        let servers = try (0..<3).map { _ in
            try DemoServer(executable: demo, arguments: ["--redis", "redis://127.0.0.1:\(redis.port)/0", "--history", "500"])
        }
        let clients = try servers.enumerated().map { try TestClient.connect(port: $1.port, path: "/ws?ch=hall&user=u\($0)") }
        // `_joined` says the server follows the room's stream: no wait for Redis's subscriptions.
        let positions = try clients.map { try #require(try $0.receiveEnvelope(cmd: "_joined")["param"] as? [String: Any]) }
        let epoch = try #require(positions[0]["epoch"] as? String)
        #expect(positions.allSatisfy { $0["epoch"] as? String == epoch })

        func says(_ count: Int, on client: TestClient) throws -> [(offset: UInt64, p: Int, n: Int)] {
            try (0..<count).map { _ in
                let envelope = try client.receiveEnvelope(cmd: "say")
                let param = try #require(envelope["param"] as? [String: Any])
                return (try #require((envelope["offset"] as? NSNumber)?.uint64Value),
                        try #require(param["p"] as? Int), try #require(param["n"] as? Int))
            }
        }
        for n in 0..<10 {
            for s in 1...2 { try clients[s].send(text: #"{"cmd":"say","channel":"hall","param":{"p":\#(s),"n":\#(n)}}"#) }
        }
        let before = try says(20, on: clients[0])
        #expect(before.map(\.offset) == Array(1...20))
        servers[0].kill()
        for n in 10..<60 {
            for s in 1...2 { try clients[s].send(text: #"{"cmd":"say","channel":"hall","param":{"p":\#(s),"n":\#(n)}}"#) }
        }
        let all = try says(120, on: clients[1])
        _ = try says(120, on: clients[2])
        let json = #"{"hall":{"epoch":"\#(epoch)","offset":20}}"#
        let back = try TestClient.connect(port: servers[1].port,
                                          path: "/ws?ch=hall&user=u0&recover=" + json.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
        let rejoined = try #require(try back.receiveEnvelope(cmd: "_joined")["param"] as? [String: Any])
        #expect(rejoined["recovered"] as? Bool == true)
        let replay = try says(100, on: back)
        #expect(replay.map(\.offset) == Array(21...120))
        #expect(replay.map(\.n) == all.suffix(100).map(\.n) && replay.map(\.p) == all.suffix(100).map(\.p),
                "every message once, in the order the others saw")
        back.expectNothing("say", within: .milliseconds(200))
    }
}

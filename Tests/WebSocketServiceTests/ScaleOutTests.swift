import ChildProcess
import Foundation
import Logging
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// A redis-server of our own on 127.0.0.1 and a free port, nothing saved to
/// disk; killed (SIGKILL) when the test is done with it.
final class RedisServer {
    static let executable = ["/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    let port: Int
    private var process: ChildProcess?

    init() throws {
        port = try Self.freePort()
        try start()
    }

    deinit { kill() }

    func start() throws {
        process = try ChildProcess(Self.executable!, ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "",
                                                      "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                                                      "--dir", NSTemporaryDirectory()])
        let up = eventually(timeout: .seconds(5)) {
            guard let fd = try? TestClient.tcp(port: port) else { return false }
            Glibc.close(fd)
            return true
        }
        guard up else { throw ClientError("redis-server did not listen on \(port)") }
    }

    /// SIGKILL: no goodbye to the clients, as in a crash.
    func kill() {
        process?.kill()
        process = nil
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard rc else { throw ClientError("no free port: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// TestHandler plus `say`: the param to the message's channel (default
/// "room"), from the sender, the sender included.
struct ScaleOutHandler: Handler {
    func handle(service: Service, connection: Connection, message: Message, logger: Logger) throws {
        if message.cmd == "say" {
            service.writeChannel(cmd: "said", param: message.param, channel: message.channel ?? "room", from: connection.id)
        } else {
            try TestHandler().handle(service: service, connection: connection, message: message, logger: logger)
        }
    }
}

/// Three services on different ports sharing one Redis.
final class Cluster {
    let redis: RedisServer
    let services: [Service]

    /// nil (reason printed) without redis-server.
    static func start(servers: Int = 3) throws -> Cluster? {
        guard RedisServer.executable != nil else {
            print("SKIPPED: redis-server is not installed (Debian: apt-get install redis-server)")
            return nil
        }
        let redis = try RedisServer()
        var routes = Routes()
        routes.socket("/ws", handler: ScaleOutHandler())
        var services: [Service] = []
        for _ in 0..<servers {
            let service = try startService(.epoll, routes: routes) { configuration in
                var backplane = RedisConfiguration(host: "127.0.0.1", port: redis.port)
                backplane.timeout = .seconds(1)
                backplane.reconnectDelay = .milliseconds(20)
                backplane.maxReconnectDelay = .milliseconds(250)
                configuration.backplane = .redis(backplane)
            }
            services.append(try #require(service))
        }
        let cluster = Cluster(redis: redis, services: services)
        guard eventually(timeout: .seconds(10), { services.allSatisfy { $0.status().backplane.connected && $0.status().backplane.subscriptions >= 1 } }) else {
            throw ClientError("backplanes did not connect: \(services.map { $0.status().backplane })")
        }
        return cluster
    }

    private init(redis: RedisServer, services: [Service]) {
        self.redis = redis
        self.services = services
    }

    deinit {
        for service in services { service.stop() }
    }

    /// Every listed server has Redis's word that it is subscribed to the channel.
    func waitSubscribed(_ channel: String, on servers: [Service]? = nil) -> Bool {
        eventually(timeout: .seconds(10)) {
            (servers ?? services).allSatisfy { ($0.backplane as? RedisBackplane)?.isSubscribed(channel: channel) == true }
        }
    }
}

extension TestClient {
    /// The next envelope with this cmd, skipping others.
    func next(_ cmd: String, timeout: Duration = .seconds(5)) throws -> [String: Any] {
        try receiveEnvelope(cmd: cmd, timeout: timeout)
    }

    /// Fails if a `cmd` envelope arrives within `window`.
    func expectNothing(_ cmd: String, within window: Duration = .milliseconds(300)) {
        let deadline = ContinuousClock.now + window
        while ContinuousClock.now < deadline {
            guard let object = try? receiveJSON(timeout: deadline - .now) else { return }
            #expect(object["cmd"] as? String != cmd, "unexpected \(object)")
        }
    }
}

@Suite(.serialized) struct ScaleOutTests {
    @Test func channelMessageReachesEveryServerOnceInPublisherOrder() throws {
        let started = ContinuousClock.now
        guard let cluster = try Cluster.start() else { return }
        let clients = try cluster.services.map { try TestClient.connect(port: $0.port, path: "/ws?ch=room") }
        #expect(cluster.waitSubscribed("room"))
        let perPublisher = 50
        let publishers = ["a": clients[0], "b": clients[1]]
        for n in 0..<perPublisher {
            for (name, client) in publishers.sorted(by: { $0.key < $1.key }) {
                try client.send(text: #"{"cmd":"say","channel":"room","param":{"p":"\#(name)","n":\#(n)}}"#)
            }
        }
        for (index, client) in clients.enumerated() {
            var nextSeq = ["a": 0, "b": 0]
            for _ in 0..<(perPublisher * publishers.count) {
                let said = try client.next("said")
                let param = try #require(said["param"] as? [String: Any])
                let p = try #require(param["p"] as? String)
                #expect(param["n"] as? Int == nextSeq[p], "server \(index): in order, once each, from \(p)")
                nextSeq[p, default: 0] += 1
            }
            #expect(nextSeq == ["a": perPublisher, "b": perPublisher])
            client.expectNothing("said")
        }
        let a = cluster.services[0].status().backplane
        #expect(a.published >= UInt64(perPublisher))
        #expect(a.notPropagated == 0)
        print("scale-out channel fan-out: \(ContinuousClock.now - started)")
    }

    @Test func writeAllAndWriteConnectionCrossServers() throws {
        guard let cluster = try Cluster.start() else { return }
        let clients = try cluster.services.enumerated().map {
            try TestClient.connect(port: $1.port, path: "/ws?ch=only\($0)")
        }
        let target = try clients[2].whoami().id
        _ = try clients[0].whoami()
        _ = try clients[1].whoami()
        let a = cluster.services[0]

        #expect(a.writeAll(cmd: "hello-all", param: RawJSON(1)) == 1, "one local recipient")
        #expect(a.writeConnection(cmd: "direct", param: RawJSON(string: "for c"), id: target) == true)
        a.writeAll(cmd: "marker", param: .null)
        for (index, client) in clients.enumerated() {
            #expect(try client.receiveJSON()["cmd"] as? String == "hello-all", "server \(index)")
            if index == 2 {
                let direct = try client.receiveJSON()
                #expect(direct["cmd"] as? String == "direct")
                #expect(direct["param"] as? String == "for c")
            }
            #expect(try client.receiveJSON()["cmd"] as? String == "marker", "server \(index): nothing else, nothing twice")
        }
        // From B to a connection on A; and a writeAll from C.
        let onA = try #require(a.connections().first)
        #expect(cluster.services[1].writeConnection(cmd: "back", param: RawJSON(2), id: onA.id))
        #expect(try clients[0].receiveJSON()["cmd"] as? String == "back")
        cluster.services[2].writeAll(cmd: "from-c", param: .null)
        for client in clients { #expect(try client.receiveJSON()["cmd"] as? String == "from-c") }
        #expect(cluster.services[2].status().backplane.received >= 3)
    }

    @Test func onlineUpdateCrossesServers() throws {
        guard let cluster = try Cluster.start() else { return }
        let a = try TestClient.connect(port: cluster.services[0].port, path: "/ws?ch=lobby")
        #expect(cluster.waitSubscribed("lobby", on: [cluster.services[0]]))
        let b = try TestClient.connect(port: cluster.services[1].port, path: "/ws?ch=lobby")
        #expect(cluster.waitSubscribed("lobby", on: Array(cluster.services[0...1])))
        let c = try TestClient.connect(port: cluster.services[2].port, path: "/ws?ch=lobby")
        let carol = try c.whoami().userID

        func presence(of user: String, on client: TestClient) throws -> Bool? {
            while true {
                let update = try client.next("online-update")
                let param = update["param"] as? [String: Any] ?? [:]
                #expect(update["channel"] as? String == "lobby")
                if param["userID"] as? String == user { return param["connected"] as? Bool }
            }
        }
        #expect(try presence(of: carol, on: a) == true)
        #expect(try presence(of: carol, on: b) == true)
        // The last local member leaving C unsubscribes C; the others still hear it.
        try c.sendClose()
        #expect(try presence(of: carol, on: a) == false)
        #expect(try presence(of: carol, on: b) == false)
        #expect(eventually { (cluster.services[2].backplane as? RedisBackplane)?.isSubscribed(channel: "lobby") == false })
    }

    @Test func redisRestartReconnectsResubscribesAndCountsWhatWasNotPropagated() throws {
        let started = ContinuousClock.now
        guard let cluster = try Cluster.start(servers: 2) else { return }
        let (serverA, serverB) = (cluster.services[0], cluster.services[1])
        let a = try TestClient.connect(port: serverA.port, path: "/ws?ch=room")
        let b = try TestClient.connect(port: serverB.port, path: "/ws?ch=room")
        #expect(cluster.waitSubscribed("room"))
        try a.send(text: #"{"cmd":"say","param":"before"}"#)
        #expect(try b.next("said")["param"] as? String == "before")
        #expect(try a.next("said")["param"] as? String == "before")

        cluster.redis.kill()
        #expect(eventually { !serverA.status().backplane.connected && !serverB.status().backplane.connected })
        let lost = 5
        for n in 0..<lost { try a.send(text: #"{"cmd":"say","param":"down \#(n)"}"#) }
        // Local members never wait on Redis.
        for n in 0..<lost { #expect(try a.next("said")["param"] as? String == "down \(n)") }
        #expect(eventually { serverA.status().backplane.notPropagated >= UInt64(lost) })

        try cluster.redis.start()
        #expect(eventually(timeout: .seconds(10)) { serverA.status().backplane.connected && serverB.status().backplane.connected })
        #expect(cluster.waitSubscribed("room"), "resubscribed after the restart")
        try a.send(text: #"{"cmd":"say","param":"after"}"#)
        #expect(try b.next("said")["param"] as? String == "after", "nothing from the outage, then traffic again")
        try b.send(text: #"{"cmd":"say","param":"reply"}"#)
        #expect(try a.next("said")["param"] as? String == "after")
        #expect(try a.next("said")["param"] as? String == "reply")
        let status = serverA.status().backplane
        #expect(status.disconnects >= 1)
        print("redis restart: \(status.notPropagated) messages not propagated, \(status.disconnects) disconnects, "
              + "\(ContinuousClock.now - started)")
    }

    @Test func inProcessBackplaneIsTheDefaultAndStaysLocal() async throws {
        var routes = Routes()
        routes.socket("/ws", handler: ScaleOutHandler())
        let service = try #require(try startService(.epoll, routes: routes))
        defer { service.stop() }
        #expect(!service.isDistributed)
        #expect(service.status().backplane.kind == "in-process")
        #expect(service.writeConnection(cmd: "x", param: .null, id: UUID()) == false)
        // The cluster view of one server is its local view (no suspension, no Redis).
        let client = try TestClient.connect(port: service.port, path: "/ws?ch=solo")
        let id = try client.whoami().id
        #expect(try await service.clusterConnections(in: "solo").map(\.id) == [id])
    }

    @Test func redisURLsAndWireFormat() throws {
        let plain = try RedisConfiguration(url: "redis://127.0.0.1:6380/2")
        #expect(plain.host == "127.0.0.1" && plain.port == 6380 && plain.database == 2 && plain.password == nil)
        let secret = try RedisConfiguration(url: "redis://:s3cret@cache.local")
        #expect(secret.host == "cache.local" && secret.port == 6379 && secret.password == "s3cret")
        #expect(secret.endpoint == "redis://cache.local:6379/0")
        #expect(try RedisConfiguration(url: "redis://[::1]:7000/1").host == "::1")
        #expect(throws: RedisConfiguration.InvalidURL.self) { try RedisConfiguration(url: "http://x") }
        #expect(throws: RedisConfiguration.InvalidURL.self) { try RedisConfiguration(url: "redis://x:99999") }

        let origin = UUID()
        for target in [BackplaneMessage.Target.channel("room", except: nil), .channel("room", except: UUID()), .all,
                       .connection(UUID())] {
            let message = BackplaneMessage(origin: origin, target: target, envelope: Array(#"{"cmd":"x"}"#.utf8))
            let decoded = BackplaneWire.encode(message).withUnsafeBytes { BackplaneWire.decode($0, channel: "room") }
            #expect(decoded == message)
        }
        #expect(Array("garbage".utf8).withUnsafeBytes { BackplaneWire.decode($0, channel: nil) } == nil)
    }
}

/// wsdemo (built next to the test bundle) as a separate server process, so
/// a test can SIGKILL a member of the cluster.
final class DemoServer {
    let process: ChildProcess
    let port: Int

    static var executable: String? {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("wsdemo").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    init(executable: String, arguments: [String]) throws {
        process = try ChildProcess(executable, ["--host", "127.0.0.1", "--port", "0", "--loops", "1", "--backend", "epoll",
                                                "--no-admin", "--log-level", "error"] + arguments, output: .capture)
        // "wsdemo chat on 127.0.0.1:PORT: ..." (written unbuffered at start)
        let text = process.readLine()
        guard let range = text.range(of: "127.0.0.1:"),
              let port = Int(text[range.upperBound...].prefix { $0.isNumber }) else {
            process.kill()
            throw ClientError("no port in wsdemo's banner: \(text)")
        }
        self.port = port
    }

    func kill() { process.kill() }

    deinit { kill() }
}

@Suite(.serialized) struct ScaleOutPresenceTests {
    /// A channel's members on every server, and a killed server's members
    /// gone within the presence ttl. The killed server is a wsdemo process
    /// (started with --redis), so this also checks the demo's flag.
    /// Synchronous on purpose: the other suites block the cooperative pool's
    /// few threads, and an async test here could wait minutes for one.
    @Test func clusterPresenceAndAKilledServer() throws {
        guard RedisServer.executable != nil else {
            print("SKIPPED: redis-server is not installed (Debian: apt-get install redis-server)")
            return
        }
        guard let demo = DemoServer.executable else {
            print("SKIPPED: no wsdemo next to the test bundle (swift build --build-tests builds it)")
            return
        }
        let redis = try RedisServer()
        var routes = Routes()
        routes.socket("/ws", handler: ScaleOutHandler())
        let ttl = Duration.seconds(1)
        let service = try #require(try startService(.epoll, routes: routes) { configuration in
            var backplane = RedisConfiguration(port: redis.port)
            // Long, so the graceful leave below can only pass by the key being deleted.
            backplane.presenceTTL = .seconds(60)
            backplane.reconnectDelay = .milliseconds(20)
            backplane.maxReconnectDelay = .milliseconds(250)
            configuration.backplane = .redis(backplane)
        })
        defer { service.stop() }
        let server = try DemoServer(executable: demo, arguments: ["--redis", "redis://127.0.0.1:\(redis.port)/0",
                                                                  "--presence-ttl", "1"])
        let local = try TestClient.connect(port: service.port, path: "/ws?ch=lobby")
        let remote = try TestClient.connect(port: server.port, path: "/ws?ch=lobby&user=dora")
        let localID = try local.whoami().id

        let backplane = try #require(service.backplane as? RedisBackplane)
        func members() throws -> [ClusterMember] { try backplane.clusterMembersBlocking(in: "lobby") }
        func wait(_ condition: ([ClusterMember]) -> Bool, timeout: Duration = .seconds(10)) throws -> Bool {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if condition(try members()) { return true }
                usleep(10_000)
            }
            return condition(try members())
        }
        #expect(try wait { Set($0.map(\.userID)) == [localID.uuidString.lowercased(), "dora"] })
        let all = try members()
        #expect(Set(all.map(\.serverID)).count == 2, "two servers")
        #expect(all.first { $0.id == localID }?.serverID == service.status().backplane.serverID)
        #expect(service.connections(in: "lobby").count == 1, "the local view stays local")

        // Across processes: the demo's members hear our channel messages.
        #expect(eventually { backplane.isSubscribed(channel: "lobby") })
        usleep(200_000) // the demo's own subscription, which we cannot see
        try local.send(text: #"{"cmd":"say","channel":"lobby","param":"hi dora"}"#)
        #expect(try remote.next("said")["param"] as? String == "hi dora")

        let killed = ContinuousClock.now
        server.kill()
        #expect(try wait({ $0.map(\.userID) == [localID.uuidString.lowercased()] }, timeout: ttl * 5))
        let gone = ContinuousClock.now - killed
        print("killed server's members left the cluster presence after \(gone) (ttl \(ttl))")
        #expect(gone <= ttl * 3)

        // A graceful leave shows at once (the local ttl is a minute).
        try local.sendClose()
        #expect(try wait({ $0.isEmpty }, timeout: .seconds(5)))
    }
}


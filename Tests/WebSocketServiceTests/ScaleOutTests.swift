import ChildProcess
import Foundation
import Logging
import Testing
@testable import WebSocketRedis
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// A redis-server of our own on 127.0.0.1 and a free port, nothing saved to
/// disk; killed (SIGKILL) when the test is done with it.
final class RedisServer {
    static let executable = ["/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    private(set) var port: Int
    private let extraArguments: [String]
    private var process: ChildProcess?

    /// `firstPort`: the port to try first (the test of a taken one).
    init(_ extraArguments: [String] = [], firstPort: Int? = nil) throws {
        port = try firstPort ?? Self.freePort()
        self.extraArguments = extraArguments
        // A free port can be handed out twice before redis-server binds it
        // (to another test, here or in another test process): then that
        // one's Redis answers on it, and ours has exited. Another port.
        for _ in 0..<4 {
            if try startOurs() { return }
            port = try Self.freePort()
        }
        guard try startOurs() else { throw ClientError("redis-server found its port taken five times") }
    }

    deinit { kill() }

    /// Again on the same port (after `kill`, for the tests of a restart).
    func start() throws {
        guard try startOurs() else { throw ClientError("redis-server could not listen on \(port): it is taken") }
    }

    /// False when the Redis on the port is not ours (ours then is killed).
    private func startOurs() throws -> Bool {
        let child = try ChildProcess(Self.executable!, ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "",
                                                        "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                                                        "--dir", NSTemporaryDirectory()] + extraArguments)
        process = child
        let port = port
        var answering: pid_t?
        guard eventually(timeout: .seconds(5), {
            answering = Self.processID(onPort: port)
            return answering != nil || !child.isRunning
        }) else { throw ClientError("redis-server did not listen on \(port)") }
        if answering == child.pid { return true }
        kill()
        return false
    }

    /// The process id the Redis listening on `port` reports (INFO server), nil if none answers.
    static func processID(onPort port: Int) -> pid_t? {
        guard let fd = try? TestClient.tcp(port: port) else { return nil }
        defer { Glibc.close(fd) }
        guard (try? TestClient.writeAll(fd, Array("INFO server\r\n".utf8))) != nil else { return nil }
        var reply: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(2)
        while let chunk = try? TestClient.readSome(fd, deadline: deadline), !chunk.isEmpty {
            reply += chunk
            // A whole line: the chunk may end inside the number.
            let text = String(decoding: reply, as: UTF8.self)
            if let start = text.range(of: "process_id:"), let end = text.range(of: "\r\n", range: start.upperBound..<text.endIndex) {
                return pid_t(text[start.upperBound..<end.lowerBound])
            }
        }
        return nil
    }

    /// SIGKILL: no goodbye to the clients, as in a crash.
    func kill() {
        process?.kill()
        process = nil
    }

    static let cliExecutable = ChildProcess.resolve("redis-cli")

    /// A command through redis-cli; its raw output ("" when it cannot run).
    func cli(_ arguments: [String]) -> String {
        guard let cli = Self.cliExecutable,
              let process = try? ChildProcess(cli, ["-p", "\(port)"] + arguments, output: .capture) else { return "" }
        let output = process.readToEnd()
        process.wait()
        return output
    }

    /// `PUBSUB NUMSUB subject`: the connections Redis has subscribed to it,
    /// Redis's own word, for servers in other processes whose backplane a
    /// test cannot ask (-1 when redis-cli cannot run).
    func subscribers(_ subject: String) -> Int {
        let lines = cli(["PUBSUB", "NUMSUB", subject]).split(separator: "\n")
        return lines.count >= 2 ? Int(lines[1].trimmingCharacters(in: .whitespaces)) ?? -1 : -1
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
struct ScaleOutHandler: EnvelopeHandler {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
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
    let services: [WebSocketServer]

    /// nil (reason printed) without redis-server.
    static func start(servers: Int = 3, pubSub: RedisConfiguration.PubSub = .classic,
                      redis: RedisServer? = nil, history: [Configuration.History] = [],
                      backend: Configuration.Backend = .epoll) throws -> Cluster? {
        guard RedisServer.executable != nil else {
            print("SKIPPED: redis-server is not installed (Debian: apt-get install redis-server)")
            return nil
        }
        let redis = try redis ?? RedisServer()
        var routes = WebSocketRoutes()
        routes.socket("/ws", handler: ScaleOutHandler())
        var services: [WebSocketServer] = []
        for _ in 0..<servers {
            let service = try startService(backend, routes: routes) { configuration in
                var backplane = RedisConfiguration(host: "127.0.0.1", port: redis.port)
                backplane.pubSub = pubSub
                backplane.timeout = .seconds(1)
                backplane.reconnectDelay = .milliseconds(20)
                backplane.maxReconnectDelay = .milliseconds(250)
                configuration.backplane = .redis(backplane)
                configuration.history = history
            }
            // nil: io_uring refused here (startService said so): skip.
            guard let service else {
                services.forEach { $0.stop() }
                return nil
            }
            services.append(service)
        }
        let cluster = Cluster(redis: redis, services: services)
        guard eventually(timeout: .seconds(10), { services.allSatisfy { $0.status().backplane.connected && $0.status().backplane.subscriptions >= 1 } }) else {
            throw ClientError("backplanes did not connect: \(services.map { $0.status().backplane })")
        }
        return cluster
    }

    private init(redis: RedisServer, services: [WebSocketServer]) {
        self.redis = redis
        self.services = services
    }

    deinit {
        for service in services { service.stop() }
    }

    /// Every listed server has Redis's word that it is subscribed to the channel.
    func waitSubscribed(_ channel: String, on servers: [WebSocketServer]? = nil) -> Bool {
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
    /// The harness's Redis is its own: a port another Redis holds (one
    /// handed out twice) sends it to another port, instead of letting a test
    /// share the other's streams and channels (a CI run timed out that way
    /// when two test processes ran side by side).
    @Test func aRedisWhosePortIsTakenMovesToAnother() throws {
        guard RedisServer.executable != nil else {
            print("SKIPPED: redis-server is not installed (Debian: apt-get install redis-server)")
            return
        }
        let first = try RedisServer()
        let second = try RedisServer(firstPort: first.port)
        #expect(second.port != first.port)
        let (a, b) = (RedisServer.processID(onPort: first.port), RedisServer.processID(onPort: second.port))
        #expect(a != nil && b != nil && a != b, "two Redis processes: \(String(describing: a)), \(String(describing: b))")
    }

    @Test(arguments: RedisConfiguration.PubSub.allCases)
    func channelMessageReachesEveryServerOnceInPublisherOrder(_ pubSub: RedisConfiguration.PubSub) throws {
        let started = ContinuousClock.now
        guard let cluster = try Cluster.start(pubSub: pubSub) else { return }
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

    @Test(arguments: RedisConfiguration.PubSub.allCases)
    func writeAllAndWriteConnectionCrossServers(_ pubSub: RedisConfiguration.PubSub) throws {
        guard let cluster = try Cluster.start(pubSub: pubSub) else { return }
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

    @Test(arguments: RedisConfiguration.PubSub.allCases)
    func onlineUpdateCrossesServers(_ pubSub: RedisConfiguration.PubSub) throws {
        guard let cluster = try Cluster.start(pubSub: pubSub) else { return }
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

    @Test(arguments: RedisConfiguration.PubSub.allCases)
    func redisRestartReconnectsResubscribesAndCountsWhatWasNotPropagated(_ pubSub: RedisConfiguration.PubSub) throws {
        let started = ContinuousClock.now
        guard let cluster = try Cluster.start(servers: 2, pubSub: pubSub) else { return }
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
        var routes = WebSocketRoutes()
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
        // A history message's header, as RedisHistory's script writes it.
        for except in [nil, UUID()] {
            let message = BackplaneMessage(origin: origin, target: .history("room", epoch: "123456789", offset: 42, except: except),
                                           envelope: Array(#"{"channel":"room","offset":42,"cmd":"x","param":null}"#.utf8))
            let decoded = BackplaneWire.encode(message).withUnsafeBytes { BackplaneWire.decode($0, channel: "room") }
            #expect(decoded == message)
        }
        #expect(Array("\(origin.uuidString) h 1 x\n{}".utf8).withUnsafeBytes { BackplaneWire.decode($0, channel: "room") } == nil)
    }
}

/// wsdemo (built next to the test bundle) as a separate server process, so
/// a test can SIGKILL a member of the cluster.
final class DemoServer {
    let process: ChildProcess
    let port: Int
    let banner: String

    static var executable: String? { ChildProcess.builtProduct("wsdemo") }

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
        banner = text
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
        var routes = WebSocketRoutes()
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

        // Across processes: the demo's members hear our channel messages once
        // Redis has both servers' subscriptions (ours and the demo's).
        #expect(eventually { backplane.isSubscribed(channel: "lobby") })
        #expect(eventually { redis.subscribers("ws:c:lobby") == 2 }, "both servers subscribed")
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


/// A three-master Redis Cluster on 127.0.0.1 (no replicas), made with
/// `redis-cli --cluster create`; nodes killed when the test is done with it.
final class RedisClusterNodes {
    let nodes: [RedisServer]

    /// nil (reason printed) without redis-server or redis-cli.
    static func start() throws -> RedisClusterNodes? {
        guard RedisServer.executable != nil, let cli = ChildProcess.resolve("redis-cli") else {
            print("SKIPPED: redis-server or redis-cli is not installed (Debian: apt-get install redis-server)")
            return nil
        }
        let directory = NSTemporaryDirectory() + "ws-cluster-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var made: RedisClusterNodes?
        // The nodes' files go with the cluster, or with a start that failed (its nodes killed first).
        defer { if made == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let nodes = try (0..<3).map { n in
            // The bus port defaults to port + 10000, which can be past 65535: a free one of its own.
            try RedisServer(["--cluster-enabled", "yes", "--cluster-config-file", "\(directory)/nodes-\(n).conf",
                             "--cluster-port", "\(try RedisServer.freePort())", "--cluster-node-timeout", "2000"])
        }
        let create = try ChildProcess(cli, ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" }
                                        + ["--cluster-replicas", "0", "--cluster-yes"], output: .capture)
        let log = create.readToEnd()
        guard create.wait() == 0 else { throw ClientError("redis-cli --cluster create failed: \(log)") }
        let cluster = RedisClusterNodes(nodes: nodes, directory: directory)
        guard eventually(timeout: .seconds(15), { nodes.allSatisfy { cluster.cli($0, ["CLUSTER", "INFO"]).contains("cluster_state:ok") } }) else {
            throw ClientError("the Redis Cluster did not come up: \(log)")
        }
        made = cluster
        return cluster
    }

    private let directory: String
    private init(nodes: [RedisServer], directory: String) {
        self.nodes = nodes
        self.directory = directory
    }

    deinit {
        for node in nodes { node.kill() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A command through redis-cli on one node; its raw output.
    func cli(_ node: RedisServer, _ arguments: [String]) -> String { node.cli(arguments) }

    /// `PUBSUB SHARDNUMSUB subject` on each node: how many subscribers each has.
    func shardSubscribers(_ subject: String) -> [Int] {
        nodes.map { node in
            let lines = cli(node, ["PUBSUB", "SHARDNUMSUB", subject]).split(separator: "\n")
            return lines.count >= 2 ? Int(lines[1].trimmingCharacters(in: .whitespaces)) ?? -1 : -1
        }
    }
}

@Suite(.serialized) struct RedisClusterTests {
    /// Sharded pub/sub on a real three-master Redis Cluster: every server is
    /// pointed at one node; each channel's subscriptions land on the node that
    /// owns its slot (and nowhere else), and messages, writeAll,
    /// writeConnection and the cluster presence all work across servers.
    @Test func shardedPubSubFollowsTheSlotMap() async throws {
        guard let redis = try RedisClusterNodes.start() else { return }
        guard let cluster = try Cluster.start(pubSub: .sharded, redis: redis.nodes[0]) else { return }
        // Channels whose slots are spread over the three masters.
        var probe = RedisConfiguration(port: redis.nodes[0].port)
        probe.pubSub = .sharded
        let router = RedisRouter(probe)
        #expect(router.refresh() == nil)
        #expect(router.isCluster)
        var rooms: [String] = []
        var owners: Set<RedisNode> = []
        for n in 0..<100 where owners.count < 3 || rooms.count < 4 {
            let owner = router.node(for: "ws:c:room\(n)")
            if !owners.contains(owner) || rooms.count < 4 {
                owners.insert(owner)
                rooms.append("room\(n)")
            }
        }
        router.closeAll()
        #expect(owners.count == 3, "the rooms cover every master")

        let clients = try rooms.map { room in try cluster.services.map { try TestClient.connect(port: $0.port, path: "/ws?ch=\(room)") } }
        for room in rooms { #expect(cluster.waitSubscribed(room)) }
        for room in rooms {
            let counts = redis.shardSubscribers("ws:c:\(room)")
            #expect(counts.filter { $0 == 3 }.count == 1 && counts.filter { $0 == 0 }.count == 2,
                    "\(room): three servers subscribed on its owner only, got \(counts)")
        }
        // Messages from every server in every room: each member gets each once, in order.
        let perPublisher = 10
        for (r, room) in rooms.enumerated() {
            for n in 0..<perPublisher {
                for (s, client) in clients[r].enumerated() {
                    try client.send(text: #"{"cmd":"say","channel":"\#(room)","param":{"p":\#(s),"n":\#(n)}}"#)
                }
            }
        }
        for (r, room) in rooms.enumerated() {
            for (index, client) in clients[r].enumerated() {
                var next = [0, 0, 0]
                for _ in 0..<(perPublisher * 3) {
                    let param = try #require(try client.next("said")["param"] as? [String: Any])
                    let p = try #require(param["p"] as? Int)
                    #expect(param["n"] as? Int == next[p], "\(room) on server \(index): once each, in order, from \(p)")
                    next[p] += 1
                }
                #expect(next == [perPublisher, perPublisher, perPublisher])
            }
        }
        for room in clients { for client in room { client.expectNothing("said", within: .milliseconds(100)) } }

        // writeAll and writeConnection (one shard subject), and the cluster-wide presence (keys on every master).
        let target = try clients[0][2].whoami().id
        #expect(cluster.services[0].writeConnection(cmd: "direct", param: RawJSON(1), id: target))
        #expect(try clients[0][2].next("direct")["param"] as? Int == 1)
        cluster.services[1].writeAll(cmd: "everyone", param: .null)
        for room in clients { for client in room { #expect(try client.next("everyone")["cmd"] as? String == "everyone") } }
        let backplane = try #require(cluster.services[0].backplane as? RedisBackplane)
        for room in rooms {
            #expect(eventually(timeout: .seconds(10)) { (try? backplane.clusterMembersBlocking(in: room).count) == 3 },
                    "\(room): one member on each server in the cluster view")
        }
        for service in cluster.services {
            #expect(service.status().backplane.notPropagated == 0)
            #expect(service.status().backplane.connected)
            #expect(service.status().backplane.pubSub == "sharded")
        }
    }
}

extension RedisClusterTests {
    /// A channel's slot moves to another master: Redis drops the shard
    /// subscriptions there (an unasked sunsubscribe) and answers SPUBLISH with
    /// MOVED; the servers read the slot map again, subscribe on the new owner,
    /// and the message that met the MOVED is published there, not lost.
    @Test func shardedPubSubFollowsAMigratedSlot() throws {
        guard let redis = try RedisClusterNodes.start() else { return }
        guard let cluster = try Cluster.start(pubSub: .sharded, redis: redis.nodes[0]) else { return }
        let subject = "ws:c:moving"
        let slot = RedisRouter.slot(subject)
        let clients = try cluster.services.map { try TestClient.connect(port: $0.port, path: "/ws?ch=moving") }
        #expect(cluster.waitSubscribed("moving"))
        let before = redis.shardSubscribers(subject)
        let source = try #require(before.firstIndex(of: 3), "subscribed on the owner: \(before)")
        let target = (source + 1) % 3
        #expect(redis.cli(redis.nodes[source], ["CLUSTER", "COUNTKEYSINSLOT", "\(slot)"]).hasPrefix("0"), "an empty slot moves at once")
        func id(_ node: Int) -> String {
            redis.cli(redis.nodes[node], ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let (sourceID, targetID) = (id(source), id(target))
        // Redis Cluster's resharding steps (the slot holds no keys to MIGRATE). IMPORTING
        // first lets the target bump its config epoch when it takes the slot; without it
        // gossip from the source can hand the slot back and leave two nodes each
        // answering MOVED to the other.
        for (node, arguments) in [(target, ["IMPORTING", sourceID]), (source, ["MIGRATING", targetID]),
                                  (target, ["NODE", targetID]), (source, ["NODE", targetID]),
                                  ((source + 2) % 3, ["NODE", targetID])] {
            let answer = redis.cli(redis.nodes[node], ["CLUSTER", "SETSLOT", "\(slot)"] + arguments)
            #expect(answer.hasPrefix("OK"), "SETSLOT \(arguments) on node \(node): \(answer)")
        }
        #expect(eventually(timeout: .seconds(10)) { redis.shardSubscribers(subject) == (0..<3).map { $0 == target ? 3 : 0 } },
                "resubscribed on the new owner: \(redis.shardSubscribers(subject))")
        for (s, client) in clients.enumerated() {
            try client.send(text: #"{"cmd":"say","channel":"moving","param":\#(s)}"#)
        }
        for (index, client) in clients.enumerated() {
            var got: [Int] = []
            for _ in 0..<3 { got.append(try #require(try client.next("said")["param"] as? Int)) }
            #expect(got.sorted() == [0, 1, 2], "server \(index): every server's message, once")
            client.expectNothing("said", within: .milliseconds(100))
        }
        for service in cluster.services { #expect(service.status().backplane.notPropagated == 0) }
    }
}

/// The chat's `say` across three wsdemo processes joined through Redis:
/// each member, on every server, gets each message once, in each
/// publisher's order.
@Suite(.serialized) struct ScaleOutProcessTests {
    @Test func threeDemoProcessesShareChannels() throws {
        guard RedisServer.executable != nil, RedisServer.cliExecutable != nil, let demo = DemoServer.executable else {
            print("SKIPPED: needs redis-server, redis-cli and wsdemo next to the test bundle")
            return
        }
        let redis = try RedisServer()
        let servers = try (0..<3).map { _ in
            try DemoServer(executable: demo, arguments: ["--redis", "redis://127.0.0.1:\(redis.port)/0"])
        }
        let clients = try servers.enumerated().map { try TestClient.connect(port: $1.port, path: "/ws?ch=hall&user=u\($0)") }
        // A server hears the others only once Redis has its subscription, a
        // round trip after its first member joined. The demo's rooms keep a
        // history (in Redis, with --redis), and a server tells a member
        // `_joined` only once it follows the room's stream: after it, nothing
        // is missed, so no need to ask Redis who is subscribed.
        for client in clients { _ = try client.receiveEnvelope(cmd: "_joined") }
        let perPublisher = 20
        for n in 0..<perPublisher {
            for (s, client) in clients.enumerated() {
                try client.send(text: #"{"cmd":"say","channel":"hall","param":{"p":\#(s),"n":\#(n)}}"#)
            }
        }
        for (index, client) in clients.enumerated() {
            var next = [0, 0, 0]
            for _ in 0..<(perPublisher * 3) {
                let param = try #require(try client.next("say")["param"] as? [String: Any])
                let p = try #require(param["p"] as? Int)
                #expect(param["n"] as? Int == next[p], "server \(index): once each, in order, from \(p)")
                next[p] += 1
            }
            #expect(next == [perPublisher, perPublisher, perPublisher])
            client.expectNothing("say")
        }
    }
}

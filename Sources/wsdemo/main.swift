// wsdemo: the chat example (a page at / and its socket endpoint /ws?ch=room),
// an echo server for conformance and load tests (--echo), and two small tools
// over the C core (info, validate, accept).
import Dispatch
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import WebSocketRedis
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

func usage() -> Never {
    print("""
    usage: wsdemo [--echo] [--host ADDR] [--port N] [--loops N] [--backend auto|uring|epoll] [--log-level LEVEL]
                  [--no-admin] [--deflate [--deflate-level N]] [--redis redis://[:password@]host:port/db] [--presence-ttl SECONDS]
                  [--redis-sharded] [--no-presence] [--history N] [--no-rate-limit] [--max-per-address N]
                  [--envelope] [--async | --session] [--on-loops] [--raw] [--tls-cert FILE --tls-key FILE [--tls-port N] [--tls-kernel]]
                                       the chat example (a page at /, the socket at /ws?ch=room&user=name,
                                       admin pages at /admin/sockets for loopback peers only; --no-admin: none);
                                       --echo echoes every message unchanged at every path
                                       --deflate negotiates permessage-deflate (RFC 7692) with clients that offer it;
                                       --deflate-level N: zlib level 1-9 (Configuration.Compression.level, default 1)
                                       --redis joins the servers that share this Redis: channels, writeAll and
                                       writeConnection span them all (Redis pub/sub backplane); a killed
                                       server's members leave the cluster presence after --presence-ttl (15);
                                       --redis-sharded uses sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7),
                                       following a Redis Cluster's slot map from the node given to --redis
                                       --no-presence: no online-update on join and leave (fan-out benchmarks:
                                       N members joining one room otherwise cost N^2/2 announcements)
                                       --history N: each room keeps its last N messages (at most 4 MiB) for pages
                                       that reconnect (Configuration.history; default 50; 0: no history)
                                       --no-rate-limit: the chat's connections have no message or byte rate
                                       (benchmarks that flood on purpose); the echo server never has one
                                       --max-per-address N: at most N connections per client address (429 beyond)
                                       --raw: the chat's /ws?ch=ROOM relays raw messages, unparsed, to every
                                       member of ROOM (writeChannel(raw:); the raw fan-out benchmark)
                                       --echo --envelope echoes envelopes ({"cmd","param"} back) instead of bytes
                                       --async: the chat (or the envelope echo) as an AsyncEnvelopeHandler;
                                       --session: as an envelope session (routes.socket { inbound, outbound, .. }),
                                       the byte echo as a raw session (benchmarks of the async paths);
                                       --on-loops runs those tasks on the event loops' threads
                                       (Configuration.AsyncExecution.eventLoops) instead of handler threads
                                       --tls-cert/--tls-key serve wss:// and https:// with this PEM certificate
                                       chain and key (scripts/make-test-certs makes throw-away ones); SIGHUP
                                       reads them again for new connections; --tls-port N keeps --port plain
                                       and serves TLS beside it on port N (0: any free port); --tls-kernel hands
                                       TLS 1.3 sending to the kernel where it has the tls module (kernel TLS)
                                       defaults: --host 127.0.0.1 --port 8080 --loops 0 (one per CPU) --backend auto
           wsdemo info                 SIMD levels of this CPU and the one in use
           wsdemo validate FILE...     UTF-8 validation, fail-fast, in 64 KiB chunks
           wsdemo accept KEY           Sec-WebSocket-Accept for a Sec-WebSocket-Key
    """)
    exit(2)
}

/// Kept for the life of the process (a released source stops delivering).
nonisolated(unsafe) var hangUpSource: (any DispatchSourceSignal)?

func fail(_ message: String) -> Never {
    let line = "wsdemo: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

/// Parses the server's flags and runs it in a ServiceGroup until SIGINT or SIGTERM.
func serve(_ arguments: ArraySlice<String>) async -> Never {
    var configuration = Configuration(host: "127.0.0.1", port: 8080)
    var echo = false
    var admin = true
    var level = Logger.Level.info
    var presenceTTL: Duration?
    var redis: RedisConfiguration?
    var sharded = false
    var rateLimited = true
    var envelopeEcho = false
    var rawRooms = false
    var deflateLevel: Int?
    var tlsCertificate: String?
    var tlsKey: String?
    var tlsPort: Int?
    var tlsKernel = false
    var historyLength = ChatHandler.historyLength
    enum Mode { case sync, async, session }
    var mode = Mode.sync
    var args = arguments.makeIterator()
    func value(_ flag: String) -> String {
        guard let v = args.next() else { fail("\(flag) needs a value") }
        return v
    }
    while let arg = args.next() {
        switch arg {
        case "--echo": echo = true
        case "--no-admin": admin = false
        case "--deflate": configuration.compression = configuration.compression ?? Configuration.Compression()
        case "--deflate-level":
            guard let level = Int(value(arg)), (1...9).contains(level) else { fail("--deflate-level takes 1...9") }
            deflateLevel = level
        case "--redis":
            do {
                redis = try RedisConfiguration(url: value(arg))
            } catch {
                fail("--redis: \(error)")
            }
        case "--presence-ttl":
            guard let seconds = Double(value(arg)), seconds > 0 else { fail("--presence-ttl takes seconds > 0") }
            presenceTTL = .milliseconds(Int(seconds * 1000))
        case "--redis-sharded": sharded = true
        case "--no-presence": configuration.announcesPresence = false
        case "--history":
            guard let n = Int(value(arg)), n >= 0 else { fail("--history takes a count >= 0") }
            historyLength = n
        case "--no-rate-limit": rateLimited = false
        case "--envelope": envelopeEcho = true
        case "--raw": rawRooms = true
        case "--async": mode = .async
        case "--session": mode = .session
        case "--on-loops": configuration.asyncExecution = .eventLoops
        case "--max-per-address":
            guard let most = Int(value(arg)), most > 0 else { fail("--max-per-address takes a count > 0") }
            configuration.maxConnectionsPerAddress = most
        case "--tls-cert": tlsCertificate = value(arg)
        case "--tls-key": tlsKey = value(arg)
        case "--tls-kernel": tlsKernel = true
        case "--tls-port":
            guard let port = Int(value(arg)), (0...65535).contains(port) else { fail("--tls-port takes 0...65535") }
            tlsPort = port
        case "--host": configuration.host = value(arg)
        case "--port":
            guard let port = Int(value(arg)), (0...65535).contains(port) else { fail("--port takes 0...65535") }
            configuration.port = port
        case "--loops":
            guard let loops = Int(value(arg)), (0...1024).contains(loops) else { fail("--loops takes 0...1024") }
            configuration.loops = loops
        case "--backend":
            guard let backend = Configuration.Backend(rawValue: value(arg)) else { fail("--backend takes auto, uring or epoll") }
            configuration.backend = backend
        case "--log-level":
            guard let l = Logger.Level(rawValue: value(arg)) else { fail("--log-level takes trace, debug, info, notice, warning, error, critical") }
            level = l
        case "-h", "--help": usage()
        default: fail("unknown argument \(arg) (try --help)")
        }
    }
    switch (tlsCertificate, tlsKey) {
    case let (certificate?, key?): configuration.tls = Configuration.TLS(certificateChainFile: certificate, privateKeyFile: key)
    case (nil, nil): break
    default: fail("--tls-cert and --tls-key go together")
    }
    if let deflateLevel {
        guard configuration.compression != nil else { fail("--deflate-level needs --deflate") }
        configuration.compression?.level = deflateLevel
    }
    if rawRooms && (echo || mode != .sync) {
        fail("--raw is the chat's raw relay: not with --echo, --async or --session")
    }
    if tlsKernel {
        guard configuration.tls != nil else { fail("--tls-kernel needs --tls-cert and --tls-key") }
        configuration.tls?.kernelOffload = true
    }
    if let tlsPort {
        guard configuration.tls != nil else { fail("--tls-port needs --tls-cert and --tls-key") }
        configuration.tls?.port = tlsPort
    }
    if var redis {
        if let presenceTTL { redis.presenceTTL = presenceTTL }
        if sharded { redis.pubSub = .sharded }
        configuration.backplane = .redis(redis)
    } else if presenceTTL != nil || sharded {
        fail("--presence-ttl and --redis-sharded need --redis")
    }
    let chosenLevel = level
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = chosenLevel
        return handler
    }
    let logger = Logger(label: "wsdemo")
    // The server's metrics (see Configuration.metrics) for Prometheus to scrape at /metrics.
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

    var routes = WebSocketRoutes()
    routes.page("/metrics") { _ in
        ServerResponse(contentType: "text/plain; version=0.0.4; charset=utf-8", body: registry.emitToBuffer())
    }
    if echo {
        // Autobahn 9.1.6 and 9.2.6 echo 16 MiB messages; the default is 1 MiB.
        configuration.maxMessageSize = configuration.maxMessageSize ?? 16 << 20
        // A conformance and load target: it echoes whatever it is sent, as fast as it comes.
        switch (envelopeEcho, mode) {
        case (false, .sync): routes.raw("*", handler: EchoHandler(), limits: .unlimited)
        case (false, .async): fail("--echo --async needs --envelope (an AsyncEnvelopeHandler takes envelopes)")
        case (false, .session):
            routes.raw("*", limits: .unlimited) { inbound, outbound, _ in
                for await message in inbound { try await outbound.write(message) }
            }
        case (true, .sync): routes.socket("*", handler: EnvelopeEchoHandler(), limits: .unlimited)
        case (true, .async): routes.socket("*", handler: AsyncAdapter(sync: EnvelopeEchoHandler()), limits: .unlimited)
        case (true, .session): routes.socket("*", limits: .unlimited, session: sessionRunning(EnvelopeEchoHandler()))
        }
    } else {
        routes.page("/") { _ in .html(chatPage) }
        // Every room keeps its last --history messages (50 by default; at most
        // 4 MiB of them, 1,000 rooms): a page that reconnects gets what it
        // missed, and `hello` shows a new one the latest lines.
        if historyLength > 0 {
            configuration.history = [Configuration.History(channels: "*", maxMessages: historyLength,
                                                           maxBytes: ChatHandler.historyBytes, maxAge: .seconds(3600))]
            configuration.maxHistoryChannels = ChatHandler.historyRooms
        }
        // The user name comes from the page (?user=): a demo has no accounts.
        var limits = Limits()
        if !rateLimited {
            limits.messages = nil
            limits.bytes = nil
        }
        let authenticate: @Sendable (ServerRequest) -> Authentication = { request in
            guard let user = request.queryItem("user"), !user.isEmpty else { return .accept(nil) }
            return .accept(Profile(userID: String(user.prefix(40))))
        }
        switch mode {
        case _ where rawRooms:
            let limits = limits
            routes.socket("/ws") { request in
                let room = request.queryItem("ch").flatMap { $0.isEmpty ? nil : $0 } ?? "room"
                return .accept(profile: nil, channel: room, handler: .raw(RoomRelayHandler(room: room)), limits: limits)
            }
        case .sync: routes.socket("/ws", handler: ChatHandler(), limits: limits, authenticate: authenticate)
        case .async:
            routes.socket("/ws", handler: AsyncAdapter(sync: ChatHandler()), limits: limits, authenticate: authenticate)
        case .session:
            routes.socket("/ws", limits: limits, authenticate: authenticate, session: sessionRunning(ChatHandler()))
        }
        if admin {
            // Good enough for a demo on one machine: only peers on loopback.
            // Behind a reverse proxy every peer is loopback: use --no-admin there.
            // The names it answers to: its own address and localhost (DNS rebinding gets 421).
            routes.admin(hosts: adminHosts(configuration.host)) { request in isLoopback(request.remoteAddress) }
        }
    }
    let service: WebSocketServer
    do {
        service = try WebSocketServer(routes: routes, configuration: configuration, logger: logger)
        try service.start()
    } catch {
        fail("\(error)")
    }
    if configuration.tls != nil {
        // A renewed certificate is served to new connections after `kill -HUP`.
        signal(SIGHUP, SIG_IGN)
        let reload = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        reload.setEventHandler {
            do {
                try service.reloadTLS()
                logger.info("TLS certificate and key read again")
            } catch {
                logger.error("TLS reload failed, the old certificate stays: \(error)")
            }
        }
        reload.resume()
        hangUpSource = reload
    }
    let shownHost = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
    let plainPort: Int? = service.tlsPort == service.port ? nil : service.port
    let pages = [plainPort.map { "http://\(shownHost):\($0)/" }, service.tlsPort.map { "https://\(shownHost):\($0)/" }]
        .compactMap { $0 }.joined(separator: " or ")
    let banner = "wsdemo \(echo ? "echo" : "chat") on \(configuration.host):\(service.port) (\(service.backend))"
        + (echo ? "" : ": open \(pages)")
        + (echo ? service.tlsPort.flatMap { $0 == service.port ? nil : ", wss:// on port \($0)" } ?? "" : "")
        + (echo || !admin ? "" : ", admin at /admin/sockets (loopback only)")
        + (service.status().backplane.endpoint.map { ", backplane \($0)" } ?? "") + "\n"

    // SIGINT / SIGTERM shut the group down gracefully: the server closes
    // 1001 to everyone and waits for the close handshakes, then run() returns.
    let group = ServiceGroup(services: [service, Banner(text: banner)], gracefulShutdownSignals: [.sigterm, .sigint],
                             logger: logger)
    do {
        try await group.run()
    } catch {
        fail("\(error)")
    }
    exit(0)
}

/// Prints the banner from inside the group: a group traps its signals before
/// it runs any service, so a script that waits for the banner and then sends
/// SIGTERM gets the graceful stop, never the default action (death).
struct Banner: Service {
    let text: String

    func run() async throws {
        // Unbuffered, so a script waiting for it sees it at once.
        _ = text.withCString { write(1, $0, strlen($0)) }
        // Returning early would end the group: wait for its shutdown like the server does.
        try? await gracefulShutdown()
    }
}

/// The admin pages' host names: the listen address and localhost, and the
/// loopback addresses when it listens on every address.
func adminHosts(_ listen: String) -> Set<String> {
    var hosts: Set<String> = [listen, "localhost"]
    if listen == "0.0.0.0" || listen == "::" { hosts.formUnion(["127.0.0.1", "::1"]) }
    return hosts
}

/// "127.x.y.z:port" or "[::1]:port".
func isLoopback(_ remoteAddress: String) -> Bool {
    remoteAddress.hasPrefix("127.") || remoteAddress.hasPrefix("[::1]:") || remoteAddress.hasPrefix("[::ffff:127.")
}

func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}

let args = CommandLine.arguments.dropFirst()
switch args.first {
case nil, "serve":
    await serve(args.first == nil ? [] : args.dropFirst())
case let flag? where flag.hasPrefix("-") && flag != "-h":
    await serve(args)
case "info":
    for level in SIMDLevel.allCases {
        print("\(level.name): \(level.isSupported ? "supported" : "not supported")")
    }
    print("active: \(SIMDLevel.active.name)")
case "validate":
    guard args.count > 1 else { usage() }
    var allValid = true
    for path in args.dropFirst() {
        guard let bytes = readFile(path) else {
            print("\(path): cannot read"); allValid = false; continue
        }
        var validator = UTF8Validator()
        var position = 0
        var verdict = "valid UTF-8 (\(bytes.count) bytes)"
        while position < bytes.count {
            let end = min(bytes.count, position + (1 << 16))
            let bad: Int? = bytes[position..<end].withUnsafeBytes { chunk in
                do throws(UTF8Validator.InvalidByte) {
                    try validator.feed(chunk)
                    return nil
                } catch {
                    return error.offset
                }
            }
            if let bad {
                verdict = "invalid UTF-8 at byte \(position + bad)"
                break
            }
            position = end
        }
        if position >= bytes.count && !validator.isComplete { verdict = "invalid UTF-8: truncated at the end" }
        if !verdict.hasPrefix("valid") { allValid = false }
        print("\(path): \(verdict)")
    }
    exit(allValid ? 0 : 1)
case "accept":
    guard args.count == 2 else { usage() }
    print(Handshake.acceptKey(for: args[args.startIndex + 1]))
default:
    usage()
}

import CWebSocket
import Foundation
import Logging
import Synchronization

/// A WebSocket server: the C engine's event loops below, routes, channels and
/// the JSON envelope above. Thread-safe: callbacks arrive on the loop
/// threads, and every method may be called from any thread (`stop` from a
/// handler begins the stop and finishes it on a thread of its own).
public final class WebSocketServer: Sendable {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Numbers for the admin pages and the health check.
    public struct Status: Sendable, Codable, Hashable {
        public var connections: Int
        /// Channel name → member count.
        public var channels: [String: Int]
        /// TCP connections accepted since start (pages included).
        public var accepted: UInt64
        public var messagesIn: UInt64
        public var bytesIn: UInt64
        public var messagesOut: UInt64
        public var bytesOut: UInt64
        /// Messages dropped by the `.drop` overflow policy.
        public var dropped: UInt64
        /// Sends from other threads refused, and fan-out recipients skipped,
        /// because their loop's inbox held `Configuration.maxInboxBytes`.
        public var inboxRefused: UInt64
        /// TCP connections held now (handshaking, open, closing).
        public var sockets: UInt64
        /// Episodes of running out of descriptors: accepting paused until a
        /// connection closed (each is logged once by the engine).
        public var acceptPauses: UInt64
        /// Upgrades answered 503 at `maxConnections`.
        public var refusedFull: UInt64
        /// Event loops that died; their connections were closed (see the log).
        public var loopsFailed: UInt64
        /// TLS handshakes completed (0 without `Configuration.tls`).
        public var tlsHandshakes: UInt64 = 0
        /// TLS connections that ended before their handshake did: plain
        /// HTTP on the TLS port, a refused or a stalled handshake (each is
        /// logged at debug level).
        public var tlsHandshakesFailed: UInt64 = 0
        /// TLS connections whose sending went to the kernel (`Configuration.TLS.kernelOffload`).
        public var tlsKernelOffloads: UInt64 = 0
        /// Writes to sockets: sendmsg calls (epoll) or send requests (io_uring).
        /// Over `messagesOut`: how many queued messages one write carries.
        public var socketWrites: UInt64 = 0
        /// Messages sent on from the block they arrived in, with no copy: a
        /// handler's `send` of the bytes it was handed (an echo, a relay to
        /// another connection) when the message took more than one read.
        public var inPlaceSends: UInt64 = 0
        /// What the endpoints' limits and checks refused.
        public var limits: LimitStatus
        /// Seconds since `start()`.
        public var uptime: Double
        /// "io_uring" or "epoll".
        public var backend: String
        /// How this server reaches the others, and whether it can right now.
        public var backplane: BackplaneStatus
    }

    public let configuration: Configuration
    public let logger: Logger
    let routes: WebSocketRoutes
    /// The admin pages, when the routes have an authorization check.
    let admin: AdminPages?
    /// Copies traffic to the admin tap's watchers; idle (one atomic load per message) without them.
    let tap = TrafficTap()
    /// Carries writes to the other servers of a cluster.
    let backplane: any Backplane
    /// Read once: the in-process backplane costs the hot path one branch.
    let isDistributed: Bool
    /// This server's origin id on the backplane.
    let serverID = UUID()
    /// The kept messages of the channels `Configuration.history` names.
    let historyStore: HistoryStore
    /// The backplane orders and keeps the histories (Redis Streams): writes
    /// to a channel with a history go through it (ClusterHistory.swift).
    let historyInBackplane: Bool
    let limitCounters = LimitCounters()
    /// nil when `Configuration.metrics` is nil.
    let metrics: ServerMetrics?
    let warningBudget = WarningBudget()
    /// Open connections per client address (used with `maxConnectionsPerAddress`).
    let addresses = AddressTable()
    /// Awaited upgrade decisions not yet made, by the engine id their request waits under.
    let pendingDecisions = Locked<[cws_conn_id: Task<Void, Never>]>([:])
    /// Where `AsyncEnvelopeHandler` tasks run; made for the first async connection.
    private let handlerExecutor = Locked<HandlerExecutor?>(nil)
    /// One a loop with `AsyncExecution.eventLoops`, else none. Written once in init.
    nonisolated(unsafe) private(set) var loopExecutors: [LoopExecutor] = []

    /// Written once in init, before the loops start; read-only afterwards.
    nonisolated(unsafe) private(set) var server: OpaquePointer?

    struct State {
        // The open connections. The engine's ids need no table of their own:
        // each connection carries its id, and channels map ids to connections.
        var byID: [UUID: Connection] = [:]
        /// Members by engine id: the fan-out needs the ids (and bumps each
        /// member's out-counters), nothing per recipient beyond that.
        var channels: [String: [cws_conn_id: Connection]] = [:]
        var startedAt: ContinuousClock.Instant?
        /// Taken by the first `start()` (or `run()`), so a second one cannot start the loops twice.
        var startClaimed = false
        /// The stop has begun.
        var stopped = false
        /// The stop is over: loops joined, backplane stopped.
        var stopFinished = false
        /// `shutdown(timeout:)` callers waiting for `stopFinished`.
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }
    let state = Locked(State())

    struct Hooks {
        var onOpen: (@Sendable (Connection) -> Void)?
        var onClose: (@Sendable (Connection, CloseCode, String) -> Void)?
    }
    let hooks = Locked(Hooks())
    /// What the listener's certificates were last read from (`reloadTLS`).
    private let tlsInUse: Locked<Configuration.TLS?>

    /// Binds the listeners (so `port` is known); `start()` starts the loops.
    public init(routes: WebSocketRoutes, configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "WebSocketService")) throws(WebSocketServer.Error) {
        self.routes = routes
        self.admin = routes.adminAuthorization.map { AdminPages(access: $0) }
        self.configuration = configuration
        self.tlsInUse = Locked(configuration.tls)
        self.logger = logger
        self.server = nil
        metrics = configuration.metrics.map(ServerMetrics.init)
        backplane = configuration.backplane.makeBackplane(logger)
        isDistributed = backplane.isDistributed
        historyInBackplane = isDistributed && backplane.ordersHistory && !configuration.history.isEmpty
        historyStore = HistoryStore(rules: configuration.history, maxChannels: configuration.maxHistoryChannels,
                                    evicts: !historyInBackplane)

        var cfg = cws_server_config()
        cws_server_config_init(&cfg)
        configuration.apply(to: &cfg)
        cfg.callbacks.ctx = Unmanaged.passUnretained(self).toOpaque()
        cfg.callbacks.on_request = { ctx, req, http, upgrade in
            WebSocketServer.withServer(ctx) { $0.handleRequest(req!, http!, upgrade) }
        }
        cfg.callbacks.on_open = { ctx, _, user in
            WebSocketServer.withServer(ctx) { server in WebSocketServer.withConnection(user) { server.opened($0) } }
        }
        cfg.callbacks.on_message = { ctx, _, user, opcode, data, len in
            WebSocketServer.withServer(ctx) { server in
                WebSocketServer.withConnection(user) { server.received($0, opcode: opcode, UnsafeRawBufferPointer(start: data, count: len)) }
            }
        }
        cfg.callbacks.on_close = { ctx, _, user, code, reason, len in
            // The engine's reference from the upgrade ends here.
            let connection = Unmanaged<Connection>.fromOpaque(user!).takeRetainedValue()
            let text = String(decoding: UnsafeRawBufferPointer(start: reason, count: len), as: UTF8.self)
            WebSocketServer.withServer(ctx) { $0.closed(connection, code: code, reason: text) }
        }
        cfg.callbacks.on_drain = { _, _, user in
            WebSocketServer.withConnection(user) { $0.drained() }
        }
        if configuration.asyncExecution == .eventLoops {
            cfg.callbacks.on_turn = { ctx, loop in
                WebSocketServer.withServer(ctx) { $0.loopExecutors[Int(loop)].runTurn() }
            }
        }

        cfg.callbacks.on_log = { ctx, level, message in
            WebSocketServer.withServer(ctx) { $0.engineLog(level, message!) }
        }

        var message = [CChar](repeating: 0, count: 256)
        let created = configuration.host.withCString { host -> OpaquePointer? in
            cfg.host = host
            guard let tls = configuration.tls else { return cws_server_create(&cfg, &message, message.count) }
            return tls.withEngineConfiguration { engineTLS in
                cfg.tls = engineTLS
                return cws_server_create(&cfg, &message, message.count)
            }
        }
        guard let created else {
            let ports = configuration.tls?.port.map { "ports \(configuration.port) and \($0) (TLS)" } ?? "port \(configuration.port)"
            throw Error(description: "cannot listen on \(configuration.host) \(ports): "
                + String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        server = created
        if configuration.asyncExecution == .eventLoops {
            let executor = handlerExecutor, threads = configuration.handlerThreads
            loopExecutors = (0..<cws_server_loop_count(created)).map { loop in
                LoopExecutor(server: created, loop: loop) { Self.handlerExecutor(executor, threads: threads) }
            }
        }
    }

    /// The server behind an engine callback's ctx, taken without a retain:
    /// ctx is unretained, and the loops are joined (stop) before the server
    /// can go, so it outlives every callback. A retain per callback is an
    /// atomic add on one line that every loop shares, and once anything holds
    /// a weak reference to the server (the metrics sampler does) each one
    /// takes Swift's side-table slow path: 7% of the server's CPU in a
    /// pipelined echo (perf, Benchmarks/profiles/run echo).
    @inline(__always)
    static func withServer<Result>(_ ctx: UnsafeMutableRawPointer?, _ body: (WebSocketServer) -> Result) -> Result {
        Unmanaged<WebSocketServer>.fromOpaque(ctx!)._withUnsafeGuaranteedRef(body)
    }

    /// The connection behind an engine callback's user pointer, without a
    /// retain: the engine holds its reference from the upgrade to on_close.
    @inline(__always)
    static func withConnection<Result>(_ user: UnsafeMutableRawPointer?, _ body: (Connection) -> Result) -> Result {
        Unmanaged<Connection>.fromOpaque(user!)._withUnsafeGuaranteedRef(body)
    }

    deinit {
        if let server {
            // The last reference dropped inside a handler: this thread is one
            // of the loops that destroying would have to join and free.
            if cws_server_is_loop_thread(server) != 0 {
                preconditionFailure("WebSocketServer was released inside one of its own handlers: keep a reference until stop() has returned")
            }
            stop()
            cws_server_destroy(server)
        }
        // Every handler task held a reference to the service: they are over.
        handlerExecutor.withLock { $0 }?.shutdown()
    }

    var asyncExecutor: HandlerExecutor { Self.handlerExecutor(handlerExecutor, threads: configuration.handlerThreads) }

    private static func handlerExecutor(_ box: Locked<HandlerExecutor?>, threads: Int) -> HandlerExecutor {
        box.withLock { executor in
            if let executor { return executor }
            let made = HandlerExecutor(threads: threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount)
            executor = made
            return made
        }
    }

    /// Where a connection's task runs: its loop's thread, or the handler threads.
    func taskExecutor(for connection: Connection) -> any TaskExecutor {
        loopExecutors.isEmpty ? asyncExecutor : loopExecutors[Int(cws_conn_id_loop(connection.engineID))]
    }

    /// What the engine has to say: at debug level, why a TLS connection
    /// ended before it became a WebSocket (engine text, never the peer's).
    private func engineLog(_ level: Int32, _ message: UnsafePointer<CChar>) {
        let text = String(cString: message)
        switch level {
        case Int32(CWS_LOG_WARNING): logger.warning("\(text)")
        case Int32(CWS_LOG_INFO): logger.info("\(text)")
        default: logger.debug("\(text)")
        }
    }

    /// Reads the TLS certificates and keys again, from `tls` or (nil) from
    /// the files in use, and serves them to every connection accepted from
    /// now on; open connections keep theirs. The usual answer to a renewed
    /// certificate (the demo calls it on SIGHUP). Throws when a file cannot
    /// be used, and the certificates in use stay; also for a server without TLS.
    public func reloadTLS(_ tls: Configuration.TLS? = nil) throws(WebSocketServer.Error) {
        let failure: String? = tlsInUse.withLock { inUse in
            guard let wanted = tls ?? inUse, inUse != nil else { return "this server has no TLS listener" }
            var message = [CChar](repeating: 0, count: 256)
            let rc = wanted.withEngineConfiguration { cws_server_tls_reload(server, $0, &message, message.count) }
            if rc != 0 { return String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            inUse = wanted
            return nil
        }
        if let failure { throw Error(description: failure) }
    }

    /// The bound port (useful with port 0).
    public var port: Int { Int(cws_server_port(server)) }
    /// The port that speaks TLS: `port` itself, or the second listener's
    /// with `Configuration.TLS.port`; nil without TLS.
    public var tlsPort: Int? {
        let bound = cws_server_tls_port(server)
        return bound == 0 ? nil : Int(bound)
    }
    /// "io_uring" or "epoll".
    public var backend: String { String(cString: cws_server_backend_name(server)) }
    /// Whether this kernel offers kernel TLS (Linux's "tls" module, listed in
    /// /proc/sys/net/ipv4/tcp_available_ulp), which `Configuration.TLS.kernelOffload` needs.
    public static var kernelTLSAvailable: Bool { cws_tls_kernel_offload_available() != 0 }

    /// Starts the event loops (once; a second call throws, as does a start after `stop`).
    public func start() throws(WebSocketServer.Error) {
        let claimed = state.withLock { s in
            defer { s.startClaimed = true }
            return !s.startClaimed && !s.stopped
        }
        guard claimed else { throw Error(description: "cannot start the event loops: started or stopped already") }
        let rc = cws_server_start(server)
        guard rc == 0 else { throw Error(description: "cannot start the event loops: \(String(cString: strerror(-rc)))") }
        state.withLock { $0.startedAt = .now }
        metrics?.startSampling { [weak self] in
            guard let self else { return false }
            reportMetrics()
            return true
        }
        if isDistributed {
            backplane.start(serverID: serverID, deliver: { [weak self] message in self?.deliverFromBackplane(message) },
                            localMembers: { [weak self] channel in self?.localMembers(channel) ?? [:] },
                            history: BackplaneHistoryHooks(read: { [weak self] in self?.historyWasRead($0, $1) },
                                                           lost: { [weak self] in self?.historyWriteLost($0) },
                                                           written: { [weak self] in self?.historyWritten($0, offset: $1) }))
        }
        var listening: Logger.Metadata = ["host": "\(configuration.host)", "port": "\(port)", "backend": "\(backend)"]
        if let tlsPort { listening["tls_port"] = "\(tlsPort)" }
        logger.info("listening", metadata: listening)
    }

    /// Graceful stop: no new connections, close 1001 to every connection,
    /// wait up to `timeout` for the close handshakes. Callbacks are over when
    /// it returns. Idempotent. Called from a handler (a loop thread, which
    /// cannot wait for itself), it begins the stop and returns at once; a
    /// thread of its own waits for the loops and stops the backplane.
    public func stop(timeout: Duration = .seconds(3)) {
        let first = state.withLock { s in
            defer { s.stopped = true }
            return !s.stopped
        }
        guard first else { return }
        if cws_server_stop(server, Configuration.milliseconds(timeout)) == -EDEADLK {
            Thread.detachNewThread { [self] in self.finishStop() }
            return
        }
        finishStop()
    }

    private func finishStop() {
        cws_server_stop(server, 0) // waits for the loops (already stopping)
        // Tasks of the loops' connections still to finish do so on the handler threads.
        for executor in loopExecutors { executor.retire(takingLocal: true) }
        // Awaited upgrade decisions still running: their requests were answered 503.
        for task in pendingDecisions.withLock({ tasks in defer { tasks = [:] }; return Array(tasks.values) }) { task.cancel() }
        // After the loops: the leaves of the closing connections still reach the other servers.
        backplane.stop()
        // The last report has every message and close: a scrape after the stop sees the whole run.
        reportMetrics()
        metrics?.stop()
        let waiters = state.withLock { s in
            s.stopFinished = true
            defer { s.stopWaiters.removeAll() }
            return s.stopWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Reports the engine's totals and the gauges to swift-metrics now (the
    /// sampling thread does it every `MetricsReporting.interval`); tests call
    /// it to see exact numbers without waiting for a turn.
    func reportMetrics() {
        metrics?.report {
            var stats = cws_server_stats()
            cws_server_get_stats(server, &stats)
            return ServerMetrics.Sample(engine: stats, connections: state.withLock { $0.byID.count })
        }
    }

    // MARK: - Callbacks

    /// Called once for each new connection, after it joined its first channel.
    public var onOpen: (@Sendable (Connection) -> Void)? {
        get { hooks.withLock { $0.onOpen } }
        set { hooks.withLock { $0.onOpen = newValue } }
    }

    /// Called once for each connection that opened, with the close code and
    /// reason (1005 none given, 1006 dropped), after it left its channels.
    public var onClose: (@Sendable (Connection, CloseCode, String) -> Void)? {
        get { hooks.withLock { $0.onClose } }
        set { hooks.withLock { $0.onClose = newValue } }
    }

    // MARK: - Writing

    /// Sends an envelope to one connection. False if it is gone; with a
    /// distributed backplane, a connection not on this server may be on
    /// another: the message is handed to the backplane and the answer is
    /// true (delivery there is not confirmed).
    @discardableResult
    public func writeConnection(cmd: String, param: RawJSON, id: UUID, from: UUID? = nil,
                                channel: String? = nil) -> Bool {
        let envelope = Envelope(from: from, channel: channel, cmd: cmd, param: param)
        guard let connection = connection(id) else {
            guard isDistributed else { return false }
            backplane.publish(BackplaneMessage(origin: serverID, target: .connection(id), envelope: envelope.encoded()))
            return true
        }
        return write(envelope, to: connection)
    }

    /// Sends an envelope to a connection the caller holds (no lookup).
    @discardableResult
    public func write(_ envelope: Envelope, to connection: Connection) -> Bool {
        envelope.encoded().withUnsafeBytes { send($0, opcode: .text, to: connection) }
    }

    /// Sends an envelope to every member of `channel` but `except`: encoded
    /// and framed once, whatever the member count. Local members get it at
    /// once; with a distributed backplane it is also published for the other
    /// servers. Returns the local recipients.
    ///
    /// In a channel with a history (`Configuration.history`) it is kept
    /// too, with the next `offset`; members receive offsets in order (the
    /// channel's writes take turns), and `except` gets it only on recovery.
    @discardableResult
    public func writeChannel(cmd: String, param: RawJSON, channel: String, except: UUID? = nil,
                             from: UUID? = nil) -> Int {
        if historyInBackplane, let rule = historyStore.rule(for: channel) {
            return writeChannelThroughBackplane(Envelope(from: from, channel: channel, cmd: cmd, param: param),
                                                except: except, rule: rule)
        }
        if !historyStore.isEmpty, let count = historyStore.withLog(channel, { log -> Int in
            let bytes = Envelope(from: from, channel: channel, offset: log.nextOffset, cmd: cmd, param: param).encoded()
            log.append(bytes, now: .now)
            let count = writeChannelLocally(bytes, channel: channel, except: except)
            // The other servers' members get it live; the history is this server's own.
            if isDistributed {
                backplane.publish(BackplaneMessage(origin: serverID, target: .channel(channel, except: except), envelope: bytes))
            }
            return count
        }) {
            return count
        }
        let bytes = Envelope(from: from, channel: channel, cmd: cmd, param: param).encoded()
        let count = writeChannelLocally(bytes, channel: channel, except: except)
        if isDistributed {
            backplane.publish(BackplaneMessage(origin: serverID, target: .channel(channel, except: except), envelope: bytes))
        }
        return count
    }

    @discardableResult
    func writeChannelLocally(_ bytes: [UInt8], channel: String, except: UUID?) -> Int {
        let ids = state.withLock { s -> [cws_conn_id] in
            guard let members = s.channels[channel] else { return [] }
            return Self.recipients(members, except: except.flatMap { s.byID[$0]?.engineID }, bytes: bytes.count)
        }
        fanOut(bytes, to: ids)
        return ids.count
    }

    /// Sends an envelope to every open connection of an envelope endpoint
    /// (raw endpoints don't speak it), encoded and framed once; on every
    /// server with a distributed backplane. Returns the local recipients.
    @discardableResult
    public func writeAll(cmd: String, param: RawJSON, from: UUID? = nil) -> Int {
        let bytes = Envelope(from: from, cmd: cmd, param: param).encoded()
        let count = writeAllLocally(bytes)
        if isDistributed { backplane.publish(BackplaneMessage(origin: serverID, target: .all, envelope: bytes)) }
        return count
    }

    @discardableResult
    private func writeAllLocally(_ bytes: [UInt8]) -> Int {
        let ids = state.withLock { s -> [cws_conn_id] in
            var ids: [cws_conn_id] = []
            ids.reserveCapacity(s.byID.count)
            for connection in s.byID.values {
                guard connection.handler.speaksEnvelope else { continue }
                ids.append(connection.engineID)
                connection.countOut(bytes.count)
            }
            return ids
        }
        fanOut(bytes, to: ids)
        return ids.count
    }

    /// Raw bytes as one text or binary message (text must be UTF-8), below
    /// the envelope. False when the connection is gone, or when this is not
    /// its loop's thread and that loop's inbox is full
    /// (`Configuration.maxInboxBytes`): an `OutboundWriter` waits instead.
    @discardableResult
    public func send(_ bytes: UnsafeRawBufferPointer, opcode: Opcode, to connection: Connection) -> Bool {
        sendReporting(bytes, opcode: opcode, to: connection) == 0
    }

    /// `send`, with the engine's answer: 0, -ENOENT (gone) or -EAGAIN (the loop's inbox is full).
    func sendReporting(_ bytes: UnsafeRawBufferPointer, opcode: Opcode, to connection: Connection) -> Int32 {
        let rc = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { empty in
            cws_send(server, connection.engineID, opcode.rawValue, bytes.baseAddress ?? UnsafeRawPointer(empty.baseAddress!),
                     bytes.count)
        }
        guard rc == 0 else { return rc }
        connection.countOut(bytes.count)
        if tap.isWatched { tap.sent(bytes, opcode: opcode, to: connection, service: self) }
        return 0
    }

    func sendReporting(_ bytes: [UInt8], opcode: Opcode, to connection: Connection) -> Int32 {
        bytes.withUnsafeBytes { sendReporting($0, opcode: opcode, to: connection) }
    }

    /// Asks the engine for one `drained()` on the connection (see `OutboundWriter`).
    func requestDrain(_ connection: Connection) -> Int32 { cws_request_drain(server, connection.engineID) }

    @discardableResult
    public func send(_ bytes: [UInt8], opcode: Opcode, to connection: Connection) -> Bool {
        bytes.withUnsafeBytes { send($0, opcode: opcode, to: connection) }
    }

    /// Starts the close handshake with this code and reason.
    @discardableResult
    public func close(_ id: UUID, code: CloseCode = .normal, reason: String = "") -> Bool {
        guard let connection = connection(id) else { return false }
        return close(connection, code: code, reason: reason)
    }

    @discardableResult
    public func close(_ connection: Connection, code: CloseCode = .normal, reason: String = "") -> Bool {
        var reason = reason
        return reason.withUTF8 { cws_close(server, connection.engineID, code.rawValue, $0.baseAddress, $0.count) } == 0
    }

    /// What another server published: delivered to the local recipients only
    /// (on the backplane's thread; the engine queues it to the owning loops).
    private func deliverFromBackplane(_ message: BackplaneMessage) {
        switch message.target {
        case .channel(let channel, let except):
            writeChannelLocally(message.envelope, channel: channel, except: except)
        case .all:
            writeAllLocally(message.envelope)
        case .connection(let id):
            if let connection = connection(id) {
                message.envelope.withUnsafeBytes { _ = send($0, opcode: .text, to: connection) }
            }
        case .history(let channel, let epoch, let offset, let except):
            deliverHistoryMessage(message.envelope, channel: channel, epoch: epoch, offset: offset, except: except)
        case .raw(let channel, let except, let opcode):
            writeRawLocally(message.envelope, opcode: Opcode(rawValue: opcode) ?? .binary, channel: channel, except: except)
        }
    }

    /// Member ids minus `except`; counts the message for each recipient.
    static func recipients(_ members: [cws_conn_id: Connection], except: cws_conn_id?, bytes: Int) -> [cws_conn_id] {
        var ids: [cws_conn_id] = []
        ids.reserveCapacity(members.count)
        for (id, connection) in members where id != except {
            ids.append(id)
            connection.countOut(bytes)
        }
        return ids
    }

    /// One framed, reference-counted message for every recipient.
    func fanOut(_ bytes: [UInt8], opcode: Opcode = .text, to ids: [cws_conn_id]) {
        guard !ids.isEmpty else { return }
        if tap.isWatched { tap.fannedOut(bytes, opcode: opcode, recipients: ids.count, service: self) }
        guard let message = bytes.withUnsafeBytes({ cws_msg_new(opcode.rawValue, $0.baseAddress, $0.count) }) else {
            logger.error("cws_msg_new failed", metadata: ["bytes": "\(bytes.count)"])
            return
        }
        ids.withUnsafeBufferPointer { cws_send_msg_many(server, $0.baseAddress, $0.count, message) }
        cws_msg_release(message)
    }

    // MARK: - Channels

    /// Adds a connection to a channel; the other members get `online-update`
    /// `{userID, connected: true}`. False if the connection is gone or
    /// already a member.
    @discardableResult
    public func join(_ id: UUID, _ channel: String) -> Bool {
        guard let connection = connection(id) else { return false }
        return join(connection, channel)
    }

    @discardableResult
    public func join(_ connection: Connection, _ channel: String) -> Bool {
        join(connection, channel, askHook: true)
    }

    /// `askHook` false: `Authorization.join` already allowed it (the first channel, at the upgrade).
    @discardableResult
    func join(_ connection: Connection, _ channel: String, askHook: Bool) -> Bool {
        if connection.channels.contains(channel) { return false }
        if let reason = joinRefusal(connection, channel, askHook: askHook) {
            refuseJoin(connection, channel, reason: reason)
            return false
        }
        let presence = presenceUpdate(connection, channel: channel, connected: true)
        let engineID = connection.engineID
        let maxChannels = connection.limits.maxChannels
        var full = false
        var recoverFrom: ChannelPosition?
        var firstLocalMember = false
        func addMember() -> [cws_conn_id]? {
            state.withLock { s -> [cws_conn_id]? in
                guard s.byID[connection.id] === connection, s.channels[channel]?[engineID] == nil else { return nil }
                // Under the lock: joins racing on other threads cannot both take the last place.
                guard connection.withJoined({ $0.count }) < maxChannels else {
                    full = true
                    return nil
                }
                let others = presence.map { Self.recipients(s.channels[channel] ?? [:], except: nil, bytes: $0.count) } ?? []
                // Under the lock, so a racing last leave cannot reorder its unsubscribe after this.
                if isDistributed && s.channels[channel] == nil {
                    firstLocalMember = true
                    backplane.subscribe(channel: channel)
                    if historyInBackplane, let rule = historyStore.rule(for: channel) {
                        backplane.followHistory(channel: channel, limits: rule)
                    }
                }
                s.channels[channel, default: [:]][engineID] = connection
                connection.withJoined { $0.append(channel) }
                recoverFrom = connection.recoveryPositions?.removeValue(forKey: channel)
                return others
            }
        }
        let others: [cws_conn_id]?
        // A channel with a history: the member is added, told its position and
        // sent what it missed under the log's lock, which the channel's writes
        // take too: the replay meets the live stream with no gap and no duplicate.
        if !historyStore.isEmpty, let viaLog = historyStore.withLog(channel, { log -> [cws_conn_id]? in
            let others = addMember()
            guard others != nil else { return nil }
            // In a cluster the server's copy is read from the backplane first.
            if historyInBackplane && firstLocalMember { log.synced = false }
            if log.synced {
                sendPosition(log, channel: channel, recoveringFrom: recoverFrom, to: connection)
            } else {
                // Once per member: one that left and came back while waiting is told once.
                log.waitingJoins.removeAll { $0.connection === connection }
                log.waitingJoins.append((connection, recoverFrom, log.localWrites))
            }
            return others
        }) {
            others = viaLog
        } else {
            others = addMember()
        }
        guard let others else {
            if full { refuseJoin(connection, channel, reason: "in \(maxChannels) channels already, the most allowed") }
            return false
        }
        if let presence { fanOut(presence, to: others) }
        if isDistributed {
            if let presence { publishPresence(presence, channel: channel) }
            backplane.membersChanged(channel: channel)
        }
        return true
    }

    /// Tells a member that joined a channel with a history where the channel
    /// is (`_joined`: its epoch and last offset) and, when it asked to
    /// recover from a position, whether it could (`recovered`); the messages
    /// it missed follow, oldest first. Under the log's lock.
    /// `startingAfter` (a first join, no recovery): the member's position is
    /// that older offset, and the kept messages after it follow.
    func sendPosition(_ log: ChannelLog, channel: String, recoveringFrom wanted: ChannelPosition?,
                      startingAfter start: UInt64? = nil, to connection: Connection) {
        let now = ContinuousClock.now
        let from = start.flatMap { offset in log.messages(after: ChannelPosition(epoch: log.epoch, offset: offset), now: now) }
        let missed = wanted.flatMap { log.messages(after: $0, now: now) } ?? from
        var param = Array(#"{"epoch":"#.utf8)
        JSONWriter.appendString(log.epoch, to: &param)
        param += Array(#","offset":\#(from != nil ? start! : log.top)"#.utf8)
        if wanted != nil { param += Array(#","recovered":\#(missed != nil)"#.utf8) }
        param.append(UInt8(ascii: "}"))
        write(Envelope(channel: channel, cmd: ClientScript.joinedCommand, param: RawJSON(trusted: param)), to: connection)
        for message in missed ?? [] {
            message.bytes.withUnsafeBytes { _ = send($0, opcode: .text, to: connection) }
        }
    }

    /// The channel's kept messages after `position` (nil: every kept one),
    /// oldest first, and where the channel is now; nil for a channel that
    /// `Configuration.history` gives no history.
    ///
    /// In a cluster whose backplane keeps the histories (Redis), this is the
    /// server's copy, which it keeps for the channels it has members in: nil
    /// for another channel.
    public func history(_ channel: String, since position: ChannelPosition? = nil) -> ChannelHistory? {
        historyStore.withLog(channel, create: !historyInBackplane) { log in
            let now = ContinuousClock.now
            let found = position.map { log.messages(after: $0, now: now) } ?? log.newest(now: now)
            return ChannelHistory(position: log.position, recovered: found != nil,
                                  messages: (found ?? []).map { ($0.offset, RawJSON(trusted: $0.bytes)) })
        }
    }

    /// Removes a connection from a channel; the other members get
    /// `online-update` `{userID, connected: false}`. False if it was not a member.
    @discardableResult
    public func leave(_ id: UUID, _ channel: String) -> Bool {
        guard let connection = connection(id) else { return false }
        return leave(connection, channel)
    }

    @discardableResult
    public func leave(_ connection: Connection, _ channel: String) -> Bool {
        let presence = presenceUpdate(connection, channel: channel, connected: false)
        let engineID = connection.engineID
        let others = state.withLock { s -> [cws_conn_id]? in
            guard s.channels[channel]?.removeValue(forKey: engineID) != nil else { return nil }
            connection.withJoined { $0.removeAll { $0 == channel } }
            let members = s.channels[channel] ?? [:]
            if members.isEmpty {
                s.channels[channel] = nil
                if isDistributed { lastLocalMemberLeft(channel) }
            }
            return presence.map { Self.recipients(members, except: nil, bytes: $0.count) } ?? []
        }
        guard let others else { return false }
        if historyInBackplane { dropHistoryCopies([channel]) }
        if let presence { fanOut(presence, to: others) }
        if isDistributed {
            if let presence { publishPresence(presence, channel: channel) }
            backplane.membersChanged(channel: channel)
        }
        return true
    }

    /// The channel's members on the other servers hear of joins and leaves here too.
    func publishPresence(_ presence: [UInt8], channel: String) {
        backplane.publish(BackplaneMessage(origin: serverID, target: .channel(channel, except: nil), envelope: presence))
    }

    func presenceUpdate(_ connection: Connection, channel: String, connected: Bool) -> [UInt8]? {
        guard configuration.announcesPresence else { return nil }
        var param: [UInt8] = Array(#"{"userID":"#.utf8)
        JSONWriter.appendString(connection.userID, to: &param)
        param.append(contentsOf: (connected ? #","connected":true}"# : #","connected":false}"#).utf8)
        return Envelope(from: connection.id, channel: channel, cmd: "online-update",
                        param: RawJSON(trusted: param)).encoded()
    }

    // MARK: - Reading

    public func connection(_ id: UUID) -> Connection? { state.withLock { $0.byID[id] } }

    /// Every open connection, oldest first.
    public func connections() -> [Connection] {
        state.withLock { Array($0.byID.values) }.sorted { $0.started < $1.started }
    }

    /// The members of a channel, oldest first.
    public func connections(in channel: String) -> [Connection] {
        state.withLock { s in s.channels[channel].map { Array($0.values) } ?? [] }.sorted { $0.started < $1.started }
    }

    /// The members of a channel on every server of the cluster, from the
    /// presence the servers keep in Redis (a server's members disappear
    /// within `RedisConfiguration.presenceTTL` of its crash). A Redis round
    /// trip on a thread of its own, never on a loop; local joins show after
    /// the presence writer's next pass (milliseconds). In-process: the local members.
    public func clusterConnections(in channel: String) async throws -> [ClusterMember] {
        guard isDistributed else { return localMembers(channel)[channel] ?? [] }
        return try await backplane.clusterMembers(in: channel)
    }

    /// Local members as the cluster view lists them: one channel, or all given nil.
    private func localMembers(_ channel: String?) -> [String: [ClusterMember]] {
        let server = serverID.uuidString.lowercased()
        func list(_ members: [cws_conn_id: Connection]) -> [ClusterMember] {
            members.values.map { ClusterMember(id: $0.id, userID: $0.userID, serverID: server) }
        }
        return state.withLock { s in
            guard let channel else { return s.channels.mapValues(list) }
            return s.channels[channel].map { [channel: list($0)] } ?? [:]
        }
    }

    /// Channel names and member counts.
    public func channels() -> [String: Int] { state.withLock { $0.channels.mapValues(\.count) } }

    public func status() -> Status {
        var stats = cws_server_stats()
        cws_server_get_stats(server, &stats)
        let (connections, channels, startedAt) = state.withLock { s in
            (s.byID.count, s.channels.mapValues(\.count), s.startedAt)
        }
        let uptime = startedAt.map { ContinuousClock.now - $0 } ?? .zero
        let (seconds, attoseconds) = uptime.components
        var status = Status(connections: connections, channels: channels, accepted: stats.accepted,
                      messagesIn: stats.messages_in, bytesIn: stats.bytes_in, messagesOut: stats.messages_out,
                      bytesOut: stats.bytes_out, dropped: stats.dropped, inboxRefused: stats.inbox_refused, sockets: stats.sockets,
                      acceptPauses: stats.accept_pauses, refusedFull: stats.refused_full,
                      loopsFailed: stats.loops_failed,
                      limits: limitCounters.status(inflateRefused: stats.inflate_refused, pingsRefused: stats.pings_refused),
                      uptime: Double(seconds) + Double(attoseconds) / 1e18, backend: backend,
                      backplane: backplane.status)
        status.tlsHandshakes = stats.tls_handshakes
        status.tlsHandshakesFailed = stats.tls_handshakes_failed
        status.tlsKernelOffloads = stats.tls_kernel_offloads
        status.socketWrites = stats.socket_writes
        status.inPlaceSends = stats.in_place_sends
        return status
    }
}

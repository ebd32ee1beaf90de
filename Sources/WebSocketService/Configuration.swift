import CWebSocket
import CoreMetrics

/// How the service listens and what limits the engine applies. A nil limit
/// keeps the engine's default (see cwebsocket.h, `cws_server_config`).
public struct Configuration: Sendable {
    /// Where the tasks of async connections run (`asyncExecution`).
    public enum AsyncExecution: String, Sendable, CaseIterable {
        /// A pool of threads of the server's own (`handlerThreads`): a task
        /// that blocks its thread holds up only the tasks waiting for one.
        /// Each message that resumes a waiting task hops from the loop's
        /// thread to a handler thread, and each write back.
        case handlerThreads
        /// Each connection's task runs on its own event loop's thread, once a
        /// turn, after the turn's input: no hop either way, so an async
        /// handler costs close to a synchronous one. The same rule as for a
        /// synchronous handler holds: a task must not block its thread (a
        /// lock held across I/O, a synchronous client), which would hold up
        /// every connection of that loop. What it awaits elsewhere (an actor,
        /// a timer) resumes it on its loop. Keep a reference to the server
        /// until `stop()` has returned: a task that drops the last one on a
        /// loop thread stops the process, since the loop cannot free itself.
        case eventLoops
    }

    public enum Backend: String, Sendable, CaseIterable {
        /// io_uring where the kernel allows it, else epoll (the CWS_BACKEND
        /// environment variable, auto|uring|epoll, overrides this one only).
        case auto
        case uring
        case epoll
    }

    public enum OverflowPolicy: Sendable {
        /// A send over `maxSendQueue` closes the connection with 1008.
        case close
        /// The message is dropped and counted (`Status.dropped`).
        case drop
    }

    /// Bind address: "127.0.0.1", "0.0.0.0", "::1"...; "::" is every
    /// address, IPv4 and IPv6 (dual-stack).
    public var host: String = "::"
    /// 0: any free port (read `WebSocketServer.port`).
    public var port: Int = 8080
    /// nil: plain TCP (`ws://`). Else TLS (`wss://`, `https://`): on
    /// `port` alone, or on a second listener beside it (`TLS.port`).
    public var tls: TLS?
    /// false (the default): starting fails when another socket already
    /// listens on the address (a stale process, a second service); true:
    /// join it, and the kernel shares connections between them.
    public var sharePort = false
    /// Event loops (threads); 0: one per online CPU.
    public var loops: Int = 0
    /// Threads that run the tasks of `AsyncEnvelopeHandler` and session
    /// connections (started with the first such connection); 0: one per online CPU.
    public var handlerThreads: Int = 0
    /// Where the tasks of `AsyncEnvelopeHandler` and session connections run.
    public var asyncExecution: AsyncExecution = .handlerThreads
    public var backend: Backend = .auto
    public var overflowPolicy: OverflowPolicy = .close
    /// Joining and leaving a channel send `online-update` to its other members.
    public var announcesPresence = true
    /// How channel messages, `writeAll` and `writeConnection` reach other
    /// servers: `.inProcess` (one server) or `.redis(...)` (a cluster).
    public var backplane: BackplaneConfiguration = .inProcess
    /// Channels whose messages are kept for clients that reconnect (the
    /// first entry whose pattern matches a channel applies); none by
    /// default. See `History` and `ChannelPosition`.
    public var history: [History] = []
    /// Channels whose history is kept at once; past it a new one drops the
    /// one written least recently (its clients are told `recovered: false`).
    public var maxHistoryChannels = 10_000

    public var maxHeadSize: Int?
    /// From the TCP accept to a complete request head (nil: the engine's 10 s);
    /// it also bounds an awaited upgrade decision, which past it is answered
    /// 503 with Retry-After.
    public var handshakeTimeout: Duration?
    public var maxMessageSize: Int?
    /// Silence for this long gets a ping; .zero turns it off.
    public var idleTimeout: Duration?
    public var pongTimeout: Duration?
    public var closeTimeout: Duration?
    /// Bytes queued per connection before the overflow policy applies.
    public var maxSendQueue: Int?
    /// An `OutboundWriter` write waits while more than this waits for its
    /// client, and goes on once the client has read it down to half. At
    /// most half of `maxSendQueue` is used, so a waiting writer never meets
    /// the overflow policy.
    public var sendHighWater: Int = 1 << 20
    /// Bytes of sends from other threads (async handlers, sessions, fan-out
    /// from outside the loops) that one loop's inbox may hold before it has
    /// run them (nil: the engine's 64 MiB). Past it a non-waiting send
    /// returns false and an `OutboundWriter` waits.
    public var maxInboxBytes: Int?
    /// Open WebSocket connections; one more upgrade gets 503 with
    /// Retry-After. nil: the descriptor limit (RLIMIT_NOFILE) less headroom.
    public var maxConnections: Int?
    /// Pings one peer may send in a second (nil: the engine's 100); more:
    /// close 1008. Pings never reach the handlers, so `Limits` cannot see them.
    public var maxPingsPerSecond: Int?
    /// Open WebSocket connections per client address (`Connection.clientAddress`);
    /// one more upgrade gets 429 with Retry-After. nil (the default): no
    /// cap, because behind a proxy that is not in `trustedProxies` every
    /// client has the proxy's address.
    public var maxConnectionsPerAddress: Int?
    /// Peers (IP addresses, as "127.0.0.1" or "::1") whose `X-Forwarded-For`
    /// is believed: a request from one of them has, as its client address,
    /// the last address in that header that is not itself a trusted proxy.
    /// Empty (the default): the header is ignored, since any client can send it.
    public var trustedProxies: Set<String> = []
    /// permessage-deflate (RFC 7692); nil: off.
    public var compression: Compression?
    /// How long `run()` (in a ServiceGroup) waits for the close handshakes
    /// once shutdown begins, before it closes what is left.
    public var shutdownTimeout: Duration = .seconds(3)
    /// What the server reports to swift-metrics; nil: nothing (and no sampling thread).
    public var metrics: MetricsReporting? = MetricsReporting()

    /// The server's swift-metrics reporting. Traffic totals are the engine's
    /// own counters, sampled every `interval`, so no message costs a metrics
    /// call; rare events (an upgrade refused, a close) are counted as they happen.
    public struct MetricsReporting: Sendable {
        /// Put before every label: "websocket_" gives "websocket_connections".
        public var prefix = "websocket_"
        /// How often the engine's totals and the gauges are read.
        public var interval: Duration = .seconds(1)
        /// nil: `MetricsSystem.factory`, what the application bootstrapped.
        /// A factory of its own lets a test (or a second registry) see one
        /// server's numbers without the process-wide bootstrap.
        public var factory: (any MetricsFactory)?

        public init(prefix: String = "websocket_", interval: Duration = .seconds(1), factory: (any MetricsFactory)? = nil) {
            self.prefix = prefix
            self.interval = interval
            self.factory = factory
        }
    }

    /// The server's permessage-deflate policy. The defaults keep idle
    /// connections free of zlib state and let a channel message be
    /// compressed once for every recipient.
    public struct Compression: Sendable {
        /// zlib level 0-9: 1 gets most of the ratio on JSON for little CPU.
        public var level = 1
        /// zlib memLevel 1-9: the compressor's memory, 2^(memLevel+9) bytes per buffer.
        public var memoryLevel = 8
        /// 8-15: the largest window the server compresses with.
        public var serverMaxWindowBits = 15
        /// 8-15: the largest window asked of clients that offer the parameter.
        public var clientMaxWindowBits = 15
        /// Reset the server's compressor per message (one compressor per
        /// loop, compress-once fan-out). Turning it off costs a compressor
        /// per connection (~268 KB at window 15, memLevel 8).
        public var serverNoContextTakeover = true
        /// Ask clients to reset theirs too, so no connection holds inflate
        /// state while idle (~40 KB each otherwise), at some cost in ratio.
        public var clientNoContextTakeover = false
        /// Payloads shorter than this go out uncompressed.
        public var minimumSize = 64
        /// A compressed message may inflate to at most this many times its
        /// compressed size (plus 64 KiB), else it is refused with 1009 and
        /// counted (`LimitStatus.inflateRefused`): inflating is then bounded
        /// by what the client sent, not only by `maxMessageSize`. nil: only
        /// `maxMessageSize` bounds it. Text compresses 3-20x; 100 leaves room.
        public var maxInflateRatio: Int?

        public init() {}
    }

    public init(host: String = "::", port: Int = 8080, loops: Int = 0, backend: Backend = .auto) {
        self.host = host
        self.port = port
        self.loops = loops
        self.backend = backend
    }

    /// Fills the engine's configuration (callbacks and host are set by the caller).
    /// `sendHighWater`, at most half of the send queue's bound (the engine's 16 MiB when nil).
    var effectiveSendHighWater: Int { max(0, min(sendHighWater, (maxSendQueue ?? 16 << 20) / 2)) }

    func apply(to cfg: inout cws_server_config) {
        cfg.port = UInt16(clamping: port)
        if let tlsPort = tls?.port {
            cfg.tls_beside_plain = 1
            cfg.tls_port = UInt16(clamping: tlsPort)
        }
        cfg.loops = UInt16(clamping: loops)
        cfg.share_port = sharePort ? 1 : 0
        switch backend {
        case .auto: cfg.backend = UInt8(CWS_BACKEND_AUTO.rawValue)
        case .uring: cfg.backend = UInt8(CWS_BACKEND_URING.rawValue)
        case .epoll: cfg.backend = UInt8(CWS_BACKEND_EPOLL.rawValue)
        }
        cfg.overflow_policy = UInt8(overflowPolicy == .close ? CWS_OVERFLOW_CLOSE.rawValue : CWS_OVERFLOW_DROP.rawValue)
        if let maxHeadSize { cfg.max_head_size = UInt32(clamping: maxHeadSize) }
        if let handshakeTimeout { cfg.handshake_timeout_ms = Self.milliseconds(handshakeTimeout) }
        if let maxMessageSize { cfg.max_message_size = UInt64(clamping: maxMessageSize) }
        if let idleTimeout { cfg.idle_timeout_ms = Self.milliseconds(idleTimeout) }
        if let pongTimeout { cfg.pong_timeout_ms = Self.milliseconds(pongTimeout) }
        if let closeTimeout { cfg.close_timeout_ms = Self.milliseconds(closeTimeout) }
        if let maxSendQueue { cfg.max_send_queue = UInt64(clamping: maxSendQueue) }
        cfg.send_low_water = UInt64(clamping: max(1, effectiveSendHighWater / 2))
        if let maxInboxBytes { cfg.max_inbox_bytes = UInt64(clamping: max(1, maxInboxBytes)) }
        if let maxConnections { cfg.max_connections = UInt32(clamping: max(1, maxConnections)) }
        if let maxPingsPerSecond { cfg.max_pings_per_second = UInt32(clamping: max(1, maxPingsPerSecond)) }
        if let compression {
            cfg.deflate.enabled = 1
            cfg.deflate.level = UInt8(clamping: compression.level)
            cfg.deflate.mem_level = UInt8(clamping: compression.memoryLevel)
            cfg.deflate.server_max_window_bits = UInt8(clamping: compression.serverMaxWindowBits)
            cfg.deflate.client_max_window_bits = UInt8(clamping: compression.clientMaxWindowBits)
            cfg.deflate.server_no_context_takeover = compression.serverNoContextTakeover ? 1 : 0
            cfg.deflate.client_no_context_takeover = compression.clientNoContextTakeover ? 1 : 0
            cfg.deflate.min_size = UInt32(clamping: compression.minimumSize)
            if let ratio = compression.maxInflateRatio { cfg.deflate.max_inflate_ratio = UInt16(clamping: max(1, ratio)) }
        }
    }

    static func milliseconds(_ duration: Duration) -> UInt32 {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return UInt32(clamping: max(0, ms))
    }
}

import CWebSocket

/// How the service listens and what limits the engine applies. A nil limit
/// keeps the engine's default (see cwebsocket.h, `cws_server_config`).
public struct Configuration: Sendable {
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

    /// Bind address: "127.0.0.1", "0.0.0.0", "::" (dual-stack)...
    public var host: String = "::"
    /// 0: any free port (read `Service.port`).
    public var port: Int = 8080
    /// Event loops (threads); 0: one per online CPU.
    public var loops: Int = 0
    public var backend: Backend = .auto
    public var overflowPolicy: OverflowPolicy = .close
    /// Joining and leaving a channel send `online-update` to its other members.
    public var announcesPresence = true

    public var maxHeadSize: Int?
    public var handshakeTimeout: Duration?
    public var maxMessageSize: Int?
    /// Silence for this long gets a ping; .zero turns it off.
    public var idleTimeout: Duration?
    public var pongTimeout: Duration?
    public var closeTimeout: Duration?
    /// Bytes queued per connection before the overflow policy applies.
    public var maxSendQueue: Int?

    public init(host: String = "::", port: Int = 8080, loops: Int = 0, backend: Backend = .auto) {
        self.host = host
        self.port = port
        self.loops = loops
        self.backend = backend
    }

    /// Fills the engine's configuration (callbacks and host are set by the caller).
    func apply(to cfg: inout cws_server_config) {
        cfg.port = UInt16(clamping: port)
        cfg.loops = UInt16(clamping: loops)
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
    }

    static func milliseconds(_ duration: Duration) -> UInt32 {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return UInt32(clamping: max(0, ms))
    }
}

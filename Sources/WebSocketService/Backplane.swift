import Foundation

/// Carries channel messages, `writeAll` and `writeConnection` between the
/// servers of a cluster. The service serves its local members itself, always
/// first and never waiting; the backplane only carries the copy for the other
/// servers, and hands back what they published.
///
/// Two implementations: `InProcessBackplane` (one server, the default: it
/// does nothing, and the service skips it on the hot path) and
/// `RedisBackplane` (Redis pub/sub, in the WebSocketRedis module, chosen by
/// `Configuration.backplane`). `package`, not public: the modules of this
/// package implement it; a user picks one through `BackplaneConfiguration`.
package protocol Backplane: AnyObject, Sendable {
    /// False for the in-process one: the service then never builds a
    /// backplane message, takes no backplane lock and allocates nothing for it.
    var isDistributed: Bool { get }
    /// Starts its threads; `deliver` is called on a backplane thread with
    /// each message another server published to a subject this one wants;
    /// `localMembers` answers for one channel, or every channel given nil.
    func start(serverID: UUID, deliver: @escaping @Sendable (BackplaneMessage) -> Void,
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]],
               history: BackplaneHistoryHooks)
    /// Stops and joins its threads. Idempotent; safe when never started.
    func stop()
    /// Wants the subject's messages (a channel whose first local member joined).
    func subscribe(channel: String)
    /// No longer wants them (its last local member left).
    func unsubscribe(channel: String)
    /// Hands a message to the other servers; never blocks. Counted as not
    /// propagated when the backplane is down or its bounded queue is full.
    func publish(_ message: BackplaneMessage)
    /// A local member joined or left the channel (cluster-wide presence).
    func membersChanged(channel: String)
    /// The channel's members on every live server.
    func clusterMembers(in channel: String) async throws -> [ClusterMember]
    var status: BackplaneStatus { get }

    /// True when the backplane keeps the channels' histories itself (Redis
    /// Streams): every server's writes to a channel with a history then go
    /// through it, which gives them their offsets in one order, and each
    /// server keeps a copy of the channels it has members in
    /// (`followHistory`). False in-process: the server's own log is the history.
    var ordersHistory: Bool { get }
    /// Appends a message to the channel's history and publishes it with its
    /// offset to every server, this one included (`Target.history`); never
    /// blocks. False when it cannot be queued (the backplane is down or its
    /// queue is full): the caller delivers locally, without an offset.
    func publishToHistory(_ write: HistoryWrite) -> Bool
    /// Once subscribed to the channel (and again after every resubscribe),
    /// reads its newest kept messages (`limits.maxMessages`) and hands them to
    /// `BackplaneHistoryHooks.read`: with the live messages that arrive
    /// meanwhile, the server's copy is continuous from there. Asked again
    /// while followed: one more read (a gap was seen).
    func followHistory(channel: String, limits: Configuration.History)
    /// The channel's last local member left.
    func unfollowHistory(channel: String)
    /// The channel's history went back (a Redis failover lost writes that
    /// were delivered): it is dropped, so the next read or write starts a new
    /// epoch and clients are told they were not recovered.
    func restartHistory(channel: String)
}

extension Backplane {
    package var ordersHistory: Bool { false }
    package func publishToHistory(_ write: HistoryWrite) -> Bool { false }
    package func followHistory(channel: String, limits: Configuration.History) {}
    package func unfollowHistory(channel: String) {}
    package func restartHistory(channel: String) {}
}

/// A message for a channel's history in the backplane (`publishToHistory`):
/// its envelope in two parts, around the offset that the backplane assigns.
package struct HistoryWrite: Sendable {
    package var origin: UUID
    package var channel: String
    package var except: UUID?
    /// The envelope up to its offset's digits, and after them.
    package var before: [UInt8]
    package var after: [UInt8]
    /// Bounds of the backplane's copy: at least this many messages are kept,
    /// and a channel not written for `maxAge` is dropped (its next write
    /// starts a new epoch).
    package var maxMessages: Int
    package var maxAge: Duration
    /// The envelope without an offset: what the local members get when the
    /// write cannot reach the backplane (`before` ends in `"offset":`,
    /// `after` starts with the comma after the number).
    package var withoutOffset: [UInt8] { Array(before.dropLast(#""offset":"#.utf8.count)) + after.dropFirst() }
    /// The writer's count of its writes to the channel, handed back with the
    /// offset the write got (`BackplaneHistoryHooks.written`).
    package var sequence: UInt64 = 0

    package init(origin: UUID, channel: String, except: UUID?, before: [UInt8], after: [UInt8],
                 maxMessages: Int, maxAge: Duration) {
        self.origin = origin
        self.channel = channel
        self.except = except
        self.before = before
        self.after = after
        self.maxMessages = maxMessages
        self.maxAge = maxAge
    }
}

/// What the backplane read of a channel's history (`followHistory`).
package struct HistoryRead: Sendable {
    package var epoch: String
    /// The newest offset in the channel; 0 before its first message.
    package var top: UInt64
    /// Oldest first, each the whole envelope with its offset and when it was written.
    package var messages: [(offset: UInt64, envelope: [UInt8], written: Date)]

    package init(epoch: String, top: UInt64, messages: [(offset: UInt64, envelope: [UInt8], written: Date)]) {
        self.epoch = epoch
        self.top = top
        self.messages = messages
    }
}

/// How the backplane hands the service what concerns its histories.
package struct BackplaneHistoryHooks: Sendable {
    /// A `followHistory` read, on a backplane thread; nil when it failed
    /// (it is tried again after a backoff).
    package var read: @Sendable (_ channel: String, _ read: HistoryRead?) -> Void
    /// A `publishToHistory` that did not reach the backplane after it was queued.
    package var lost: @Sendable (HistoryWrite) -> Void
    /// The offset a `publishToHistory` got, on the backplane thread that
    /// reads the channel's history too, and before a read that saw the write.
    package var written: @Sendable (HistoryWrite, _ offset: UInt64) -> Void

    package init(read: @escaping @Sendable (String, HistoryRead?) -> Void, lost: @escaping @Sendable (HistoryWrite) -> Void,
                 written: @escaping @Sendable (HistoryWrite, UInt64) -> Void) {
        self.read = read
        self.lost = lost
        self.written = written
    }

    package static let none = BackplaneHistoryHooks(read: { _, _ in }, lost: { _ in }, written: { _, _ in })
}

/// What travels between servers: an encoded envelope and where it goes.
package struct BackplaneMessage: Sendable, Equatable {
    package enum Target: Sendable, Equatable {
        /// The channel's members on every server, but `except`.
        case channel(String, except: UUID?)
        /// Every envelope connection on every server.
        case all
        /// One connection, wherever it lives.
        case connection(UUID)
        /// A message of the channel's history, with its place in it, for
        /// the members on every server (the one that wrote it too) but `except`.
        case history(String, epoch: String, offset: UInt64, except: UUID?)
        /// Raw bytes, not an envelope, as one message with this opcode (text
        /// or binary): to the channel's members but `except`, or (channel
        /// nil) to every connection, raw endpoints' included.
        case raw(channel: String?, except: UUID?, opcode: UInt8)
    }

    package var origin: UUID
    package var target: Target
    /// The encoded envelope, delivered as one text message.
    package var envelope: [UInt8]

    package init(origin: UUID, target: Target, envelope: [UInt8]) {
        self.origin = origin
        self.target = target
        self.envelope = envelope
    }
}

/// The backplane's health, in `WebSocketServer.Status` and on the admin overview.
public struct BackplaneStatus: Sendable, Codable, Hashable {
    /// "in-process" or "redis".
    public var kind: String
    /// This server's id on the backplane (origin of what it publishes).
    public var serverID: String
    /// "redis://host:port/db" (never the password); nil in-process.
    public var endpoint: String?
    /// Both Redis connections (publisher, subscriber) are up; always true in-process.
    public var connected: Bool
    /// Subjects Redis has confirmed this server's subscription to.
    public var subscriptions: Int
    /// Messages handed to Redis (PUBLISH answered).
    public var published: UInt64
    /// Messages from other servers delivered here.
    public var received: UInt64
    /// Messages delivered locally only: Redis was unreachable or the
    /// bounded publish queue was full.
    public var notPropagated: UInt64
    /// Times a Redis connection was lost (or could not be opened).
    public var disconnects: UInt64
    public var lastError: String?
    /// Redis pub/sub mode: "classic" or "sharded"; nil in-process.
    public var pubSub: String? = nil

    package init(kind: String, serverID: String, endpoint: String?, connected: Bool, subscriptions: Int,
                 published: UInt64, received: UInt64, notPropagated: UInt64, disconnects: UInt64,
                 lastError: String?, pubSub: String? = nil) {
        self.kind = kind
        self.serverID = serverID
        self.endpoint = endpoint
        self.connected = connected
        self.subscriptions = subscriptions
        self.published = published
        self.received = received
        self.notPropagated = notPropagated
        self.disconnects = disconnects
        self.lastError = lastError
        self.pubSub = pubSub
    }
}

/// Why the cluster-wide view could not be had (`clusterConnections(in:)`).
public struct BackplaneError: Error, CustomStringConvertible, Sendable {
    public var description: String

    package init(description: String) {
        self.description = description
    }
}

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
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]])
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

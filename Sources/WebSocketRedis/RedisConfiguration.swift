/// Where the Redis backplane connects and how it behaves when Redis is away.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// Pub/sub ignores the database; it is selected anyway, for whatever
    /// keys a later version keeps.
    public var database: Int
    public var password: String?
    /// Subjects are "<prefix>:c:<channel>" and "<prefix>:all"; servers of
    /// different applications can share one Redis with different prefixes.
    public var subjectPrefix = "ws"
    /// Publishes waiting for the publisher thread; beyond this a message is
    /// delivered locally only and counted as not propagated.
    public var maxPendingPublishes = 10_000
    /// Connect, read and write timeout of each Redis connection.
    public var timeout: Duration = .seconds(2)
    /// Reconnect backoff: doubles from the first value up to the second.
    public var reconnectDelay: Duration = .milliseconds(100)
    public var maxReconnectDelay: Duration = .seconds(5)
    /// A server's members leave the cluster-wide presence this long after
    /// it stops refreshing them (it refreshes every third of it).
    public var presenceTTL: Duration = .seconds(15)
    /// Classic or sharded pub/sub (see `PubSub`).
    public var pubSub: PubSub = .classic

    /// How channel messages travel through Redis.
    public enum PubSub: String, Sendable, Hashable, CaseIterable {
        /// PUBLISH / SUBSCRIBE. On a Redis Cluster every message is broadcast
        /// to every node of the cluster, so this suits one Redis (or a
        /// primary with replicas) best.
        case classic
        /// SPUBLISH / SSUBSCRIBE (Redis 7): a channel's messages stay on the
        /// shard that owns the channel's hash slot. On a Redis Cluster the
        /// backplane reads the slot map (CLUSTER SLOTS) from the configured
        /// node, publishes and subscribes on each channel's owner, and follows
        /// MOVED redirections and slot migrations; on a single Redis 7 it
        /// works the same with one shard. Every server of a cluster must use
        /// the same mode.
        case sharded
    }

    public struct InvalidURL: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public init(host: String = "127.0.0.1", port: Int = 6379, database: Int = 0, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.password = password
    }

    /// `redis://[[user]:password@]host[:port][/db]`; `password` overrides the URL's.
    public init(url: String, password: String? = nil) throws(InvalidURL) {
        guard url.hasPrefix("redis://") else { throw InvalidURL(description: "\(url): not redis://host:port/db") }
        var rest = Substring(url.dropFirst("redis://".count))
        var urlPassword: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            urlPassword = userinfo.firstIndex(of: ":").map { String(userinfo[userinfo.index(after: $0)...]) }
                ?? String(userinfo)
            rest = rest[rest.index(after: at)...]
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw InvalidURL(description: "\(url): bad database \(db)") }
                database = n
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                throw InvalidURL(description: "\(url): bad port")
            }
            port = p
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw InvalidURL(description: "\(url): no host") }
        self.init(host: host, port: port, database: database,
                  password: password ?? (urlPassword?.isEmpty == false ? urlPassword : nil))
    }

    /// The URL without the password, for status pages and logs.
    public var endpoint: String {
        "redis://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }
}

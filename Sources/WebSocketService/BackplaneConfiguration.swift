import Logging

/// Which backplane carries messages between servers: `.inProcess`, the
/// default (one server, no dependency), or `.redis(RedisConfiguration(...))`
/// after `import WebSocketRedis` (a cluster of servers sharing one Redis).
///
/// A struct with static factories rather than an enum, so that the Redis
/// backplane can live in a module of its own (and only its users link
/// hiredis) while the configuration still reads `.redis(...)`.
public struct BackplaneConfiguration: Sendable {
    /// Makes the server's backplane when the server is created.
    package let makeBackplane: @Sendable (Logger) -> any Backplane

    package init(makeBackplane: @escaping @Sendable (Logger) -> any Backplane) {
        self.makeBackplane = makeBackplane
    }

    /// One server, no dependency (the default).
    public static var inProcess: BackplaneConfiguration {
        BackplaneConfiguration { _ in InProcessBackplane() }
    }
}

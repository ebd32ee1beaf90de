import WebSocketService

extension BackplaneConfiguration {
    /// Redis pub/sub: every server of the cluster points at the same Redis
    /// (`configuration.backplane = .redis(RedisConfiguration(...))`).
    public static func redis(_ configuration: RedisConfiguration) -> BackplaneConfiguration {
        BackplaneConfiguration { logger in RedisBackplane(configuration, logger: logger) }
    }
}

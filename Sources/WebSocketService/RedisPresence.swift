import CHiredis
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A channel member somewhere in the cluster.
public struct ClusterMember: Sendable, Hashable, Codable {
    public var id: UUID
    public var userID: String
    /// The backplane id of the server it is connected to.
    public var serverID: String

    public init(id: UUID, userID: String, serverID: String) {
        self.id = id
        self.userID = userID
        self.serverID = serverID
    }
}

public struct BackplaneError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// Cluster-wide channel membership in Redis, kept by each server for its own
/// members and expiring with it:
///
///     <prefix>:presence:<server>:<channel>   hash connection id → user id, PEXPIRE ttl
///     <prefix>:servers                       sorted set: server id, scored by its expiry (ms)
///
/// A thread with its own connection rewrites a channel's hash (MULTI: DEL,
/// HSET, PEXPIRE) soon after a local join or leave, and every hash and its
/// server entry every ttl/3, so a crashed server's members vanish within ttl.
/// Queries open a short-lived connection of their own, off the engine loops.
final class RedisPresence: @unchecked Sendable {
    private let configuration: RedisConfiguration
    private let logger: Logger
    private let serverID: String
    private let localMembers: @Sendable (String?) -> [String: [ClusterMember]]
    private let serversKey: String

    // Under `condition`.
    private let condition = NSCondition()
    private var dirty: Set<String> = []
    private var started = false
    private var stopping = false
    private let done = DispatchGroup()

    init(_ configuration: RedisConfiguration, serverID: UUID, logger: Logger,
         localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]]) {
        self.configuration = configuration
        self.logger = logger
        self.serverID = serverID.uuidString.lowercased()
        self.localMembers = localMembers
        serversKey = configuration.subjectPrefix + ":servers"
    }

    private func key(server: String, channel: String) -> String {
        "\(configuration.subjectPrefix):presence:\(server):\(channel)"
    }

    private var ttlMilliseconds: Int { max(1, Self.milliseconds(configuration.presenceTTL)) }

    private static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    private static var nowMilliseconds: Int { Int(Date().timeIntervalSince1970 * 1000) }

    func start() {
        condition.lock()
        let first = !started
        started = true
        condition.unlock()
        guard first else { return }
        done.enter()
        let thread = Thread { [self] in
            Thread.current.threadDictionary[RedisBackplane.threadKey] = true
            run()
            done.leave()
        }
        thread.name = "redis-presence"
        thread.start()
    }

    func stop() {
        condition.lock()
        let wasRunning = started && !stopping
        stopping = true
        condition.broadcast()
        condition.unlock()
        // Not from its own thread (see RedisBackplane.stop).
        if wasRunning && !RedisBackplane.onBackplaneThread { done.wait() }
    }

    func changed(channel: String) {
        condition.lock()
        dirty.insert(channel)
        condition.signal()
        condition.unlock()
    }

    // MARK: - Writer thread

    private func run() {
        var connection: OpaquePointer?
        var delay = configuration.reconnectDelay
        var nextFull = ContinuousClock.now
        /// Channels whose hash this server wrote (deleted on a graceful stop).
        var written: Set<String> = []
        let interval = configuration.presenceTTL / 3
        while true {
            condition.lock()
            if dirty.isEmpty, !stopping, ContinuousClock.now < nextFull {
                let left = nextFull - .now
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(Self.milliseconds(left)) / 1000))
            }
            let work = dirty
            dirty = []
            let stop = stopping
            condition.unlock()
            if stop { break }

            guard let c = connection ?? RedisBackplane.open(configuration).connection else {
                requeue(work)
                condition.lock()
                if !stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: Double(Self.milliseconds(delay)) / 1000)) }
                condition.unlock()
                delay = min(delay * 2, configuration.maxReconnectDelay)
                continue
            }
            if connection == nil {
                // New connection: Redis may have restarted empty, so write everything.
                connection = c
                delay = configuration.reconnectDelay
                nextFull = .now
            }
            let full = ContinuousClock.now >= nextFull
            var snapshot: [String: [ClusterMember]] = full ? localMembers(nil) : [:]
            for channel in work where snapshot[channel] == nil { snapshot[channel] = localMembers(channel)[channel] ?? [] }
            if full {
                // Hashes of channels emptied since the last pass.
                for channel in written where snapshot[channel] == nil { snapshot[channel] = [] }
            }
            var commands: [[String]] = []
            for (channel, members) in snapshot {
                let key = key(server: serverID, channel: channel)
                if members.isEmpty {
                    commands.append(["DEL", key])
                    written.remove(channel)
                    continue
                }
                commands.append(["MULTI"])
                commands.append(["DEL", key])
                commands.append(["HSET", key] + members.flatMap { [$0.id.uuidString.lowercased(), $0.userID] })
                commands.append(["PEXPIRE", key, "\(ttlMilliseconds)"])
                commands.append(["EXEC"])
                written.insert(channel)
            }
            if full {
                let now = Self.nowMilliseconds
                commands.append(["ZADD", serversKey, "\(now + ttlMilliseconds)", serverID])
                commands.append(["ZREMRANGEBYSCORE", serversKey, "-inf", "(\(now)"])
                nextFull = .now + interval
            }
            guard run(commands, on: c) else {
                logger.warning("redis presence: \(String(cString: chr_error(c)))")
                chr_free(c)
                connection = nil
                requeue(Set(snapshot.keys))
                continue
            }
        }
        guard let connection else { return }
        // Graceful stop: this server's members leave the cluster view now, not after the ttl.
        var commands = written.map { ["DEL", key(server: serverID, channel: $0)] }
        commands.append(["ZREM", serversKey, serverID])
        _ = run(commands, on: connection)
        chr_free(connection)
    }

    private func requeue(_ channels: Set<String>) {
        condition.lock()
        dirty.formUnion(channels)
        condition.unlock()
    }

    /// Pipelines the commands and reads every reply; false on an I/O error.
    private func run(_ commands: [[String]], on c: OpaquePointer) -> Bool {
        guard !commands.isEmpty else { return true }
        for command in commands {
            guard RedisBackplane.append(c, command.map { Array($0.utf8) }) == 0 else { return false }
        }
        for _ in commands {
            guard chr_reply(c) >= 0 else { return false }
        }
        return true
    }

    // MARK: - Queries

    func members(in channel: String) async throws -> [ClusterMember] {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try self.query(channel) })
            }
        }
    }

    /// Blocking: a Redis round trip or two on the calling thread.
    func query(_ channel: String) throws -> [ClusterMember] {
        let opened = RedisBackplane.open(configuration)
        guard let c = opened.connection else { throw BackplaneError(description: opened.error) }
        defer { chr_free(c) }
        guard RedisBackplane.append(c, ["ZRANGEBYSCORE", serversKey, "\(Self.nowMilliseconds)", "+inf"].map { Array($0.utf8) }) == 0,
              chr_reply(c) == 0 else {
            throw BackplaneError(description: String(cString: chr_error(c)))
        }
        let servers = Self.strings(c)
        for server in servers {
            guard RedisBackplane.append(c, ["HGETALL", key(server: server, channel: channel)].map { Array($0.utf8) }) == 0 else {
                throw BackplaneError(description: String(cString: chr_error(c)))
            }
        }
        var members: [ClusterMember] = []
        for server in servers {
            guard chr_reply(c) == 0 else { throw BackplaneError(description: String(cString: chr_error(c))) }
            let fields = Self.strings(c)
            for i in stride(from: 0, to: fields.count - 1, by: 2) {
                guard let id = UUID(uuidString: fields[i]) else { continue }
                members.append(ClusterMember(id: id, userID: fields[i + 1], serverID: server))
            }
        }
        return members
    }

    /// The last reply's string elements.
    private static func strings(_ c: OpaquePointer) -> [String] {
        (0..<chr_reply_count(c)).compactMap { i in
            var len = 0
            guard let p = chr_reply_string(c, i, &len) else { return nil }
            return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
        }
    }
}

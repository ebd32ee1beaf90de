import CHiredis
import Foundation
import WebSocketService
import Logging

#if canImport(Glibc)
import Glibc
#endif

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
        let router = RedisRouter(configuration)
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

            if router.needsRefresh {
                guard router.refresh() == nil else {
                    requeue(work)
                    condition.lock()
                    if !stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: Double(Self.milliseconds(delay)) / 1000)) }
                    condition.unlock()
                    delay = min(delay * 2, configuration.maxReconnectDelay)
                    continue
                }
                // New connection: Redis may have restarted empty, so write everything.
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
            var commands: [(key: String, commands: [[String]])] = []
            for (channel, members) in snapshot {
                let key = key(server: serverID, channel: channel)
                if members.isEmpty {
                    commands.append((key, [["DEL", key]]))
                    written.remove(channel)
                    continue
                }
                commands.append((key, [["MULTI"], ["DEL", key],
                                       ["HSET", key] + members.flatMap { [$0.id.uuidString.lowercased(), $0.userID] },
                                       ["PEXPIRE", key, "\(ttlMilliseconds)"], ["EXEC"]]))
                written.insert(channel)
            }
            if full {
                let now = Self.nowMilliseconds
                commands.append((serversKey, [["ZADD", serversKey, "\(now + ttlMilliseconds)", serverID],
                                              ["ZREMRANGEBYSCORE", serversKey, "-inf", "(\(now)"]]))
                nextFull = .now + interval
            }
            if let error = Self.run(commands, router) {
                // A key that moved is in the map now (MOVED); anything else: reconnect.
                if !RedisRouter.isRedirect(error) || error.hasPrefix("ASK ") {
                    logger.warning("redis presence: \(error)")
                    router.closeAll()
                    router.needsRefresh = true
                }
                requeue(Set(snapshot.keys))
                if full { nextFull = .now }
                continue
            }
        }
        guard !router.needsRefresh else { return }
        // Graceful stop: this server's members leave the cluster view now, not after the ttl.
        var commands = written.map { channel -> (key: String, commands: [[String]]) in
            let key = key(server: serverID, channel: channel)
            return (key, [["DEL", key]])
        }
        commands.append((serversKey, [["ZREM", serversKey, serverID]]))
        _ = Self.run(commands, router)
        router.closeAll()
    }

    private func requeue(_ channels: Set<String>) {
        condition.lock()
        dirty.formUnion(channels)
        condition.unlock()
    }

    /// Sends each key's commands to the node that owns the key (pipelined per
    /// node) and reads every reply; nil, or why it failed (an I/O error, or a
    /// key that moved: the caller reads the slot map again and retries).
    private static func run(_ commands: [(key: String, commands: [[String]])], _ router: RedisRouter) -> String? {
        var byNode: [RedisNode: [[String]]] = [:]
        for (key, list) in commands { byNode[router.node(for: key), default: []] += list }
        var pending: [(OpaquePointer, Int)] = []
        for (node, list) in byNode {
            let (c, error) = router.connection(to: node)
            guard let c else { return error }
            for command in list {
                guard RedisConnection.append(c, command.map { Array($0.utf8) }) == 0 else { return String(cString: chr_error(c)) }
            }
            pending.append((c, list.count))
        }
        var failure: String?
        for (c, count) in pending {
            for _ in 0..<count {
                let rc = chr_reply(c)
                if rc < 0 { return String(cString: chr_error(c)) }
                if rc == 1, RedisRouter.isRedirect(String(cString: chr_error(c))) {
                    failure = String(cString: chr_error(c))
                    router.redirect(failure!)
                }
            }
        }
        return failure
    }

    // MARK: - Queries

    func members(in channel: String) async throws -> [ClusterMember] {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try self.query(channel) })
            }
        }
    }

    /// Blocking: a Redis round trip or two on the calling thread (three on
    /// a Redis Cluster, whose slot map is read first).
    func query(_ channel: String) throws -> [ClusterMember] {
        let router = RedisRouter(configuration)
        defer { router.closeAll() }
        if let error = router.refresh() { throw BackplaneError(description: error) }
        func send(_ command: [String]) throws -> OpaquePointer {
            let (c, error) = router.connection(to: router.node(for: command[1]))
            guard let c else { throw BackplaneError(description: error) }
            guard RedisConnection.append(c, command.map { Array($0.utf8) }) == 0 else {
                throw BackplaneError(description: String(cString: chr_error(c)))
            }
            return c
        }
        func reply(_ c: OpaquePointer) throws -> [String] {
            guard chr_reply(c) == 0 else { throw BackplaneError(description: String(cString: chr_error(c))) }
            return Self.strings(c)
        }
        let servers = try reply(try send(["ZRANGEBYSCORE", serversKey, "\(Self.nowMilliseconds)", "+inf"]))
        // Pipelined; replies come back in order on each connection.
        let sent = try servers.map { server in (server, try send(["HGETALL", key(server: server, channel: channel)])) }
        var members: [ClusterMember] = []
        for (server, c) in sent {
            let fields = try reply(c)
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

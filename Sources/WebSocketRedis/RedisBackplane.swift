import CHiredis
import Foundation
import Logging
import Synchronization
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// Redis pub/sub between servers, over hiredis's blocking API on two threads
/// of its own (never an engine loop): one publisher connection, fed by a
/// bounded queue and pipelining what it finds there, and one subscriber
/// connection that polls its socket and an eventfd (subscription changes,
/// stop). Either reconnects with capped exponential backoff; the subscriber
/// then subscribes again to every subject the server still wants.
///
/// Ordering: one publisher connection per server and FIFO queue, and Redis
/// delivers a connection's publishes in order to every subscriber, so each
/// server's messages arrive everywhere in the order it wrote them.
///
/// The two loops are in RedisPublisher.swift and RedisSubscriber.swift, the
/// hiredis calls in RedisConnection.swift, the bytes on a subject in
/// BackplaneWire.swift; the members they share are internal, not private.
final class RedisBackplane: Backplane, @unchecked Sendable {
    let configuration: RedisConfiguration
    let logger: Logger
    let channelPrefix: String
    private let allSubject: String

    /// Everything the threads and callers share, under `condition`'s lock.
    struct Shared {
        var serverID = UUID()
        var deliver: (@Sendable (BackplaneMessage) -> Void)?
        /// Subjects the service wants (its channels with local members, and "all").
        var wanted: Set<String> = []
        /// Subjects Redis confirmed.
        var confirmed: Set<String> = []
        var queue: [Outgoing] = []
        var historyHooks = BackplaneHistoryHooks.none
        /// Subjects of channels whose history this server follows (RedisHistory.swift), with their bounds.
        var followed: [String: Configuration.History] = [:]
        /// Followed subjects to read: confirmed, and not read since.
        var reads: [String] = []
        /// After a failed read: none before this, and the wait before the next.
        var readsNotBefore = Date.distantPast
        var readDelay: Duration = .zero
        var publisherUp = false
        var subscriberUp = false
        var started = false
        var stopping = false
        var lastError: String?
    }
    // Written under the lock; `condition` (NSCondition) is that lock.
    nonisolated(unsafe) var shared = Shared()
    let condition = NSCondition()
    /// Wakes the subscriber's poll() (wanted subjects changed, or stop).
    let wakeFD: Int32
    private let threads = DispatchGroup()
    /// Set in start, before any thread reads it.
    nonisolated(unsafe) private var presence: RedisPresence?

    let published = Atomic<UInt64>(0)
    let received = Atomic<UInt64>(0)
    let notPropagated = Atomic<UInt64>(0)
    private let disconnects = Atomic<UInt64>(0)

    init(_ configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        channelPrefix = configuration.subjectPrefix + ":c:"
        allSubject = configuration.subjectPrefix + ":all"
        wakeFD = chr_waker_new()
        shared.wanted = [allSubject]
    }

    deinit {
        stop()
        if wakeFD >= 0 { close(wakeFD) }
    }

    var isDistributed: Bool { true }

    func start(serverID: UUID, deliver: @escaping @Sendable (BackplaneMessage) -> Void,
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]],
               history: BackplaneHistoryHooks) {
        let first = locked { s -> Bool in
            guard !s.started else { return false }
            s.started = true
            s.serverID = serverID
            s.deliver = deliver
            s.historyHooks = history
            return true
        }
        guard first else { return }
        let presence = RedisPresence(configuration, serverID: serverID, logger: logger, localMembers: localMembers)
        locked { _ in self.presence = presence }
        presence.start()
        spawn("redis-publisher") { $0.runPublisher() }
        spawn("redis-subscriber") { $0.runSubscriber() }
    }

    func stop() {
        let wasRunning = locked { s -> Bool in
            defer { s.stopping = true }
            return s.started && !s.stopping
        }
        guard wasRunning else { return }
        condition.broadcast()
        wake()
        // The last reference to the service can go on a backplane thread (its
        // delivery holds one for a moment): its deinit stops us, and must not
        // wait for the very thread it runs on.
        if !Self.onBackplaneThread { threads.wait() }
        locked { _ in presence }?.stop()
    }

    func membersChanged(channel: String) {
        locked { _ in presence }?.changed(channel: channel)
    }

    /// `clusterMembers` on the calling thread (blocking; tests and tools).
    func clusterMembersBlocking(in channel: String) throws -> [ClusterMember] {
        guard let presence = locked({ _ in presence }) else { throw BackplaneError(description: "the backplane is not started") }
        return try presence.query(channel)
    }

    func clusterMembers(in channel: String) async throws -> [ClusterMember] {
        guard let presence = locked({ _ in presence }) else { throw BackplaneError(description: "the backplane is not started") }
        return try await presence.members(in: channel)
    }

    func subscribe(channel: String) {
        locked { _ = $0.wanted.insert(channelPrefix + channel) }
        wake()
    }

    func unsubscribe(channel: String) {
        locked { _ = $0.wanted.remove(channelPrefix + channel) }
        wake()
    }

    func publish(_ message: BackplaneMessage) {
        let subject: String
        switch message.target {
        case .channel(let channel, _), .raw(let channel?, _, _), .history(let channel, _, _, _): subject = channelPrefix + channel
        case .all, .connection, .raw(nil, _, _): subject = allSubject
        }
        enqueue(Outgoing(subject: subject, payload: BackplaneWire.encode(message)))
    }

    /// False (counted as not propagated) when down or full: deliver locally
    /// only, and say so, rather than buffer without bound.
    @discardableResult
    private func enqueue(_ item: Outgoing) -> Bool {
        let queued = locked { s -> Bool in
            guard s.publisherUp, !s.stopping, s.queue.count < configuration.maxPendingPublishes else { return false }
            s.queue.append(item)
            return true
        }
        if queued { condition.signal() } else { notPropagated.wrappingAdd(1, ordering: .relaxed) }
        return queued
    }

    var ordersHistory: Bool { true }

    func publishToHistory(_ write: HistoryWrite) -> Bool {
        enqueue(Outgoing(subject: channelPrefix + write.channel, payload: [], history: write))
    }

    func followHistory(channel: String, limits: Configuration.History) {
        let subject = channelPrefix + channel
        let now = locked { s -> Bool in
            s.followed[subject] = limits
            guard s.confirmed.contains(subject) else { return false }
            if !s.reads.contains(subject) { s.reads.append(subject) }
            return true
        }
        if now { condition.signal() }
    }

    func restartHistory(channel: String) {
        enqueue(Outgoing(subject: channelPrefix + channel, payload: [], deletesStream: true))
    }

    func unfollowHistory(channel: String) {
        locked { _ = $0.followed.removeValue(forKey: channelPrefix + channel) }
    }

    /// The subscriber saw Redis confirm a subject: a followed channel is read now.
    func confirmed(_ subject: String) {
        let read = locked { s -> Bool in
            s.confirmed.insert(subject)
            guard s.followed[subject] != nil, !s.reads.contains(subject) else { return false }
            s.reads.append(subject)
            return true
        }
        if read { condition.signal() }
    }

    var status: BackplaneStatus {
        let (id, up, subscriptions, lastError) = locked { s in
            (s.serverID, s.publisherUp && s.subscriberUp, s.confirmed.count, s.lastError)
        }
        return BackplaneStatus(kind: "redis", serverID: id.uuidString.lowercased(), endpoint: configuration.endpoint,
                               connected: up, subscriptions: subscriptions,
                               published: published.load(ordering: .relaxed), received: received.load(ordering: .relaxed),
                               notPropagated: notPropagated.load(ordering: .relaxed),
                               disconnects: disconnects.load(ordering: .relaxed), lastError: lastError,
                               pubSub: configuration.pubSub.rawValue)
    }

    /// Redis has confirmed the subscription to this channel's subject (tests wait on it).
    func isSubscribed(channel: String) -> Bool { locked { $0.confirmed.contains(channelPrefix + channel) } }

    // MARK: - Shared with the publisher and subscriber loops (RedisPublisher.swift, RedisSubscriber.swift)

    func locked<R>(_ body: (inout Shared) -> R) -> R {
        condition.lock()
        defer { condition.unlock() }
        return body(&shared)
    }

    var isStopping: Bool { locked { $0.stopping } }

    private func wake() {
        chr_waker_wake(wakeFD)
    }

    private func spawn(_ name: String, _ body: @escaping @Sendable (RedisBackplane) -> Void) {
        threads.enter()
        let thread = Thread { [self] in
            Thread.current.threadDictionary[Self.threadKey] = true
            body(self)
            threads.leave()
        }
        thread.name = name
        thread.start()
    }

    static let threadKey = "WebSocketRedis.backplane"
    static var onBackplaneThread: Bool { Thread.current.threadDictionary[threadKey] as? Bool == true }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    func failed(_ reason: String) {
        disconnects.wrappingAdd(1, ordering: .relaxed)
        let first = locked { s -> Bool in
            defer { s.lastError = reason }
            return s.lastError != reason
        }
        if first { logger.warning("redis backplane: \(reason)", metadata: ["endpoint": "\(configuration.endpoint)"]) }
    }

    /// Sleeps the backoff, cut short by stop. Returns the next delay.
    func backoff(_ delay: Duration) -> Duration {
        condition.lock()
        let deadline = Date(timeIntervalSinceNow: Double(Self.milliseconds(delay)) / 1000)
        while !shared.stopping, condition.wait(until: deadline) {}
        condition.unlock()
        return min(delay * 2, configuration.maxReconnectDelay)
    }
}

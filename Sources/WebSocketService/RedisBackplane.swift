import CHiredis
import Foundation
import Logging
import Synchronization

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
final class RedisBackplane: Backplane, @unchecked Sendable {
    let configuration: RedisConfiguration
    private let logger: Logger
    private let channelPrefix: String
    private let allSubject: String

    /// Everything the threads and callers share, under `condition`'s lock.
    private struct Shared {
        var serverID = UUID()
        var deliver: (@Sendable (BackplaneMessage) -> Void)?
        /// Subjects the service wants (its channels with local members, and "all").
        var wanted: Set<String> = []
        /// Subjects Redis confirmed.
        var confirmed: Set<String> = []
        var queue: [(subject: String, payload: [UInt8])] = []
        var publisherUp = false
        var subscriberUp = false
        var started = false
        var stopping = false
        var lastError: String?
    }
    // Written under the lock; `condition` (NSCondition) is that lock.
    nonisolated(unsafe) private var shared = Shared()
    private let condition = NSCondition()
    /// Wakes the subscriber's poll() (wanted subjects changed, or stop).
    private let wakeFD: Int32
    private let threads = DispatchGroup()
    /// Set in start, before any thread reads it.
    nonisolated(unsafe) private var presence: RedisPresence?

    private let published = Atomic<UInt64>(0)
    private let received = Atomic<UInt64>(0)
    private let notPropagated = Atomic<UInt64>(0)
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
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]]) {
        let first = locked { s -> Bool in
            guard !s.started else { return false }
            s.started = true
            s.serverID = serverID
            s.deliver = deliver
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
        if case .channel(let channel, _) = message.target { subject = channelPrefix + channel } else { subject = allSubject }
        let payload = BackplaneWire.encode(message)
        let queued = locked { s -> Bool in
            // Down: deliver locally only, and say so, rather than buffer without bound.
            guard s.publisherUp, !s.stopping, s.queue.count < configuration.maxPendingPublishes else { return false }
            s.queue.append((subject, payload))
            return true
        }
        if queued { condition.signal() } else { notPropagated.wrappingAdd(1, ordering: .relaxed) }
    }

    var status: BackplaneStatus {
        let (id, up, subscriptions, lastError) = locked { s in
            (s.serverID, s.publisherUp && s.subscriberUp, s.confirmed.count, s.lastError)
        }
        return BackplaneStatus(kind: "redis", serverID: id.uuidString.lowercased(), endpoint: configuration.endpoint,
                               connected: up, subscriptions: subscriptions,
                               published: published.load(ordering: .relaxed), received: received.load(ordering: .relaxed),
                               notPropagated: notPropagated.load(ordering: .relaxed),
                               disconnects: disconnects.load(ordering: .relaxed), lastError: lastError)
    }

    /// Redis has confirmed the subscription to this channel's subject (tests wait on it).
    func isSubscribed(channel: String) -> Bool { locked { $0.confirmed.contains(channelPrefix + channel) } }

    // MARK: - Threads

    private func locked<R>(_ body: (inout Shared) -> R) -> R {
        condition.lock()
        defer { condition.unlock() }
        return body(&shared)
    }

    private var isStopping: Bool { locked { $0.stopping } }

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

    static let threadKey = "WebSocketService.backplane"
    static var onBackplaneThread: Bool { Thread.current.threadDictionary[threadKey] as? Bool == true }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    /// A connected, authenticated client with the database selected; nil (and the reason recorded).
    private func connect() -> OpaquePointer? {
        let opened = Self.open(configuration)
        if opened.connection == nil { failed(opened.error) }
        return opened.connection
    }

    /// A connected, authenticated client with the database selected, or why not.
    static func open(_ configuration: RedisConfiguration) -> (connection: OpaquePointer?, error: String) {
        var error = [CChar](repeating: 0, count: 200)
        let c: OpaquePointer? = configuration.host.withCString { host in
            if let password = configuration.password {
                return password.withCString {
                    chr_connect(host, Int32(configuration.port), Int32(Self.milliseconds(configuration.timeout)), $0,
                                &error, error.count)
                }
            }
            return chr_connect(host, Int32(configuration.port), Int32(Self.milliseconds(configuration.timeout)), nil,
                               &error, error.count)
        }
        guard let c else {
            return (nil, String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        if configuration.database != 0 {
            guard append(c, ["SELECT", "\(configuration.database)"].map { Array($0.utf8) }) == 0, chr_reply(c) == 0 else {
                let reason = "SELECT: " + String(cString: chr_error(c))
                chr_free(c)
                return (nil, reason)
            }
        }
        return (c, "")
    }

    private func failed(_ reason: String) {
        disconnects.wrappingAdd(1, ordering: .relaxed)
        let first = locked { s -> Bool in
            defer { s.lastError = reason }
            return s.lastError != reason
        }
        if first { logger.warning("redis backplane: \(reason)", metadata: ["endpoint": "\(configuration.endpoint)"]) }
    }

    /// Appends one command made of byte strings.
    static func append(_ c: OpaquePointer, _ args: [[UInt8]]) -> Int32 {
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        var copies: [UnsafeMutableRawBufferPointer] = []
        defer { copies.forEach { $0.deallocate() } }
        for arg in args {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(arg.count, 1), alignment: 1)
            arg.withUnsafeBytes { copy.copyMemory(from: $0) }
            copies.append(copy)
            pointers.append(UnsafePointer(copy.baseAddress!.assumingMemoryBound(to: CChar.self)))
            lengths.append(arg.count)
        }
        return chr_append(c, Int32(args.count), &pointers, &lengths)
    }

    /// Sleeps the backoff, cut short by stop. Returns the next delay.
    private func backoff(_ delay: Duration) -> Duration {
        condition.lock()
        let deadline = Date(timeIntervalSinceNow: Double(Self.milliseconds(delay)) / 1000)
        while !shared.stopping, condition.wait(until: deadline) {}
        condition.unlock()
        return min(delay * 2, configuration.maxReconnectDelay)
    }

    private func runPublisher() {
        var delay = configuration.reconnectDelay
        var connection: OpaquePointer?
        defer {
            if let connection {
                // Best effort for what was queued before stop (the leaves of a graceful shutdown).
                let rest = locked { s -> [(subject: String, payload: [UInt8])] in
                    defer { s.queue.removeAll() }
                    return s.queue
                }
                for item in rest { _ = Self.append(connection, [Array("PUBLISH".utf8), Array(item.subject.utf8), item.payload]) }
                if !rest.isEmpty { _ = chr_flush(connection) }
                chr_free(connection)
            }
            locked { $0.publisherUp = false }
        }
        while !isStopping {
            guard let c = connection ?? connect() else {
                delay = backoff(delay)
                continue
            }
            if connection == nil {
                connection = c
                delay = configuration.reconnectDelay
                locked { $0.publisherUp = true }
            }
            let batch = locked { s -> [(subject: String, payload: [UInt8])] in
                // At most a second idle, so a dead connection is noticed (below) even without traffic.
                if s.queue.isEmpty, !s.stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: 1)) }
                defer { s.queue.removeAll(keepingCapacity: true) }
                return s.queue
            }
            // Redis sends nothing unasked on this connection, so a readable
            // socket means it closed (a restart while we were idle): reconnect
            // now rather than lose the batch to a dead socket.
            if Self.hasClosed(c) {
                failed("publisher: connection closed by Redis")
                chr_free(c)
                connection = connect()
                guard connection != nil else {
                    let lost = locked { s -> Int in
                        s.publisherUp = false
                        defer { s.queue.removeAll() }
                        return s.queue.count
                    }
                    notPropagated.wrappingAdd(UInt64(batch.count + lost), ordering: .relaxed)
                    continue
                }
            }
            guard let c = connection, !batch.isEmpty else { continue }
            // Pipelined: every PUBLISH goes out in one write, then the answers are read.
            var sent = 0
            var ok = true
            for item in batch {
                guard Self.append(c, [Array("PUBLISH".utf8), Array(item.subject.utf8), item.payload]) == 0 else {
                    ok = false
                    break
                }
            }
            if ok {
                for _ in batch {
                    guard chr_reply(c) >= 0 else {
                        ok = false
                        break
                    }
                    sent += 1
                }
            }
            published.wrappingAdd(UInt64(sent), ordering: .relaxed)
            guard ok else {
                let lost = locked { s -> Int in
                    s.publisherUp = false
                    defer { s.queue.removeAll() }
                    return s.queue.count
                }
                // A PUBLISH whose answer never came may or may not have gone out: counted as not propagated.
                notPropagated.wrappingAdd(UInt64(batch.count - sent + lost), ordering: .relaxed)
                failed("publisher: " + String(cString: chr_error(c)))
                chr_free(c)
                connection = nil
                continue
            }
        }
    }

    private static func hasClosed(_ c: OpaquePointer) -> Bool {
        var fd = pollfd(fd: chr_fd(c), events: Int16(POLLIN), revents: 0)
        return poll(&fd, 1, 0) != 0
    }

    private func runSubscriber() {
        var delay = configuration.reconnectDelay
        var connection: OpaquePointer?
        /// Subjects SUBSCRIBE was sent for on this connection.
        var active: Set<String> = []
        let (serverID, deliver) = locked { ($0.serverID, $0.deliver) }
        func drop(_ c: OpaquePointer, _ what: String) {
            failed("subscriber: \(what): " + String(cString: chr_error(c)))
            chr_free(c)
            connection = nil
            active = []
            locked { s in
                s.subscriberUp = false
                s.confirmed = []
            }
        }
        defer {
            if let connection { chr_free(connection) }
            locked { $0.subscriberUp = false }
        }
        while !isStopping {
            guard let c = connection ?? connect() else {
                delay = backoff(delay)
                continue
            }
            if connection == nil {
                connection = c
                delay = configuration.reconnectDelay
                locked { $0.subscriberUp = true }
                logger.info("redis backplane connected", metadata: ["endpoint": "\(configuration.endpoint)"])
            }
            // Bring the subscriptions in line with what the service wants
            // (after a reconnect: everything, which is the resubscribe).
            let wanted = locked { $0.wanted }
            let add = wanted.subtracting(active)
            let remove = active.subtracting(wanted)
            if !add.isEmpty || !remove.isEmpty {
                var ok = true
                if !add.isEmpty { ok = Self.append(c, [Array("SUBSCRIBE".utf8)] + add.map { Array($0.utf8) }) == 0 }
                if ok, !remove.isEmpty {
                    ok = Self.append(c, [Array("UNSUBSCRIBE".utf8)] + remove.map { Array($0.utf8) }) == 0
                }
                guard ok, chr_flush(c) == 0 else {
                    drop(c, "subscribe")
                    continue
                }
                active = wanted
            }

            var fds = [pollfd(fd: chr_fd(c), events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, 1000)
            if n < 0 && errno != EINTR {
                drop(c, "poll")
                continue
            }
            if fds[1].revents != 0 {
                chr_waker_drain(wakeFD)
            }
            guard fds[0].revents != 0 else { continue }
            guard chr_fill(c) == 0 else {
                drop(c, "read")
                continue
            }
            var push = chr_push()
            while true {
                let rc = chr_next_push(c, &push)
                if rc == 0 { break }
                guard rc > 0 else {
                    drop(c, "protocol")
                    break
                }
                guard let subjectPointer = push.subject else { continue }
                let subject = String(decoding: UnsafeRawBufferPointer(start: subjectPointer, count: push.subject_len),
                                     as: UTF8.self)
                switch push.kind {
                case Int32(CHR_PUSH_SUBSCRIBE.rawValue):
                    locked { _ = $0.confirmed.insert(subject) }
                case Int32(CHR_PUSH_UNSUBSCRIBE.rawValue):
                    locked { _ = $0.confirmed.remove(subject) }
                case Int32(CHR_PUSH_MESSAGE.rawValue):
                    let channel = subject.hasPrefix(channelPrefix) ? String(subject.dropFirst(channelPrefix.count)) : nil
                    let payload = UnsafeRawBufferPointer(start: push.payload, count: push.payload_len)
                    guard let message = BackplaneWire.decode(payload, channel: channel) else { continue }
                    // Our own copy, back from Redis: the local members had it already.
                    guard message.origin != serverID else { continue }
                    received.wrappingAdd(1, ordering: .relaxed)
                    deliver?(message)
                default:
                    break
                }
            }
        }
    }
}

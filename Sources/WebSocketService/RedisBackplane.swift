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
        var queue: [(subject: String, payload: [UInt8], attempts: Int)] = []
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
            s.queue.append((subject, payload, 0))
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
                               disconnects: disconnects.load(ordering: .relaxed), lastError: lastError,
                               pubSub: configuration.pubSub.rawValue)
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

    private typealias Publish = (subject: String, payload: [UInt8], attempts: Int)

    private func runPublisher() {
        let sharded = configuration.pubSub == .sharded
        let command = Array((sharded ? "SPUBLISH" : "PUBLISH").utf8)
        let router = RedisRouter(configuration)
        var delay = configuration.reconnectDelay
        defer {
            // Best effort for what was queued before stop (the leaves of a graceful shutdown).
            let rest = locked { s -> [Publish] in
                defer { s.queue.removeAll() }
                return s.queue
            }
            if !router.needsRefresh, !rest.isEmpty {
                var used: Set<RedisNode> = []
                for item in rest {
                    let node = sharded ? router.node(for: item.subject) : router.seed
                    guard let c = router.connection(to: node).connection else { continue }
                    _ = Self.append(c, [command, Array(item.subject.utf8), item.payload])
                    used.insert(node)
                }
                for node in used { if let c = router.open[node] { _ = chr_flush(c) } }
            }
            router.closeAll()
            locked { $0.publisherUp = false }
        }
        /// Counts the queue as not propagated and marks the publisher down.
        func down(_ reason: String, lost: Int) {
            let queued = locked { s -> Int in
                s.publisherUp = false
                defer { s.queue.removeAll() }
                return s.queue.count
            }
            notPropagated.wrappingAdd(UInt64(lost + queued), ordering: .relaxed)
            failed("publisher: " + reason)
            router.closeAll()
            router.needsRefresh = true
        }
        while !isStopping {
            if router.needsRefresh {
                // (Re)connect: the configured node, and the slot map when it is a cluster.
                if let error = router.refresh() {
                    failed("publisher: " + error)
                    delay = backoff(delay)
                    continue
                }
                delay = configuration.reconnectDelay
                locked { $0.publisherUp = true }
            }
            // Not inside `locked`: an inout access held across the wait lets the
            // compiler keep the queue it read before the wait, while publish()
            // replaces it on another thread (a retain of a freed buffer, seen
            // under load). Each access below is a fresh one.
            condition.lock()
            // At most a second idle, so a dead connection is noticed (below) even without traffic.
            if shared.queue.isEmpty, !shared.stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: 1)) }
            let batch = shared.queue
            shared.queue.removeAll(keepingCapacity: true)
            condition.unlock()
            // Redis sends nothing unasked on these connections, so a readable
            // socket means it closed (a restart while we were idle): reconnect
            // now rather than lose the batch to a dead socket.
            let closed = router.open.filter { Self.hasClosed($0.value) }.map(\.key)
            if !closed.isEmpty {
                for node in closed { router.drop(node) }
                if let error = router.refresh() {
                    down(error, lost: batch.count)
                    continue
                }
            }
            guard !batch.isEmpty else { continue }
            // Pipelined: every node gets its publishes in one write, then the answers are read.
            var order: [RedisNode] = []
            var groups: [RedisNode: [Publish]] = [:]
            for item in batch {
                let node = sharded ? router.node(for: item.subject) : router.seed
                if groups[node] == nil { order.append(node) }
                groups[node, default: []].append(item)
            }
            var sent = 0
            var lost = 0
            var retry: [Publish] = []
            var broken: String?
            var pending: [(RedisNode, OpaquePointer, [Publish])] = []
            for node in order {
                let items = groups[node]!
                guard let c = router.connection(to: node).connection,
                      items.allSatisfy({ Self.append(c, [command, Array($0.subject.utf8), $0.payload]) == 0 }) else {
                    lost += items.count
                    broken = "\(node): cannot connect or write"
                    router.drop(node)
                    continue
                }
                _ = chr_flush(c)
                pending.append((node, c, items))
            }
            for (node, c, items) in pending {
                for (index, item) in items.enumerated() {
                    let rc = chr_reply(c)
                    if rc == 0 {
                        sent += 1
                    } else if rc == 1, RedisRouter.isRedirect(String(cString: chr_error(c))), item.attempts < 3 {
                        // The slot moved: publish where it lives now (MOVED says where; after an ASK, read the map).
                        retry.append((item.subject, item.payload, item.attempts + 1))
                        if router.redirect(String(cString: chr_error(c))) == nil { router.needsRefresh = true }
                    } else if rc == 1 {
                        lost += 1
                        logger.warning("redis backplane: publish refused", metadata: [
                            "node": "\(node)", "error": "\(String(cString: chr_error(c)))"])
                    } else {
                        // An answer that never came: the PUBLISH may or may not have gone out.
                        lost += items.count - index
                        broken = "\(node): " + String(cString: chr_error(c))
                        router.drop(node)
                        break
                    }
                }
            }
            published.wrappingAdd(UInt64(sent), ordering: .relaxed)
            if let broken {
                down(broken, lost: lost + retry.count)
                continue
            }
            notPropagated.wrappingAdd(UInt64(lost), ordering: .relaxed)
            if !retry.isEmpty {
                // Ahead of what came since, so each channel keeps its order.
                if router.needsRefresh, let error = router.refresh() {
                    down(error, lost: retry.count)
                } else {
                    locked { $0.queue.insert(contentsOf: retry, at: 0) }
                }
            }
        }
    }

    private static func hasClosed(_ c: OpaquePointer) -> Bool {
        var fd = pollfd(fd: chr_fd(c), events: Int16(POLLIN), revents: 0)
        return poll(&fd, 1, 0) != 0
    }

    private func runSubscriber() {
        let sharded = configuration.pubSub == .sharded
        let (subscribe, unsubscribe) = sharded ? ("SSUBSCRIBE", "SUNSUBSCRIBE") : ("SUBSCRIBE", "UNSUBSCRIBE")
        let router = RedisRouter(configuration, separateRefresh: true)
        var delay = configuration.reconnectDelay
        var retryAt = ContinuousClock.now
        /// Per node: the subjects SUBSCRIBE was sent for on its connection.
        var active: [RedisNode: Set<String>] = [:]
        let (serverID, deliver) = locked { ($0.serverID, $0.deliver) }
        func drop(_ node: RedisNode, _ what: String) {
            if let c = router.open[node] {
                failed("subscriber: \(node): \(what): " + String(cString: chr_error(c)))
            } else {
                failed("subscriber: \(node): \(what)")
            }
            router.drop(node)
            let gone = active.removeValue(forKey: node) ?? []
            locked { s in
                s.subscriberUp = false
                s.confirmed.subtract(gone)
            }
            router.needsRefresh = true
            retryAt = .now + delay
            delay = min(delay * 2, configuration.maxReconnectDelay)
        }
        defer {
            router.closeAll()
            locked { $0.subscriberUp = false }
        }
        while !isStopping {
            let now = ContinuousClock.now
            if router.needsRefresh, now >= retryAt {
                if let error = router.refresh() {
                    failed("subscriber: " + error)
                    router.closeAll()
                    active = [:]
                    locked { s in
                        s.subscriberUp = false
                        s.confirmed = []
                    }
                    retryAt = .now + delay
                    delay = min(delay * 2, configuration.maxReconnectDelay)
                } else if sharded {
                    // The map may have changed: subscriptions on the wrong node go.
                    for (node, subjects) in active {
                        let misplaced = subjects.filter { router.node(for: $0) != node }
                        guard !misplaced.isEmpty else { continue }
                        active[node]?.subtract(misplaced)
                        locked { $0.confirmed.subtract(misplaced) }
                    }
                }
            }
            // Bring the subscriptions in line with what the service wants
            // (after a reconnect: everything, which is the resubscribe).
            if !router.needsRefresh {
                let wanted = locked { $0.wanted }
                var byNode: [RedisNode: Set<String>] = [:]
                for subject in wanted { byNode[sharded ? router.node(for: subject) : router.seed, default: []].insert(subject) }
                var allUp = true
                for node in Set(byNode.keys).union(active.keys) {
                    let want = byNode[node] ?? []
                    let have = active[node] ?? []
                    let add = want.subtracting(have)
                    let remove = have.subtracting(want)
                    guard !add.isEmpty || !remove.isEmpty else { continue }
                    let (c, error) = router.connection(to: node)
                    guard let c else {
                        failed("subscriber: " + error)
                        allUp = false
                        router.needsRefresh = true
                        retryAt = .now + delay
                        delay = min(delay * 2, configuration.maxReconnectDelay)
                        continue
                    }
                    var ok = true
                    // Sharded: one subject per command (a command's channels must share a slot).
                    let adds = sharded ? add.map { [$0] } : [Array(add)]
                    let removes = sharded ? remove.map { [$0] } : [Array(remove)]
                    for subjects in adds where ok && !subjects.isEmpty {
                        ok = Self.append(c, [Array(subscribe.utf8)] + subjects.map { Array($0.utf8) }) == 0
                    }
                    for subjects in removes where ok && !subjects.isEmpty {
                        ok = Self.append(c, [Array(unsubscribe.utf8)] + subjects.map { Array($0.utf8) }) == 0
                    }
                    guard ok, chr_flush(c) == 0 else {
                        drop(node, "subscribe")
                        allUp = false
                        continue
                    }
                    active[node] = want
                    if want.isEmpty, remove.isEmpty { active[node] = nil }
                }
                if allUp, !router.needsRefresh {
                    let wasUp = locked { s -> Bool in
                        defer { s.subscriberUp = true }
                        return s.subscriberUp
                    }
                    if !wasUp {
                        delay = configuration.reconnectDelay
                        logger.info("redis backplane connected", metadata: ["endpoint": "\(configuration.endpoint)"])
                    }
                }
            }

            let links = router.open.filter { active[$0.key] != nil }.map { ($0.key, $0.value) }
            var fds = links.map { pollfd(fd: chr_fd($0.1), events: Int16(POLLIN), revents: 0) }
            fds.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            let timeout = router.needsRefresh ? max(1, min(1000, Self.milliseconds(retryAt - .now))) : 1000
            let n = poll(&fds, nfds_t(fds.count), Int32(timeout))
            if n < 0 && errno != EINTR {
                for (node, _) in links { drop(node, "poll") }
                continue
            }
            if fds[links.count].revents != 0 {
                chr_waker_drain(wakeFD)
            }
            for (index, (node, c)) in links.enumerated() where fds[index].revents != 0 {
                guard chr_fill(c) == 0 else {
                    drop(node, "read")
                    continue
                }
                var push = chr_push()
                while true {
                    let rc = chr_next_push(c, &push)
                    if rc == 0 { break }
                    guard rc > 0 else {
                        drop(node, "protocol")
                        break
                    }
                    if push.kind == Int32(CHR_PUSH_ERROR.rawValue) {
                        let text = String(decoding: UnsafeRawBufferPointer(start: push.payload, count: push.payload_len),
                                          as: UTF8.self)
                        // A subscribe sent to a node that no longer owns the slot: subscribe again
                        // where MOVED says it lives (after an ASK: read the map again).
                        if let slot = router.redirect(text) {
                            active[node] = active[node]?.filter { RedisRouter.slot($0) != slot }
                        } else if RedisRouter.isRedirect(text) {
                            router.needsRefresh = true
                            active[node] = []
                        } else {
                            logger.warning("redis backplane: subscribe refused", metadata: ["node": "\(node)", "error": "\(text)"])
                        }
                        continue
                    }
                    guard let subjectPointer = push.subject else { continue }
                    let subject = String(decoding: UnsafeRawBufferPointer(start: subjectPointer, count: push.subject_len),
                                         as: UTF8.self)
                    switch push.kind {
                    case Int32(CHR_PUSH_SUBSCRIBE.rawValue):
                        locked { _ = $0.confirmed.insert(subject) }
                    case Int32(CHR_PUSH_UNSUBSCRIBE.rawValue):
                        locked { _ = $0.confirmed.remove(subject) }
                        // Unasked (its slot migrated to another node): subscribe again where it lives now.
                        if active[node]?.contains(subject) == true {
                            active[node]?.remove(subject)
                            if sharded { router.needsRefresh = true }
                        }
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
}

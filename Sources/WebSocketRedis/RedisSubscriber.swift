import CHiredis
import Foundation
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// The subscriber thread: keeps each node's subscriptions in line with the
/// subjects the service wants (all of them again after a reconnect), follows
/// slot moves, and hands each message from another server to `deliver`.
extension RedisBackplane {
    func runSubscriber() {
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
                        ok = RedisConnection.append(c, [Array(subscribe.utf8)] + subjects.map { Array($0.utf8) }) == 0
                    }
                    for subjects in removes where ok && !subjects.isEmpty {
                        ok = RedisConnection.append(c, [Array(unsubscribe.utf8)] + subjects.map { Array($0.utf8) }) == 0
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
                        confirmed(subject)
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
                        // Our own copy, back from Redis: the local members had it already
                        // (but for a history message, which every server delivers from here).
                        if case .history = message.target {} else if message.origin == serverID { continue }
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

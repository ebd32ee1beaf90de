import CHiredis
import Foundation
import WebSocketService

/// What the publisher thread sends: a publish, or a write to a channel's
/// history (RedisHistory's script, which publishes too).
struct Outgoing {
    var subject: String
    var payload: [UInt8]
    var history: HistoryWrite? = nil
    var attempts = 0
    /// EVAL with the whole script: Redis answered NOSCRIPT to EVALSHA.
    var fullScript = false
    /// DEL of the history's stream (`restartHistory`).
    var deletesStream = false
}

/// The publisher thread: drains the bounded queue, pipelining each batch to
/// the node that owns each subject, and reconnects with backoff when a
/// connection breaks (what was in flight is counted as not propagated). It
/// also reads the followed channels' histories (`reads`).
extension RedisBackplane {
    typealias Publish = Outgoing

    func runPublisher() {
        let sharded = configuration.pubSub == .sharded
        let publishCommand = sharded ? "SPUBLISH" : "PUBLISH"
        let command = Array(publishCommand.utf8)
        let router = RedisRouter(configuration)
        let hooks = locked { $0.historyHooks }
        /// Where an item goes: a history's stream lives on its key's node in either mode.
        func node(for item: Publish) -> RedisNode {
            sharded || item.history != nil || item.deletesStream ? router.node(for: item.subject) : router.seed
        }
        func arguments(_ item: Publish) -> [[UInt8]] {
            if item.deletesStream { return [Array("DEL".utf8), Array(item.subject.utf8)] }
            guard let write = item.history else { return [command, Array(item.subject.utf8), item.payload] }
            return RedisHistory.writeCommand(write, subject: item.subject, full: item.fullScript, publish: publishCommand)
        }
        /// Counted as not propagated; a history write that surely did not run
        /// reaches the local members without an offset. One whose answer never
        /// came (`unsure`) may have run, and then comes back through the
        /// subscription or the next read: it is only counted, never delivered twice.
        func lose(_ items: some Sequence<Publish>, unsure: Bool = false) {
            var count = 0
            for item in items {
                count += 1
                if let write = item.history, !unsure { hooks.lost(write) }
            }
            notPropagated.wrappingAdd(UInt64(count), ordering: .relaxed)
        }
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
                    let node = node(for: item)
                    guard let c = router.connection(to: node).connection else { continue }
                    _ = RedisConnection.append(c, arguments(item))
                    used.insert(node)
                }
                for node in used { if let c = router.open[node] { _ = chr_flush(c) } }
            }
            router.closeAll()
            locked { $0.publisherUp = false }
        }
        /// Counts the queue as not propagated and marks the publisher down.
        func down(_ reason: String, lost: [Publish]) {
            let queued = locked { s -> [Publish] in
                s.publisherUp = false
                defer { s.queue.removeAll() }
                return s.queue
            }
            lose(lost + queued)
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
            let readsDue = !shared.reads.isEmpty && shared.readsNotBefore <= Date()
            if shared.queue.isEmpty, !readsDue, !shared.stopping {
                let idle = Date(timeIntervalSinceNow: 1)
                _ = condition.wait(until: shared.reads.isEmpty ? idle : min(idle, shared.readsNotBefore))
            }
            let batch = shared.queue
            shared.queue.removeAll(keepingCapacity: true)
            condition.unlock()
            defer { readHistories(router, hooks) }
            // Redis sends nothing unasked on these connections, so a readable
            // socket means it closed (a restart while we were idle): reconnect
            // now rather than lose the batch to a dead socket.
            let closed = router.open.filter { RedisConnection.hasClosed($0.value) }.map(\.key)
            if !closed.isEmpty {
                for node in closed { router.drop(node) }
                if let error = router.refresh() {
                    down(error, lost: batch)
                    continue
                }
            }
            guard !batch.isEmpty else { continue }
            // Pipelined: every node gets its publishes in one write, then the answers are read.
            var order: [RedisNode] = []
            var groups: [RedisNode: [Publish]] = [:]
            for item in batch {
                let node = node(for: item)
                if groups[node] == nil { order.append(node) }
                groups[node, default: []].append(item)
            }
            var sent = 0
            var lost: [Publish] = []
            var unsure: [Publish] = []
            var retry: [Publish] = []
            var broken: String?
            var pending: [(RedisNode, OpaquePointer, [Publish])] = []
            for node in order {
                let items = groups[node]!
                guard let c = router.connection(to: node).connection,
                      items.allSatisfy({ RedisConnection.append(c, arguments($0)) == 0 }) else {
                    lost += items
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
                        var offset: Int64 = 0
                        if let write = item.history, chr_reply_integer(c, &offset) == 1, offset > 0 {
                            hooks.written(write, UInt64(offset))
                        }
                    } else if rc == 1, RedisRouter.isRedirect(String(cString: chr_error(c))), item.attempts < 3 {
                        // The slot moved: publish where it lives now (MOVED says where; after an ASK, read the map).
                        var again = item
                        again.attempts += 1
                        retry.append(again)
                        if router.redirect(String(cString: chr_error(c))) == nil { router.needsRefresh = true }
                    } else if rc == 1, RedisHistory.isNoScript(String(cString: chr_error(c))), item.attempts < 3 {
                        // This node has not seen the script yet: once with its text, then by its hash.
                        var again = item
                        again.attempts += 1
                        again.fullScript = true
                        retry.append(again)
                    } else if rc == 1 {
                        lost.append(item)
                        logger.warning("redis backplane: publish refused", metadata: [
                            "node": "\(node)", "error": "\(String(cString: chr_error(c)))"])
                    } else {
                        // An answer that never came: the PUBLISH may or may not have gone out.
                        unsure += items[index...]
                        broken = "\(node): " + String(cString: chr_error(c))
                        router.drop(node)
                        break
                    }
                }
            }
            published.wrappingAdd(UInt64(sent), ordering: .relaxed)
            lose(unsure, unsure: true)
            if let broken {
                down(broken, lost: lost + retry)
                continue
            }
            lose(lost)
            if !retry.isEmpty {
                // Ahead of what came since, so each channel keeps its order.
                if router.needsRefresh, let error = router.refresh() {
                    down(error, lost: retry)
                } else {
                    locked { $0.queue.insert(contentsOf: retry, at: 0) }
                }
            }
        }
    }
}

extension RedisBackplane {
    /// Reads the histories of the followed channels Redis confirmed since
    /// the last pass, each with one script call on its key's node; what fails
    /// is read again after a backoff (`readsNotBefore`).
    func readHistories(_ router: RedisRouter, _ hooks: BackplaneHistoryHooks) {
        let subjects = locked { s -> [(String, Configuration.History)] in
            guard s.readsNotBefore <= Date() else { return [] }
            defer { s.reads.removeAll() }
            return s.reads.compactMap { subject in s.followed[subject].map { (subject, $0) } }
        }
        guard !subjects.isEmpty, !router.needsRefresh else {
            if !subjects.isEmpty { locked { $0.reads += subjects.map(\.0) } }
            return
        }
        var failed: [String] = []
        for (subject, limits) in subjects {
            let channel = String(subject.dropFirst(channelPrefix.count))
            let node = router.node(for: subject)
            guard let c = router.connection(to: node).connection else {
                failed.append(subject)
                router.needsRefresh = true
                continue
            }
            var rc = RedisConnection.append(c, RedisHistory.readCommand(subject: subject, limits: limits, full: false)) == 0
                ? chr_reply(c) : -1
            if rc == 1, RedisHistory.isNoScript(String(cString: chr_error(c))) {
                rc = RedisConnection.append(c, RedisHistory.readCommand(subject: subject, limits: limits, full: true)) == 0
                    ? chr_reply(c) : -1
            }
            if rc == 1, RedisRouter.isRedirect(String(cString: chr_error(c))) {
                if router.redirect(String(cString: chr_error(c))) == nil { router.needsRefresh = true }
                failed.append(subject)
                continue
            }
            guard rc == 0 else {
                logger.warning("redis backplane: history read failed", metadata: [
                    "channel": "\(channel)", "error": "\(String(cString: chr_error(c)))"])
                // Read again after a backoff: a broken connection once reconnected, and a
                // refusal (LOADING, OOM, CLUSTERDOWN…) once Redis may take it, or members wait for good.
                if rc < 0 {
                    router.drop(node)
                    router.needsRefresh = true
                }
                failed.append(subject)
                hooks.read(channel, nil)
                continue
            }
            var strings: [[UInt8]] = []
            for index in 0..<chr_reply_count(c) {
                var length = 0
                guard let pointer = chr_reply_string(c, index, &length) else { break }
                strings.append(Array(UnsafeRawBufferPointer(start: pointer, count: length)))
            }
            guard let read = RedisHistory.parseRead(strings) else {
                logger.warning("redis backplane: history read unreadable", metadata: ["channel": "\(channel)"])
                failed.append(subject)
                continue
            }
            hooks.read(channel, read)
        }
        // Still followed: read again after a backoff that doubles while reads fail.
        locked { s in
            if failed.isEmpty {
                s.readDelay = .zero
                return
            }
            s.readDelay = s.readDelay == .zero ? configuration.reconnectDelay : min(s.readDelay * 2, configuration.maxReconnectDelay)
            s.readsNotBefore = Date(timeIntervalSinceNow: Double(Self.milliseconds(s.readDelay)) / 1000)
            s.reads += failed.filter { s.followed[$0] != nil && !s.reads.contains($0) }
        }
    }
}

import CHiredis
import Foundation
import WebSocketService

/// The publisher thread: drains the bounded queue, pipelining each batch to
/// the node that owns each subject, and reconnects with backoff when a
/// connection breaks (what was in flight is counted as not propagated).
extension RedisBackplane {
    typealias Publish = (subject: String, payload: [UInt8], attempts: Int)

    func runPublisher() {
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
                    _ = RedisConnection.append(c, [command, Array(item.subject.utf8), item.payload])
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
            let closed = router.open.filter { RedisConnection.hasClosed($0.value) }.map(\.key)
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
                      items.allSatisfy({ RedisConnection.append(c, [command, Array($0.subject.utf8), $0.payload]) == 0 }) else {
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
}

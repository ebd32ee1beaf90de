/// One connection's messages waiting for its async handler or its session's
/// inbound sequence, and the engine reads it holds back. Filled on the loop
/// thread, emptied by the connection's task.
final class InboundQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var head = 0
        var waiter: CheckedContinuation<Element?, Never>?
        var paused = false
        var finished = false
        /// The most that ever waited (tests, and the admin page).
        var deepest = 0
        /// The handler's failures, as `Connection.warnings` for a sync handler.
        var warnings = WarningGate()
        var count: Int { items.count - head }
    }
    private let state = Locked(State())
    private let highWater: Int
    private let lowWater: Int

    init(highWater: Int) {
        self.highWater = max(1, highWater)
        self.lowWater = max(0, self.highWater / 2)
    }

    /// Loop thread. `pause` stops the engine reading the socket; it runs
    /// under the queue's lock, so it cannot cross the task's resume.
    func push(_ message: Element, pause: () -> Void) {
        let waiter = state.withLock { s -> CheckedContinuation<Element?, Never>? in
            guard !s.finished else { return nil }
            if let waiter = s.waiter {
                s.waiter = nil
                return waiter
            }
            s.items.append(message)
            s.deepest = max(s.deepest, s.count)
            if s.count > highWater && !s.paused {
                s.paused = true
                pause()
            }
            return nil
        }
        // Resumed after the unlock: the resume wakes a handler thread, which
        // (on the loop's core) can run at once and take this lock in its next
        // `next()`; inside the lock that was a futex wait and two more
        // context switches per message. Order holds: only this thread pushes,
        // and a later message finds no waiter and queues behind this one.
        waiter?.resume(returning: message)
    }

    /// The next message, waiting for one; nil once the connection closed.
    /// `resume` reads the socket again once the backlog is down to the low-water mark.
    func next(resume: () -> Void) async -> Element? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
            state.withLock { s in
                if s.count > 0 {
                    let message = s.items[s.head]
                    s.head += 1
                    if s.head == s.items.count {
                        s.items.removeAll(keepingCapacity: true)
                        s.head = 0
                    } else if s.head >= 1024 && s.head * 2 >= s.items.count {
                        s.items.removeFirst(s.head)
                        s.head = 0
                    }
                    if s.paused && s.count <= lowWater {
                        s.paused = false
                        resume()
                    }
                    continuation.resume(returning: message)
                } else if s.finished {
                    continuation.resume(returning: nil)
                } else {
                    s.waiter = continuation
                }
            }
        }
    }

    /// The connection closed: what waits is dropped, the task's wait ends.
    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<Element?, Never>? in
            s.finished = true
            s.items = []
            s.head = 0
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// `WarningGate.pass` for the connection's task.
    func passWarning(now: UInt64) -> Int? { state.withLock { $0.warnings.pass(now: now) } }

    var waiting: Int { state.withLock { $0.count } }
    var deepest: Int { state.withLock { $0.deepest } }
}

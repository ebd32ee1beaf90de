/// One connection's messages waiting for its async handler or its session's
/// inbound sequence, and the engine reads it holds back. Filled on the loop
/// thread, emptied by the connection's task.
///
/// A task that waits for a message is not woken by each push: the push says
/// a wake is due, the loop collects the queues that need one during its turn
/// (`LoopWakeups`) and wakes them all at the turn's end. A handler thread is
/// then woken once for a turn's worth of messages, on any number of
/// connections, instead of once per message (each wake is a futex call and
/// two context switches when it shares the loop's core).
final class InboundQueue<Element: Sendable>: Sendable, DeferredWake {
    private struct State {
        var items: [Element] = []
        var head = 0
        /// The connection's task, parked until there is something to take.
        var waiter: CheckedContinuation<Void, Never>?
        /// A wake is on its loop's list for this turn.
        var wakeScheduled = false
        var paused = false
        var finished = false
        /// The most that ever waited (tests, and the admin page).
        var deepest = 0
        /// Times the parked task was woken (tests: a turn's messages share one).
        var wakes = 0
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
    /// under the queue's lock, so it cannot cross the task's resume. True
    /// when the parked task must be woken at the end of this loop turn
    /// (once per turn: later pushes find the wake already scheduled).
    func push(_ message: Element, pause: () -> Void) -> Bool {
        state.withLock { s in
            guard !s.finished else { return false }
            s.items.append(message)
            s.deepest = max(s.deepest, s.count)
            if s.count > highWater && !s.paused {
                s.paused = true
                pause()
            }
            guard s.waiter != nil, !s.wakeScheduled else { return false }
            s.wakeScheduled = true
            return true
        }
    }

    /// The loop's turn ended: the parked task takes what was pushed.
    func wake() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.wakeScheduled = false
            defer { s.waiter = nil }
            if s.waiter != nil { s.wakes += 1 }
            return s.waiter
        }
        // After the unlock: the woken task takes this lock at once.
        waiter?.resume()
    }

    private enum Taken {
        case message(Element)
        case finished
        case none
    }

    /// The next message, waiting for one; nil once the connection closed.
    /// `resume` reads the socket again once the backlog is down to the low-water mark.
    func next(resume: () -> Void) async -> Element? {
        while true {
            switch take(resume: resume) {
            case .message(let message): return message
            case .finished: return nil
            case .none: break
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.count > 0 || s.finished { return true }
                    s.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }

    private func take(resume: () -> Void) -> Taken {
        state.withLock { s in
            guard s.count > 0 else { return s.finished ? .finished : .none }
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
            return .message(message)
        }
    }

    /// The connection closed: what waits is dropped, the task's wait ends.
    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            s.items = []
            s.head = 0
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// `WarningGate.pass` for the connection's task.
    func passWarning(now: UInt64) -> Int? { state.withLock { $0.warnings.pass(now: now) } }

    var waiting: Int { state.withLock { $0.count } }
    var deepest: Int { state.withLock { $0.deepest } }
    var wakes: Int { state.withLock { $0.wakes } }
    var isParked: Bool { state.withLock { $0.waiter != nil } }
}

/// A queue whose parked task its loop wakes at the end of a turn.
protocol DeferredWake: AnyObject, Sendable {
    func wake()
}

/// One loop's queues to wake at the end of its current turn. Only that loop's
/// thread touches it (pushes happen in on_message, the wakes in on_turn).
final class LoopWakeups: @unchecked Sendable {
    private var due: [any DeferredWake] = []

    func schedule(_ queue: any DeferredWake) { due.append(queue) }

    func wakeAll() {
        guard !due.isEmpty else { return }
        let queues = due
        due.removeAll(keepingCapacity: true)
        for queue in queues { queue.wake() }
    }
}

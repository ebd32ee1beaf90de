import Foundation

/// What the handlers here await in place of `Task.sleep`: a pause that a
/// thread of the suite's own ends. `Task.sleep` wakes its task through
/// Swift's global executor, the cooperative pool, which Swift Testing fills
/// with the suite's synchronous tests (one thread on a one-CPU machine): a
/// 1 ms sleep in a handler then woke seconds late and a client's 5 s read
/// timed out. The handlers stand for application code that awaits
/// something; when the pool lets it resume is Swift's, not what is tested
/// (README: timers are the exception to the handler threads' independence).
func pause(for duration: Duration) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        PauseTimer.shared.resume(continuation, at: ContinuousClock.now + duration)
    }
}

/// One thread that resumes each pause at its deadline, earliest first.
private final class PauseTimer: @unchecked Sendable {
    static let shared = PauseTimer()

    private let condition = NSCondition()
    // Under condition's lock; unordered (a few at a time).
    private var pending: [(deadline: ContinuousClock.Instant, continuation: CheckedContinuation<Void, Never>)] = []

    private init() {
        let thread = Thread { [self] in run() }
        thread.name = "test-pause-timer"
        thread.start()
    }

    func resume(_ continuation: CheckedContinuation<Void, Never>, at deadline: ContinuousClock.Instant) {
        condition.lock()
        pending.append((deadline, continuation))
        condition.unlock()
        condition.signal()
    }

    private func run() {
        while true {
            condition.lock()
            let now = ContinuousClock.now
            var due: [CheckedContinuation<Void, Never>] = []
            pending.removeAll { entry in
                guard entry.deadline <= now else { return false }
                due.append(entry.continuation)
                return true
            }
            if due.isEmpty {
                if let next = pending.map(\.deadline).min() {
                    let left = now.duration(to: next)
                    let seconds = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
                    _ = condition.wait(until: Date(timeIntervalSinceNow: seconds))
                } else {
                    condition.wait()
                }
            }
            condition.unlock()
            for continuation in due { continuation.resume() }
        }
    }
}

import Foundation

/// The threads that run `AsyncEnvelopeHandler` tasks (their executor preference, so
/// what they await resumes here too). Not Swift's shared cooperative pool:
/// that has one thread per core, and a server's other code that blocks one
/// (a synchronous client, a lock held across I/O) would otherwise stall every
/// connection's handler. Timers still go through that pool: `Task.sleep`
/// wakes its task from Swift's global executor, so a pool kept busy by
/// CPU-bound work delays a handler's sleep until one of its threads is free.
final class HandlerExecutor: TaskExecutor, @unchecked Sendable {
    // Jobs waiting for a thread, under `condition`'s lock.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var head = 0
    private var stopping = false
    private var running = 0

    init(threads: Int) {
        for n in 0..<max(1, threads) {
            let thread = Thread { [self] in work() }
            thread.name = "ws-handlers-\(n)"
            running += 1
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) { enqueue(UnownedJob(job)) }

    /// Also a retired `LoopExecutor`'s jobs.
    func enqueue(_ job: UnownedJob) {
        condition.lock()
        jobs.append(job)
        condition.unlock()
        // After the unlock: a woken thread then finds the lock free instead
        // of waking only to wait for it (a futex wait and wake, two context
        // switches, when it shares the enqueuer's core).
        condition.signal()
    }

    private static let marker = "WebSocketService.HandlerExecutor"

    /// Whether this thread is one of this executor's.
    var isCurrent: Bool {
        (Thread.current.threadDictionary[Self.marker] as? Int) == ObjectIdentifier(self).hashValue
    }

    private func work() {
        Thread.current.threadDictionary[Self.marker] = ObjectIdentifier(self).hashValue
        while true {
            condition.lock()
            while head == jobs.count && !stopping { condition.wait() }
            if head == jobs.count {
                running -= 1
                condition.broadcast()
                condition.unlock()
                return
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 4096 && head * 2 >= jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    /// Lets the threads finish what is queued and end; waits for them
    /// unless called on one of them (which cannot wait for itself).
    func shutdown() {
        let wait = !isCurrent
        condition.lock()
        stopping = true
        condition.broadcast()
        while wait && running > 0 { condition.wait() }
        condition.unlock()
    }
}

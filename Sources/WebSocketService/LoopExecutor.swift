import CWebSocket

/// Runs the tasks of one event loop's async connections on that loop's own
/// thread (`Configuration.AsyncExecution.eventLoops`), once a turn, after the
/// turn's input: a message that resumes a waiting task costs no thread hop,
/// and what the task writes is sent in the same turn, straight from the loop
/// (no inbox). With handler threads each message costs a futex wake and two
/// context switches, which the async echo's profile put at the top of its cost.
///
/// Jobs enqueued on the loop thread go on a list only that thread touches;
/// jobs from other threads (a timer, an actor's executor) go on a locked list
/// and wake the loop. Once the loop no longer turns (stopped, or died), every
/// job goes to `fallback`, the handler threads, so no task is left suspended.
final class LoopExecutor: TaskExecutor, @unchecked Sendable {
    private let server: OpaquePointer
    private let loop: UInt32
    private let fallback: @Sendable () -> HandlerExecutor

    /// Jobs enqueued on the loop thread. Only that thread touches it while
    /// the loop runs; `retire` takes what is left after the loops are joined.
    private var local: [UnownedJob] = []
    /// The list being run, swapped with `local` (keeps both allocations).
    private var running: [UnownedJob] = []
    /// Loop thread: `runTurn` is running (what it enqueues, it runs too).
    private var inTurn = false

    private struct Remote {
        var jobs: [UnownedJob] = []
        /// The loop turns no more: jobs go to `fallback` instead.
        var retired = false
    }
    private let remote = Locked(Remote())

    /// Jobs run in one turn at most, before the loop reads and writes again;
    /// more waiting wake the loop for another turn at once.
    static let jobsPerTurn = 1024

    init(server: OpaquePointer, loop: UInt32, fallback: @escaping @Sendable () -> HandlerExecutor) {
        self.server = server
        self.loop = loop
        self.fallback = fallback
    }

    private var onLoopThread: Bool { cws_server_current_loop(server) == Int32(loop) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if onLoopThread {
            local.append(job)
            // Enqueued outside on_turn (a message, a drain, a timer's close):
            // this turn's on_turn may be over already, so the loop must not
            // sleep before the next (a flag on the loop, no system call).
            if !inTurn && local.count == 1 { cws_server_turn_again(server) }
            return
        }
        let (first, retired) = remote.withLock { r -> (Bool, Bool) in
            if r.retired { return (false, true) }
            r.jobs.append(job)
            return (r.jobs.count == 1, false)
        }
        if retired {
            fallback().enqueue(job)
        } else if first && cws_server_wake_loop(server, loop) != 0 {
            // The loop turns no more (it died; a stop retires it later):
            // from here on the handler threads run this loop's tasks.
            retire()
        }
    }

    /// on_turn, on the loop thread: the jobs that came since the last turn,
    /// and those they enqueue, up to `jobsPerTurn`.
    func runTurn() {
        inTurn = true
        defer { inTurn = false }
        var ran = 0
        while ran < Self.jobsPerTurn {
            if local.isEmpty {
                remote.withLock { r in swap(&local, &r.jobs) }
                if local.isEmpty { return }
            }
            swap(&local, &running)
            for job in running { job.runSynchronously(on: asUnownedTaskExecutor()) }
            ran += running.count
            running.removeAll(keepingCapacity: true)
        }
        guard !local.isEmpty || !remote.withLock({ $0.jobs.isEmpty }) else { return }
        if cws_server_wake_loop(server, loop) == 0 {
            // More waits: another turn at once (the loop reads between them).
            cws_server_turn_again(server)
        } else {
            // The last turn of a loop that died: the rest goes to the handler
            // threads (this is the loop's thread, so `local` is ours to take).
            retire(takingLocal: true)
        }
    }

    /// The loop turns no more: what waits, and every later job, runs on the
    /// handler threads (started only if there is a job for them). Called once
    /// the loops are joined, or on the loop's thread in its last turn, both
    /// with `takingLocal`; or from `enqueue` on another thread when the loop
    /// died, which leaves `local` alone (the loop's last on_turn, after it
    /// closed its connections, ran what they queued; the stop takes the rest).
    func retire(takingLocal: Bool = false) {
        var jobs = remote.withLock { r -> [UnownedJob] in
            r.retired = true
            defer { r.jobs = [] }
            return r.jobs
        }
        if takingLocal {
            jobs += local
            local = []
        }
        guard !jobs.isEmpty else { return }
        let to = fallback()
        for job in jobs { to.enqueue(job) }
    }
}

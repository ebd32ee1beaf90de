#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import WebSocketService

/// Plain memory, changed only under a lock.
private final class Unguarded: @unchecked Sendable {
    var count = 0
    var values: [Int] = []
}

/// The Swift layer's locks under contention. Run by scripts/sanitize under
/// ThreadSanitizer, where any report fails: with Synchronization.Mutex in
/// place of these, the same loops give false race reports (see Locked.swift).
@Suite struct LockTests {
    static let threads = 4
    static let iterations = 20_000

    /// Four threads at once, each `iterations` times. Threads of their own:
    /// DispatchQueue.concurrentPerform on two cores can run every iteration
    /// on one thread, and then there is nothing to see.
    private func contend(_ body: @Sendable @escaping (Int) -> Void) {
        final class Work: Sendable {
            let body: @Sendable (Int) -> Void
            init(_ body: @Sendable @escaping (Int) -> Void) { self.body = body }
        }
        var threads: [pthread_t] = []
        for _ in 0..<Self.threads {
            var thread = pthread_t()
            let work = Unmanaged.passRetained(Work(body)).toOpaque()
            let rc = pthread_create(&thread, nil, { context in
                let work = Unmanaged<Work>.fromOpaque(context!).takeRetainedValue()
                for i in 0..<LockTests.iterations { work.body(i) }
                return nil
            }, work)
            precondition(rc == 0, "pthread_create: \(rc)")
            threads.append(thread)
        }
        for thread in threads { pthread_join(thread, nil) }
    }

    @Test func lockedValue() {
        let locked = Locked<[Int]>([])
        let total = Locked(0)
        contend { i in
            locked.withLock { $0.append(i); if $0.count > 64 { $0.removeAll() } }
            total.withLock { $0 += 1 }
        }
        #expect(total.withLock { $0 } == Self.threads * Self.iterations)
    }

    @Test func mutexOverOutsideState() {
        let mutex = PthreadMutex()
        let state = Unguarded()
        contend { i in
            mutex.withLock {
                state.count += 1
                if i % 100 == 0 { state.values.append(i) }
            }
        }
        #expect(state.count == Self.threads * Self.iterations)
        #expect(state.values.count == Self.threads * Self.iterations / 100)
    }

    /// Objects that share stripes: each always takes the same one.
    @Test func stripes() {
        let stripes = LockStripes(count: 4)
        let objects = (0..<16).map { _ in Unguarded() }
        contend { i in
            let object = objects[i % objects.count]
            stripes.withLock(for: object) { object.count += 1 }
        }
        #expect(objects.map(\.count).reduce(0, +) == Self.threads * Self.iterations)
    }
}

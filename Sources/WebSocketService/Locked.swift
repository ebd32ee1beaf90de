#if canImport(Glibc)
import Glibc
#endif

// The Swift layer's one lock is a pthread mutex (`PthreadMutex`, and `Locked`
// for a value behind one), not Synchronization.Mutex, so that a
// ThreadSanitizer run of the service tests means something. On Linux a
// contended Mutex is taken and handed over inside the kernel (FUTEX_LOCK_PI
// writes the owner into the futex word), where TSan sees no acquire or
// release; pthread_mutex_lock/unlock are intercepted by TSan. Checked on
// Swift 6.3.1 with scripts/tsan-lock-experiment: four threads updating plain
// memory under the lock, 800,000 times in all, give false "data race" and
// "Swift access race" reports with Mutex and none with Locked (unless the
// value is Void, see `Locked`). Where a thread must wait for a condition
// (the Redis backplane) NSCondition does the same job: a pthread mutex and
// condition variable underneath, which TSan also sees.

/// A pthread mutex in an allocation of its own (it must not move once used),
/// for state kept outside the lock.
final class PthreadMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// `body` must not take the same lock again.
    func withLock<Result>(_ body: () throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A value behind a `PthreadMutex`. Not for a Void value: TSan reports the
/// exclusive access to a zero-sized stored property of a generic class as a
/// race with any thread reading the object's header (the experiment's
/// Locked<Void> case); use a `PthreadMutex` then.
final class Locked<Value>: @unchecked Sendable {
    private let mutex = PthreadMutex()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    /// `body` must not call back into the same lock.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try mutex.withLock { try body(&value) }
    }
}

/// A fixed set of locks shared by many small objects that each need one now
/// and then: a lock of its own would cost every idle connection a 40-byte
/// pthread_mutex_t in a separate allocation (about 80 bytes with the
/// object around it). An object always takes the same stripe, chosen by its
/// address; bodies must not take a second stripe.
struct LockStripes: Sendable {
    private let locks: [PthreadMutex]

    init(count: Int) {
        locks = (0..<count).map { _ in PthreadMutex() }
    }

    func withLock<Result>(for object: AnyObject, _ body: () throws -> Result) rethrows -> Result {
        // Heap objects are 16-byte aligned: the low bits say nothing.
        let address = UInt(bitPattern: ObjectIdentifier(object))
        return try locks[Int((address >> 4) % UInt(locks.count))].withLock(body)
    }
}

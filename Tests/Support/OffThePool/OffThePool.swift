import Foundation

/// Runs seconds of computation or blocking I/O on a thread of its own and
/// awaits its result. Swift Testing runs a test on the cooperative pool (two
/// threads on two cores); a test that keeps a thread of it busy that long
/// holds back the others, and a `Task.sleep` anywhere in the process (a
/// handler's, in another test) wakes only when a thread of the pool is free.
/// Assertions stay in the test: the work returns what they check.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// The same for work that cannot fail.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

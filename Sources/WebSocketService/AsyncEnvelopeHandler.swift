import Logging

/// The application's code for an envelope endpoint, when it must wait (a
/// database, another service). A connection's messages are handled one at a
/// time, in the order they came, by a task of the connection's own, which
/// is cancelled when the connection closes; the tasks run on threads of the
/// service's own (`Configuration.handlerThreads`). While more than
/// `Limits.maxQueuedMessages` wait, the server stops reading the socket (TCP
/// holds the client back) and reads again once half of them are done.
///
/// A thrown error is sent to that client as an `error` envelope, as for
/// `EnvelopeHandler`; the connection stays open.
public protocol AsyncEnvelopeHandler: Sendable {
    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws
}

/// An async handler from a closure.
public struct AsyncEnvelopeHandlerFunction: AsyncEnvelopeHandler {
    private let body: @Sendable (WebSocketServer, Connection, Message, Logger) async throws -> Void

    public init(_ body: @escaping @Sendable (_ service: WebSocketServer, _ connection: Connection, _ message: Message,
                                             _ logger: Logger) async throws -> Void) {
        self.body = body
    }

    public func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) async throws {
        try await body(service, connection, message, logger)
    }
}

/// One connection's messages waiting for its async handler, and the engine
/// reads it holds back. Filled on the loop thread, emptied by the
/// connection's task.
final class InboundQueue: Sendable {
    private struct State {
        var items: [Message] = []
        var head = 0
        var waiter: CheckedContinuation<Message?, Never>?
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
    func push(_ message: Message, pause: () -> Void) {
        state.withLock { s in
            guard !s.finished else { return }
            if let waiter = s.waiter {
                s.waiter = nil
                waiter.resume(returning: message)
                return
            }
            s.items.append(message)
            s.deepest = max(s.deepest, s.count)
            if s.count > highWater && !s.paused {
                s.paused = true
                pause()
            }
        }
    }

    /// The next message, waiting for one; nil once the connection closed.
    /// `resume` reads the socket again once the backlog is down to the low-water mark.
    func next(resume: () -> Void) async -> Message? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Message?, Never>) in
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
        let waiter = state.withLock { s -> CheckedContinuation<Message?, Never>? in
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

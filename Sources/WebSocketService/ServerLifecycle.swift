import CWebSocket
import Foundation
import ServiceLifecycle

/// The server as a ServiceLifecycle service: put it in a `ServiceGroup`
/// and the group's graceful shutdown (SIGTERM, say) closes every client with
/// 1001 and waits for the close handshakes before `run()` returns.
extension WebSocketServer: Service {
    /// Starts the loops (unless `start()` already did) and serves until
    /// the group shuts down gracefully or the task is cancelled; then stops
    /// gracefully within `Configuration.shutdownTimeout` and returns once
    /// that is over. Cancellation ends it the same way, not with an error:
    /// the clients are owed their 1001 either way. A stop begun elsewhere
    /// (`stop()` from a handler) ends it too, so the group hears of it.
    public func run() async throws {
        let needsStart = state.withLock { !$0.startClaimed && !$0.stopped }
        if needsStart { try start() }
        await withTaskCancellationOrGracefulShutdownHandler {
            await waitForStop(beginning: nil)
        } onCancelOrGracefulShutdown: { [self] in
            logger.info("shutting down", metadata: ["connections": "\(status().connections)"])
            // The handler runs on whatever thread triggered the shutdown: begin the stop elsewhere.
            Thread.detachNewThread { [self] in stop(timeout: configuration.shutdownTimeout) }
        }
    }

    /// `stop(timeout:)` for async code: the same graceful stop, but the wait
    /// for the loops happens on a thread of its own, so no thread of the
    /// cooperative pool blocks (the close handshakes may take the whole
    /// timeout; the pool has one thread per core). Returns once the stop is
    /// over, whoever began it; at once if it is over already.
    public func shutdown(timeout: Duration = .seconds(3)) async {
        await waitForStop(beginning: timeout)
    }

    /// Suspends until the stop is over; with a timeout, begins it too.
    private func waitForStop(beginning timeout: Duration?) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let over = state.withLock { s in
                if s.stopFinished { return true }
                s.stopWaiters.append(done)
                return false
            }
            if over {
                done.resume()
                return
            }
            // Begins the stop and waits for the loops there; when another
            // caller began it, returns at once and that caller's thread resumes `done`.
            if let timeout { Thread.detachNewThread { [self] in stop(timeout: timeout) } }
        }
    }
}

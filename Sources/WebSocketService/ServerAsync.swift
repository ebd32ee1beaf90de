import CWebSocket
import Logging

extension WebSocketServer {
    /// The task of one `AsyncEnvelopeHandler` connection: its messages, one at a
    /// time, in order, until it closes (the task is then cancelled, and what
    /// still waits is dropped).
    func runAsync(_ handler: any AsyncEnvelopeHandler, _ connection: Connection, _ queue: InboundQueue<Message>) async {
        let engineID = connection.engineID
        while let message = await queue.next(resume: { _ = cws_resume_reading(server, engineID) }) {
            if Task.isCancelled { return }
            do {
                try await handler.handle(service: self, connection: connection, message: message, logger: connection.logger)
            } catch {
                if Task.isCancelled { return } // it closed while the handler waited
                let metadata: Logger.Metadata = ["cmd": "\(LogText.clip(message.cmd))", "error": "\(LogText.clip("\(error)"))"]
                connection.logger.debug("handler failed", metadata: metadata)
                if let suppressed = queue.passWarning(now: monotonicNanoseconds()), warningBudget.take(now: monotonicNanoseconds()) {
                    var metadata = metadata
                    if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
                    connection.logger.warning("handler failed", metadata: metadata)
                } else {
                    limitCounters.warningsSuppressed.wrappingAdd(1, ordering: .relaxed)
                }
                write(.error("\(error)"), to: connection)
            }
        }
    }
}

import Foundation
import Logging
import Synchronization

/// The admin tap's socket handler: a watcher only listens.
struct TapWatcher: RawHandler {
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {}
}

/// Copies traffic, as it happens, to the admin tap's watchers (sockets opened
/// by the tap page). Costs one atomic load per message while nobody watches.
/// Bounded: at most `maxWatchers` watchers, `eventsPerSecond` events (the
/// rest are counted as skipped and reported with the next event), and a
/// preview of at most `previewBytes` bytes per message.
final class TrafficTap: Sendable {
    static let maxWatchers = 4
    static let eventsPerSecond = 200.0
    static let previewBytes = 300

    private struct State {
        var watchers: [UUID: Connection] = [:]
        var tokens = TrafficTap.eventsPerSecond
        var refilled = ContinuousClock.now
        var skipped = 0
    }
    private let state = Locked(State())
    private let watcherCount = Atomic<Int>(0)

    var isWatched: Bool { watcherCount.load(ordering: .relaxed) > 0 }
    var watchers: Int { watcherCount.load(ordering: .relaxed) }

    func opened(_ connection: Connection) {
        guard case .raw(let handler) = connection.handler, handler is TapWatcher else { return }
        state.withLock { $0.watchers[connection.id] = connection }
        watcherCount.add(1, ordering: .relaxed)
    }

    func closed(_ connection: Connection) {
        guard isWatched else { return }
        let removed = state.withLock { $0.watchers.removeValue(forKey: connection.id) != nil }
        if removed { watcherCount.subtract(1, ordering: .relaxed) }
    }

    func received(_ data: UnsafeRawBufferPointer, opcode: UInt8, from connection: Connection, service: WebSocketServer) {
        publish(direction: "in", connection: connection, recipients: 1, data, opcode: opcode, service: service)
    }

    func sent(_ data: UnsafeRawBufferPointer, opcode: Opcode, to connection: Connection, service: WebSocketServer) {
        publish(direction: "out", connection: connection, recipients: 1, data, opcode: opcode.rawValue, service: service)
    }

    func fannedOut(_ bytes: [UInt8], opcode: Opcode = .text, recipients: Int, service: WebSocketServer) {
        bytes.withUnsafeBytes {
            publish(direction: "out", connection: nil, recipients: recipients, $0, opcode: opcode.rawValue, service: service)
        }
    }

    /// One event to every watcher, unless the connection is a watcher (its
    /// own traffic would feed itself) or the rate limit says skip.
    private func publish(direction: String, connection: Connection?, recipients: Int, _ data: UnsafeRawBufferPointer,
                         opcode: UInt8, service: WebSocketServer) {
        let decision = state.withLock { s -> (watchers: [Connection], skipped: Int)? in
            if let connection, s.watchers[connection.id] != nil { return nil }
            let now = ContinuousClock.now
            let elapsed = now - s.refilled
            s.refilled = now
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            s.tokens = min(Self.eventsPerSecond, s.tokens + seconds * Self.eventsPerSecond)
            guard s.tokens >= 1 else {
                s.skipped += 1
                return nil
            }
            s.tokens -= 1
            defer { s.skipped = 0 }
            return (Array(s.watchers.values), s.skipped)
        }
        guard let decision, !decision.watchers.isEmpty else { return }
        let event = Self.event(direction: direction, connection: connection, recipients: recipients, data, opcode: opcode,
                               skipped: decision.skipped)
        for watcher in decision.watchers {
            service.send(event, opcode: .text, to: watcher)
        }
    }

    /// `{"t":ms,"dir":"in"|"out","conn":uuid|null,"user":...,"to":n,"bytes":n,"binary":bool,"text":preview,"skipped":n}`
    static func event(direction: String, connection: Connection?, recipients: Int, _ data: UnsafeRawBufferPointer,
                      opcode: UInt8, skipped: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + min(data.count, previewBytes))
        out += Array(#"{"t":"#.utf8) + Array(String(Int(Date().timeIntervalSince1970 * 1000)).utf8)
        out += Array(#","dir":"#.utf8)
        JSONWriter.appendString(direction, to: &out)
        out += Array(#","conn":"#.utf8)
        if let connection {
            JSONWriter.appendString(connection.id.uuidString.lowercased(), to: &out)
            out += Array(#","user":"#.utf8)
            JSONWriter.appendString(connection.userID, to: &out)
        } else {
            out += Array("null".utf8)
        }
        out += Array(#","to":\#(recipients),"bytes":\#(data.count),"skipped":\#(skipped),"binary":"#.utf8)
        let binary = opcode != Opcode.text.rawValue
        out += Array((binary ? "true" : "false").utf8)
        if !binary {
            out += Array(#","text":"#.utf8)
            // Cut to the preview; a split character decodes as U+FFFD.
            let preview = String(decoding: UnsafeRawBufferPointer(rebasing: data.prefix(previewBytes)), as: UTF8.self)
            JSONWriter.appendString(preview + (data.count > previewBytes ? "…" : ""), to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}

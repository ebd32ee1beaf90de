import Foundation
import OffThePool
import Logging
import Synchronization
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// Both backends; a test on io_uring returns early, with the reason printed,
/// where the kernel (or a seccomp profile) does not allow it.
let backends: [Configuration.Backend] = [.epoll, .uring]

/// Where async connections' tasks run: handler threads, and the event loops.
let executions = Configuration.AsyncExecution.allCases

/// `count` bytes whose byte j is `byte(j % period)`: one period made by the
/// closure, then copied. A payload of megabytes made by calling a closure per
/// byte costs seconds in a debug build under ThreadSanitizer (the sanitize
/// step's pass of these tests), on a thread of Swift's two-thread pool or on
/// the loop thread that a handler runs on, while other tests wait for both.
func repeating(_ count: Int, period: Int, _ byte: (Int) -> UInt8) -> [UInt8] {
    guard count > 0 else { return [] }
    // Doubles: each append copies what is there (the slice shares the
    // buffer, so the append reallocates anyway; no reserve helps).
    var out = (0..<min(count, period)).map(byte)
    while out.count < count { out.append(contentsOf: out.prefix(count - out.count)) }
    return out
}

/// A log handler that keeps what it is given, so tests can check what was logged.
final class LogCapture: Sendable {
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    let entries = Locked<[Entry]>([])

    var logger: Logger {
        Logger(label: "test") { _ in EnvelopeHandler(capture: self) }
    }

    struct EnvelopeHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            capture.entries.withLock {
                $0.append(Entry(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
            }
        }
    }
}

/// A started service on 127.0.0.1, any free port, two loops; nil (with the
/// reason printed) when the backend is io_uring and the kernel refuses it.
func startService(_ backend: Configuration.Backend, routes: WebSocketRoutes, logger: Logger = LogCapture().logger,
                  configure: (inout Configuration) -> Void = { _ in }) throws -> WebSocketServer? {
    var configuration = Configuration(host: "127.0.0.1", port: 0, loops: 2, backend: backend)
    configuration.idleTimeout = .seconds(60)
    configure(&configuration)
    let service: WebSocketServer
    do {
        service = try WebSocketServer(routes: routes, configuration: configuration, logger: logger)
    } catch {
        let refused = backend == .uring && error.description.contains("io_uring unavailable")
        guard refused else { throw error }
        print("SKIPPED on io_uring: \(error)")
        return nil
    }
    try service.start()
    return service
}

/// Polls `condition` every millisecond until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

/// Lifts the open-files limit to its hard limit (the fan-out test needs
/// two descriptors per connection in one process).
func raiseFileLimit(to wanted: Int) -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    if limit.rlim_cur < rlim_t(wanted) {
        limit.rlim_cur = min(limit.rlim_max, rlim_t(wanted))
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return Int(limit.rlim_cur)
}

/// The handler most service tests use:
/// - echo: answers `echo` with the same param bytes
/// - whoami: answers `{id, userID, channels}`
/// - fail: throws `TestFailure("boom")`
/// - join / leave (param: channel name): answers `joined` / `left` with the Bool result
/// - close (param: code): closes this connection with that code
struct TestHandler: EnvelopeHandler {
    struct TestFailure: Error, CustomStringConvertible {
        var description: String
    }

    struct WhoAmI: Encodable {
        var id: String
        var userID: String
        var channels: [String]
    }

    func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
        switch message.cmd {
        case "echo":
            service.write(Envelope(cmd: "echo", param: message.param), to: connection)
        case "whoami":
            let me = WhoAmI(id: connection.id.uuidString.lowercased(), userID: connection.userID,
                            channels: connection.channels)
            service.write(Envelope(cmd: "whoami", param: try RawJSON(encoding: me)), to: connection)
        case "fail":
            throw TestFailure(description: "boom")
        case "join":
            let ok = service.join(connection, try message.param.decode(String.self))
            service.write(Envelope(cmd: "joined", param: RawJSON(ok)), to: connection)
        case "leave":
            let ok = service.leave(connection, try message.param.decode(String.self))
            service.write(Envelope(cmd: "left", param: RawJSON(ok)), to: connection)
        case "close":
            service.close(connection, code: CloseCode(rawValue: try message.param.decode(UInt16.self)), reason: "asked")
        default:
            throw TestFailure(description: "unknown command \(message.cmd)")
        }
    }
}

struct Echo: RawHandler {
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        service.send(message.bytes, opcode: message.opcode, to: connection)
    }
}

extension TestClient {
    /// The server's id for this client (a round trip, so the server has
    /// finished opening the connection when it returns).
    func whoami() throws -> (id: UUID, userID: String, channels: [String]) {
        try send(text: #"{"cmd":"whoami"}"#)
        let reply = try receiveEnvelope(cmd: "whoami")
        let param = reply["param"] as? [String: Any] ?? [:]
        guard let id = UUID(uuidString: param["id"] as? String ?? "") else { throw ClientError("no id in \(reply)") }
        return (id, param["userID"] as? String ?? "", param["channels"] as? [String] ?? [])
    }
}

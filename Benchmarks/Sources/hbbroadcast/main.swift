// hbbroadcast: the Hummingbird WebSocket (SwiftNIO) peer for the fan-out benchmark.
//
// Same semantics as the `say` command of wsdemo's chat: a connection to
// /ws?ch=NAME joins channel NAME; a text message
// {"channel": NAME?, "cmd": "say", "param": any JSON} is re-encoded once as
// {"from": connection id, "channel": NAME, "cmd": "say", "param": ...} and that
// one buffer is sent to every member of the channel, sender included. Anything
// else is answered with {"cmd":"error","param":{"message":...}}. (The chat's
// `online-update` announcements on join and leave are not reproduced: they
// happen before the measured window.)
//
// Written the way the Hummingbird examples do it: a router `ws` route, Codable
// envelopes, and one outbound task per connection fed by an AsyncStream, so a
// broadcast never waits on a slow member.
//
//   hbbroadcast [--host 127.0.0.1] [--port 0] [--threads 1]
//
// --port 0 picks a free port; the first line on stdout is
// `hbbroadcast on HOST:PORT (N threads)` once it listens.
import Foundation
import PeerOptions
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import Synchronization


/// Any JSON value: `param` passes through without a schema.
enum JSONValue: Codable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(Double.self) { self = .number(v) }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode([JSONValue].self) { self = .array(v) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let v): try c.encode(v)
        case .number(let v): try c.encode(v)
        case .string(let v): try c.encode(v)
        case .array(let v): try c.encode(v)
        case .object(let v): try c.encode(v)
        }
    }
}

/// What a client sends.
struct ClientEnvelope: Decodable {
    var channel: String?
    var cmd: String
    var param: JSONValue?
}

/// What members receive.
struct Said: Encodable {
    var from: String
    var channel: String
    var cmd: String
    var param: JSONValue
}

struct ErrorReply: Encodable {
    struct Param: Encodable { var message: String }
    var cmd = "error"
    var param: Param
}

/// Channel name -> its members' outbound mailboxes.
final class Channels: Sendable {
    typealias Mailbox = AsyncStream<WebSocketFrame>.Continuation
    private let members = Mutex<[String: [UUID: Mailbox]]>([:])

    func join(_ channel: String, _ id: UUID, _ mailbox: Mailbox) {
        members.withLock { $0[channel, default: [:]][id] = mailbox }
    }

    func leave(_ channel: String, _ id: UUID) {
        members.withLock { m in
            m[channel]?[id] = nil
            if m[channel]?.isEmpty == true { m[channel] = nil }
        }
    }

    /// One frame (one buffer, shared) to every member.
    func broadcast(_ frame: WebSocketFrame, to channel: String) {
        let boxes = members.withLock { $0[channel].map { Array($0.values) } ?? [] }
        for box in boxes { box.yield(frame) }
    }
}

let options = PeerOptions.parse(program: "hbbroadcast")
var logger = Logger(label: "hbbroadcast")
logger.logLevel = .warning

let maxSize = 1 << 20
let channels = Channels()
let router = Router(context: BasicWebSocketRequestContext.self)
router.ws("/ws") { inbound, outbound, context in
    let channel = context.request.uri.queryParameters["ch"].map(String.init) ?? ""
    guard !channel.isEmpty else { return }
    let id = UUID()
    let from = id.uuidString.lowercased()
    let (stream, mailbox) = AsyncStream.makeStream(of: WebSocketFrame.self)
    channels.join(channel, id, mailbox)
    defer { channels.leave(channel, id) }
    let decoder = JSONDecoder()
    let encoder = JSONEncoder()
    func textFrame(_ data: Data) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: data))
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            for await frame in stream { try await outbound.write(.custom(frame)) }
        }
        for try await message in inbound.messages(maxSize: maxSize) {
            guard case .text(let text) = message else { continue }
            do {
                let request = try decoder.decode(ClientEnvelope.self, from: Data(text.utf8))
                guard request.cmd == "say" else {
                    mailbox.yield(textFrame(try encoder.encode(ErrorReply(param: .init(message: "unknown command \(request.cmd)")))))
                    continue
                }
                guard request.channel == nil || request.channel == channel else {
                    mailbox.yield(textFrame(try encoder.encode(ErrorReply(param: .init(message: "not a member of \(request.channel!)")))))
                    continue
                }
                let said = Said(from: from, channel: channel, cmd: "say", param: request.param ?? .null)
                channels.broadcast(textFrame(try encoder.encode(said)), to: channel)
            } catch {
                mailbox.yield(textFrame(try encoder.encode(ErrorReply(param: .init(message: "bad JSON")))))
            }
        }
        mailbox.finish()
        group.cancelAll()
    }
}

let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
let app = Application(
    router: Router(),
    server: .http1WebSocketUpgrade(
        webSocketRouter: router,
        configuration: .init(ws: .init(maxFrameSize: maxSize, validateUTF8: true))
    ),
    configuration: .init(address: .hostname(options.host, port: options.port), serverName: "hbbroadcast"),
    onServerRunning: { channel in
        let o = options
        let port = channel.localAddress?.port ?? o.port
        let banner = "hbbroadcast on \(o.host):\(port) (\(o.threads) thread\(o.threads == 1 ? "" : "s"))\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
    },
    eventLoopGroupProvider: .shared(group),
    logger: logger
)
try await app.runService()

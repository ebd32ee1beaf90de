import Logging
import WebSocketService

/// The chat's commands:
/// - `hello`: answers `hello` with `{id, userID, channels}`;
/// - `say` (param: any JSON, the page sends `{name, text}`): broadcast to the
///   channel named in the envelope (default: the first joined), sender included;
/// - `join` / `leave` (param: `{"channel": name}`).
struct ChatHandler: Handler {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    struct ChannelParam: Decodable {
        var channel: String
    }

    struct Hello: Encodable {
        var id: String
        var userID: String
        var channels: [String]
    }

    func handle(service: Service, connection: Connection, message: Message, logger: Logger) throws {
        switch message.cmd {
        case "hello":
            let hello = Hello(id: connection.id.uuidString.lowercased(), userID: connection.userID,
                              channels: connection.channels)
            service.write(Envelope(cmd: "hello", param: try RawJSON(encoding: hello)), to: connection)
        case "say":
            guard let channel = message.channel ?? connection.channels.first else {
                throw Failure(description: "join a channel first")
            }
            guard connection.channels.contains(channel) else {
                throw Failure(description: "not a member of \(channel)")
            }
            service.writeChannel(cmd: "say", param: message.param, channel: channel, from: connection.id)
        case "join":
            let channel = try message.param.decode(ChannelParam.self).channel
            guard !channel.isEmpty else { throw Failure(description: "empty channel name") }
            service.join(connection, channel)
        case "leave":
            service.leave(connection, try message.param.decode(ChannelParam.self).channel)
        default:
            throw Failure(description: "unknown command \(message.cmd)")
        }
    }
}

/// Echo: every text and binary message back, unchanged.
struct EchoHandler: RawHandler {
    func handle(service: Service, connection: Connection, message: RawMessage, logger: Logger) {
        service.send(message.bytes, opcode: message.opcode, to: connection)
    }
}

import Foundation
import WebSocketService

/// The bytes of a `BackplaneMessage` on a Redis subject: one ASCII header
/// line, then the envelope as is (so the receiver frames it without
/// re-encoding). The channel name travels in the subject, not here.
///
///     <origin uuid> c[ <except uuid>]\n<envelope>
///     <origin uuid> a\n<envelope>
///     <origin uuid> u <connection uuid>\n<envelope>
///     <origin uuid> h <epoch> <offset>[ <except uuid>]\n<envelope>
///     <origin uuid> r t|b[ <except uuid>]\n<bytes>   (raw: text or binary; the channel's subject or "all")
///
/// The last, a history message, is written by RedisHistory's script, not here.
enum BackplaneWire {
    static func encode(_ message: BackplaneMessage) -> [UInt8] {
        var header = message.origin.uuidString
        switch message.target {
        case .channel(_, let except):
            header += except.map { " c \($0.uuidString)" } ?? " c"
        case .all:
            header += " a"
        case .connection(let id):
            header += " u \(id.uuidString)"
        case .history(_, let epoch, let offset, let except):
            header += " h \(epoch) \(offset)" + (except.map { " \($0.uuidString)" } ?? "")
        case .raw(_, let except, let opcode):
            header += (opcode == Opcode.text.rawValue ? " r t" : " r b") + (except.map { " \($0.uuidString)" } ?? "")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(header.utf8.count + 1 + message.envelope.count)
        bytes.append(contentsOf: header.utf8)
        bytes.append(UInt8(ascii: "\n"))
        bytes.append(contentsOf: message.envelope)
        return bytes
    }

    /// nil for anything malformed (a foreign publisher on our subjects).
    static func decode(_ bytes: UnsafeRawBufferPointer, channel: String?) -> BackplaneMessage? {
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")), newline <= 160 else { return nil }
        let fields = String(decoding: bytes[..<newline], as: UTF8.self).split(separator: " ")
        guard fields.count >= 2, let origin = UUID(uuidString: String(fields[0])) else { return nil }
        let third = fields.count > 2 ? UUID(uuidString: String(fields[2])) : nil
        let target: BackplaneMessage.Target
        switch fields[1] {
        case "c":
            guard let channel, fields.count == 2 || third != nil else { return nil }
            target = .channel(channel, except: third)
        case "a":
            target = .all
        case "u":
            guard let third else { return nil }
            target = .connection(third)
        case "r":
            guard fields.count == 3 || fields.count == 4, fields[2] == "t" || fields[2] == "b" else { return nil }
            var except: UUID?
            if fields.count == 4 {
                guard let id = UUID(uuidString: String(fields[3])) else { return nil }
                except = id
            }
            target = .raw(channel: channel, except: except,
                          opcode: fields[2] == "t" ? Opcode.text.rawValue : Opcode.binary.rawValue)
        case "h":
            guard let channel, fields.count == 4 || fields.count == 5, let offset = UInt64(fields[3]) else { return nil }
            var except: UUID?
            if fields.count == 5 {
                guard let id = UUID(uuidString: String(fields[4])) else { return nil }
                except = id
            }
            target = .history(channel, epoch: String(fields[2]), offset: offset, except: except)
        default:
            return nil
        }
        return BackplaneMessage(origin: origin, target: target, envelope: Array(bytes[(newline + 1)...]))
    }
}

import CWebSocket
import Foundation

/// Broadcasts below the envelope: raw text or binary to a channel or to
/// every connection, framed once whatever the count, for raw endpoints'
/// connections as well as envelope ones (`writeChannel(cmd:...)` and
/// `writeAll(cmd:...)` send envelopes to envelope endpoints only).
extension WebSocketServer {
    /// Sends `bytes` as one text or binary message to every member of
    /// `channel` but `except`, framed once; with a distributed backplane the
    /// other servers' members get it too. Text must be UTF-8: invalid text,
    /// or an opcode other than text and binary, sends nothing. Not kept in a
    /// channel's history (which keeps envelopes); on a channel whose history
    /// a cluster keeps in Redis, an envelope written just before reaches the
    /// local members after its round trip to Redis, so this can arrive
    /// first. Returns the local recipients.
    @discardableResult
    public func writeChannel(raw bytes: [UInt8], opcode: Opcode = .binary, channel: String, except: UUID? = nil) -> Int {
        guard Self.isBroadcastable(bytes, opcode) else { return 0 }
        let count = writeRawLocally(bytes, opcode: opcode, channel: channel, except: except)
        if isDistributed {
            backplane.publish(BackplaneMessage(origin: serverID, target: .raw(channel: channel, except: except,
                                                                               opcode: opcode.rawValue), envelope: bytes))
        }
        return count
    }

    /// Sends `bytes` as one text or binary message to every open connection,
    /// raw and envelope endpoints alike, framed once; on every server with a
    /// distributed backplane. The same checks as `writeChannel(raw:...)`.
    /// Returns the local recipients.
    @discardableResult
    public func writeAll(raw bytes: [UInt8], opcode: Opcode = .binary) -> Int {
        guard Self.isBroadcastable(bytes, opcode) else { return 0 }
        let count = writeRawLocally(bytes, opcode: opcode, channel: nil, except: nil)
        if isDistributed {
            backplane.publish(BackplaneMessage(origin: serverID, target: .raw(channel: nil, except: nil, opcode: opcode.rawValue),
                                               envelope: bytes))
        }
        return count
    }

    /// To the channel's local members but `except`, or (channel nil) to every local connection.
    @discardableResult
    func writeRawLocally(_ bytes: [UInt8], opcode: Opcode, channel: String?, except: UUID?) -> Int {
        let ids = state.withLock { s -> [cws_conn_id] in
            guard let channel else {
                return s.byID.values.map { connection in
                    connection.countOut(bytes.count)
                    return connection.engineID
                }
            }
            guard let members = s.channels[channel] else { return [] }
            return Self.recipients(members, except: except.flatMap { s.byID[$0]?.engineID }, bytes: bytes.count)
        }
        fanOut(bytes, opcode: opcode, to: ids)
        return ids.count
    }

    static func isBroadcastable(_ bytes: [UInt8], _ opcode: Opcode) -> Bool {
        switch opcode {
        case .binary: return true
        case .text: return bytes.withUnsafeBytes { UTF8Validator.isValid($0) }
        default: return false
        }
    }
}

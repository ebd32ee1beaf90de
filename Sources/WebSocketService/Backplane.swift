import Foundation

/// Carries channel messages, `writeAll` and `writeConnection` between the
/// servers of a cluster. The service serves its local members itself, always
/// first and never waiting; the backplane only carries the copy for the other
/// servers, and hands back what they published.
///
/// Two implementations: `InProcessBackplane` (one server, the default: it
/// does nothing, and the service skips it on the hot path) and
/// `RedisBackplane` (Redis pub/sub, chosen by `Configuration.backplane`).
protocol Backplane: AnyObject, Sendable {
    /// False for the in-process one: the service then never builds a
    /// backplane message, takes no backplane lock and allocates nothing for it.
    var isDistributed: Bool { get }
    /// Starts its threads; `deliver` is called on a backplane thread with
    /// each message another server published to a subject this one wants;
    /// `localMembers` answers for one channel, or every channel given nil.
    func start(serverID: UUID, deliver: @escaping @Sendable (BackplaneMessage) -> Void,
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]])
    /// Stops and joins its threads. Idempotent; safe when never started.
    func stop()
    /// Wants the subject's messages (a channel whose first local member joined).
    func subscribe(channel: String)
    /// No longer wants them (its last local member left).
    func unsubscribe(channel: String)
    /// Hands a message to the other servers; never blocks. Counted as not
    /// propagated when the backplane is down or its bounded queue is full.
    func publish(_ message: BackplaneMessage)
    /// A local member joined or left the channel (cluster-wide presence).
    func membersChanged(channel: String)
    /// The channel's members on every live server.
    func clusterMembers(in channel: String) async throws -> [ClusterMember]
    var status: BackplaneStatus { get }
}

/// What travels between servers: an encoded envelope and where it goes.
struct BackplaneMessage: Sendable, Equatable {
    enum Target: Sendable, Equatable {
        /// The channel's members on every server, but `except`.
        case channel(String, except: UUID?)
        /// Every envelope connection on every server.
        case all
        /// One connection, wherever it lives.
        case connection(UUID)
    }

    var origin: UUID
    var target: Target
    /// The encoded envelope, delivered as one text message.
    var envelope: [UInt8]
}

/// The backplane's health, in `WebSocketServer.Status` and on the admin overview.
public struct BackplaneStatus: Sendable, Codable, Hashable {
    /// "in-process" or "redis".
    public var kind: String
    /// This server's id on the backplane (origin of what it publishes).
    public var serverID: String
    /// "redis://host:port/db" (never the password); nil in-process.
    public var endpoint: String?
    /// Both Redis connections (publisher, subscriber) are up; always true in-process.
    public var connected: Bool
    /// Subjects Redis has confirmed this server's subscription to.
    public var subscriptions: Int
    /// Messages handed to Redis (PUBLISH answered).
    public var published: UInt64
    /// Messages from other servers delivered here.
    public var received: UInt64
    /// Messages delivered locally only: Redis was unreachable or the
    /// bounded publish queue was full.
    public var notPropagated: UInt64
    /// Times a Redis connection was lost (or could not be opened).
    public var disconnects: UInt64
    public var lastError: String?
    /// Redis pub/sub mode: "classic" or "sharded"; nil in-process.
    public var pubSub: String? = nil
}

/// One server: nothing to carry.
final class InProcessBackplane: Backplane {
    var isDistributed: Bool { false }
    func start(serverID: UUID, deliver: @escaping @Sendable (BackplaneMessage) -> Void,
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]]) {}
    func stop() {}
    func subscribe(channel: String) {}
    func unsubscribe(channel: String) {}
    func publish(_ message: BackplaneMessage) {}
    func membersChanged(channel: String) {}
    func clusterMembers(in channel: String) async throws -> [ClusterMember] { [] }
    var status: BackplaneStatus {
        BackplaneStatus(kind: "in-process", serverID: "", endpoint: nil, connected: true, subscriptions: 0,
                        published: 0, received: 0, notPropagated: 0, disconnects: 0, lastError: nil)
    }
}

/// The bytes of a `BackplaneMessage` on a Redis subject: one ASCII header
/// line, then the envelope as is (so the receiver frames it without
/// re-encoding). The channel name travels in the subject, not here.
///
///     <origin uuid> c[ <except uuid>]\n<envelope>
///     <origin uuid> a\n<envelope>
///     <origin uuid> u <connection uuid>\n<envelope>
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
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")), newline <= 80 else { return nil }
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
        default:
            return nil
        }
        return BackplaneMessage(origin: origin, target: target, envelope: Array(bytes[(newline + 1)...]))
    }
}

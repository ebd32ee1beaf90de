import Foundation
import Logging
import Synchronization

/// Who is on the other end, as the endpoint's authentication hook decided.
public struct Profile: Sendable, Hashable, Codable {
    public var userID: String
    public var name: String
    public var attributes: [String: String]

    public init(userID: String, name: String = "", attributes: [String: String] = [:]) {
        self.userID = userID
        self.name = name
        self.attributes = attributes
    }
}

/// One open WebSocket connection. Identity and profile are fixed at the
/// upgrade; channels and counters change and may be read from any thread.
public final class Connection: Sendable, Identifiable, CustomStringConvertible {
    public let id: UUID
    /// What the authentication hook returned; without one, a profile whose
    /// userID is the connection id.
    public var profile: Profile { _profile ?? Profile(userID: id.uuidString.lowercased()) }
    /// "ip:port" or "[ipv6]:port" of the peer.
    public let remoteAddress: String
    /// The client's IP address: the peer's, or, when the peer is one of
    /// `Configuration.trustedProxies`, the one its `X-Forwarded-For` names.
    /// `Configuration.maxConnectionsPerAddress` counts by it.
    public var clientAddress: String { extras?.forwardedClient ?? ClientAddress.ip(ofPeer: remoteAddress) }
    public let started: Date
    /// The request path it upgraded on.
    public let path: String
    /// The subprotocol its 101 named (`Sec-WebSocket-Protocol`), if any.
    public var subprotocol: String? { extras?.subprotocol }
    /// A logger with this connection's id in its metadata (made on first use
    /// and kept: an idle connection carries none of its allocations).
    public var logger: Logger {
        // Once made it never changes: one acquiring load per message, no lock.
        if loggerMade.load(ordering: .acquiring) { return madeLogger! }
        return Self.loggerCreation.withLock {
            if madeLogger == nil {
                var logger = baseLogger
                logger[metadataKey: "connection"] = "\(id.uuidString.lowercased())"
                madeLogger = logger
                loggerMade.store(true, ordering: .releasing)
            }
            return madeLogger!
        }
    }

    // The small fields (rate state, flags, gates) come last and together, so
    // padding does not push the object into the next malloc size: 305 bytes
    // asked, a 320-byte chunk (ConnectionFootprintTests). An idle connection
    // is mostly this object.
    /// The endpoint's handler, limits and checks (shared by its connections).
    let settings: EndpointSettings
    var handler: ConnectionHandler { settings.handler }
    /// The endpoint's limits and permission checks.
    var limits: Limits { settings.limits }
    var authorization: Authorization { settings.authorization }
    /// The channel joined at open (nil for raw endpoints).
    let firstChannel: String?
    /// An async envelope endpoint's waiting messages (a raw session's in
    /// `rawQueue`); the task that handles them (set in on_open and
    /// cancelled in on_close, both on the loop thread).
    private let inbox: Inbox
    var queue: InboundQueue<Message>? { if case .envelopes(let queue) = inbox { queue } else { nil } }
    var rawQueue: InboundQueue<WireMessage>? { if case .raw(let queue) = inbox { queue } else { nil } }
    nonisolated(unsafe) var task: Task<Void, Never>?
    /// Where the client asked to recover each channel from (its upgrade's
    /// `recover`), taken by the channel's first join; under the service's lock.
    var recoveryPositions: [String: ChannelPosition]? {
        get { extras?.recoveryPositions }
        set { extras?.recoveryPositions = newValue }
    }
    /// What most connections leave out, in one object that only those that
    /// have something make: nil for a direct client without a subprotocol or
    /// a recovery (40 bytes of the object's 337 were these, mostly empty).
    private let extras: Extras?

    private final class Extras: @unchecked Sendable {
        /// The client's address when a trusted proxy forwarded it (else the peer's).
        let forwardedClient: String?
        let subprotocol: String?
        /// Under the service's lock.
        var recoveryPositions: [String: ChannelPosition]?

        init(forwardedClient: String?, subprotocol: String?, recoveryPositions: [String: ChannelPosition]?) {
            self.forwardedClient = forwardedClient
            self.subprotocol = subprotocol
            self.recoveryPositions = recoveryPositions
        }
    }

    // nil for an anonymous connection (its userID is derived from the id).
    private let _profile: Profile?
    // The service's logger, unchanged (a shared reference, no copy).
    private let baseLogger: Logger
    // Written once, under loggerCreation, before loggerMade is set.
    nonisolated(unsafe) private var madeLogger: Logger?
    // One for every connection: taken once in a connection's life, when its
    // logger is first made, so nothing is gained by a lock per connection.
    private static let loggerCreation = PthreadMutex()
    private let _engineID = Atomic<UInt64>(0)
    // Channels in join order. Written only under the service's lock (so it
    // agrees with the channel table); a stripe of joinedLocks, under which it
    // is read and written, lets readers skip that one.
    nonisolated(unsafe) private var _joined: [String] = []
    private static let joinedLocks = LockStripes(count: 64)
    // In-counters have one writer (the loop thread); out-counters have many.
    private let _messagesIn = Atomic<UInt64>(0)
    private let _bytesIn = Atomic<UInt64>(0)
    private let _messagesOut = Atomic<UInt64>(0)
    private let _bytesOut = Atomic<UInt64>(0)
    private let _refused = Atomic<UInt64>(0)
    // Loop thread only (every message of a connection arrives on its loop):
    // the inbound buckets and the warning gate need no lock.
    nonisolated(unsafe) var inbound: InboundRate
    private let loggerMade = Atomic<Bool>(false)
    nonisolated(unsafe) var warnings = WarningGate()
    // Awaited writes waiting for the send queue to drain (OutboundWriter), under a stripe of drainLocks.
    nonisolated(unsafe) private var _drainWaiters = DrainWaiters()
    private static let drainLocks = LockStripes(count: 64)

    /// Which inbound queue the handler reads, if any: one word for all three.
    private enum Inbox {
        case none
        case envelopes(InboundQueue<Message>)
        case raw(InboundQueue<WireMessage>)
    }

    init(id: UUID, profile: Profile?, remoteAddress: String, clientAddress: String, path: String,
         firstChannel: String?, subprotocol: String? = nil, recoveryPositions: [String: ChannelPosition]? = nil,
         settings: EndpointSettings, logger: Logger) {
        self.id = id
        self._profile = profile
        self.remoteAddress = remoteAddress
        let forwarded = clientAddress == ClientAddress.ip(ofPeer: remoteAddress) ? nil : clientAddress
        self.extras = forwarded == nil && subprotocol == nil && recoveryPositions == nil ? nil
            : Extras(forwardedClient: forwarded, subprotocol: subprotocol, recoveryPositions: recoveryPositions)
        self.settings = settings
        self.inbound = InboundRate(settings.limits, now: monotonicNanoseconds())
        switch settings.handler {
        case .asyncEnvelope, .envelopeSession:
            inbox = .envelopes(InboundQueue(highWater: settings.limits.maxQueuedMessages))
        case .rawSession:
            inbox = .raw(InboundQueue(highWater: settings.limits.maxQueuedMessages))
        case .envelope, .raw:
            inbox = .none
        }
        self.started = Date()
        self.path = path
        self.firstChannel = firstChannel
        self.baseLogger = logger
    }

    /// The engine's id for this connection (`cws_conn_id`).
    public var engineID: UInt64 { _engineID.load(ordering: .acquiring) }
    func setEngineID(_ id: UInt64) { _engineID.store(id, ordering: .releasing) }

    func withDrainWaiters<Result>(_ body: (inout DrainWaiters) throws -> Result) rethrows -> Result {
        try Self.drainLocks.withLock(for: self) { try body(&_drainWaiters) }
    }

    /// The channels it is in, in join order.
    public var channels: [String] { withJoined { $0 } }

    /// The channel list under its lock; `body` must not take another connection's.
    func withJoined<Result>(_ body: (inout [String]) throws -> Result) rethrows -> Result {
        try Self.joinedLocks.withLock(for: self) { try body(&_joined) }
    }

    public struct Counters: Sendable, Hashable, Codable {
        public var messagesIn: UInt64
        public var bytesIn: UInt64
        /// Messages and payload bytes queued to this connection.
        public var messagesOut: UInt64
        public var bytesOut: UInt64
        /// Messages refused by the endpoint's `Limits` (rates, sizes,
        /// channel count) or its `Authorization`.
        public var refused: UInt64
    }

    public var counters: Counters {
        Counters(messagesIn: _messagesIn.load(ordering: .relaxed), bytesIn: _bytesIn.load(ordering: .relaxed),
                 messagesOut: _messagesOut.load(ordering: .relaxed), bytesOut: _bytesOut.load(ordering: .relaxed),
                 refused: _refused.load(ordering: .relaxed))
    }

    func countRefused() { _refused.wrappingAdd(1, ordering: .relaxed) }

    /// Called on the owning loop thread only: a load and a store, no locked add.
    func countIn(_ bytes: Int) {
        _messagesIn.store(_messagesIn.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        _bytesIn.store(_bytesIn.load(ordering: .relaxed) &+ UInt64(bytes), ordering: .relaxed)
    }

    func countOut(_ bytes: Int) {
        _messagesOut.wrappingAdd(1, ordering: .relaxed)
        _bytesOut.wrappingAdd(UInt64(bytes), ordering: .relaxed)
    }

    /// The user id that presence updates announce.
    public var userID: String { _profile?.userID ?? id.uuidString.lowercased() }

    public var description: String {
        "Connection(\(id.uuidString.lowercased()), user: \(userID), \(remoteAddress))"
    }
}

import Foundation

extension Configuration {
    /// A bounded history for the channels a pattern names: every message
    /// `WebSocketServer.writeChannel` sends to such a channel is kept, with
    /// an offset one higher than the channel's last, so a client that comes
    /// back gets what it missed (see `ChannelPosition`).
    public struct History: Sendable, Equatable {
        /// The channels: an exact name, a prefix ending in `*` (`"room:*"`),
        /// or `"*"` for every channel. The first matching entry applies.
        public var channels: String
        /// Messages kept per channel; past it the oldest go.
        public var maxMessages: Int
        /// Bytes of messages (whole envelopes) kept per channel; past it the oldest go.
        public var maxBytes: Int
        /// Messages older than this go.
        public var maxAge: Duration

        public init(channels: String, maxMessages: Int = 1_000, maxBytes: Int = 1 << 20, maxAge: Duration = .seconds(300)) {
            self.channels = channels
            self.maxMessages = maxMessages
            self.maxBytes = maxBytes
            self.maxAge = maxAge
        }

        func matches(_ channel: String) -> Bool {
            if channels.hasSuffix("*") { return channel.hasPrefix(channels.dropLast()) }
            return channel == channels
        }
    }
}

/// Where a client is in a channel's stream: the history's epoch and the
/// offset of the last message it has. Offsets grow by one per message in the
/// channel, from 1; 0 is "nothing yet". A different epoch means the history
/// behind the offset is gone (a server restart, a channel's log dropped), so
/// offsets cannot be compared.
public struct ChannelPosition: Sendable, Hashable, Codable {
    public var epoch: String
    public var offset: UInt64

    public init(epoch: String, offset: UInt64) {
        self.epoch = epoch
        self.offset = offset
    }
}

/// What `WebSocketServer.history(_:since:)` found.
public struct ChannelHistory: Sendable {
    /// The channel's position now: its epoch and its last message's offset.
    public var position: ChannelPosition
    /// True when `messages` are every message after the position asked
    /// for (or the newest ones, asked for none); false when the epoch
    /// differs or the history no longer reaches back that far.
    public var recovered: Bool
    /// The kept messages after the position asked for, oldest first, each
    /// the whole envelope as clients receive it (with its `offset`).
    public var messages: [(offset: UInt64, envelope: RawJSON)]
}

/// One channel's kept messages, in offset order. Used under its own lock
/// (`HistoryStore.withLog`), which a write holds while it fans out, so
/// members receive offsets in order and a join's replay meets the live
/// stream with no gap and no duplicate.
final class ChannelLog {
    /// Set once here; in a cluster, replaced by the backplane's (`replace`).
    private(set) var epoch: String
    let limits: Configuration.History
    /// The newest message's offset; 0 before the first.
    private(set) var top: UInt64 = 0
    private var entries: [(offset: UInt64, bytes: [UInt8], at: ContinuousClock.Instant)] = []
    private var head = 0
    private var bytes = 0
    private(set) var lastWrite: ContinuousClock.Instant

    // In a cluster whose backplane orders the histories (ClusterHistory.swift):
    /// The kept messages are continuous up to the live stream; false from a
    /// channel's first local member until the backplane's read comes.
    var synced = true
    /// Members that joined while not synced, told their position once it is.
    /// `afterWrite`: `localWrites` when it joined.
    var waitingJoins: [(connection: Connection, recoverFrom: ChannelPosition?, afterWrite: UInt64)] = []
    /// This server's writes to the channel so far, and the offsets of those
    /// made while not synced, as the backplane reported them: a member that
    /// joined before such a write gets it, though it is older than the
    /// position the read finds.
    var localWrites: UInt64 = 0
    var writeOffsets: [(sequence: UInt64, offset: UInt64)] = []
    /// Live messages that came while not synced.
    var buffered: [(epoch: String, offset: UInt64, except: UUID?, bytes: [UInt8])] = []
    /// The epoch the last read found (a second read of it makes buffered
    /// messages of other epochs stale).
    var lastReadEpoch: String?

    init(limits: Configuration.History, now: ContinuousClock.Instant) {
        self.limits = limits
        self.epoch = Self.newEpoch()
        self.lastWrite = now
    }

    var position: ChannelPosition { ChannelPosition(epoch: epoch, offset: top) }
    /// The oldest kept offset; top + 1 when none is kept.
    var oldest: UInt64 { head < entries.count ? entries[head].offset : top + 1 }

    /// The offset the next message gets.
    var nextOffset: UInt64 { top + 1 }

    func append(_ envelope: [UInt8], now: ContinuousClock.Instant) {
        append(envelope, offset: top + 1, at: now, now: now)
    }

    /// A message whose offset the backplane gave (one above `top`).
    func append(_ envelope: [UInt8], offset: UInt64, at written: ContinuousClock.Instant, now: ContinuousClock.Instant) {
        top = offset
        lastWrite = now
        entries.append((offset, envelope, written))
        bytes += envelope.count
        trim(now: now)
    }

    /// Everything kept is replaced by what the backplane read (its messages
    /// in offset order, ending at `top`).
    func replace(epoch: String, top: UInt64, messages: [(offset: UInt64, envelope: [UInt8], at: ContinuousClock.Instant)],
                 now: ContinuousClock.Instant) {
        self.epoch = epoch
        entries = []
        head = 0
        bytes = 0
        for message in messages where message.offset <= top {
            entries.append((message.offset, message.envelope, message.at))
            bytes += message.envelope.count
        }
        self.top = top
        trim(now: now)
    }

    /// Drops what is over the bounds or too old.
    func trim(now: ContinuousClock.Instant) {
        while head < entries.count,
              entries.count - head > limits.maxMessages || bytes > limits.maxBytes || now - entries[head].at > limits.maxAge {
            bytes -= entries[head].bytes.count
            entries[head].bytes = []
            head += 1
        }
        // Compact once the dropped prefix is most of the array.
        if head > 64 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// The messages after `position`, or nil when they are not all here
    /// (another epoch, evicted, or a position ahead of the log).
    func messages(after position: ChannelPosition, now: ContinuousClock.Instant) -> [(offset: UInt64, bytes: [UInt8])]? {
        trim(now: now)
        guard position.epoch == epoch, position.offset <= top, position.offset + 1 >= oldest else { return nil }
        let first = head + Int(position.offset + 1 - oldest)
        return entries[first...].map { ($0.offset, $0.bytes) }
    }

    /// The kept message at this offset, if it is still kept.
    func message(at offset: UInt64) -> [UInt8]? {
        guard offset >= oldest, offset <= top else { return nil }
        return entries[head + Int(offset - oldest)].bytes
    }

    /// The newest kept messages, oldest first.
    func newest(now: ContinuousClock.Instant) -> [(offset: UInt64, bytes: [UInt8])] {
        trim(now: now)
        return entries[head...].map { ($0.offset, $0.bytes) }
    }

    /// 8 characters of base 32 from 40 random bits: another epoch is told
    /// apart with near certainty, and it stays short on the wire.
    static func newEpoch() -> String {
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
        var bits = UInt64.random(in: 0..<(1 << 40))
        var out: [UInt8] = []
        for _ in 0..<8 {
            out.append(alphabet[Int(bits & 31)])
            bits >>= 5
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The logs of the channels with a history, created by their first write or
/// join and dropped, least recently written first, past `maxChannels` (their
/// next log has a new epoch, so clients are told that they missed messages).
final class HistoryStore: Sendable {
    let rules: [Configuration.History]
    let maxChannels: Int
    /// False when the backplane keeps the histories: a server's log is then
    /// its copy for the channel's local members, and goes only with them.
    let evicts: Bool
    private let logs = Locked<[String: Entry]>([:])

    /// A log and the lock a write holds while it fans out.
    final class Entry: @unchecked Sendable {
        let lock = PthreadMutex()
        let log: ChannelLog
        init(_ log: ChannelLog) { self.log = log }
    }

    init(rules: [Configuration.History], maxChannels: Int, evicts: Bool = true) {
        self.rules = rules
        self.maxChannels = max(1, maxChannels)
        self.evicts = evicts
    }

    var isEmpty: Bool { rules.isEmpty }

    func rule(for channel: String) -> Configuration.History? { rules.first { $0.matches(channel) } }

    /// Runs `body` with the channel's log under its lock; nil (and `body`
    /// not run) for a channel without a history.
    func withLog<R>(_ channel: String, create: Bool = true, _ body: (ChannelLog) throws -> R) rethrows -> R? {
        guard let rule = rule(for: channel) else { return nil }
        let now = ContinuousClock.now
        let entry: Entry? = logs.withLock { logs in
            if let entry = logs[channel] { return entry }
            guard create else { return nil }
            if evicts, logs.count >= maxChannels, let idlest = logs.min(by: { $0.value.log.lastWrite < $1.value.log.lastWrite }) {
                logs[idlest.key] = nil
            }
            let entry = Entry(ChannelLog(limits: rule, now: now))
            logs[channel] = entry
            return entry
        }
        guard let entry else { return nil }
        return try entry.lock.withLock {
            // Dropped while this waited for its lock (`removeIfUnused`): the channel's log is a new one.
            guard evicts || logs.withLock({ $0[channel] === entry }) else { return nil }
            return try body(entry.log)
        } ?? withLog(channel, create: create, body)
    }

    /// Drops the channel's log when `unused` says so, under the log's lock
    /// (a join waiting for it then finds a new log, which reads the backplane again).
    func removeIfUnused(_ channel: String, unused: () -> Bool) {
        guard let entry = logs.withLock({ $0[channel] }) else { return }
        entry.lock.withLock {
            guard unused() else { return }
            logs.withLock { logs in
                if logs[channel] === entry { logs[channel] = nil }
            }
        }
    }

    var channelCount: Int { logs.withLock { $0.count } }
}

extension ChannelPosition {
    /// The positions a reconnecting client sends in its upgrade request's
    /// `recover` query item: `{"room":{"epoch":"…","offset":41},…}`. Nil for
    /// none or for anything else (the joins then start fresh).
    static func recoveryPositions(_ request: ServerRequest) -> [String: ChannelPosition]? {
        guard let text = request.queryItem("recover"), !text.isEmpty,
              let positions = try? JSONDecoder().decode([String: ChannelPosition].self, from: Data(text.utf8)),
              !positions.isEmpty else { return nil }
        return positions
    }
}

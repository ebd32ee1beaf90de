#if canImport(Glibc)
import Glibc
#endif

/// What one connection of an endpoint may send: inbound rates, and for
/// envelope endpoints the sizes of names and how many channels it may be in.
/// The defaults are far above what an honest browser client sends (a chat
/// page sends a few messages a second) and well below what a flood does.
/// Each refusal is counted per connection (`Connection.Counters`) and in
/// `WebSocketServer.Status.limits`.
public struct Limits: Sendable, Hashable {
    /// A token bucket: `perSecond` tokens are added each second, up to
    /// `burst`. A message is let through while the bucket holds any token,
    /// and takes its cost (1 per message, or its bytes) even if that puts the
    /// bucket in debt, so one message larger than `burst` still passes and
    /// the next waits until the debt is paid. A full bucket lets `burst`
    /// messages through at once.
    public struct Rate: Sendable, Hashable {
        public var perSecond: Double
        public var burst: Double

        public init(perSecond: Double, burst: Double) {
            self.perSecond = max(0, perSecond)
            self.burst = max(1, burst)
        }

        /// `tokens` after `nanoseconds` of refilling, capped at `burst`.
        func refilled(_ tokens: Double, after nanoseconds: UInt64) -> Double {
            min(burst, tokens + Double(nanoseconds) * perSecond / 1e9)
        }
    }

    /// What happens to a message over a rate limit.
    public enum RatePolicy: Sendable, Hashable {
        /// Close with 1008 (policy violation), reason "rate limit exceeded".
        case close
        /// Drop the message, and (envelope endpoints) tell the client with an
        /// `error` envelope whose `code` is `"rate-limited"`, at most once a
        /// second, with the count dropped since the last notice.
        case drop
    }

    /// Messages per second; nil: no limit.
    public var messages: Rate? = Rate(perSecond: 1_000, burst: 2_000)
    /// Payload bytes per second (after inflating); nil: no limit.
    public var bytes: Rate? = Rate(perSecond: 32 * 1_048_576, burst: 64 * 1_048_576)
    public var ratePolicy: RatePolicy = .close
    /// Envelope endpoints: channels one connection may be in at once.
    public var maxChannels = 128
    /// Envelope endpoints: bytes of a channel name (joins, the `ch` of an
    /// upgrade and the `channel` of an envelope).
    public var maxChannelNameBytes = 256
    /// Envelope endpoints: bytes of a `cmd`.
    public var maxCommandBytes = 128
    /// `AsyncEnvelopeHandler` and session endpoints (envelope and raw):
    /// messages waiting to be handled or taken from `inbound` before the
    /// server stops reading the socket (it reads again at half as many).
    public var maxQueuedMessages = 256

    public init() {}

    /// No rate limit and no size cap (the engine's maximum message size still applies).
    public static var unlimited: Limits {
        var limits = Limits()
        limits.messages = nil
        limits.bytes = nil
        limits.maxChannels = .max
        limits.maxChannelNameBytes = .max
        limits.maxCommandBytes = .max
        limits.maxQueuedMessages = .max
        return limits
    }
}

/// One bucket's state (see `Limits.Rate`).
struct TokenBucket {
    private var tokens: Double
    private var last: UInt64

    init(_ rate: Limits.Rate, now: UInt64) {
        tokens = rate.burst
        last = now
    }

    /// Adds the tokens earned since the last refill; true if the bucket
    /// holds any (a message may pass).
    mutating func refill(_ rate: Limits.Rate, now: UInt64) -> Bool {
        if now > last {
            tokens = rate.refilled(tokens, after: now - last)
            last = now
        }
        return tokens > 0
    }

    mutating func charge(_ cost: Double) { tokens -= cost }
}

/// A connection's inbound rate state: a token bucket (see `Limits.Rate`)
/// for messages and one for bytes, refilled together. Touched only on the
/// connection's loop thread (every message arrives there), so it needs no
/// lock. 37 bytes, and every idle connection has one: the buckets share their
/// refill time, and a rate the limits leave out is never read.
struct InboundRate {
    private var messageTokens: Double
    private var byteTokens: Double
    private var lastRefill: UInt64
    var lastNotice: UInt64 = 0
    /// Dropped since the client was last told (the `.drop` policy); it
    /// saturates (a raw endpoint's client is never told).
    var droppedSinceNotice: UInt32 = 0
    /// The `.close` policy has begun the close; later messages are ignored.
    var closing = false

    init(_ limits: Limits, now: UInt64) {
        messageTokens = limits.messages?.burst ?? 0
        byteTokens = limits.bytes?.burst ?? 0
        lastRefill = now
    }

    /// Whether a message of `count` bytes is within both rates; only a
    /// message that passes is charged.
    mutating func admit(_ count: Int, _ limits: Limits, now: UInt64) -> Bool {
        if now > lastRefill {
            if let rate = limits.messages { messageTokens = rate.refilled(messageTokens, after: now - lastRefill) }
            if let rate = limits.bytes { byteTokens = rate.refilled(byteTokens, after: now - lastRefill) }
            lastRefill = now
        }
        if limits.messages != nil, messageTokens <= 0 { return false }
        if limits.bytes != nil, byteTokens <= 0 { return false }
        messageTokens -= 1
        byteTokens -= Double(count)
        return true
    }
}

/// Monotonic nanoseconds, coarse (a few ms resolution; one vDSO read).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

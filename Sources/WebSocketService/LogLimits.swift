import Logging

/// Text a client chose (a cmd, an origin, an error about its message), made
/// fit for a log line: at most `maxBytes` bytes of it, with quotes,
/// backslashes, control bytes and bytes outside printable ASCII escaped
/// (`\xNN`), so a client cannot write a megabyte or a fake line into a log.
enum LogText {
    static let maxBytes = 128

    static func clip(_ text: String) -> String { clip(text.utf8) }

    static func clip(_ bytes: some Collection<UInt8>) -> String {
        var out = ""
        out.reserveCapacity(min(bytes.count, maxBytes) + 16)
        let hex = Array("0123456789abcdef".utf8)
        for byte in bytes.prefix(maxBytes) {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.unicodeScalars.append("\\")
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case 0x20..<0x7f:
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "\\x"
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 15)]))
            }
        }
        if bytes.count > maxBytes { out += "…(\(bytes.count) bytes)" }
        return out
    }
}

/// One connection's warnings: the first is logged, then at most one per
/// `interval`, carrying the count suppressed since the last one. Kept in
/// the connection and touched only on its loop thread.
struct WarningGate {
    static let interval: UInt64 = 60_000_000_000
    private var lastLogged: UInt64 = 0
    // 16 bytes in all (every connection has one): the count saturates, far
    // beyond what a minute of one connection's warnings reaches.
    private var suppressedCount: UInt32 = 0
    private var hasLogged = false
    var suppressed: Int { Int(suppressedCount) }

    /// nil: suppress this one (counted); else log it, with this many suppressed before it.
    mutating func pass(now: UInt64) -> Int? {
        guard !hasLogged || now &- lastLogged >= Self.interval else {
            if suppressedCount < .max { suppressedCount += 1 }
            return nil
        }
        defer { hasLogged = true; lastLogged = now; suppressedCount = 0 }
        return suppressed
    }
}

/// Warnings about what clients do, over every connection: a token bucket
/// (20 a second, bursts of 100) so that many connections misbehaving at
/// once, or a churn of new ones, still write a bounded log.
final class WarningBudget: Sendable {
    private static let rate = Limits.Rate(perSecond: 20, burst: 100)
    private let bucket = Locked(TokenBucket(WarningBudget.rate, now: monotonicNanoseconds()))

    func take(now: UInt64) -> Bool {
        bucket.withLock { b in
            guard b.refill(Self.rate, now: now) else { return false }
            b.charge(1)
            return true
        }
    }
}

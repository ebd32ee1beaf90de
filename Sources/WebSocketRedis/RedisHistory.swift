import CWebSocket
import Foundation
import WebSocketService

/// Channel histories as Redis Streams, one per channel, named like the
/// channel's pub/sub subject ("ws:c:room": keys and channels are separate
/// namespaces, and one name is one hash slot, so a sharded cluster keeps the
/// stream and the shard channel on the same node).
///
/// An entry's id is `<epoch>-<offset>`: the epoch, a random number fixed when
/// the stream is made, and the offset, one higher than the last. A stream
/// that Redis lost (a restart without persistence, expiry after `maxAge`
/// without writes) is made again with another epoch, which tells clients that
/// their offsets no longer count. Fields: `t` the write's time in
/// milliseconds (Redis's clock), `d` the envelope with its offset. A stream
/// made by a read, before any message, holds one entry `<epoch>-0` without `d`.
///
/// Both steps are Lua scripts, so each is atomic: a write reads the last id,
/// appends the next and publishes it with its offset in the same step, which
/// gives every server one order and lets a read followed by the live
/// subscription meet without a gap.
enum RedisHistory {
    /// KEYS[1] the stream (and the subject); ARGV: epoch if new, MAXLEN,
    /// expiry in ms, header start ("<origin> h"), header end ("" or " <except>"),
    /// envelope before the offset, after it, the publish command. Returns the offset.
    static let writeScript = """
        local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
        local epoch, offset = ARGV[1], 1
        if #last > 0 then
          local e, o = string.match(last[1][1], '^(%d+)-(%d+)$')
          epoch, offset = e, tonumber(o) + 1
        end
        local n = string.format('%d', offset)
        local envelope = ARGV[6] .. n .. ARGV[7]
        local now = redis.call('TIME')
        local ms = now[1] .. string.sub(string.format('%06d', now[2]), 1, 3)
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], epoch .. '-' .. n, 't', ms, 'd', envelope)
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call(ARGV[8], KEYS[1], ARGV[4] .. ' ' .. epoch .. ' ' .. n .. ARGV[5] .. '\\n' .. envelope)
        return offset
        """

    /// KEYS[1] the stream; ARGV: epoch if new, how many of the newest,
    /// expiry in ms for a stream this makes. Returns a flat array: epoch, the
    /// last offset, then offset, time, envelope of each message, oldest first.
    static let readScript = """
        local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
        if #last == 0 then
          redis.call('XADD', KEYS[1], ARGV[1] .. '-0', 'm', '')
          redis.call('PEXPIRE', KEYS[1], ARGV[3])
          return {ARGV[1], '0'}
        end
        local epoch, top = string.match(last[1][1], '^(%d+)-(%d+)$')
        local out = {epoch, top}
        local entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])
        for i = #entries, 1, -1 do
          local fields, t, d = entries[i][2], '0', nil
          for j = 1, #fields, 2 do
            if fields[j] == 't' then t = fields[j + 1] elseif fields[j] == 'd' then d = fields[j + 1] end
          end
          if d then
            out[#out + 1] = string.match(entries[i][1], '-(%d+)$')
            out[#out + 1] = t
            out[#out + 1] = d
          end
        end
        return out
        """

    static let writeSHA = sha1Hex(writeScript)
    static let readSHA = sha1Hex(readScript)

    /// EVALSHA, or EVAL with the whole script when Redis does not have it yet (NOSCRIPT).
    static func command(_ script: String, sha: String, full: Bool, key: String, _ arguments: [[UInt8]]) -> [[UInt8]] {
        [Array((full ? "EVAL" : "EVALSHA").utf8), Array((full ? script : sha).utf8), Array("1".utf8), Array(key.utf8)]
            + arguments
    }

    static func writeCommand(_ write: HistoryWrite, subject: String, full: Bool, publish: String) -> [[UInt8]] {
        let header = write.origin.uuidString + " h"
        let tail = write.except.map { " " + $0.uuidString } ?? ""
        return command(writeScript, sha: writeSHA, full: full, key: subject, [
            Array(newEpoch().utf8), Array(String(max(1, write.maxMessages)).utf8),
            Array(String(expiry(write.maxAge)).utf8), Array(header.utf8), Array(tail.utf8), write.before, write.after,
            Array(publish.utf8),
        ])
    }

    static func readCommand(subject: String, limits: Configuration.History, full: Bool) -> [[UInt8]] {
        command(readScript, sha: readSHA, full: full, key: subject, [
            Array(newEpoch().utf8), Array(String(max(1, limits.maxMessages)).utf8),
            Array(String(expiry(limits.maxAge)).utf8),
        ])
    }

    /// The read script's answer, from the reply's strings; nil when it is not one.
    static func parseRead(_ strings: [[UInt8]]) -> HistoryRead? {
        guard strings.count >= 2, (strings.count - 2) % 3 == 0,
              let top = UInt64(String(decoding: strings[1], as: UTF8.self)) else { return nil }
        var messages: [(offset: UInt64, envelope: [UInt8], written: Date)] = []
        var index = 2
        while index < strings.count {
            guard let offset = UInt64(String(decoding: strings[index], as: UTF8.self)) else { return nil }
            let milliseconds = Double(String(decoding: strings[index + 1], as: UTF8.self)) ?? 0
            messages.append((offset, strings[index + 2], Date(timeIntervalSince1970: milliseconds / 1000)))
            index += 3
        }
        return HistoryRead(epoch: String(decoding: strings[0], as: UTF8.self), top: top, messages: messages)
    }

    /// A stream id's first part: below 2^47, so Lua's numbers hold it exactly.
    static func newEpoch() -> String { String(UInt64.random(in: 1..<(1 << 47))) }

    /// A stream idle for a channel's `maxAge` goes; at least a second.
    static func expiry(_ maxAge: Duration) -> Int { max(1_000, RedisBackplane.milliseconds(maxAge)) }

    static func sha1Hex(_ text: String) -> String {
        var digest = [UInt8](repeating: 0, count: 20)
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { cws_sha1($0.baseAddress, $0.count, &digest) }
        return digest.map { String(format: "%02x", $0) }.joined()
    }

    static func isNoScript(_ error: String) -> Bool { error.hasPrefix("NOSCRIPT") }
}

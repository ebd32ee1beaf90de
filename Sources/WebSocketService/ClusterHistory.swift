import CWebSocket
import Foundation

/// Channel histories in a cluster whose backplane keeps them (Redis Streams,
/// `Backplane.ordersHistory`).
///
/// One order for every server: a write to a channel with a history goes to
/// the backplane, which appends it to the channel's stream, gives it the next
/// offset and publishes it to every server, the writer's own included. So
/// local members get such a message after a round trip to Redis, in the same
/// order as every other server's members.
///
/// Each server keeps a copy of the channels it has members in, and serves
/// joins and recoveries from it. The copy starts when the channel's first
/// local member joins: once Redis confirms the subscription, the backplane
/// reads the stream's newest messages (`followHistory`), and the live
/// messages that came meanwhile are laid after them, by offset. Only then is
/// the joining member told its position (`_joined`) and sent what it missed,
/// so a member that waited for `_joined` misses nothing after it; this also
/// closes the gap between a first join and Redis's confirmation of the
/// subscription that plain pub/sub has. A gap in the live offsets (a message
/// the subscription lost) or another epoch makes the server read again.
extension WebSocketServer {
    /// `writeChannel` to a channel with a history in the backplane.
    func writeChannelThroughBackplane(_ envelope: Envelope, except: UUID?, rule: Configuration.History) -> Int {
        let channel = envelope.channel ?? ""
        let (before, after) = envelope.encodedAroundOffset()
        var write = HistoryWrite(origin: serverID, channel: channel, except: except, before: before, after: after,
                                 maxMessages: rule.maxMessages, maxAge: rule.maxAge)
        // Counted where there is a copy: a member waiting for it gets the writes made after it joined.
        write.sequence = historyStore.withLog(channel, create: false) { log in
            log.localWrites += 1
            return log.localWrites
        } ?? 0
        guard backplane.publishToHistory(write) else {
            // The backplane is down: the local members still get it, without an offset (it is not kept).
            return writeChannelLocally(write.withoutOffset, channel: channel, except: except)
        }
        // Delivered when it comes back with its offset: the members there are now.
        return state.withLock { s in
            guard let members = s.channels[channel] else { return 0 }
            let skipped = except.flatMap { s.byID[$0] }.map { members[$0.engineID] != nil ? 1 : 0 } ?? 0
            return members.count - skipped
        }
    }

    /// A queued history write that never reached the backplane: local members get it without an offset.
    func historyWriteLost(_ write: HistoryWrite) {
        writeChannelLocally(write.withoutOffset, channel: write.channel, except: write.except)
    }

    /// The offset one of this server's writes got: kept while the copy waits
    /// for its read, so members that joined before the write get it.
    func historyWritten(_ write: HistoryWrite, offset: UInt64) {
        guard write.sequence > 0 else { return }
        _ = historyStore.withLog(write.channel, create: false) { log in
            if !log.synced { log.writeOffsets.append((write.sequence, offset)) }
        }
    }

    /// A history message from the backplane (any server's, this one's too).
    func deliverHistoryMessage(_ bytes: [UInt8], channel: String, epoch: String, offset: UInt64, except: UUID?) {
        _ = historyStore.withLog(channel, create: false) { log in
            guard log.synced else {
                buffer(bytes, epoch: epoch, offset: offset, except: except, in: log)
                return
            }
            if epoch == log.epoch && offset <= log.top {
                // Had it already (from a read), unless Redis went back and gave the offset to another message.
                if let kept = log.message(at: offset), kept != bytes { restart(channel, log) }
                return
            }
            if epoch == log.epoch && offset == log.top + 1 {
                let now = ContinuousClock.now
                log.append(bytes, offset: offset, at: now, now: now)
                writeChannelLocally(bytes, channel: channel, except: except)
                return
            }
            // A message the subscription lost, or the stream started over: read it again.
            log.synced = false
            buffer(bytes, epoch: epoch, offset: offset, except: except, in: log)
            backplane.followHistory(channel: channel, limits: log.limits)
        }
    }

    private func buffer(_ bytes: [UInt8], epoch: String, offset: UInt64, except: UUID?, in log: ChannelLog) {
        log.buffered.append((epoch, offset, except, bytes))
        // Bounded while the read is late; what goes is in the stream for the next read.
        if log.buffered.count > log.limits.maxMessages + 1_000 { log.buffered.removeFirst(log.buffered.count / 2) }
    }

    /// The backplane read the channel's stream (`followHistory`): the copy
    /// becomes that, then the live messages buffered meanwhile; members that
    /// were live get what they had not had (or, if the epoch changed, a
    /// `_joined` saying they were not recovered), and waiting joins are told
    /// their positions.
    func historyWasRead(_ channel: String, _ read: HistoryRead?) {
        // nil: it failed, and the backplane reads again after a backoff.
        guard let read else { return }
        _ = historyStore.withLog(channel, create: false) { log in
            let now = ContinuousClock.now
            let wall = Date()
            let (wasEpoch, wasTop) = (log.epoch, log.top)
            if read.epoch == wasEpoch && read.top < wasTop {
                // Synced: a read that crossed live messages; never step back. Not synced, the copy
                // stopped at wasTop before this read was asked for: Redis went back (a failover
                // that lost writes already delivered), and its next offsets would repeat ours.
                if !log.synced { restart(channel, log) }
                return
            }
            let sameEpochAgain = log.lastReadEpoch == read.epoch
            log.lastReadEpoch = read.epoch
            log.replace(epoch: read.epoch, top: read.top,
                        messages: read.messages.map { ($0.offset, $0.envelope, now - .seconds(max(0, wall.timeIntervalSince($0.written)))) },
                        now: now)
            var fresh: [(bytes: [UInt8], except: UUID?)] = []
            if read.epoch == wasEpoch {
                fresh = log.newest(now: now).filter { $0.offset > wasTop }.map { ($0.bytes, nil) }
            }
            var gap = false
            for message in log.buffered.sorted(by: { $0.offset < $1.offset }) where message.epoch == log.epoch {
                if message.offset <= log.top { continue }
                guard message.offset == log.top + 1 else {
                    gap = true
                    break
                }
                log.append(message.bytes, offset: message.offset, at: now, now: now)
                fresh.append((message.bytes, message.except))
            }
            // Another epoch in the buffer: newer than this read (read again), or, when two reads
            // in a row found this epoch, older than it (dropped).
            if sameEpochAgain {
                log.buffered.removeAll { $0.epoch != log.epoch }
            } else {
                gap = gap || log.buffered.contains { $0.epoch != log.epoch }
            }
            log.buffered.removeAll { $0.epoch == log.epoch && $0.offset <= log.top }

            let waiting = log.waitingJoins
            log.waitingJoins = []
            let waitingIDs = Set(waiting.map { $0.connection.engineID })
            let live = state.withLock { s in
                (s.channels[channel] ?? [:]).filter { !waitingIDs.contains($0.key) }
            }
            if !live.isEmpty {
                if read.epoch != wasEpoch {
                    // Their offsets are of a stream that is gone: they start over, not recovered,
                    // from the new stream's oldest kept message (its first, when it just began).
                    let kept = log.newest(now: now)
                    let from = (kept.first?.offset ?? log.top + 1) - 1
                    for connection in live.values {
                        sendJoined(log, channel: channel, offset: from, recovered: false, to: connection)
                    }
                    for message in kept {
                        fanOut(message.bytes, to: Self.recipients(live, except: nil, bytes: message.bytes.count))
                    }
                } else {
                    for message in fresh {
                        let except = message.except.flatMap { id in live.first { $0.value.id == id }?.key }
                        fanOut(message.bytes, to: Self.recipients(live, except: except, bytes: message.bytes.count))
                    }
                }
            }
            for join in waiting where join.connection.channels.contains(channel) {
                // A first join before this server's own writes (a join announcement, say) starts before them.
                let own = log.writeOffsets.filter { $0.sequence > join.afterWrite }.map(\.offset).min()
                sendPosition(log, channel: channel, recoveringFrom: join.recoverFrom,
                             startingAfter: join.recoverFrom == nil && own.map { $0 <= log.top } == true ? own! - 1 : nil,
                             to: join.connection)
            }
            if !gap { log.writeOffsets = [] }
            log.synced = !gap
            if gap { backplane.followHistory(channel: channel, limits: log.limits) }
        }
    }

    /// The copy went back (see `restartHistory`): the stream is dropped and
    /// read again, which starts a new epoch; members are told on that read.
    private func restart(_ channel: String, _ log: ChannelLog) {
        logger.warning("channel history went back in Redis (a failover?): starting a new epoch", metadata: ["channel": "\(channel)"])
        log.synced = false
        backplane.restartHistory(channel: channel)
        backplane.followHistory(channel: channel, limits: log.limits)
    }

    /// `_joined` with the epoch, the offset the member is at, and whether it was recovered.
    private func sendJoined(_ log: ChannelLog, channel: String, offset: UInt64, recovered: Bool, to connection: Connection) {
        var param = Array(#"{"epoch":"#.utf8)
        JSONWriter.appendString(log.epoch, to: &param)
        param += Array(#","offset":\#(offset),"recovered":\#(recovered)}"#.utf8)
        write(Envelope(channel: channel, cmd: ClientScript.joinedCommand, param: RawJSON(trusted: param)), to: connection)
    }

    /// Under the state lock: the channel's last local member is gone.
    func lastLocalMemberLeft(_ channel: String) {
        backplane.unsubscribe(channel: channel)
        if historyInBackplane { backplane.unfollowHistory(channel: channel) }
    }

    /// The copies of channels that no local member is in any more go (a
    /// later first member reads the stream again).
    func dropHistoryCopies(_ channels: [String]) {
        for channel in channels {
            historyStore.removeIfUnused(channel) { state.withLock { $0.channels[channel] == nil } }
        }
    }
}

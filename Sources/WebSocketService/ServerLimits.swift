import CWebSocket
import Logging
import Synchronization

/// How often the service's limits and checks refused something (`WebSocketServer.Status.limits`).
public struct LimitStatus: Sendable, Codable, Hashable {
    /// Messages over a connection's message or byte rate (dropped, or the one that closed it).
    public var rateLimited: UInt64
    /// Connections closed with 1008 by the `.close` rate policy.
    public var rateLimitCloses: UInt64
    /// Upgrades answered 429 at `maxConnectionsPerAddress`.
    public var refusedPerAddress: UInt64
    /// Joins refused: too many channels, a name too long, or `Authorization.join`
    /// (upgrades refused for their first channel included).
    public var joinsRefused: UInt64
    /// Envelopes refused by `Authorization.command`.
    public var commandsRefused: UInt64
    /// Envelopes refused for a `cmd` or `channel` over its byte cap.
    public var namesTooLong: UInt64
    /// Compressed messages refused (1009) for inflating past `Compression.maxInflateRatio`.
    public var inflateRefused: UInt64
    /// Connections closed 1008 for pinging faster than `maxPingsPerSecond`.
    public var pingsRefused: UInt64
    /// Admin requests answered 421 for a `Host` not among the admin hosts.
    public var adminHostsRefused: UInt64
    /// Closed connections by close code (1000 normal, 1006 dropped, 1008
    /// policy: rates, pings, a full send queue; 1009 too big...).
    public var closeCodes: [UInt16: UInt64]
    /// Warnings about clients not written: over one connection's allowance
    /// (one a minute after the first) or the service's (20 a second).
    public var warningsSuppressed: UInt64
}

/// The counters behind `LimitStatus` (inflateRefused and pingsRefused come from the engine).
final class LimitCounters: Sendable {
    let rateLimited = Atomic<UInt64>(0)
    let rateLimitCloses = Atomic<UInt64>(0)
    let refusedPerAddress = Atomic<UInt64>(0)
    let joinsRefused = Atomic<UInt64>(0)
    let commandsRefused = Atomic<UInt64>(0)
    let namesTooLong = Atomic<UInt64>(0)
    let warningsSuppressed = Atomic<UInt64>(0)
    let adminHostsRefused = Atomic<UInt64>(0)
    let closeCodes = Locked<[UInt16: UInt64]>([:])

    func closed(code: UInt16) { closeCodes.withLock { $0[code, default: 0] += 1 } }

    func status(inflateRefused: UInt64, pingsRefused: UInt64) -> LimitStatus {
        LimitStatus(rateLimited: rateLimited.load(ordering: .relaxed),
                    rateLimitCloses: rateLimitCloses.load(ordering: .relaxed),
                    refusedPerAddress: refusedPerAddress.load(ordering: .relaxed),
                    joinsRefused: joinsRefused.load(ordering: .relaxed),
                    commandsRefused: commandsRefused.load(ordering: .relaxed),
                    namesTooLong: namesTooLong.load(ordering: .relaxed), inflateRefused: inflateRefused,
                    pingsRefused: pingsRefused, adminHostsRefused: adminHostsRefused.load(ordering: .relaxed),
                    closeCodes: closeCodes.withLock { $0 },
                    warningsSuppressed: warningsSuppressed.load(ordering: .relaxed))
    }
}

extension WebSocketServer {
    /// Whether a message may go on to its handler under the connection's
    /// rates; if not, applies the rate policy. Loop thread.
    func admitInbound(_ connection: Connection, bytes: Int) -> Bool {
        if connection.inbound.closing { return false }
        let limits = connection.limits
        guard limits.messages != nil || limits.bytes != nil else { return true }
        let now = monotonicNanoseconds()
        if connection.inbound.admit(bytes, limits, now: now) { return true }
        connection.countRefused()
        limitCounters.rateLimited.wrappingAdd(1, ordering: .relaxed)
        switch limits.ratePolicy {
        case .close:
            connection.inbound.closing = true
            limitCounters.rateLimitCloses.wrappingAdd(1, ordering: .relaxed)
            warnAbout(connection, "rate limit exceeded: closing", [:])
            close(connection, code: .policyViolation, reason: "rate limit exceeded")
        case .drop:
            if connection.inbound.droppedSinceNotice < .max { connection.inbound.droppedSinceNotice += 1 }
            guard connection.handler.speaksEnvelope,
                  now &- connection.inbound.lastNotice >= 1_000_000_000 else { break }
            let dropped = connection.inbound.droppedSinceNotice
            connection.inbound.droppedSinceNotice = 0
            connection.inbound.lastNotice = now
            warnAbout(connection, "rate limit exceeded: dropping", ["dropped": "\(dropped)"])
            write(.error("rate limit exceeded: \(dropped) message\(dropped == 1 ? "" : "s") dropped",
                         code: "rate-limited", details: ["dropped": "\(dropped)"]), to: connection)
        }
        return false
    }

    /// The `cmd` and `channel` of an envelope within their caps; else the
    /// client is told which and why. Loop thread.
    func envelopeWithinCaps(_ envelope: Envelope, _ connection: Connection) -> Bool {
        let limits = connection.limits
        if envelope.cmd.utf8.count > limits.maxCommandBytes {
            refuseTooLong(connection, "cmd is \(envelope.cmd.utf8.count) bytes; at most \(limits.maxCommandBytes)",
                          code: "cmd-too-long")
            return false
        }
        if let channel = envelope.channel, channel.utf8.count > limits.maxChannelNameBytes {
            refuseTooLong(connection, "channel name is \(channel.utf8.count) bytes; at most \(limits.maxChannelNameBytes)",
                          code: "channel-name-too-long")
            return false
        }
        return true
    }

    private func refuseTooLong(_ connection: Connection, _ message: String, code: String) {
        connection.countRefused()
        limitCounters.namesTooLong.wrappingAdd(1, ordering: .relaxed)
        connection.logger.debug("envelope refused", metadata: ["reason": "\(message)"])
        write(.error(message, code: code), to: connection)
    }

    /// `Authorization.command`'s verdict; a refusal is told to the client. Loop thread.
    func commandAuthorized(_ message: Message, _ connection: Connection) -> Bool {
        guard let check = connection.authorization.command,
              case .refuse(let reason) = check(connection, message) else { return true }
        connection.countRefused()
        limitCounters.commandsRefused.wrappingAdd(1, ordering: .relaxed)
        connection.logger.debug("command refused", metadata: ["cmd": "\(LogText.clip(message.cmd))", "reason": "\(reason)"])
        write(.error(reason, code: "command-refused", details: ["cmd": message.cmd]), to: connection)
        return false
    }

    /// Why `channel` may not be joined, before the channel table is touched:
    /// its name, and `Authorization.join` unless it already said yes. nil: it may.
    func joinRefusal(_ connection: Connection, _ channel: String, askHook: Bool) -> String? {
        let limits = connection.limits
        if channel.utf8.count > limits.maxChannelNameBytes {
            return "channel name is \(channel.utf8.count) bytes; at most \(limits.maxChannelNameBytes)"
        }
        if askHook, let check = connection.authorization.join, case .refuse(let reason) = check(connection, channel) {
            return reason
        }
        return nil
    }

    /// Counts a refused join and tells the client.
    func refuseJoin(_ connection: Connection, _ channel: String, reason: String) {
        connection.countRefused()
        limitCounters.joinsRefused.wrappingAdd(1, ordering: .relaxed)
        connection.logger.debug("join refused", metadata: ["channel": "\(LogText.clip(channel))", "reason": "\(reason)"])
        write(.error(reason, code: "join-refused", details: ["channel": channel]), to: connection)
    }

    /// A warning about what a client did, within the connection's allowance
    /// (`WarningGate`) and the service's (`WarningBudget`); what does not fit
    /// is counted in `LimitStatus.warningsSuppressed`. Loop thread.
    func warnAbout(_ connection: Connection, _ message: Logger.Message, _ metadata: Logger.Metadata) {
        let now = monotonicNanoseconds()
        guard let suppressed = connection.warnings.pass(now: now), warningBudget.take(now: now) else {
            limitCounters.warningsSuppressed.wrappingAdd(1, ordering: .relaxed)
            return
        }
        var metadata = metadata
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        connection.logger.warning(message, metadata: metadata)
    }

    /// A notice about a request (not yet a connection), within the service's allowance.
    func noticeAboutRequest(_ message: Logger.Message, _ metadata: Logger.Metadata) {
        guard warningBudget.take(now: monotonicNanoseconds()) else {
            limitCounters.warningsSuppressed.wrappingAdd(1, ordering: .relaxed)
            return
        }
        logger.info(message, metadata: metadata)
    }
}

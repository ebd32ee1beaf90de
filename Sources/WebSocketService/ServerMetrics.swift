import CWebSocket
import CoreMetrics
import Foundation

/// The server's swift-metrics: counters and gauges under one label prefix.
///
/// The per-message numbers (messages and bytes in and out, drops) are the
/// engine's own totals, read every `interval` and reported as deltas: the
/// hot path pays nothing for metrics, whatever backend is bootstrapped. Rare
/// events (an upgrade accepted or refused, a close) are counted as they happen.
/// Dimensions are few and bounded: an HTTP status, a close code bucket.
/// Bytes are the engine's: payloads in, frames as queued (headers included) out.
final class ServerMetrics: Sendable {
    /// What one sample reads; `engine` is the engine's running totals.
    struct Sample: Sendable {
        var engine: cws_server_stats
        var connections: Int
    }

    private let prefix: String
    private let factory: any MetricsFactory
    private let interval: Duration

    let connections: Gauge
    let sockets: Gauge
    let upgradesAccepted: Counter
    let handshakesFailed: Counter
    let tlsHandshakes: Counter
    let tlsHandshakesFailed: Counter
    let tlsKernelOffloads: Counter
    let socketWrites: Counter
    let messagesIn: Counter
    let messagesOut: Counter
    let bytesIn: Counter
    let bytesOut: Counter
    let dropped: Counter
    /// By HTTP status; made on first use (a handful of statuses in practice).
    private let upgradesRefused = Locked<[Int: Counter]>([:])
    /// By close code bucket (see `codeDimension`).
    private let closes = Locked<[String: Counter]>([:])
    /// The engine totals last reported, so each report adds only what is new.
    private let reported = Locked(cws_server_stats())
    /// Signalled once, at stop: the sampling thread ends at once instead of at its next turn.
    private let stopSignal = DispatchSemaphore(value: 0)
    private let sampling = Locked(false)

    init(_ configuration: Configuration.MetricsReporting) {
        prefix = configuration.prefix
        factory = configuration.factory ?? MetricsSystem.factory
        interval = configuration.interval
        connections = Gauge(label: prefix + "connections", factory: factory)
        sockets = Gauge(label: prefix + "sockets", factory: factory)
        upgradesAccepted = Counter(label: prefix + "upgrades_accepted_total", factory: factory)
        handshakesFailed = Counter(label: prefix + "handshakes_failed_total", factory: factory)
        tlsHandshakes = Counter(label: prefix + "tls_handshakes_total", factory: factory)
        tlsHandshakesFailed = Counter(label: prefix + "tls_handshakes_failed_total", factory: factory)
        tlsKernelOffloads = Counter(label: prefix + "tls_kernel_offloads_total", factory: factory)
        socketWrites = Counter(label: prefix + "socket_writes_total", factory: factory)
        messagesIn = Counter(label: prefix + "messages_in_total", factory: factory)
        messagesOut = Counter(label: prefix + "messages_out_total", factory: factory)
        bytesIn = Counter(label: prefix + "bytes_in_total", factory: factory)
        bytesOut = Counter(label: prefix + "bytes_out_total", factory: factory)
        dropped = Counter(label: prefix + "messages_dropped_total", factory: factory)
    }

    /// An upgrade answered with an HTTP status instead of 101.
    func upgradeRefused(status: Int) {
        counter(in: upgradesRefused, key: status, label: "upgrades_refused_total", dimension: ("status", "\(status)"))
            .increment()
    }

    func closed(code: UInt16) {
        let bucket = Self.codeDimension(code)
        counter(in: closes, key: bucket, label: "closes_total", dimension: ("code", bucket)).increment()
    }

    /// A close code as a dimension: the codes RFC 6455 and IANA define as
    /// themselves, the ranges applications choose from (3000-4999, where a
    /// client may send any of 2,000 codes) as one value each, so the number
    /// of series stays small whatever clients send.
    static func codeDimension(_ code: UInt16) -> String {
        switch code {
        case 1000...1015: "\(code)"
        case 3000...3999: "3xxx"
        case 4000...4999: "4xxx"
        default: "other"
        }
    }

    private func counter<Key: Hashable>(in table: Locked<[Key: Counter]>, key: Key, label: String,
                                        dimension: (String, String)) -> Counter {
        table.withLock { counters in
            if let counter = counters[key] { return counter }
            let made = Counter(label: prefix + label, dimensions: [dimension], factory: factory)
            counters[key] = made
            return made
        }
    }

    /// Reports what changed since the last report. Any thread: `read` runs
    /// under the lock, so reports that race each other take their samples
    /// in order and still add every message once.
    func report(_ read: () -> Sample) {
        let (sample, before) = reported.withLock { last in
            let sample = read()
            defer { last = sample.engine }
            return (sample, last)
        }
        let now = sample.engine
        func add(_ counter: Counter, _ new: UInt64, _ old: UInt64) {
            if new > old { counter.increment(by: Int64(clamping: new - old)) }
        }
        add(messagesIn, now.messages_in, before.messages_in)
        add(messagesOut, now.messages_out, before.messages_out)
        add(bytesIn, now.bytes_in, before.bytes_in)
        add(bytesOut, now.bytes_out, before.bytes_out)
        add(dropped, now.dropped, before.dropped)
        add(handshakesFailed, now.handshakes_failed, before.handshakes_failed)
        add(tlsHandshakes, now.tls_handshakes, before.tls_handshakes)
        add(tlsHandshakesFailed, now.tls_handshakes_failed, before.tls_handshakes_failed)
        add(tlsKernelOffloads, now.tls_kernel_offloads, before.tls_kernel_offloads)
        add(socketWrites, now.socket_writes, before.socket_writes)
        // The engine answers 503 at maxConnections itself: the Swift layer never sees those upgrades.
        if now.refused_full > before.refused_full {
            counter(in: upgradesRefused, key: 503, label: "upgrades_refused_total", dimension: ("status", "503"))
                .increment(by: Int64(clamping: now.refused_full - before.refused_full))
        }
        connections.record(sample.connections)
        sockets.record(Int64(clamping: now.sockets))
    }

    /// Calls `tick` every `interval` on a thread of its own (never a loop,
    /// never the cooperative pool) until `stop`, or until `tick` says the
    /// server is gone.
    func startSampling(_ tick: @escaping @Sendable () -> Bool) {
        let first = sampling.withLock { started in
            defer { started = true }
            return !started
        }
        guard first else { return }
        let (seconds, attoseconds) = interval.components
        let nanoseconds = max(1_000_000, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        Thread.detachNewThread { [self] in
            while stopSignal.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .timedOut {
                if !tick() { return }
            }
        }
    }

    /// Ends the sampling thread (if it ever started).
    func stop() { stopSignal.signal() }
}

// One channel message prepared for 10,000 recipients: what WebSocketServer.writeChannel
// does (WebSocketServer.swift: writeChannel -> writeChannelLocally -> fanOut) minus the
// channel lookup under the service lock, which needs live connections.
//
// Once per message: the envelope is encoded (Envelope.encoded) and framed into
// one refcounted block (cws_msg_new). Per recipient: cws_send_msg_many takes a
// reference and appends (id, msg) to the owning loop's inbox under one lock
// per loop. Those calls need a server but no connections, so the benchmark
// runs a started one-loop server and passes 10,000 ids of connections that do
// not exist: the loop thread drains the inbox as it would for real ones, finds
// no connection and drops the reference. The loop's own per-recipient work
// for a live connection (send-queue push, dirty list, writev) is not covered:
// it needs sockets (the fan-out scenario of the load generator measures it).
import Benchmark
import CWebSocket
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

final class FanOutServer {
    let server: OpaquePointer
    let ids: [cws_conn_id]
    private let host = strdup("127.0.0.1")

    init(recipients: Int) {
        var cfg = cws_server_config()
        cws_server_config_init(&cfg)
        cfg.host = UnsafePointer(host)
        cfg.port = 0
        cfg.loops = 1
        var err = [CChar](repeating: 0, count: 256)
        guard let s = cws_server_create(&cfg, &err, err.count) else {
            fatalError("cws_server_create: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        precondition(cws_server_start(s) == 0)
        server = s
        // id = generation (32) | loop (8) | slot (24), as engine.c makes them;
        // loop 0 with slots past any it has allocated: never a live connection.
        ids = (0..<recipients).map { (1 << 32) | UInt64($0) }
    }

    deinit {
        cws_server_stop(server, 1000)
        cws_server_destroy(server)
        free(host)
    }
}

func registerFanOutBenchmarks() {
    var config = Benchmark.defaultConfiguration
    config.scalingFactor = .one
    // Bounded: if the loop thread falls behind, its inbox holds the backlog.
    config.maxIterations = 2_000
    let recipients = 10_000
    let envelope = try! Envelope.parse(envelopeText)

    // The once-per-message part alone.
    Benchmark("channel message: envelope encode + frame once (cws_msg_new)", configuration: config) { benchmark in
        for _ in benchmark.scaledIterations {
            let bytes = envelope.encoded()
            let m = bytes.withUnsafeBytes { cws_msg_new(Opcode.text.rawValue, $0.baseAddress, $0.count) }!
            cws_msg_release(m)
        }
    }

    var enqueue: FanOutServer?
    Benchmark("channel message: enqueue one framed msg to 10,000 recipients (cws_send_msg_many)",
              configuration: config) { benchmark in
        let f = enqueue!
        let bytes = envelope.encoded()
        let m = bytes.withUnsafeBytes { cws_msg_new(Opcode.text.rawValue, $0.baseAddress, $0.count) }!
        benchmark.startMeasurement()
        f.ids.withUnsafeBufferPointer { ids in
            for _ in benchmark.scaledIterations {
                cws_send_msg_many(f.server, ids.baseAddress, ids.count, m)
            }
        }
        benchmark.stopMeasurement()
        cws_msg_release(m)
    } setup: {
        enqueue = FanOutServer(recipients: recipients)
    } teardown: {
        enqueue = nil
    }

    var whole: FanOutServer?
    Benchmark("channel message for 10,000 recipients: encode + frame once + enqueue", configuration: config) { benchmark in
        let f = whole!
        f.ids.withUnsafeBufferPointer { ids in
            for _ in benchmark.scaledIterations {
                let bytes = envelope.encoded()
                let m = bytes.withUnsafeBytes { cws_msg_new(Opcode.text.rawValue, $0.baseAddress, $0.count) }!
                cws_send_msg_many(f.server, ids.baseAddress, ids.count, m)
                cws_msg_release(m)
            }
        }
    } setup: {
        whole = FanOutServer(recipients: recipients)
    } teardown: {
        whole = nil
    }
}

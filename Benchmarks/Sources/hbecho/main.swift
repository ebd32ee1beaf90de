// hbecho: the Hummingbird WebSocket (SwiftNIO) peer for the benchmarks.
//
// Same semantics as `wsdemo --echo`: a WebSocket upgrade is accepted at any
// path and every text or binary message is echoed back unchanged.
//
//   hbecho [--host 127.0.0.1] [--port 0] [--threads 1] [--deflate]
//
// --port 0 picks a free port; the first line on stdout is
// `hbecho on HOST:PORT (N threads[, permessage-deflate])` once it listens.
// --threads sets the NIO event loop count (1, like `wsdemo --loops 1`).
// --deflate offers permessage-deflate (WSCompression) to clients that ask.
import Foundation
import Hummingbird
import HummingbirdWebSocket
import HummingbirdWSCompression
import Logging
import NIOCore
import NIOPosix

struct Options {
    var host = "127.0.0.1"
    var port = 0
    var threads = 1
    var deflate = false
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("hbecho: \(message)\n".utf8))
    exit(2)
}

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst().makeIterator()
    func value(_ flag: String) -> String {
        guard let v = args.next() else { fail("\(flag) needs a value") }
        return v
    }
    while let a = args.next() {
        switch a {
        case "--host": o.host = value(a)
        case "--port": o.port = Int(value(a)) ?? -1
        case "--threads": o.threads = Int(value(a)) ?? 0
        case "--deflate": o.deflate = true
        case "-h", "--help":
            print("usage: hbecho [--host H] [--port P] [--threads N] [--deflate]")
            exit(0)
        default: fail("unknown argument \(a)")
        }
    }
    guard (0...65535).contains(o.port), o.threads >= 1 else { fail("bad --port or --threads") }
    return o
}

let options = parseOptions()
var logger = Logger(label: "hbecho")
logger.logLevel = .warning

let maxSize = 16 << 20
let wsConfig = WebSocketServerConfiguration(
    maxFrameSize: maxSize,
    extensions: options.deflate ? [.perMessageDeflate(maxDecompressedFrameSize: maxSize)] : []
)
let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)

let app = Application(
    router: Router(),
    server: .http1WebSocketUpgrade(configuration: wsConfig) { _, _, _ in
        .upgrade([:]) { inbound, outbound, _ in
            for try await message in inbound.messages(maxSize: maxSize) {
                switch message {
                case .binary(let buffer): try await outbound.write(.binary(buffer))
                case .text(let string): try await outbound.write(.text(string))
                }
            }
        }
    },
    configuration: .init(address: .hostname(options.host, port: options.port), serverName: "hbecho"),
    onServerRunning: { channel in
        let o = options
        let port = channel.localAddress?.port ?? o.port
        let banner = "hbecho on \(o.host):\(port) (\(o.threads) thread\(o.threads == 1 ? "" : "s")"
            + "\(o.deflate ? ", permessage-deflate" : ""))\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
    },
    eventLoopGroupProvider: .shared(group),
    logger: logger
)
try await app.runService()

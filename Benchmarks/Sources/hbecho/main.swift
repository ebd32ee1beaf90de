// hbecho: the Hummingbird WebSocket (SwiftNIO) peer for the benchmarks.
//
// Same semantics as `wsdemo --echo`: a WebSocket upgrade is accepted at any
// path and every text or binary message is echoed back unchanged.
//
//   hbecho [--host 127.0.0.1] [--port 0] [--threads 1] [--deflate]
//          [--tls-cert FILE --tls-key FILE]
//
// --port 0 picks a free port; the first line on stdout is
// `hbecho on HOST:PORT (N threads[, permessage-deflate][, TLS])` once it listens.
// --threads sets the NIO event loop count (1, like `wsdemo --loops 1`).
// --deflate offers permessage-deflate (WSCompression) to clients that ask.
// --tls-cert/--tls-key (PEM chain and key) serve wss:// instead of ws://, with
// HummingbirdTLS (swift-nio-ssl, BoringSSL) and its default server settings,
// like `wsdemo --tls-cert --tls-key`.
import Foundation
import PeerOptions
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import HummingbirdWSCompression
import Logging
import NIOCore
import NIOPosix
import NIOSSL


let options = PeerOptions.parse(program: "hbecho", allowDeflate: true, allowTLS: true)
var logger = Logger(label: "hbecho")
logger.logLevel = .warning

let maxSize = 16 << 20
let wsConfig = WebSocketServerConfiguration(
    maxFrameSize: maxSize,
    extensions: options.deflate ? [.perMessageDeflate(maxDecompressedFrameSize: maxSize)] : []
)
let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)

let webSocket: HTTPServerBuilder = .http1WebSocketUpgrade(configuration: wsConfig) { _, _, _ in
    .upgrade([:]) { inbound, outbound, _ in
        for try await message in inbound.messages(maxSize: maxSize) {
            switch message {
            case .binary(let buffer): try await outbound.write(.binary(buffer))
            case .text(let string): try await outbound.write(.text(string))
            }
        }
    }
}
let server: HTTPServerBuilder
if let cert = options.tlsCert, let key = options.tlsKey {
    do {
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        )
        server = try .tls(webSocket, tlsConfiguration: tls)
    } catch {
        FileHandle.standardError.write(Data("hbecho: TLS: \(error)\n".utf8))
        exit(1)
    }
} else {
    server = webSocket
}

let app = Application(
    router: Router(),
    server: server,
    configuration: .init(address: .hostname(options.host, port: options.port), serverName: "hbecho"),
    onServerRunning: { channel in
        let o = options
        let port = channel.localAddress?.port ?? o.port
        let banner = "hbecho on \(o.host):\(port) (\(o.threads) thread\(o.threads == 1 ? "" : "s")"
            + "\(o.deflate ? ", permessage-deflate" : "")\(o.tlsCert != nil ? ", TLS" : ""))\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
    },
    eventLoopGroupProvider: .shared(group),
    logger: logger
)
try await app.runService()

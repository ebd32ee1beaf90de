import Foundation
import WebSocketService

@main
struct ChatServer {
    static func main() throws {
        let server = try WebSocketServer(routes: chatRoutes(),
                                         configuration: Configuration(host: "127.0.0.1", port: 8080))
        try server.start()
        print("chat on http://127.0.0.1:\(server.port)/")

        // Ctrl-C: close every connection with 1001 (going away), then exit.
        signal(SIGINT, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .main)
        interrupt.setEventHandler {
            server.stop(timeout: .seconds(3))
            exit(0)
        }
        interrupt.resume()
        withExtendedLifetime(interrupt) { dispatchMain() }
    }
}

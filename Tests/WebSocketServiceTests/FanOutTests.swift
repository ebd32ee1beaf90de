import Foundation
import Logging
import Testing
@testable import WebSocketService

@Suite(.serialized) struct FanOutTests {
    /// 1,000 members of one channel; every channel message reaches every
    /// member exactly once and in order.
    @Test(arguments: backends) func channelFanOutToAThousandConnections(_ backend: Configuration.Backend) throws {
        let members = 1000
        let messages = 100
        guard raiseFileLimit(to: 2 * members + 200) >= 2 * members + 100 else {
            print("SKIPPED: cannot open \(2 * members) descriptors")
            return
        }
        var routes = WebSocketRoutes()
        routes.socket("/ws", handler: TestHandler())
        // Presence is tested elsewhere; here it would add 500,000 updates
        // (each joiner to every earlier member) for the clients to wade through.
        guard let service = try startService(backend, routes: routes, configure: { $0.announcesPresence = false })
        else { return }
        defer { service.stop() }

        var clients: [TestClient] = []
        clients.reserveCapacity(members)
        for _ in 0..<members { clients.append(try TestClient.connect(port: service.port, path: "/ws?ch=big")) }
        #expect(eventually { service.connections(in: "big").count == members })

        let sender = try #require(service.connections(in: "big").first)
        for seq in 0..<messages {
            #expect(service.writeChannel(cmd: "tick", param: RawJSON(seq), channel: "big", except: sender.id,
                                         from: sender.id) == members - 1)
        }
        service.writeChannel(cmd: "done", param: .null, channel: "big")

        var delivered = 0
        for client in clients {
            var expected = 0
            var isSender = false
            while true {
                let envelope = try client.receiveJSON()
                let cmd = envelope["cmd"] as? String
                if cmd == "done" { break }
                #expect(cmd == "tick")
                #expect(envelope["from"] as? String == sender.id.uuidString.lowercased())
                let seq = envelope["param"] as? Int
                #expect(seq == expected, "in order, once each")
                expected += 1
                delivered += 1
            }
            if expected == 0 { isSender = true }
            #expect(expected == messages || isSender)
        }
        #expect(delivered == (members - 1) * messages)
        // The sender's own ticks were excluded: it got only done.
        #expect(sender.counters.messagesOut == 1)
    }
}

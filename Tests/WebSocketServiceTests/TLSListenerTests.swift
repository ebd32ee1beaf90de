import CWebSocket
import Foundation
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// `Configuration.TLS.port`: a plain listener and a TLS one side by side in
/// one server, on both backends.
@Suite struct TLSListenerTests {
    @Test(arguments: backends) func plainAndTLSListenersServeSideBySide(_ backend: Configuration.Backend) throws {
        let seen = SeenRequests()
        guard let service = try startTLSService(backend, seen: seen, configure: { $0.tls?.port = 0 }) else { return }
        defer { service.stop() }
        let tlsPort = try #require(service.tlsPort)
        #expect(tlsPort != service.port)

        let plain = try TestClient.connect(port: service.port)
        #expect(plain.tls == nil)
        let secure = try TestClient.connect(port: tlsPort, tls: trustTestCA)
        #expect(secure.tls?.version == "TLSv1.3")
        // The upgrade saw which listener each came through: no name over ws://.
        #expect(seen.names.withLock { $0 } == [nil, "localhost"])

        // Both open at once, each echoing on its own transport, interleaved.
        for i in 0..<50 {
            try plain.send(text: "plain \(i)")
            try secure.send(.binary, Array(repeating: UInt8(i), count: 20_000 + i))
            #expect(try plain.receive() == .text("plain \(i)"))
            #expect(try secure.receive() == .binary(Array(repeating: UInt8(i), count: 20_000 + i)))
        }
        #expect(service.status().connections == 2)
        #expect(service.status().tlsHandshakes == 1)

        // Each port speaks only its own: a TLS client on the plain port gets
        // no handshake, and a plain upgrade on the TLS port gets no answer;
        // the second is the TLS listener's to count.
        #expect(throws: (any Error).self) { _ = try TestClient.connect(port: service.port, tls: trustTestCA) }
        let fd = try TestClient.tcp(port: tlsPort)
        defer { Glibc.close(fd) }
        try TestClient.writeAll(fd, Array(TestClient.upgradeRequest(path: "/ws").utf8))
        let answer = try TestClient.readToEnd(fd)
        #expect(!String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/"))
        #expect(eventually { service.status().tlsHandshakesFailed == 1 })

        // Nothing of that touched the open ones, and a reload keeps the ports.
        try service.reloadTLS()
        #expect(service.tlsPort == tlsPort)
        try plain.send(text: "after")
        #expect(try plain.receive() == .text("after"))
        try secure.send(text: "after")
        #expect(try secure.receive() == .text("after"))
        let again = try TestClient.connect(port: tlsPort, tls: trustTestCA)
        try again.send(text: "new")
        #expect(try again.receive() == .text("new"))
    }

    @Test(arguments: backends) func aStopClosesBothListeners(_ backend: Configuration.Backend) throws {
        guard let service = try startTLSService(backend, configure: { $0.tls?.port = 0 }) else { return }
        let ports = [service.port, try #require(service.tlsPort)]
        let secure = try TestClient.connect(port: ports[1], tls: trustTestCA)
        service.stop(timeout: .seconds(1)) // the client answers no close frame
        #expect(try secure.receive() == .close(code: 1001, reason: ""))
        for port in ports {
            #expect(throws: (any Error).self, "port \(port) still accepts") { Glibc.close(try TestClient.tcp(port: port)) }
        }
    }

    @Test func onlyTheTLSListenerHasATLSPort() throws {
        guard let plain = try startService(.epoll, routes: WebSocketRoutes()) else { return }
        defer { plain.stop() }
        #expect(plain.tlsPort == nil)
        guard let tlsOnly = try startTLSService(.epoll) else { return }
        defer { tlsOnly.stop() }
        #expect(tlsOnly.tlsPort == tlsOnly.port)
    }

    @Test(arguments: backends) func aTakenTLSPortFailsTheServerWithBothPortsNamed(_ backend: Configuration.Backend) throws {
        // Another server holds the port the TLS listener wants.
        guard let holder = try startService(backend, routes: WebSocketRoutes()) else { return }
        defer { holder.stop() }
        let server = certificate("server")
        var configuration = Configuration(host: "127.0.0.1", port: 0, loops: 2, backend: backend)
        configuration.tls = Configuration.TLS(certificateChainFile: server.chain, privateKeyFile: server.key)
        configuration.tls?.port = holder.port
        do {
            _ = try WebSocketServer(routes: WebSocketRoutes(), configuration: configuration)
            Issue.record("created on a port another server holds")
        } catch {
            #expect(error.description.contains("\(holder.port) (TLS)"), "\(error)")
            #expect(error.description.contains("already in use"), "\(error)")
        }
        // The same port twice is refused too.
        configuration.port = 47_011
        configuration.tls?.port = 47_011
        #expect(throws: WebSocketServer.Error.self) {
            _ = try WebSocketServer(routes: WebSocketRoutes(), configuration: configuration)
        }
    }
}

extension TLSListenerTests {
    /// `wsdemo --tls-port`: its banner names both ports, and each speaks its own.
    @Test func theDemoServesWSAndWSSSideBySide() throws {
        guard let executable = DemoServer.executable else {
            print("SKIPPED: no wsdemo built next to the tests")
            return
        }
        let server = certificate("server")
        let demo = try DemoServer(executable: executable,
                                  arguments: ["--echo", "--tls-cert", server.chain, "--tls-key", server.key, "--tls-port", "0"])
        let marker = ", wss:// on port "
        let banner = demo.banner
        let tlsPort = try #require(banner.range(of: marker).flatMap { Int(banner[$0.upperBound...].prefix { $0.isNumber }) },
                                   "no TLS port in: \(banner)")
        let plain = try TestClient.connect(port: demo.port)
        try plain.send(text: "ws")
        #expect(try plain.receive() == .text("ws"))
        let secure = try TestClient.connect(port: tlsPort, tls: trustTestCA)
        try secure.send(text: "wss")
        #expect(try secure.receive() == .text("wss"))
    }
}

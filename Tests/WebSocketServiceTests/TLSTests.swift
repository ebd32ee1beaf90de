import OffThePool
import ChildProcess
import CWebSocket
import Foundation
import Logging
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// Certificates made once per test run by scripts/make-test-certs (a
/// throw-away CA; see that script for the names each one serves).
let testCertificates: String = {
    let dir = testCertificatesDirectory
    // Gone with the test process: one per run would pile up in the temporary directory.
    atexit { try? FileManager.default.removeItem(atPath: testCertificatesDirectory) }
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/make-test-certs").path
    let child = try? ChildProcess(script, [dir], output: .capture)
    let output = child?.readToEnd() ?? ""
    if child?.wait() != 0 { print("make-test-certs failed: \(output)") }
    return dir
}()

private let testCertificatesDirectory = NSTemporaryDirectory() + "cws-tls-\(getpid())"

func certificate(_ name: String) -> (chain: String, key: String) {
    ("\(testCertificates)/\(name).pem", "\(testCertificates)/\(name).key")
}

let trustTestCA = TestTLS(caFile: "\(testCertificates)/ca.pem")

/// Records what the upgrade saw of TLS.
final class SeenRequests: Sendable {
    let names = Locked<[String?]>([])
}

func startTLSService(_ backend: Configuration.Backend, identities: [Configuration.TLS.Identity]? = nil,
                     logger: Logger = LogCapture().logger, seen: SeenRequests = SeenRequests(),
                     configure: (inout Configuration) -> Void = { _ in }) throws -> WebSocketServer? {
    var routes = WebSocketRoutes()
    // No rate limit: the bursts here are the point.
    routes.raw("/ws", handler: Echo(), limits: .unlimited) { request in
        seen.names.withLock { $0.append(request.tlsServerName) }
        return .accept(nil)
    }
    let server = certificate("server")
    return try startService(backend, routes: routes, logger: logger) { configuration in
        configuration.tls = identities.map { Configuration.TLS(identities: $0) }
            ?? Configuration.TLS(certificateChainFile: server.chain, privateKeyFile: server.key)
        configure(&configuration)
    }
}

/// `count` small text frames in one write, echoed in order (the replies of a turn sealed together).
func expectBurstEchoed(_ count: Int, on client: TestClient, _ what: String = "") throws {
    var burst: [UInt8] = []
    for i in 0..<count { burst += FrameEncoder.encode(.text, payload: Array("m\(i)".utf8), fin: true, maskKey: 0x0102_0304) }
    try client.write(burst)
    for i in 0..<count {
        let got = try client.receive()
        #expect(got == .text("m\(i)"), "\(what) \(got)")
        if got != .text("m\(i)") { break }
    }
}

@Suite struct TLSTests {
    @Test(arguments: backends) func messagesOfEverySizeEchoOverTLS(_ backend: Configuration.Backend) throws {
        let seen = SeenRequests()
        guard let service = try startTLSService(backend, seen: seen, configure: { $0.maxMessageSize = 4 << 20 }) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, tls: trustTestCA)
        #expect(client.tls?.version == "TLSv1.3")
        #expect(client.tls?.alpn == "http/1.1")
        #expect(seen.names.withLock { $0 } == ["localhost"])
        for size in [0, 1, 125, 126, 16_383, 16_384, 16_385, 65_536, 1 << 20, 4 << 20] {
            let payload = repeating(size, period: 256) { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) }
            try client.send(.binary, payload)
            #expect(try client.receive(timeout: .seconds(20)) == .binary(payload), "\(size) bytes")
        }
        // A fragmented message, and a burst of small ones in flight at once.
        try client.send(.text, Array("frag".utf8), fin: false)
        try client.send(.continuation, Array("mented".utf8))
        #expect(try client.receive() == .text("fragmented"))
        // 3,000 in one write: a turn's replies (hundreds) are sealed at once, many to a record.
        try expectBurstEchoed(3000, on: client)
        #expect(service.status().tlsHandshakes == 1)
    }

    @Test(arguments: backends) func theCertificateFollowsTheNameTheClientAsksFor(_ backend: Configuration.Backend) throws {
        let server = certificate("server"), other = certificate("other")
        let identities = [
            Configuration.TLS.Identity(certificateChainFile: server.chain, privateKeyFile: server.key),
            Configuration.TLS.Identity(serverName: "other.test", certificateChainFile: other.chain, privateKeyFile: other.key),
            Configuration.TLS.Identity(serverName: "*.wild.test", certificateChainFile: other.chain, privateKeyFile: other.key),
        ]
        let seen = SeenRequests()
        guard let service = try startTLSService(backend, identities: identities, seen: seen) else { return }
        defer { service.stop() }
        // No name at all gets the default.
        let asked: [(String?, String)] = [("localhost", "localhost"), ("other.test", "other.test"),
                                          ("a.wild.test", "other.test"), (nil, "localhost")]
        for (name, expected) in asked {
            var tls = trustTestCA
            tls.serverName = name
            let fd = try TestClient.tcp(port: service.port)
            defer { Glibc.close(fd) }
            let session = try TestTLSSession(fd: fd, tls)
            #expect(session.peerCommonName == expected, "asked for \(name ?? "no name")")
        }
        let client = try TestClient.connect(port: service.port, tls: { var t = trustTestCA; t.serverName = "other.test"; return t }())
        try client.send(text: "hello")
        #expect(try client.receive() == .text("hello"))
        #expect(seen.names.withLock { $0 } == ["other.test"])
    }

    @Test(arguments: backends) func aReloadServesTheNewCertificateToNewConnectionsOnly(_ backend: Configuration.Backend) throws {
        guard let service = try startTLSService(backend) else { return }
        defer { service.stop() }
        let before = try TestClient.connect(port: service.port, tls: trustTestCA)
        let oldSerial = before.tls?.peerSerial ?? ""
        let renewed = certificate("renewed")
        try service.reloadTLS(Configuration.TLS(certificateChainFile: renewed.chain, privateKeyFile: renewed.key))
        // A file that cannot be read is refused, and what is in use stays.
        #expect(throws: WebSocketServer.Error.self) {
            try service.reloadTLS(Configuration.TLS(certificateChainFile: "/nonexistent.pem", privateKeyFile: renewed.key))
        }
        let after = try TestClient.connect(port: service.port, tls: trustTestCA)
        let newSerial = after.tls?.peerSerial ?? ""
        #expect(!oldSerial.isEmpty && !newSerial.isEmpty && oldSerial != newSerial)
        for (client, text) in [(before, "old session"), (after, "new session")] {
            try client.send(text: text)
            #expect(try client.receive() == .text(text))
        }
        try service.reloadTLS() // the files in use, read again
        let again = try TestClient.connect(port: service.port, tls: trustTestCA)
        #expect(again.tls?.peerSerial == newSerial)
    }

    @Test(arguments: backends) func reloadsUnderTrafficKeepOpenSessionsAndServeEachNewOneTheLatest(_ backend: Configuration.Backend) async throws {
        guard let service = try startTLSService(backend) else { return }
        defer { service.stop() }
        let server = certificate("server"), renewed = certificate("renewed")
        let pairs = [renewed, server]
        // Serial numbers as a client sees them, for each file.
        var serials: [String] = []
        for pair in pairs {
            try service.reloadTLS(Configuration.TLS(certificateChainFile: pair.chain, privateKeyFile: pair.key))
            serials.append(try TestClient.connect(port: service.port, tls: trustTestCA).tls?.peerSerial ?? "")
        }
        #expect(Set(serials).count == 2)
        // Four clients echo without a pause while the certificate changes twenty times.
        let port = service.port
        let traffic = (0..<4).map { n in
            Task {
                try await offThePool {
                    let client = try TestClient.connect(port: port, tls: trustTestCA)
                    for i in 0..<300 {
                        let text = "client \(n) message \(i)"
                        try client.send(text: text)
                        guard try client.receive() == .text(text) else { throw ClientError("wrong echo for \(text)") }
                    }
                }
            }
        }
        for round in 0..<20 {
            let pair = pairs[round % 2]
            try service.reloadTLS(Configuration.TLS(certificateChainFile: pair.chain, privateKeyFile: pair.key))
            let fresh = try await offThePool { try TestClient.connect(port: port, tls: trustTestCA).tls?.peerSerial ?? "" }
            #expect(fresh == serials[round % 2], "round \(round)")
        }
        for task in traffic { try await task.value }
    }

    @Test(arguments: backends) func plainHTTPAndGarbageOnTheTLSPortAreClosedAndLogged(_ backend: Configuration.Backend) throws {
        let log = LogCapture()
        guard let service = try startTLSService(backend, logger: log.logger) else { return }
        defer { service.stop() }
        // The last one is a TLS record the handshake refuses with an alert,
        // and more after it: the connection is counted and logged once.
        let attempts: [[[UInt8]]] = [
            [Array(TestClient.upgradeRequest(path: "/ws").utf8)],
            [Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)],
            [(0..<600).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }],
            // A TLS record holding a ClientHello too short to parse: answered with an alert.
            [[0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0x03, 0x03], [0x16, 0x03, 0x01, 0x00, 0x01, 0x00]],
        ]
        for writes in attempts {
            let fd = try TestClient.tcp(port: service.port)
            defer { Glibc.close(fd) }
            for (i, bytes) in writes.enumerated() {
                if i > 0 { usleep(100_000) }
                try TestClient.writeAll(fd, bytes)
            }
            let answer = try TestClient.readToEnd(fd)
            #expect(!String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/"), "no plaintext answer on the TLS port")
        }
        #expect(eventually { service.status().tlsHandshakesFailed == 4 })
        let lines = log.entries.withLock { $0 }.filter { $0.level == .debug && $0.message.contains("TLS handshake failed") }
        #expect(lines.count == 4)
        #expect(service.status().tlsHandshakesFailed == 4)
        #expect(lines.allSatisfy { $0.message.contains("127.0.0.1") })
        // Nothing else was touched: a real client is served.
        let client = try TestClient.connect(port: service.port, tls: trustTestCA)
        try client.send(text: "still here")
        #expect(try client.receive() == .text("still here"))
    }

    @Test(arguments: backends) func aStalledHandshakeEndsAtTheHandshakeTimeout(_ backend: Configuration.Backend) throws {
        let log = LogCapture()
        guard let service = try startTLSService(backend, logger: log.logger, configure: {
            $0.handshakeTimeout = .milliseconds(300)
        }) else { return }
        defer { service.stop() }
        // The first bytes of a ClientHello's record header, then nothing.
        let fd = try TestClient.tcp(port: service.port)
        defer { Glibc.close(fd) }
        try TestClient.writeAll(fd, [0x16, 0x03, 0x01, 0x02])
        #expect(try TestClient.readSome(fd, deadline: .now + .seconds(10)).isEmpty, "closed by the server")
        #expect(eventually { service.status().tlsHandshakesFailed == 1 })
        #expect(log.entries.withLock { $0 }.contains { $0.level == .debug && $0.message.contains("timed out") })
    }

    @Test(arguments: backends) func aCloseNotifyOrAFINMidMessageEndsTheConnectionWith1006(_ backend: Configuration.Backend) throws {
        let log = LogCapture()
        guard let service = try startTLSService(backend, logger: log.logger) else { return }
        defer { service.stop() }
        let codes = Locked<[UInt16]>([])
        service.onClose = { _, code, _ in codes.withLock { $0.append(code.rawValue) } }
        for notify in [true, false] {
            let client = try TestClient.connect(port: service.port, tls: trustTestCA)
            try client.send(text: "ping")
            #expect(try client.receive() == .text("ping"))
            try client.send(.text, Array("half a mess".utf8), fin: false)
            if notify { client.tls?.sendCloseNotify() } else { shutdown(client.fd, Int32(SHUT_WR)) }
            try client.waitForEOF()
        }
        #expect(eventually { codes.withLock { $0 } == [1006, 1006] })
        let messages = log.entries.withLock { $0 }.filter { $0.level == .debug }.map(\.message)
        #expect(messages.contains { $0.contains("close_notify from 127.0.0.1") })
        #expect(messages.contains { $0.contains("ended without close_notify") })
    }

    @Test(arguments: backends) func theCloseHandshakeEndsWithCloseNotify(_ backend: Configuration.Backend) throws {
        guard let service = try startTLSService(backend) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, tls: trustTestCA)
        try client.sendClose(code: 1000)
        #expect(try client.receive() == .close(code: 1000, reason: ""))
        try client.waitForEOF()
        #expect(client.tls?.receivedCloseNotify == true)
    }

    @Test(arguments: backends) func aRequiredClientCertificateIsChecked(_ backend: Configuration.Backend) throws {
        guard let service = try startTLSService(backend, configure: {
            $0.tls?.clientCertificateAuthorityFile = "\(testCertificates)/ca.pem"
            $0.tls?.requiresClientCertificate = true
        }) else { return }
        defer { service.stop() }
        #expect(throws: ClientError.self) {
            let client = try TestClient.connect(port: service.port, tls: trustTestCA)
            // TLS 1.3: the refusal arrives after the client's side of the handshake.
            try client.send(text: "refused")
            _ = try client.receive()
        }
        var withCertificate = trustTestCA
        (withCertificate.certificateFile, withCertificate.keyFile) = certificate("client")
        let client = try TestClient.connect(port: service.port, tls: withCertificate)
        try client.send(text: "admitted")
        #expect(try client.receive() == .text("admitted"))
    }

    @Test(arguments: backends) func anAwaitedUpgradeOverTLSKeepsTheFramesSentBeforeIt(_ backend: Configuration.Backend) throws {
        var routes = WebSocketRoutes()
        routes.raw("/ws", handler: Echo(), authenticate: { request in
            await pause(for: .milliseconds(100))
            return request.isSecure ? .accept(nil) : .refuse(status: 403, message: "TLS only")
        })
        let server = certificate("server")
        guard let service = try startService(backend, routes: routes, configure: {
            $0.tls = Configuration.TLS(certificateChainFile: server.chain, privateKeyFile: server.key)
        }) else { return }
        defer { service.stop() }
        // The upgrade and three frames at once, before the decision.
        let fd = try TestClient.tcp(port: service.port)
        defer { Glibc.close(fd) }
        let session = try TestTLSSession(fd: fd, trustTestCA)
        var bytes = Array(TestClient.upgradeRequest(path: "/ws").utf8)
        for i in 0..<3 { bytes += FrameEncoder.encode(.text, payload: Array("early \(i)".utf8), fin: true, maskKey: 0x1234_5678) }
        try session.write(bytes)
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(5)
        let expected = (0..<3).flatMap { FrameEncoder.encode(.text, payload: Array("early \($0)".utf8), fin: true, maskKey: nil) }
        while !received.ends(with: expected) {
            let chunk = try session.readSome(deadline: deadline)
            if chunk.isEmpty { break }
            received += chunk
        }
        #expect(String(decoding: received, as: UTF8.self).hasPrefix("HTTP/1.1 101"))
        #expect(received.ends(with: expected), "the early frames, echoed in order after the 101")
    }

    /// With the kernel asked to send (`kernelOffload`): on a kernel with the
    /// "tls" module the sessions are handed over and echo as before; on one
    /// without it they stay in user space, and this says so.
    @Test(arguments: backends) func kernelTLSIsUsedWhereTheKernelHasItAndReportedWhereNot(_ backend: Configuration.Backend) throws {
        guard let service = try startTLSService(backend, configure: {
            $0.tls?.kernelOffload = true
            $0.maxMessageSize = 1 << 20
        }) else { return }
        defer { service.stop() }
        let client = try TestClient.connect(port: service.port, tls: trustTestCA)
        for size in [5, 16_385, 1 << 20] {
            let payload = repeating(size, period: 256) { UInt8(truncatingIfNeeded: $0 &* 7) }
            try client.send(.binary, payload)
            #expect(try client.receive(timeout: .seconds(20)) == .binary(payload), "\(size) bytes")
        }
        try client.sendClose(code: 1000)
        #expect(try client.receive() == .close(code: 1000, reason: ""))
        try client.waitForEOF()
        #expect(client.tls?.receivedCloseNotify == true)
        if WebSocketServer.kernelTLSAvailable {
            #expect(service.status().tlsKernelOffloads == 1, "handed to the kernel")
        } else {
            #expect(service.status().tlsKernelOffloads == 0)
            print("SKIPPED: kernel TLS on \(backend): this kernel offers no \"tls\" ULP (/proc/sys/net/ipv4/tcp_available_ulp); "
                  + "records were made in user space (the hand-off is checked by the emulated-kernel tests here, and on "
                  + "Debian's kernel with the tls module by scripts/ktls-vm)")
        }
    }

    /// The hand-off to a user-space writer of the records the kernel would
    /// make: a client that reads them checks the key schedule (key and IV
    /// from the traffic secret, per suite), the nonces and the record
    /// sequence from 0, records split at 16 KiB, small messages one record
    /// each, and close_notify as an alert record.
    @Test(arguments: backends) func aSessionHandedToAnEmulatedKernelIsReadByTheClient(_ backend: Configuration.Backend) throws {
        guard let service = try startTLSService(backend, configure: {
            $0.tls?.emulatesKernelOffload = true
            $0.maxMessageSize = 4 << 20
        }) else { return }
        defer { service.stop() }
        let suites = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
        for (index, suite) in suites.enumerated() {
            var tls = trustTestCA
            tls.ciphersuites = suite
            let client = try TestClient.connect(port: service.port, tls: tls)
            #expect(client.tls?.cipher == suite)
            for size in [0, 1, 125, 16_383, 16_384, 16_385, 65_536, 4 << 20] {
                let payload = repeating(size, period: 256) { UInt8(truncatingIfNeeded: $0 &* 13 &+ size) }
                try client.send(.binary, payload)
                #expect(try client.receive(timeout: .seconds(20)) == .binary(payload), "\(suite): \(size) bytes")
            }
            try expectBurstEchoed(500, on: client, suite)
            try client.sendClose(code: 1000)
            #expect(try client.receive() == .close(code: 1000, reason: ""))
            try client.waitForEOF()
            #expect(client.tls?.receivedCloseNotify == true, "\(suite): close_notify as an alert record")
            #expect(service.status().tlsKernelOffloads == UInt64(index + 1))
        }
    }

    /// What cannot be handed over stays in user space: a TLS 1.2 session.
    /// And a client that asks for a key update after the hand-off is closed
    /// (the kernel cannot send one), with a debug line.
    @Test(arguments: backends) func whatTheKernelCannotTakeStaysInUserSpaceOrEnds(_ backend: Configuration.Backend) throws {
        let log = LogCapture()
        guard let service = try startTLSService(backend, logger: log.logger, configure: {
            $0.tls?.emulatesKernelOffload = true
        }) else { return }
        defer { service.stop() }
        var old = trustTestCA
        old.tls12Only = true
        let legacy = try TestClient.connect(port: service.port, tls: old)
        #expect(legacy.tls?.version == "TLSv1.2")
        try legacy.send(text: "1.2")
        #expect(try legacy.receive() == .text("1.2"))
        #expect(service.status().tlsKernelOffloads == 0)
        #expect(log.entries.withLock { $0 }.map(\.message).contains { $0.contains("sending stays in user space: TLSv1.2, not TLS 1.3") })

        let client = try TestClient.connect(port: service.port, tls: trustTestCA)
        try client.send(text: "before")
        #expect(try client.receive() == .text("before"))
        #expect(service.status().tlsKernelOffloads == 1)
        try #require(client.tls).requestKeyUpdate()
        try? client.send(text: "after")
        #expect(throws: (any Error).self) { _ = try client.receive() }
        #expect(eventually { log.entries.withLock { $0 }.map(\.message).contains { $0.contains("asked for a key update, which kernel TLS cannot send") } })
        #expect(eventually { service.status().connections == 1 }, "the 1.2 session is still open")
        try legacy.send(text: "still")
        #expect(try legacy.receive() == .text("still"))
    }

    @Test func aServerWithoutTLSRefusesAReload() throws {
        guard let service = try startService(.epoll, routes: WebSocketRoutes()) else { return }
        defer { service.stop() }
        #expect(throws: WebSocketServer.Error.self) { try service.reloadTLS() }
    }

    @Test func aMissingCertificateFailsTheServerWithTheFileNamed() {
        var configuration = Configuration(host: "127.0.0.1", port: 0, loops: 1, backend: .epoll)
        configuration.tls = Configuration.TLS(certificateChainFile: "/nonexistent/chain.pem", privateKeyFile: "/nonexistent/key.pem")
        do {
            _ = try WebSocketServer(routes: WebSocketRoutes(), configuration: configuration)
            Issue.record("created without its certificate")
        } catch {
            #expect(error.description.contains("/nonexistent/chain.pem"))
        }
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && self[(count - suffix.count)...].elementsEqual(suffix) }
}

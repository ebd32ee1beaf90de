import CTestTLS
import Foundation
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

struct ClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A compact blocking WebSocket client over a loopback socket, built on the
/// C core's frame encoder and parser. Every read has a deadline that fails
/// the test instead of hanging it.
// Used by one thread at a time (the async tests hand one from a thread to the test and back).
final class TestClient: @unchecked Sendable {
    enum Received: Equatable {
        case text(String)
        case binary([UInt8])
        case close(code: UInt16, reason: String)
    }

    let fd: Int32
    /// The TLS session over fd, for a `wss://` server (nil: plain).
    private(set) var tls: TestTLSSession?
    private var parser = FrameParser(role: .client)
    private var pending: [Received] = []
    private var message: [UInt8] = []
    private var control: [UInt8] = []
    private var leftover: [UInt8] = []
    private(set) var closedByPeer = false

    private init(fd: Int32) { self.fd = fd }
    deinit { Glibc.close(fd) }

    /// Drops the connection as a dying client would: no close frame, the
    /// socket shut down at once (the descriptor is closed by deinit).
    func abort() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// A TCP connection to 127.0.0.1:port.
    static func tcp(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError("socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ClientError("connect: errno \(e)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClientError("send: errno \(errno)")
            }
            sent += n
        }
    }

    /// Reads what is there, waiting up to `deadline`; [] at end of stream.
    static func readSome(_ fd: Int32, deadline: ContinuousClock.Instant) throws -> [UInt8] {
        while true {
            let left = deadline - .now
            guard left > .zero else { throw ClientError("read timed out") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            let rc = poll(&pfd, 1, ms)
            if rc < 0 && errno == EINTR { continue }
            if rc <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == ECONNRESET { return [] }
                throw ClientError("recv: errno \(errno)")
            }
            return Array(buffer[0..<n])
        }
    }

    /// Everything until the peer closes, waiting up to `timeout` in all.
    static func readToEnd(_ fd: Int32, timeout: Duration = .seconds(5)) throws -> [UInt8] {
        var all: [UInt8] = []
        let deadline = ContinuousClock.now + timeout
        while true {
            let chunk = try readSome(fd, deadline: deadline)
            if chunk.isEmpty { return all }
            all += chunk
        }
    }

    /// A plain HTTP exchange: sends `request`, reads until the server closes
    /// (every answer here has Connection: close) or the head and body are in.
    static func http(port: Int, _ request: String, timeout: Duration = .seconds(5)) throws -> (status: Int, head: String, body: String) {
        let fd = try tcp(port: port)
        defer { Glibc.close(fd) }
        try writeAll(fd, Array(request.utf8))
        let deadline = ContinuousClock.now + timeout
        var data: [UInt8] = []
        while true {
            let chunk = try readSome(fd, deadline: deadline)
            if chunk.isEmpty { break }
            data += chunk
            if let (head, body) = split(data), let length = contentLength(head), body.count >= length { break }
        }
        guard let (head, body) = split(data) else { throw ClientError("no HTTP head in \(data.count) bytes") }
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        return (status, head, String(decoding: body, as: UTF8.self))
    }

    private static func split(_ data: [UInt8]) -> (String, [UInt8])? {
        let marker: [UInt8] = [13, 10, 13, 10]
        guard data.count >= 4 else { return nil }
        for i in 0...(data.count - 4) where data[i..<(i + 4)].elementsEqual(marker) {
            return (String(decoding: data[0..<i], as: UTF8.self), Array(data[(i + 4)...]))
        }
        return nil
    }

    private static func contentLength(_ head: String) -> Int? {
        for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            return Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    static func upgradeRequest(path: String, headers: [String] = []) -> String {
        var key = [UInt8](repeating: 0, count: 16)
        for i in key.indices { key[i] = UInt8.random(in: 0...255) }
        var lines = [
            "GET \(path) HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: \(Data(key).base64EncodedString())", "Sec-WebSocket-Version: 13",
        ]
        lines += headers
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// Opens a WebSocket (over TLS with `tls`); throws unless the answer is 101.
    static func connect(port: Int, path: String = "/ws", headers: [String] = [],
                        timeout: Duration = .seconds(5), tls: TestTLS? = nil) throws -> TestClient {
        let fd = try tcp(port: port)
        let client = TestClient(fd: fd)
        if let tls { client.tls = try TestTLSSession(fd: fd, tls) }
        try client.write(Array(upgradeRequest(path: path, headers: headers).utf8))
        let deadline = ContinuousClock.now + timeout
        var data: [UInt8] = []
        while true {
            let chunk = try client.readSome(deadline: deadline)
            guard !chunk.isEmpty else { throw ClientError("closed during the handshake: \(String(decoding: data, as: UTF8.self))") }
            data += chunk
            if let (head, rest) = split(data) {
                guard head.hasPrefix("HTTP/1.1 101") else { throw ClientError("refused: \(head)") }
                client.leftover = rest
                return client
            }
        }
    }

    func send(_ opcode: Opcode, _ payload: [UInt8], fin: Bool = true) throws {
        let key = UInt32.random(in: 0...UInt32.max)
        try write(FrameEncoder.encode(opcode, payload: payload, fin: fin, maskKey: key))
    }

    /// Bytes to the server, through TLS if the client speaks it.
    func write(_ bytes: [UInt8]) throws {
        if let tls { try tls.write(bytes) } else { try Self.writeAll(fd, bytes) }
    }

    /// What the server sent, waiting up to `deadline`; [] at end of stream.
    func readSome(deadline: ContinuousClock.Instant) throws -> [UInt8] {
        if let tls { return try tls.readSome(deadline: deadline) }
        return try Self.readSome(fd, deadline: deadline)
    }

    func send(text: String) throws { try send(.text, Array(text.utf8)) }

    func sendClose(code: UInt16 = 1000) throws {
        try send(.close, [UInt8(code >> 8), UInt8(code & 0xFF)])
    }

    /// The next whole message (pings are answered and skipped).
    func receive(timeout: Duration = .seconds(5)) throws -> Received {
        let deadline = ContinuousClock.now + timeout
        while pending.isEmpty {
            var chunk: [UInt8]
            if !leftover.isEmpty {
                chunk = leftover
                leftover = []
            } else {
                guard !closedByPeer else { throw ClientError("connection closed") }
                chunk = try readSome(deadline: deadline)
                if chunk.isEmpty {
                    closedByPeer = true
                    throw ClientError("connection closed without a close frame")
                }
            }
            var pongs: [[UInt8]] = []
            do {
                try chunk.withUnsafeMutableBytes { buffer in
                    try parser.parse(buffer) { event in
                        if event.opcode == .text || event.opcode == .binary || event.opcode == .continuation {
                            message.append(contentsOf: event.payload)
                            if event.isFrameEnd && event.fin {
                                pending.append(event.messageOpcode == .text
                                    ? .text(String(decoding: message, as: UTF8.self)) : .binary(message))
                                message = []
                            }
                        } else {
                            control.append(contentsOf: event.payload)
                            if event.isFrameEnd {
                                switch event.opcode {
                                case .close:
                                    let code = control.count >= 2 ? UInt16(control[0]) << 8 | UInt16(control[1]) : 1005
                                    let reason = control.count > 2 ? String(decoding: control[2...], as: UTF8.self) : ""
                                    pending.append(.close(code: code, reason: reason))
                                case .ping: pongs.append(control)
                                default: break
                                }
                                control = []
                            }
                        }
                    }
                }
            } catch {
                throw ClientError("server sent a bad frame: \(error)")
            }
            for payload in pongs { try send(.pong, payload) }
        }
        return pending.removeFirst()
    }

    /// The next text message parsed as JSON.
    func receiveJSON(timeout: Duration = .seconds(5)) throws -> [String: Any] {
        let message = try receive(timeout: timeout)
        guard case .text(let text) = message else { throw ClientError("expected text, got \(message)") }
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ClientError("not a JSON object: \(text)")
        }
        return object
    }

    /// The next envelope whose cmd is `cmd`, skipping others (presence updates...).
    func receiveEnvelope(cmd: String, timeout: Duration = .seconds(5)) throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let object = try receiveJSON(timeout: deadline - .now)
            if object["cmd"] as? String == cmd { return object }
        }
    }

    /// Waits for the peer's FIN after a close exchange.
    func waitForEOF(timeout: Duration = .seconds(5)) throws {
        let deadline = ContinuousClock.now + timeout
        while !closedByPeer {
            if try readSome(deadline: deadline).isEmpty { closedByPeer = true }
        }
    }
}

/// How a test client speaks TLS: whom it trusts, the name it asks for.
struct TestTLS {
    var caFile: String
    var serverName: String? = "localhost"
    var certificateFile: String? = nil
    var keyFile: String? = nil
    var alpn: [String] = ["http/1.1"]
    /// Offer TLS 1.2 at most.
    var tls12Only = false
    /// The TLS 1.3 suites to offer (OpenSSL's syntax); nil: its default.
    var ciphersuites: String? = nil
}

/// A client TLS session over a test's socket (Tests/Support/CTestTLS).
final class TestTLSSession {
    private let session: OpaquePointer

    init(fd: Int32, _ tls: TestTLS, timeout: Duration = .seconds(5)) throws {
        var wire: [UInt8] = []
        for name in tls.alpn { wire.append(UInt8(name.utf8.count)); wire += Array(name.utf8) }
        var err = [CChar](repeating: 0, count: 256)
        let made = wire.withUnsafeBufferPointer { alpn in
            alpn.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(1, wire.count)) { alpnChars in
                cttls_connect_with(fd, tls.caFile, tls.serverName, tls.certificateFile, tls.keyFile,
                                   wire.isEmpty ? nil : alpnChars, wire.count, tls.tls12Only ? 1 : 0, tls.ciphersuites,
                                   Int32(TestTLSSession.ms(timeout)), &err, err.count)
            }
        }
        guard let made else {
            throw ClientError("TLS: " + String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        session = made
    }

    deinit { cttls_free(session) }

    static func ms(_ d: Duration) -> Int {
        max(1, Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000))
    }

    func write(_ bytes: [UInt8]) throws {
        guard bytes.withUnsafeBytes({ cttls_write(session, $0.baseAddress, $0.count, 5000) }) == 0 else {
            throw ClientError("TLS write failed")
        }
    }

    /// [] at the end of the stream (close_notify, FIN or reset).
    func readSome(deadline: ContinuousClock.Instant) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let left = deadline - .now
        guard left > .zero else { throw ClientError("read timed out") }
        let n = buffer.withUnsafeMutableBytes { cttls_read(session, $0.baseAddress, $0.count, Int32(Self.ms(left))) }
        if n == -2 { throw ClientError("read timed out") }
        if n < 0 { throw ClientError("TLS read failed") }
        return Array(buffer[0..<n])
    }

    func sendCloseNotify() { _ = cttls_close_notify(session) }
    /// A KeyUpdate that asks the server for one too.
    func requestKeyUpdate() throws {
        guard cttls_request_key_update(session, 5_000) == 0 else { throw ClientError("TLS: key update not sent") }
    }
    var cipher: String { String(cString: cttls_cipher(session)) }
    var receivedCloseNotify: Bool { cttls_received_close_notify(session) != 0 }
    var peerCommonName: String { String(cString: cttls_peer_common_name(session)) }
    var peerSerial: String { String(cString: cttls_peer_serial(session)) }
    var alpn: String { String(cString: cttls_alpn(session)) }
    var version: String { String(cString: cttls_version(session)) }
}

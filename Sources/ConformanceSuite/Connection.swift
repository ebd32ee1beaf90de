import WebSocketProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

struct WireError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A blocking TCP connection where every read has a deadline. Reads that
/// arrive while a write is blocked are kept, so sending a large message
/// never deadlocks against a server echoing it.
final class Socket {
    let fd: Int32
    private var inbox: [UInt8] = []
    private(set) var sendError: String?

    init(host: String, port: Int, deadline: ContinuousClock.Instant) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw WireError("cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let ai = node {
            node = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { lastError = "socket: \(String(cString: strerror(errno)))"; continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var r = Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
            if r < 0 && errno == EINPROGRESS {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&pfd, 1, Socket.milliseconds(until: deadline)) == 1 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                    r = err == 0 ? 0 : -1
                    errno = err
                } else {
                    errno = ETIMEDOUT
                }
            }
            if r == 0 {
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                self.fd = fd
                return
            }
            lastError = "connect to \(host):\(port): \(String(cString: strerror(errno)))"
            Glibc.close(fd)
        }
        throw WireError(lastError)
    }

    deinit { Glibc.close(fd) }

    static func milliseconds(until deadline: ContinuousClock.Instant) -> Int32 {
        let left = deadline - .now
        guard left > .zero else { return 0 }
        let (s, atto) = left.components
        return Int32(clamping: s * 1000 + atto / 1_000_000_000_000_000 + 1)
    }

    /// Writes everything (or until the peer refuses it: then `sendError` is
    /// set and the rest is dropped, since a server may rightly close early).
    /// `chop`: one write per piece of that size, a millisecond apart.
    func write(_ bytes: [UInt8], chop: Int? = nil, deadline: ContinuousClock.Instant) throws {
        guard sendError == nil else { return }
        var sent = 0
        while sent < bytes.count {
            let piece = min(bytes.count - sent, chop ?? Int.max)
            var done = 0
            while done < piece {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT | POLLIN), revents: 0)
                let rc = poll(&pfd, 1, Socket.milliseconds(until: deadline))
                if rc < 0 && errno == EINTR { continue }
                guard rc > 0 else { throw WireError("timed out sending (\(sent + done) of \(bytes.count) bytes sent)") }
                if pfd.revents & Int16(POLLIN) != 0 { drain() }
                if pfd.revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 {
                    let n = bytes.withUnsafeBytes {
                        Glibc.send(fd, $0.baseAddress! + sent + done, piece - done, Int32(MSG_NOSIGNAL))
                    }
                    if n < 0 {
                        if errno == EINTR || errno == EAGAIN { continue }
                        sendError = String(cString: strerror(errno))
                        return
                    }
                    done += n
                }
            }
            sent += piece
            if chop != nil && sent < bytes.count { usleep(1000) }
        }
    }

    /// Whatever can be read now, into the inbox.
    private var eof = false
    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while !eof {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { inbox += buffer[0..<n]; continue }
            if n == 0 || (errno != EAGAIN && errno != EINTR) { eof = true }
            return
        }
    }

    /// The next bytes, waiting until `deadline`; [] at end of stream (or a reset).
    func read(deadline: ContinuousClock.Instant) throws -> [UInt8] {
        if !inbox.isEmpty {
            defer { inbox = [] }
            return inbox
        }
        if eof { return [] }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&pfd, 1, Socket.milliseconds(until: deadline))
            if rc < 0 && errno == EINTR { continue }
            guard rc > 0 else { throw Timeout() }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { return Array(buffer[0..<n]) }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            eof = true
            return []
        }
    }

    struct Timeout: Error {}
}

/// What the server sent, one piece at a time.
enum Event: Equatable, CustomStringConvertible {
    case message(Message)
    /// 1005: no payload.
    case close(UInt16, reason: [UInt8])
    /// TCP closed (or reset) without a close frame first.
    case eof

    var description: String {
        switch self {
        case .message(let m): return m.description
        case .close(let code, let reason):
            return "close \(code == 1005 ? "(no code)" : String(code))"
                + (reason.isEmpty ? "" : " \"\(String(decoding: reason, as: UTF8.self))\"")
        case .eof: return "TCP closed without a close frame"
        }
    }
}

/// A WebSocket client connection that reads the server's frames with the C
/// core's parser (client role, so a masked or malformed server frame is a
/// failure) and inflates compressed messages.
final class Peer {
    let socket: Socket
    private var parser: FrameParser
    private var inflater = Inflater()
    private var message: [UInt8] = []
    private var messageCompressed = false
    private var control: [UInt8] = []
    private var events: [Event] = []
    private var buffered: [UInt8]

    init(socket: Socket, leftover: [UInt8], deflate: Bool) {
        self.socket = socket
        self.buffered = leftover
        parser = FrameParser(role: .client, extensionBits: deflate ? rsv1 : 0)
    }

    /// The next event; server pings are answered and skipped.
    func next(deadline: ContinuousClock.Instant) throws -> Event {
        while events.isEmpty {
            var chunk: [UInt8]
            if !buffered.isEmpty {
                chunk = buffered
                buffered = []
            } else {
                chunk = try socket.read(deadline: deadline)
                if chunk.isEmpty { return .eof }
            }
            var pings: [[UInt8]] = []
            var failure: String?
            do {
                try chunk.withUnsafeMutableBytes { buffer in
                    try parser.parse(buffer) { e in
                        guard failure == nil else { return }
                        switch e.opcode {
                        case .text, .binary, .continuation:
                            if e.isFrameStart && e.opcode != .continuation { messageCompressed = e.rsv & rsv1 != 0 }
                            message.append(contentsOf: e.payload)
                            guard e.isFrameEnd && e.fin else { return }
                            var payload = message
                            message = []
                            if messageCompressed {
                                do throws(InflateError) {
                                    payload = try inflater.message(payload)
                                } catch {
                                    failure = "the server's compressed message does not inflate: \(error)"
                                    return
                                }
                            }
                            if e.messageOpcode == .text {
                                guard String(validating: payload, as: UTF8.self) != nil else {
                                    failure = "the server sent a text message that is not UTF-8"
                                    return
                                }
                                events.append(.message(.text(payload)))
                            } else {
                                events.append(.message(.binary(payload)))
                            }
                        default:
                            control.append(contentsOf: e.payload)
                            guard e.isFrameEnd else { return }
                            let payload = control
                            control = []
                            switch e.opcode {
                            case .ping: pings.append(payload)
                            case .pong: events.append(.message(.pong(payload)))
                            default:
                                if payload.count == 1 { failure = "the server sent a close frame with a 1-byte payload"; return }
                                let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : 1005
                                if payload.count >= 2 && !CloseCode(rawValue: code).isValidOnWire {
                                    failure = "the server sent close code \(code), which may not be sent"
                                    return
                                }
                                events.append(.close(code, reason: payload.count > 2 ? Array(payload[2...]) : []))
                            }
                        }
                    }
                }
            } catch let code as CloseCode {
                throw WireError("the server sent a frame the protocol forbids (a client would fail it with \(code.rawValue))")
            }
            if let failure { throw WireError(failure) }
            for p in pings { try socket.write(frame(Op.pong, p), deadline: deadline) }
        }
        return events.removeFirst()
    }
}

/// The groups, in Autobahn's order (its case numbers in the comments).
public enum Group: String, CaseIterable, Sendable {
    case framing            // 1.x, 2.x lengths
    case pingPong = "ping-pong"   // 2.x
    case reservedBits = "reserved-bits" // 3.x
    case opcodes            // 4.x
    case fragmentation      // 5.x
    case utf8 = "utf-8"     // 6.x
    case limits             // 9.x, sized down
    case close              // 7.x
    case handshake          // opening handshake (RFC 6455 section 4.2)
    case compression        // 12.x, 13.x (permessage-deflate, RFC 7692)
}

/// A message (or pong) the server is expected to send.
public enum Message: Sendable, Equatable, CustomStringConvertible {
    case text([UInt8])
    case binary([UInt8])
    case pong([UInt8])

    public static func text(_ s: String) -> Message { .text(Array(s.utf8)) }
    public static func pong(_ s: String) -> Message { .pong(Array(s.utf8)) }

    public var description: String {
        func show(_ b: [UInt8]) -> String {
            if b.count > 40 { return "\(b.count) bytes" }
            if let s = String(validating: b, as: UTF8.self) { return "\"\(s)\"" }
            return b.map { String($0, radix: 16) }.joined(separator: " ")
        }
        switch self {
        case .text(let b): return "text \(show(b))"
        case .binary(let b): return "binary \(show(b))"
        case .pong(let b): return "pong \(show(b))"
        }
    }
}

/// What the server must do with a case's bytes.
public enum Expect: Sendable {
    /// These messages, in order; then the client starts a clean close (1000)
    /// and the server must answer it and drop TCP.
    case echo([Message])
    /// The `after` messages first (then the case's `then` bytes are sent),
    /// then a close frame with this code (1005: a close frame with no payload).
    case close(UInt16, after: [Message] = [])
    /// As `close`, with any of these codes.
    case closeAny([UInt16], after: [Message] = [])
    /// The `after` messages first, then the connection ends (a close frame with
    /// any code, or TCP closed) within this many seconds.
    case failWithin(Double, after: [Message] = [])
    /// An HTTP answer with this status (no WebSocket); `header` is a
    /// "name: value" line the answer must contain (case-insensitive).
    /// 101 also checks Sec-WebSocket-Accept.
    case httpStatus(Int, header: String? = nil)
    /// An HTTP answer with any of these statuses.
    case httpStatusAny([Int])
}

/// How a case opens its connection.
public enum Opening: Sendable {
    /// A plain upgrade request.
    case standard
    /// The upgrade request offers permessage-deflate (`offer` is the
    /// Sec-WebSocket-Extensions value); the case is SKIPPED if
    /// the server does not accept it (or accepts it with
    /// client_no_context_takeover when `contextTakeover` is required).
    case deflate(offer: String = "permessage-deflate", contextTakeover: Bool = false)
    /// A plain upgrade request with `send` in the same write, before any
    /// answer (a client that does not wait for the 101).
    case pipelined
    /// No handshake: `send` is the whole request (handshake cases).
    case none
}

/// One row of the table.
public struct Case: Sendable {
    public var id: String
    public var group: Group
    public var description: String
    public var opening: Opening
    public var send: [UInt8]
    public var expect: Expect
    /// Sent once the expectation's `after` messages have arrived: a frame
    /// that must fail the connection goes here, so that the echo before it
    /// does not race the failure.
    public var then: [UInt8]
    /// Send in pieces of this many bytes, one write each (1: byte by byte).
    public var chop: Int?
    /// Overrides the runner's deadline for this case (large messages).
    public var deadline: Double?

    public init(_ id: String, _ group: Group, _ description: String, _ opening: Opening = .standard,
                send: [UInt8], expect: Expect, then: [UInt8] = [], chop: Int? = nil, deadline: Double? = nil) {
        self.id = id
        self.group = group
        self.description = description
        self.opening = opening
        self.send = send
        self.expect = expect
        self.then = then
        self.chop = chop
        self.deadline = deadline
    }
}

public enum Verdict: Sendable, Equatable {
    case ok
    case failed(String)
    case skipped(String)

    public var label: String {
        switch self {
        case .ok: return "OK"
        case .failed: return "FAILED"
        case .skipped: return "SKIPPED"
        }
    }

    public var reason: String? {
        switch self {
        case .ok: return nil
        case .failed(let r), .skipped(let r): return r
        }
    }
}

public struct CaseResult: Sendable {
    public var testCase: Case
    public var verdict: Verdict
    public var seconds: Double
}

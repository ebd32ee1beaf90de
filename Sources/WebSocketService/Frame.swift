import CWebSocket

/// Frame opcodes (RFC 6455 section 5.2).
public enum Opcode: UInt8, Sendable {
    case continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA
}

/// A close code the protocol layer failed a connection with.
public struct CloseCode: RawRepresentable, Hashable, Sendable, Error, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let normal = CloseCode(rawValue: 1000)
    public static let goingAway = CloseCode(rawValue: 1001)
    public static let protocolError = CloseCode(rawValue: 1002)
    public static let unsupportedData = CloseCode(rawValue: 1003)
    public static let invalidPayload = CloseCode(rawValue: 1007)
    public static let policyViolation = CloseCode(rawValue: 1008)
    public static let messageTooBig = CloseCode(rawValue: 1009)
    public static let internalError = CloseCode(rawValue: 1011)

    /// Whether the code may be sent on the wire.
    public var isValidOnWire: Bool { cws_close_code_valid(UInt32(rawValue)) == 1 }
    public var description: String { "close code \(rawValue)" }
}

/// A streaming frame parser over the C core. Payload bytes are unmasked in
/// place in the caller's buffer and handed out as they arrive.
public struct FrameParser: Sendable {
    public enum Role: Sendable { case server, client }

    /// One piece of a frame: its header, and the payload bytes that arrived.
    public struct Event {
        public var opcode: Opcode
        /// TEXT or BINARY for the frames of a data message, else the control opcode.
        public var messageOpcode: Opcode
        public var fin: Bool
        public var rsv: UInt8
        public var payloadLength: UInt64
        public var payload: UnsafeMutableRawBufferPointer
        public var payloadOffset: UInt64
        public var isFrameStart: Bool
        public var isFrameEnd: Bool
    }

    private var parser = cws_parser()

    public init(role: Role, maxFramePayload: UInt64 = 0, extensionBits: UInt8 = 0) {
        cws_parser_init(&parser, role == .server ? CWS_ROLE_SERVER : CWS_ROLE_CLIENT, maxFramePayload)
        parser.rsv_allowed = extensionBits
    }

    /// Parses everything in `buffer`, calling `body` for each event. Throws
    /// the close code to fail the connection with.
    public mutating func parse(_ buffer: UnsafeMutableRawBufferPointer, _ body: (Event) -> Void) throws(CloseCode) {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while true {
            var consumed = 0
            var ev = cws_frame_event()
            let rc = cws_parse(&parser, base, remaining, &consumed, &ev)
            if rc < 0 { throw CloseCode(rawValue: UInt16(-rc)) }
            base += consumed
            remaining -= consumed
            if rc == CWS_PARSE_NEED_MORE { return }
            body(Event(
                opcode: Opcode(rawValue: ev.header.opcode)!,
                messageOpcode: Opcode(rawValue: ev.message_opcode)!,
                fin: ev.header.fin == 1, rsv: ev.header.rsv, payloadLength: ev.header.payload_len,
                payload: UnsafeMutableRawBufferPointer(start: ev.payload, count: ev.payload_len),
                payloadOffset: ev.payload_offset, isFrameStart: ev.frame_start == 1, isFrameEnd: ev.frame_end == 1))
            if remaining == 0 { return }
        }
    }
}

/// Frame encoding for both roles.
public enum FrameEncoder {
    /// A whole frame. A client passes a `maskKey`; a server passes nil.
    public static func encode(_ opcode: Opcode, payload: some Collection<UInt8>, fin: Bool = true, rsv: UInt8 = 0,
                              maskKey: UInt32? = nil) -> [UInt8] {
        let bytes = Array(payload)
        let masked: UInt8 = maskKey == nil ? 0 : 1
        let size = cws_frame_header_size(UInt64(bytes.count), masked) + bytes.count
        return [UInt8](unsafeUninitializedCapacity: size) { out, count in
            count = bytes.withUnsafeBytes { p in
                cws_frame_encode(out.baseAddress, fin ? 1 : 0, rsv, opcode.rawValue, p.baseAddress, bytes.count,
                                 masked, maskKey ?? 0)
            }
        }
    }
}

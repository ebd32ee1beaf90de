import CWebSocket

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

import CWebSocket

/// Incremental, fail-fast UTF-8 validation of one message that arrives in
/// pieces. A value type: copying it forks the validation.
public struct UTF8Validator: Sendable {
    private var state = cws_utf8_state()

    public init() {}

    /// The first byte that makes a message invalid, relative to the chunk it was in.
    public struct InvalidByte: Error, Equatable, Sendable {
        public var offset: Int
    }

    /// Validates the next chunk; throws as soon as a byte can never be part of
    /// valid UTF-8, even in the middle of a character.
    public mutating func feed(_ chunk: UnsafeRawBufferPointer) throws(InvalidByte) {
        var bad = 0
        if cws_utf8_feed(&state, chunk.baseAddress, chunk.count, &bad) != CWS_UTF8_VALID {
            throw InvalidByte(offset: bad)
        }
    }

    public mutating func feed(_ chunk: [UInt8]) throws(InvalidByte) {
        var bad = 0
        if cws_utf8_feed(&state, chunk, chunk.count, &bad) != CWS_UTF8_VALID {
            throw InvalidByte(offset: bad)
        }
    }

    /// True if the message ended on a character boundary.
    public var isComplete: Bool {
        withUnsafePointer(to: state) { cws_utf8_finish($0) == CWS_UTF8_VALID }
    }

    /// Whole-buffer validation.
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        cws_utf8_validate(bytes.baseAddress, bytes.count, nil) == CWS_UTF8_VALID
    }
}

import CWebSocket

/// XOR masking of WebSocket payloads (RFC 6455 section 5.3), SIMD-accelerated.
public enum Masking {
    /// Masks or unmasks `buffer` in place. `key` holds the four key bytes in
    /// wire order; `offset` is the position of the buffer within the payload.
    @inlinable
    public static func apply(_ buffer: UnsafeMutableRawBufferPointer, key: UInt32, offset: Int = 0) {
        guard let base = buffer.baseAddress else { return }
        cws_mask(base, buffer.count, key, offset)
    }

    public static func apply(_ bytes: inout [UInt8], key: UInt32, offset: Int = 0) {
        bytes.withUnsafeMutableBytes { apply($0, key: key, offset: offset) }
    }

    /// The key as `cws_mask` expects it from its four wire bytes.
    public static func key(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8) -> UInt32 {
        UInt32(b0) | UInt32(b1) << 8 | UInt32(b2) << 16 | UInt32(b3) << 24
    }
}

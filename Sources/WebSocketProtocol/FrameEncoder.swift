import CWebSocket

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

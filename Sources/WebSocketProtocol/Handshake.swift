import CWebSocket

/// The RFC 6455 opening handshake helpers of the C core.
public enum Handshake {
    /// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
    public static func acceptKey(for key: String) -> String {
        var key = key
        return key.withUTF8 { k in
            String(unsafeUninitializedCapacity: 28) { out in
                out.withMemoryRebound(to: CChar.self) { cws_accept_key(k.baseAddress, k.count, $0.baseAddress!) }
                return 28
            }
        }
    }
}

import CWebSocket
import WebSocketProtocol

// The small helpers the case table is written with: each returns the bytes
// a client puts on the wire. Frames are masked (a client's) unless asked not
// to be; opcodes and RSV bits are raw numbers so broken frames are one call.

/// Frame opcodes by name, as raw numbers (reserved ones are just numbers).
public enum Op {
    public static let continuation: UInt8 = 0x0
    public static let text: UInt8 = 0x1
    public static let binary: UInt8 = 0x2
    public static let close: UInt8 = 0x8
    public static let ping: UInt8 = 0x9
    public static let pong: UInt8 = 0xA
}

/// RSV1 (permessage-deflate's "compressed" bit), as `frame(..., rsv:)` takes it.
public let rsv1: UInt8 = UInt8(CWS_RSV1)

/// The mask key every frame of the suite uses (any key will do; a fixed one
/// keeps the cases' bytes the same from run to run).
let fixedMaskKey: UInt32 = Masking.key(0x37, 0xFA, 0x21, 0x3D)

/// One frame. `rsv` is the 3-bit field (4 = RSV1, 2 = RSV2, 1 = RSV3).
public func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true) -> [UInt8] {
    let size = cws_frame_header_size(UInt64(payload.count), masked ? 1 : 0) + payload.count
    return [UInt8](unsafeUninitializedCapacity: size) { out, count in
        count = payload.withUnsafeBytes { p in
            cws_frame_encode(out.baseAddress, fin ? 1 : 0, rsv & 7, opcode & 0xF, p.baseAddress, payload.count,
                             masked ? 1 : 0, fixedMaskKey)
        }
    }
}

public func frame(_ opcode: UInt8, _ text: String, fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true) -> [UInt8] {
    frame(opcode, Array(text.utf8), fin: fin, rsv: rsv, masked: masked)
}

/// Only the header of a frame that announces `length` payload bytes, then the
/// first bytes of that payload (masked as the whole frame would be): the
/// server gets a frame it can never finish, so whatever it answers, it answers
/// without waiting for the rest.
public func framePrefix(_ opcode: UInt8, length: Int, prefix: [UInt8], fin: Bool = true, rsv: UInt8 = 0) -> [UInt8] {
    var header = [UInt8](repeating: 0, count: Int(CWS_MAX_HEADER_SIZE))
    let n = header.withUnsafeMutableBytes {
        cws_frame_header_encode($0.baseAddress, fin ? 1 : 0, rsv & 7, opcode & 0xF, UInt64(length), 1, fixedMaskKey)
    }
    var body = prefix
    Masking.apply(&body, key: fixedMaskKey)
    return Array(header[0..<n]) + body
}

/// A close frame: code (nil: empty payload) and reason bytes.
public func close(_ code: UInt16?, _ reason: [UInt8] = []) -> [UInt8] {
    guard let code else { return frame(Op.close, reason) }
    return frame(Op.close, [UInt8(code >> 8), UInt8(code & 0xFF)] + reason)
}

public func close(_ code: UInt16, _ reason: String) -> [UInt8] { close(code, Array(reason.utf8)) }

/// Raw bytes, for anything the helpers do not say.
public func raw(_ bytes: UInt8...) -> [UInt8] { bytes }

public func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }

/// `count` bytes of a repeating printable pattern.
public func pattern(_ count: Int, _ alphabet: String = "abcdefghijklmnopqrstuvwxyz0123456789") -> [UInt8] {
    let a = Array(alphabet.utf8)
    return [UInt8](unsafeUninitializedCapacity: count) { out, n in
        for i in 0..<count { out[i] = a[i % a.count] }
        n = count
    }
}

/// `count` binary bytes (every value, repeating).
public func bytes(_ count: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: count) { out, n in
        for i in 0..<count { out[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 8) }
        n = count
    }
}

/// A message cut into frames of `size` payload bytes: the first with `opcode`,
/// the rest continuations, FIN on the last.
public func fragments(_ opcode: UInt8, _ payload: [UInt8], size: Int, rsv: UInt8 = 0) -> [UInt8] {
    var out: [UInt8] = []
    var start = 0
    repeat {
        let end = min(payload.count, start + max(1, size))
        out += frame(start == 0 ? opcode : Op.continuation, Array(payload[start..<end]), fin: end == payload.count,
                     rsv: start == 0 ? rsv : 0)
        start = end
    } while start < payload.count
    return out
}

/// A message cut into frames at the given payload offsets.
/// `rsv` goes on the first frame only.
public func split(_ opcode: UInt8, _ payload: [UInt8], at cuts: [Int], rsv: UInt8 = 0) -> [UInt8] {
    let bounds = [0] + cuts + [payload.count]
    var out: [UInt8] = []
    for i in 0..<(bounds.count - 1) {
        out += frame(i == 0 ? opcode : Op.continuation, Array(payload[bounds[i]..<bounds[i + 1]]),
                     fin: i == bounds.count - 2, rsv: i == 0 ? rsv : 0)
    }
    return out
}

/// A message cut into frames at the given payload offsets.
public func split(_ opcode: UInt8, _ text: String, at cuts: [Int]) -> [UInt8] {
    split(opcode, Array(text.utf8), at: cuts)
}

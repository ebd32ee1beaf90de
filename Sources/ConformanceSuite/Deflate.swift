// Just enough DEFLATE (RFC 1951) for permessage-deflate (RFC 7692) cases,
// in plain Swift so the suite needs no zlib binding:
// - the client side of a message: stored blocks, or one fixed-Huffman block
//   with a naive LZ77 search (back-references into earlier messages too, for
//   context takeover), each ending the way a sync flush does, minus the
//   trailing 00 00 FF FF the RFC strips;
// - a complete inflater (stored, fixed and dynamic blocks) that keeps the
//   32 KiB window across messages, for what the server sends back.

/// A DEFLATE token: a literal byte or a back-reference.
public enum DeflateToken: Sendable, Equatable {
    case literal(UInt8)
    case match(length: Int, distance: Int)
}

public enum Deflate {
    /// The message as stored (uncompressed) blocks.
    public static func stored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var start = 0
        repeat {
            let end = min(data.count, start + 65535)
            let n = end - start
            out += [0x00, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[start..<end]
            start = end
        } while start < data.count
        // The sync flush's empty stored block, minus its 00 00 FF FF.
        return out + [0x00]
    }

    /// The message as one fixed-Huffman block. `history` is what the
    /// receiver's window already holds (earlier messages, with context
    /// takeover); matches may reach into it.
    public static func fixed(_ data: [UInt8], history: [UInt8] = [], window: Int = 4096) -> [UInt8] {
        fixed(tokens: tokenize(data, history: history, window: window))
    }

    /// One fixed-Huffman block of these tokens, sync-flushed, tail stripped.
    public static func fixed(tokens: [DeflateToken]) -> [UInt8] {
        var w = BitWriter()
        w.bits(0, 1) // BFINAL 0
        w.bits(1, 2) // BTYPE 01: fixed Huffman
        for token in tokens {
            switch token {
            case .literal(let b): w.literalLength(Int(b))
            case .match(let length, let distance):
                let li = lengthBase.lastIndex { $0 <= length }!
                w.literalLength(257 + li)
                w.bits(length - lengthBase[li], lengthExtra[li])
                let di = distanceBase.lastIndex { $0 <= distance }!
                w.code(di, 5)
                w.bits(distance - distanceBase[di], distanceExtra[di])
            }
        }
        w.literalLength(256) // end of block
        w.bits(0, 3) // the sync flush's empty stored block header...
        return w.finish() // ...aligned; its 00 00 FF FF stripped
    }

    /// Greedy LZ77 over `history + data` (naive search, for small messages).
    static func tokenize(_ data: [UInt8], history: [UInt8], window: Int) -> [DeflateToken] {
        let all = history + data
        var tokens: [DeflateToken] = []
        var i = history.count
        while i < all.count {
            var best = 0, bestDistance = 0
            let lowest = max(0, i - window)
            var j = i - 1
            while j >= lowest {
                var n = 0
                while n < 258 && i + n < all.count && all[j + n] == all[i + n] { n += 1 }
                if n > best { best = n; bestDistance = i - j }
                if best == 258 { break }
                j -= 1
            }
            if best >= 3 {
                tokens.append(.match(length: best, distance: bestDistance))
                i += best
            } else {
                tokens.append(.literal(all[i]))
                i += 1
            }
        }
        return tokens
    }

    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
                             131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
                               1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
                                12, 13, 13]

    struct BitWriter {
        var out: [UInt8] = []
        var acc: UInt32 = 0
        var count = 0

        /// `n` bits of `value`, least significant first (header fields, extra bits).
        mutating func bits(_ value: Int, _ n: Int) {
            guard n > 0 else { return }
            acc |= UInt32(value & ((1 << n) - 1)) << UInt32(count)
            count += n
            while count >= 8 {
                out.append(UInt8(acc & 0xFF))
                acc >>= 8
                count -= 8
            }
        }

        /// A Huffman code: most significant bit first.
        mutating func code(_ value: Int, _ n: Int) {
            var reversed = 0
            for i in 0..<n where value & (1 << i) != 0 { reversed |= 1 << (n - 1 - i) }
            bits(reversed, n)
        }

        /// A literal/length symbol with the fixed code.
        mutating func literalLength(_ s: Int) {
            switch s {
            case 0...143: code(0x30 + s, 8)
            case 144...255: code(0x190 + s - 144, 9)
            case 256...279: code(s - 256, 7)
            default: code(0xC0 + s - 280, 8)
            }
        }

        mutating func finish() -> [UInt8] {
            if count > 0 { out.append(UInt8(acc & 0xFF)) }
            acc = 0
            count = 0
            return out
        }
    }
}

public struct InflateError: Error, CustomStringConvertible {
    public var description: String
}

/// The receiving side of permessage-deflate: one per connection and
/// direction, keeping the window between messages.
public struct Inflater {
    var window: [UInt8] = []
    public init() {}

    /// A message's payload as sent (the 00 00 FF FF tail stripped).
    public mutating func message(_ payload: [UInt8], limit: Int = 64 << 20) throws(InflateError) -> [UInt8] {
        var s = Stream(input: payload + [0x00, 0x00, 0xFF, 0xFF], out: window, limit: window.count + limit)
        let start = window.count
        try s.run()
        let result = Array(s.out[start...])
        window = Array(s.out.suffix(32768))
        return result
    }

    /// A Huffman code in canonical form (counts per length, symbols in order).
    struct Huffman {
        var count = [Int](repeating: 0, count: 16)
        var symbol: [Int]

        init(_ lengths: ArraySlice<Int>) {
            symbol = [Int](repeating: 0, count: lengths.count)
            for l in lengths { count[l] += 1 }
            count[0] = 0
            var offs = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offs[len + 1] = offs[len] + count[len] }
            for (i, l) in zip(0..., lengths) where l != 0 {
                symbol[offs[l]] = i
                offs[l] += 1
            }
        }
    }

    struct Stream {
        let input: [UInt8]
        var out: [UInt8]
        let limit: Int
        var pos = 0
        var acc = 0
        var have = 0

        mutating func bits(_ n: Int) throws(InflateError) -> Int {
            while have < n {
                guard pos < input.count else { throw InflateError(description: "compressed data ends mid-block") }
                acc |= Int(input[pos]) << have
                pos += 1
                have += 8
            }
            let v = acc & ((1 << n) - 1)
            acc >>= n
            have -= n
            return v
        }

        mutating func decode(_ h: Huffman) throws(InflateError) -> Int {
            var code = 0, first = 0, index = 0
            for len in 1...15 {
                code |= try bits(1)
                let count = h.count[len]
                if code - count < first { return h.symbol[index + (code - first)] }
                index += count
                first += count
                first <<= 1
                code <<= 1
            }
            throw InflateError(description: "invalid Huffman code")
        }

        mutating func run() throws(InflateError) {
            while true {
                let last = try bits(1)
                switch try bits(2) {
                case 0: try stored()
                case 1: try codes(Inflater.fixedLiteral, Inflater.fixedDistance)
                case 2: try dynamic()
                default: throw InflateError(description: "block type 3")
                }
                if last == 1 || (pos >= input.count && have < 8) { return }
            }
        }

        mutating func stored() throws(InflateError) {
            acc = 0
            have = 0
            guard pos + 4 <= input.count else { throw InflateError(description: "stored block header cut") }
            let len = Int(input[pos]) | Int(input[pos + 1]) << 8
            let nlen = Int(input[pos + 2]) | Int(input[pos + 3]) << 8
            guard len == ~nlen & 0xFFFF else { throw InflateError(description: "stored block LEN/NLEN mismatch") }
            pos += 4
            guard pos + len <= input.count else { throw InflateError(description: "stored block cut") }
            guard out.count + len <= limit else { throw InflateError(description: "inflated size over the limit") }
            out += input[pos..<(pos + len)]
            pos += len
        }

        mutating func codes(_ lit: Huffman, _ dist: Huffman) throws(InflateError) {
            while true {
                let s = try decode(lit)
                if s < 256 {
                    guard out.count < limit else { throw InflateError(description: "inflated size over the limit") }
                    out.append(UInt8(s))
                } else if s == 256 {
                    return
                } else {
                    let li = s - 257
                    guard li < 29 else { throw InflateError(description: "invalid length symbol") }
                    let length = Deflate.lengthBase[li] + (try bits(Deflate.lengthExtra[li]))
                    let di = try decode(dist)
                    guard di < 30 else { throw InflateError(description: "invalid distance symbol") }
                    let distance = Deflate.distanceBase[di] + (try bits(Deflate.distanceExtra[di]))
                    guard distance <= out.count else { throw InflateError(description: "distance too far back") }
                    guard out.count + length <= limit else { throw InflateError(description: "inflated size over the limit") }
                    for _ in 0..<length { out.append(out[out.count - distance]) }
                }
            }
        }

        mutating func dynamic() throws(InflateError) {
            let nlen = try bits(5) + 257, ndist = try bits(5) + 1, ncode = try bits(4) + 4
            let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
            var lengths = [Int](repeating: 0, count: 320)
            for i in 0..<ncode { lengths[order[i]] = try bits(3) }
            let lencode = Huffman(lengths[0..<19])
            var i = 0
            while i < nlen + ndist {
                let sym = try decode(lencode)
                if sym < 16 {
                    lengths[i] = sym
                    i += 1
                    continue
                }
                var value = 0, repeats: Int
                switch sym {
                case 16:
                    guard i > 0 else { throw InflateError(description: "repeat with no previous length") }
                    value = lengths[i - 1]
                    repeats = 3 + (try bits(2))
                case 17: repeats = 3 + (try bits(3))
                default: repeats = 11 + (try bits(7))
                }
                guard i + repeats <= nlen + ndist else { throw InflateError(description: "too many lengths") }
                for _ in 0..<repeats { lengths[i] = value; i += 1 }
            }
            try codes(Huffman(lengths[0..<nlen]), Huffman(lengths[nlen..<(nlen + ndist)]))
        }
    }

    static let fixedLiteral: Huffman = {
        var l = [Int](repeating: 8, count: 288)
        for i in 144..<256 { l[i] = 9 }
        for i in 256..<280 { l[i] = 7 }
        return Huffman(l[...])
    }()
    static let fixedDistance = Huffman([Int](repeating: 5, count: 30)[...])
}

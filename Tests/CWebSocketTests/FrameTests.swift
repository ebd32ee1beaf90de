import CWebSocket
import Testing

/// What a stream of bytes parses to: whole frames (payloads reassembled from
/// the parser's events) and, if the stream breaks the protocol, the close code.
private struct ParsedFrame: Equatable {
    var fin: Bool
    var rsv: UInt8
    var opcode: UInt8
    var messageOpcode: UInt8
    var payload: [UInt8]
}

private struct ParseResult: Equatable {
    var frames: [ParsedFrame] = []
    var error: Int32? = nil
}

/// Feeds `bytes` to a fresh parser in chunks of `chunk` bytes (0 = all at once)
/// and checks the event invariants on the way.
private func parse(_ bytes: [UInt8], role: cws_role = CWS_ROLE_SERVER, rsvAllowed: UInt8 = 0,
                   maxPayload: UInt64 = 0, chunk: Int = 0) -> ParseResult {
    var parser = cws_parser()
    cws_parser_init(&parser, role, maxPayload)
    parser.rsv_allowed = rsvAllowed
    var result = ParseResult()
    var current: ParsedFrame? = nil
    var input = bytes
    var start = 0
    let step = chunk == 0 ? max(bytes.count, 1) : chunk
    while start < input.count || (start == 0 && input.isEmpty) {
        let end = min(input.count, start + step)
        var pos = start
        while true {
            var consumed = 0
            var ev = cws_frame_event()
            let rc = input.withUnsafeMutableBytes { raw in
                cws_parse(&parser, raw.baseAddress! + pos, end - pos, &consumed, &ev)
            }
            pos += consumed
            if rc < 0 { result.error = -rc; return result }
            if rc == CWS_PARSE_NEED_MORE {
                precondition(pos == end, "need-more must consume everything")
                break
            }
            if ev.frame_start == 1 {
                precondition(current == nil)
                current = ParsedFrame(fin: ev.header.fin == 1, rsv: ev.header.rsv, opcode: ev.header.opcode,
                                      messageOpcode: ev.message_opcode, payload: [])
            }
            precondition(current != nil && UInt64(current!.payload.count) == ev.payload_offset)
            if ev.payload_len > 0 {
                current!.payload += UnsafeBufferPointer(start: ev.payload, count: ev.payload_len)
            }
            if ev.frame_end == 1 {
                result.frames.append(current!)
                current = nil
            }
            if pos == end { break }
        }
        start = end
        if input.isEmpty { break }
    }
    _ = input
    return result
}

/// The parser must give the same answer however the bytes are split.
private func parseEveryWay(_ bytes: [UInt8], role: cws_role = CWS_ROLE_SERVER, rsvAllowed: UInt8 = 0,
                           maxPayload: UInt64 = 0) -> ParseResult {
    let whole = parse(bytes, role: role, rsvAllowed: rsvAllowed, maxPayload: maxPayload)
    let oneByte = parse(bytes, role: role, rsvAllowed: rsvAllowed, maxPayload: maxPayload, chunk: 1)
    #expect(whole == oneByte, "whole vs byte-at-a-time differ")
    for chunk in [2, 3, 5, 7] where chunk < bytes.count {
        #expect(whole == parse(bytes, role: role, rsvAllowed: rsvAllowed, maxPayload: maxPayload, chunk: chunk))
    }
    return whole
}

private let key: UInt32 = 0x3D21_FA37

/// A frame as a client sends it (masked) or a server sends it (not masked).
private func frame(_ opcode: cws_opcode, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0,
                   masked: Bool = true) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(CWS_MAX_HEADER_SIZE) + payload.count)
    let n = payload.withUnsafeBytes { p in
        out.withUnsafeMutableBytes { o in
            cws_frame_encode(o.baseAddress, fin ? 1 : 0, rsv, UInt8(opcode.rawValue), p.baseAddress, payload.count,
                             masked ? 1 : 0, key)
        }
    }
    return Array(out[0..<n])
}

private let op = (cont: UInt8(CWS_OP_CONTINUATION.rawValue), text: UInt8(CWS_OP_TEXT.rawValue),
                  binary: UInt8(CWS_OP_BINARY.rawValue), close: UInt8(CWS_OP_CLOSE.rawValue),
                  ping: UInt8(CWS_OP_PING.rawValue), pong: UInt8(CWS_OP_PONG.rawValue))

@Suite struct FrameParserTests {
    @Test func rfcExamples() {
        // RFC 6455 section 5.7.
        let unmaskedHello: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
        let r1 = parseEveryWay(unmaskedHello, role: CWS_ROLE_CLIENT)
        #expect(r1 == ParseResult(frames: [ParsedFrame(fin: true, rsv: 0, opcode: op.text, messageOpcode: op.text,
                                                       payload: Array("Hello".utf8))]))
        let maskedHello: [UInt8] = [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        #expect(parseEveryWay(maskedHello).frames.map(\.payload) == [Array("Hello".utf8)])
        let fragmented: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F]
        let r3 = parseEveryWay(fragmented, role: CWS_ROLE_CLIENT)
        #expect(r3.frames.map(\.opcode) == [op.text, op.cont])
        #expect(r3.frames.map(\.messageOpcode) == [op.text, op.text])
        #expect(r3.frames.flatMap(\.payload) == Array("Hello".utf8))
        let ping: [UInt8] = [0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
        #expect(parseEveryWay(ping, role: CWS_ROLE_CLIENT).frames.first?.opcode == op.ping)
        // 256 bytes binary, 16-bit length; 64 KiB, 64-bit length.
        #expect(Array(frame(CWS_OP_BINARY, [UInt8](repeating: 1, count: 256), masked: false)[0..<4]) == [0x82, 0x7E, 0x01, 0x00])
        #expect(Array(frame(CWS_OP_BINARY, [UInt8](repeating: 1, count: 65536), masked: false)[0..<10]) ==
            [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65535, 65536, 100_000])
    func lengthEncodingsRoundTrip(length: Int) {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let bytes = frame(CWS_OP_BINARY, payload)
        #expect(bytes.count == cws_frame_header_size(UInt64(length), 1) + length)
        let r = length > 70_000 ? parse(bytes, chunk: 4093) : parseEveryWay(bytes)
        #expect(r.error == nil)
        #expect(r.frames.count == 1 && r.frames[0].payload == payload && r.frames[0].fin)
        // Server role: unmasked, same payload.
        let s = parse(frame(CWS_OP_BINARY, payload, masked: false), role: CWS_ROLE_CLIENT, chunk: 1000)
        #expect(s.frames.first?.payload == payload)
    }

    @Test func severalFramesInOneBuffer() {
        let bytes = frame(CWS_OP_TEXT, Array("ab".utf8)) + frame(CWS_OP_PING, []) + frame(CWS_OP_BINARY, [1, 2, 3])
            + frame(CWS_OP_CLOSE, [0x03, 0xE8])
        let r = parseEveryWay(bytes)
        #expect(r.frames.map(\.opcode) == [op.text, op.ping, op.binary, op.close])
        #expect(r.frames.map(\.payload) == [Array("ab".utf8), [], [1, 2, 3], [0x03, 0xE8]])
    }

    @Test func wholeFrameInBufferIsOneEvent() {
        var bytes = frame(CWS_OP_TEXT, Array("hello world".utf8))
        var parser = cws_parser()
        cws_parser_init(&parser, CWS_ROLE_SERVER, 0)
        var consumed = 0
        var ev = cws_frame_event()
        let rc = cws_parse(&parser, &bytes, bytes.count, &consumed, &ev)
        #expect(rc == CWS_PARSE_EVENT && consumed == bytes.count)
        #expect(ev.frame_start == 1 && ev.frame_end == 1 && ev.message_start == 1 && ev.payload_len == 11)
    }

    @Test func headerAloneGivesAnEarlyEvent() {
        // A large frame's header is reported before its payload arrives, so
        // limits can be enforced before buffering anything.
        var header = Array(frame(CWS_OP_BINARY, [UInt8](repeating: 0, count: 1000))[0..<8])
        var parser = cws_parser()
        cws_parser_init(&parser, CWS_ROLE_SERVER, 0)
        var consumed = 0
        var ev = cws_frame_event()
        #expect(cws_parse(&parser, &header, header.count, &consumed, &ev) == CWS_PARSE_EVENT)
        #expect(consumed == 8 && ev.frame_start == 1 && ev.frame_end == 0 && ev.payload_len == 0)
        #expect(ev.header.payload_len == 1000)
    }

    // MARK: Rules, each fed whole and byte by byte

    @Test func unmaskedClientFrameIsRejected() {
        #expect(parseEveryWay(frame(CWS_OP_TEXT, Array("x".utf8), masked: false)).error == 1002)
    }

    @Test func maskedServerFrameIsRejected() {
        #expect(parseEveryWay(frame(CWS_OP_TEXT, Array("x".utf8)), role: CWS_ROLE_CLIENT).error == 1002)
    }

    @Test(arguments: [CWS_RSV1, CWS_RSV2, CWS_RSV3, CWS_RSV1 | CWS_RSV3])
    func reservedBitsWithoutExtensionAreRejected(rsv: Int32) {
        #expect(parseEveryWay(frame(CWS_OP_TEXT, Array("x".utf8), rsv: UInt8(rsv))).error == 1002)
    }

    @Test func extensionBitOnlyOnFirstDataFrame() {
        let rsv1 = UInt8(CWS_RSV1)
        // Allowed on the first frame of a message when claimed.
        let ok = parseEveryWay(frame(CWS_OP_TEXT, [1], fin: false, rsv: rsv1) + frame(CWS_OP_CONTINUATION, [2]),
                               rsvAllowed: rsv1)
        #expect(ok.error == nil && ok.frames.map(\.rsv) == [rsv1, 0])
        // Not on a continuation, not on a control frame, not a bit nobody claimed.
        #expect(parseEveryWay(frame(CWS_OP_TEXT, [1], fin: false) + frame(CWS_OP_CONTINUATION, [2], rsv: rsv1),
                              rsvAllowed: rsv1).error == 1002)
        #expect(parseEveryWay(frame(CWS_OP_PING, [], rsv: rsv1), rsvAllowed: rsv1).error == 1002)
        #expect(parseEveryWay(frame(CWS_OP_TEXT, [1], rsv: UInt8(CWS_RSV2)), rsvAllowed: rsv1).error == 1002)
    }

    @Test(arguments: [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    func reservedOpcodesAreRejected(opcode: UInt32) {
        #expect(parseEveryWay(frame(cws_opcode(rawValue: opcode), [])).error == 1002)
    }

    @Test func controlFramesAtMost125Bytes() {
        #expect(parseEveryWay(frame(CWS_OP_PING, [UInt8](repeating: 7, count: 125))).frames.first?.payload.count == 125)
        #expect(parseEveryWay(frame(CWS_OP_PING, [UInt8](repeating: 7, count: 126))).error == 1002)
        #expect(parseEveryWay(frame(CWS_OP_CLOSE, [UInt8](repeating: 7, count: 200))).error == 1002)
    }

    @Test(arguments: [CWS_OP_PING, CWS_OP_PONG, CWS_OP_CLOSE])
    func fragmentedControlFramesAreRejected(opcode: cws_opcode) {
        #expect(parseEveryWay(frame(opcode, [], fin: false)).error == 1002)
    }

    @Test func continuationWithoutMessageIsRejected() {
        #expect(parseEveryWay(frame(CWS_OP_CONTINUATION, [1])).error == 1002)
        // Also right after a complete message.
        #expect(parseEveryWay(frame(CWS_OP_TEXT, [0x61]) + frame(CWS_OP_CONTINUATION, [1])).error == 1002)
    }

    @Test func newDataFrameInsideFragmentedMessageIsRejected() {
        #expect(parseEveryWay(frame(CWS_OP_TEXT, [0x61], fin: false) + frame(CWS_OP_TEXT, [0x62])).error == 1002)
        #expect(parseEveryWay(frame(CWS_OP_BINARY, [1], fin: false) + frame(CWS_OP_TEXT, [0x62])).error == 1002)
    }

    @Test func controlFramesBetweenFragments() {
        let bytes = frame(CWS_OP_TEXT, Array("fr".utf8), fin: false) + frame(CWS_OP_PING, Array("p".utf8))
            + frame(CWS_OP_CONTINUATION, Array("ag".utf8), fin: false) + frame(CWS_OP_PONG, [])
            + frame(CWS_OP_CONTINUATION, Array("ment".utf8))
        let r = parseEveryWay(bytes)
        #expect(r.error == nil)
        #expect(r.frames.map(\.opcode) == [op.text, op.ping, op.cont, op.pong, op.cont])
        #expect(r.frames.map(\.messageOpcode) == [op.text, op.ping, op.text, op.pong, op.text])
        #expect(r.frames.filter { $0.messageOpcode == op.text }.flatMap(\.payload) == Array("fragment".utf8))
    }

    @Test func sixtyFourBitLengthTopBitIsRejected() {
        let bytes: [UInt8] = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]
        #expect(parseEveryWay(bytes).error == 1002)
    }

    @Test func frameOverLimitFailsAtTheHeader() {
        let bytes = frame(CWS_OP_BINARY, [UInt8](repeating: 0, count: 1001))
        #expect(parseEveryWay(bytes, maxPayload: 1000).error == 1009)
        #expect(parseEveryWay(bytes, maxPayload: 1001).error == nil)
        // Only the header is needed to fail.
        #expect(parseEveryWay(Array(bytes[0..<8]), maxPayload: 1000).error == 1009)
    }

    @Test func parserStaysFailed() {
        var bytes = frame(CWS_OP_CONTINUATION, [1]) + frame(CWS_OP_TEXT, [0x61])
        var parser = cws_parser()
        cws_parser_init(&parser, CWS_ROLE_SERVER, 0)
        var consumed = 0
        var ev = cws_frame_event()
        #expect(cws_parse(&parser, &bytes, bytes.count, &consumed, &ev) == -1002)
        let rest = Array(bytes[consumed...])
        var restBytes = rest
        #expect(cws_parse(&parser, &restBytes, restBytes.count, &consumed, &ev) == -1002)
    }

    /// Feeds `bytes` in chunks of `chunk` bytes until the parser fails; returns
    /// the error and the total of *consumed over every call.
    private func consumedUntilError(_ bytes: [UInt8], chunk: Int, maxPayload: UInt64 = 0) -> (Int32, Int) {
        var parser = cws_parser()
        cws_parser_init(&parser, CWS_ROLE_SERVER, maxPayload)
        var input = bytes
        var total = 0
        var start = 0
        while start < input.count {
            let end = min(input.count, start + chunk)
            var pos = start
            while pos < end {
                var consumed = 0
                var ev = cws_frame_event()
                let rc = input.withUnsafeMutableBytes { cws_parse(&parser, $0.baseAddress! + pos, end - pos, &consumed, &ev) }
                pos += consumed
                total += consumed
                if rc < 0 {
                    // A failed parser consumes nothing more.
                    var more = 0
                    let again = input.withUnsafeMutableBytes { cws_parse(&parser, $0.baseAddress! + pos, end - pos, &more, &ev) }
                    #expect(again == rc && more == 0)
                    return (rc, total)
                }
                if rc == CWS_PARSE_NEED_MORE { break }
            }
            start = end
        }
        return (0, total)
    }

    @Test func consumedAfterAnErrorEndsAtTheBadHeader() {
        let good = frame(CWS_OP_TEXT, Array("hi".utf8))
        let trailer: [UInt8] = [0xAA, 0xBB, 0xCC]
        let bad: [(bytes: [UInt8], code: Int32, maxPayload: UInt64)] = [
            ([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4], -1002, 0), // 64-bit length, top bit set
            ([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4], -1009, 1000),  // 64-bit length, over the limit
            ([0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4], -1009, 1000),               // 16-bit length, over the limit
            ([0x83, 0x80, 1, 2, 3, 4], -1002, 0),                              // unknown opcode
            ([0x82, 0x01], -1002, 0),                                          // not masked
            ([0x89, 0xFE, 0, 126, 1, 2, 3, 4], -1002, 0),                      // control frame over 125 bytes
        ]
        for b in bad {
            let stream = good + b.bytes + trailer
            for chunk in [stream.count, 1, 2, 3, 5] {
                let (rc, total) = consumedUntilError(stream, chunk: chunk, maxPayload: b.maxPayload)
                #expect(rc == b.code, "\(b.bytes) chunk \(chunk)")
                #expect(total == good.count + b.bytes.count, "\(b.bytes) chunk \(chunk): consumed \(total)")
            }
        }
    }

    @Test func headerDecodeNeedsMore() {
        var h = cws_frame_header()
        let bytes = frame(CWS_OP_BINARY, [UInt8](repeating: 0, count: 70_000))
        for n in 0..<14 { #expect(cws_frame_header_decode(bytes, n, &h) == 0) }
        #expect(cws_frame_header_decode(bytes, 14, &h) == 14)
        #expect(h.payload_len == 70_000 && h.masked == 1 && h.mask_key == key && h.fin == 1)
    }
}

@Suite struct ClosePayloadTests {
    private func check(_ payload: [UInt8]) -> (rc: Int32, code: UInt16, reason: [UInt8]) {
        var code: UInt16 = 0
        var reason: UnsafePointer<UInt8>? = nil
        var reasonLen = 0
        let rc = cws_close_payload_parse(payload, payload.count, &code, &reason, &reasonLen)
        let r = reason.map { Array(UnsafeBufferPointer(start: $0, count: reasonLen)) } ?? []
        return (rc, code, r)
    }

    @Test func validCodes() {
        for code in UInt32(0)...5999 {
            let expected = (1000...1003).contains(code) || (1007...1014).contains(code) || (3000...4999).contains(code)
            #expect((cws_close_code_valid(code) == 1) == expected, "code \(code)")
            let r = check([UInt8(code >> 8 & 0xFF), UInt8(code & 0xFF)])
            #expect((r.rc == 0) == expected && (expected ? r.code == UInt16(code) : r.rc == 1002), "code \(code)")
        }
        #expect(cws_close_code_valid(65535) == 0)
    }

    @Test func emptyPayloadMeansNoStatus() {
        #expect(check([]).rc == 0 && check([]).code == 1005)
    }

    @Test func oneBytePayloadIsProtocolError() {
        #expect(check([0x03]).rc == 1002)
    }

    @Test func reasonMustBeUTF8() {
        let ok = check([0x03, 0xE8] + Array("bye κόσμε".utf8))
        #expect(ok.rc == 0 && ok.code == 1000 && ok.reason == Array("bye κόσμε".utf8))
        #expect(check([0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD]).rc == 1007)  // truncated character
        #expect(check([0x03, 0xE8, 0xFF]).rc == 1007)
    }

    @Test func encodeTruncatesAtCharacterBoundary() {
        var out = [UInt8](repeating: 0, count: 125)
        let reason = Array(String(repeating: "é", count: 70).utf8)  // 140 bytes of 2-byte characters
        let n = cws_close_payload_encode(&out, 1001, reason, reason.count)
        #expect(n == 2 + 122)
        #expect(check(Array(out[0..<n])).rc == 0)
        #expect(check(Array(out[0..<n])).code == 1001)
        #expect(cws_close_payload_encode(&out, 0, nil, 0) == 0)
        #expect(cws_close_payload_encode(&out, 1000, nil, 0) == 2 && out[0] == 0x03 && out[1] == 0xE8)
    }
}

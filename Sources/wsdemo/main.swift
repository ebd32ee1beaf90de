// wsdemo: a small tool over the C core until the server lands (issue 3 turns
// this into the chat example and the echo server).
import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

func usage() -> Never {
    print("""
    usage: wsdemo info                 SIMD levels of this CPU and the one in use
           wsdemo validate FILE...     UTF-8 validation, fail-fast, in 64 KiB chunks
           wsdemo accept KEY           Sec-WebSocket-Accept for a Sec-WebSocket-Key
    """)
    exit(2)
}

func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}

let args = CommandLine.arguments.dropFirst()
switch args.first {
case "info":
    for level in SIMDLevel.allCases {
        print("\(level.name): \(level.isSupported ? "supported" : "not supported")")
    }
    print("active: \(SIMDLevel.active.name)")
case "validate":
    guard args.count > 1 else { usage() }
    var allValid = true
    for path in args.dropFirst() {
        guard let bytes = readFile(path) else {
            print("\(path): cannot read"); allValid = false; continue
        }
        var validator = UTF8Validator()
        var position = 0
        var verdict = "valid UTF-8 (\(bytes.count) bytes)"
        while position < bytes.count {
            let end = min(bytes.count, position + (1 << 16))
            let bad: Int? = bytes[position..<end].withUnsafeBytes { chunk in
                do throws(UTF8Validator.InvalidByte) {
                    try validator.feed(chunk)
                    return nil
                } catch {
                    return error.offset
                }
            }
            if let bad {
                verdict = "invalid UTF-8 at byte \(position + bad)"
                break
            }
            position = end
        }
        if position >= bytes.count && !validator.isComplete { verdict = "invalid UTF-8: truncated at the end" }
        if !verdict.hasPrefix("valid") { allValid = false }
        print("\(path): \(verdict)")
    }
    exit(allValid ? 0 : 1)
case "accept":
    guard args.count == 2 else { usage() }
    print(Handshake.acceptKey(for: args[args.startIndex + 1]))
default:
    usage()
}

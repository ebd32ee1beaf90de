// Command-line options shared by the Hummingbird peers (hbecho, hbbroadcast).
import Foundation

public struct PeerOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 0
    public var threads = 1
    public var deflate = false
    /// PEM certificate chain and private key (`--tls-cert`, `--tls-key`): both or neither.
    public var tlsCert: String?
    public var tlsKey: String?

    /// Parses `--host H --port P --threads N` (and `--deflate`, `--tls-cert FILE
    /// --tls-key FILE` when the peer supports them); prints usage and exits on
    /// `--help`, fails on anything else.
    public static func parse(program: String, allowDeflate: Bool = false, allowTLS: Bool = false) -> PeerOptions {
        func fail(_ message: String) -> Never {
            FileHandle.standardError.write(Data("\(program): \(message)\n".utf8))
            exit(2)
        }
        var o = PeerOptions()
        var args = CommandLine.arguments.dropFirst().makeIterator()
        func value(_ flag: String) -> String {
            guard let v = args.next() else { fail("\(flag) needs a value") }
            return v
        }
        while let a = args.next() {
            switch a {
            case "--host": o.host = value(a)
            case "--port": o.port = Int(value(a)) ?? -1
            case "--threads": o.threads = Int(value(a)) ?? 0
            case "--deflate" where allowDeflate: o.deflate = true
            case "--tls-cert" where allowTLS: o.tlsCert = value(a)
            case "--tls-key" where allowTLS: o.tlsKey = value(a)
            case "-h", "--help":
                print("usage: \(program) [--host H] [--port P] [--threads N]" + (allowDeflate ? " [--deflate]" : "")
                    + (allowTLS ? " [--tls-cert FILE --tls-key FILE]" : ""))
                exit(0)
            default: fail("unknown argument \(a)")
            }
        }
        guard (0...65535).contains(o.port), o.threads >= 1 else { fail("bad --port or --threads") }
        guard (o.tlsCert == nil) == (o.tlsKey == nil) else { fail("--tls-cert and --tls-key go together") }
        return o
    }
}

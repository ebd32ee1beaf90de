import CHiredis
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One hiredis connection (an `OpaquePointer` to the shim's client), as the
/// backplane's threads use it: opened authenticated with the database
/// selected, fed commands of raw byte strings, checked for a close.
enum RedisConnection {
    /// A connected, authenticated client with the database selected, or why not.
    static func open(_ configuration: RedisConfiguration) -> (connection: OpaquePointer?, error: String) {
        var error = [CChar](repeating: 0, count: 200)
        let c: OpaquePointer? = configuration.host.withCString { host in
            if let password = configuration.password {
                return password.withCString {
                    chr_connect(host, Int32(configuration.port), Int32(RedisBackplane.milliseconds(configuration.timeout)), $0,
                                &error, error.count)
                }
            }
            return chr_connect(host, Int32(configuration.port), Int32(RedisBackplane.milliseconds(configuration.timeout)), nil,
                               &error, error.count)
        }
        guard let c else {
            return (nil, String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        if configuration.database != 0 {
            guard append(c, ["SELECT", "\(configuration.database)"].map { Array($0.utf8) }) == 0, chr_reply(c) == 0 else {
                let reason = "SELECT: " + String(cString: chr_error(c))
                chr_free(c)
                return (nil, reason)
            }
        }
        return (c, "")
    }

    /// Appends one command made of byte strings.
    static func append(_ c: OpaquePointer, _ args: [[UInt8]]) -> Int32 {
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        var copies: [UnsafeMutableRawBufferPointer] = []
        defer { copies.forEach { $0.deallocate() } }
        for arg in args {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(arg.count, 1), alignment: 1)
            arg.withUnsafeBytes { copy.copyMemory(from: $0) }
            copies.append(copy)
            pointers.append(UnsafePointer(copy.baseAddress!.assumingMemoryBound(to: CChar.self)))
            lengths.append(arg.count)
        }
        return chr_append(c, Int32(args.count), &pointers, &lengths)
    }

    /// Redis sends nothing unasked on a connection that is not subscribed, so a
    /// readable socket there means the server closed it.
    static func hasClosed(_ c: OpaquePointer) -> Bool {
        var fd = pollfd(fd: chr_fd(c), events: Int16(POLLIN), revents: 0)
        return poll(&fd, 1, 0) != 0
    }
}

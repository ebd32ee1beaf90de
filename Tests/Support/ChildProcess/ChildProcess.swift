import CSpawn
import Glibc

/// A child process for the tests (redis-server, wsdemo, python3), started with
/// posix_spawn rather than Foundation's Process (see cspawn.c for why).
public final class ChildProcess: @unchecked Sendable {
    public enum Output: Sendable {
        /// stdout and stderr to /dev/null.
        case discard
        /// stdout and stderr into one pipe, read with `readToEnd` / `readLine`.
        case capture
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let pid: pid_t
    private var reader: Int32 = -1
    private var status: Int32?

    /// `executable` is a path, or a name looked up on PATH.
    public init(_ executable: String, _ arguments: [String], output: Output = .discard) throws {
        guard let path = Self.resolve(executable) else { throw Failure(description: "\(executable): not found") }
        var writer: Int32 = -1
        if output == .capture {
            var fds: [Int32] = [-1, -1]
            let rc = cspawn_pipe(&fds)
            guard rc == 0 else { throw Failure(description: "pipe2: errno \(rc)") }
            reader = fds[0]
            writer = fds[1]
        }
        defer { if writer >= 0 { close(writer) } }
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { cspawn(path, $0.baseAddress, writer, writer, &pid) }
        guard rc == 0 else {
            if reader >= 0 { close(reader) }
            throw Failure(description: "posix_spawn \(path): errno \(rc)")
        }
        self.pid = pid
    }

    deinit {
        kill()
        if reader >= 0 { close(reader) }
    }

    /// The path of an executable: `name` itself when it has a slash, else found on PATH.
    public static func resolve(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// An executable of this package built next to the running test bundle
    /// (`swift build --build-tests` builds them all), or nil.
    public static func builtProduct(_ name: String) -> String? {
        guard let bundle = CommandLine.arguments.first else { return nil }
        var dir = bundle.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        for _ in 0..<2 {
            let path = (dir + [Substring(name)]).joined(separator: "/")
            if access(path, X_OK) == 0 { return path }
            dir = dir.dropLast()
        }
        return nil
    }

    /// Everything the child writes until it closes its output (normally: exits).
    public func readToEnd() -> String {
        guard reader >= 0 else { return "" }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(reader, &buffer, buffer.count)
            if n > 0 { bytes += buffer[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The first line of output, or what arrived before the deadline or EOF.
    public func readLine(timeoutMilliseconds: Int32 = 10_000) -> String {
        guard reader >= 0 else { return "" }
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        var pfd = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
        while byte != UInt8(ascii: "\n") {
            let ready = poll(&pfd, 1, timeoutMilliseconds)
            if ready < 0 && errno == EINTR { continue } // a signal (SIGCHLD of another child)
            guard ready == 1, read(reader, &byte, 1) == 1 else { break }
            bytes.append(byte)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public var isRunning: Bool {
        if status != nil { return false }
        var raw: Int32 = 0
        if waitpid(pid, &raw, WNOHANG) == pid { status = raw; return false }
        return true
    }

    /// Waits for the child; its exit code, or 128 + the signal that ended it.
    @discardableResult
    public func wait() -> Int32 {
        if status == nil {
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            status = raw
        }
        let raw = status!
        return raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }

    /// SIGKILL (as in a crash) and reap; nothing if it has already exited.
    public func kill(_ signal: Int32 = SIGKILL) {
        guard isRunning else { return }
        Glibc.kill(pid, signal)
        wait()
    }
}

// wsconform: the project's autobahn-style conformance suite against any
// WebSocket echo server. Exits 1 if any case FAILED.
import ConformanceSuite

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

func usage(_ status: Int32) -> Never {
    print("""
    usage: wsconform [--host ADDR] [--port N] [--path PATH] [--group NAME]... [--case ID]...
                     [--timeout SECONDS] [--max-message BYTES] [--verbose] [--list]
      runs the conformance cases against an echo server (every text and binary message
      sent back unchanged) and prints a table per group; exit status 1 if any case FAILED.
      --group, --case  only these (repeatable, or comma-separated; a case id also selects
                       the ids under it: --case 6.4 runs 6.4.1, 6.4.2...)
      --timeout        seconds to wait for an answer that should come (default 5)
      --max-message    the server's largest message (default 16777216): the limits cases
                       send this much (echoed) and one byte more (expect 1009)
      --verbose        one line per case; --list: list the cases, run nothing
      defaults: --host 127.0.0.1 --port 9001 --path /
      groups: \(Group.allCases.map(\.rawValue).joined(separator: ", "))
    """)
    exit(status)
}

func fail(_ message: String) -> Never {
    let line = "wsconform: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(2)
}

var target = Target(port: 9001)
var groups: [String] = []
var ids: [String] = []
var verbose = false
var list = false
var args = CommandLine.arguments.dropFirst().makeIterator()
@MainActor func value(_ flag: String) -> String {
    guard let v = args.next() else { fail("\(flag) needs a value") }
    return v
}
while let arg = args.next() {
    switch arg {
    case "--host": target.host = value(arg)
    case "--port":
        guard let p = Int(value(arg)), (1...65535).contains(p) else { fail("--port takes 1...65535") }
        target.port = p
    case "--path":
        target.path = value(arg)
        guard target.path.hasPrefix("/") else { fail("--path starts with /") }
    case "--group":
        groups += value(arg).split(separator: ",").map(String.init)
        for g in groups where Group(rawValue: g.lowercased()) == nil {
            fail("unknown group \(g) (one of \(Group.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
    case "--case": ids += value(arg).split(separator: ",").map(String.init)
    case "--timeout":
        guard let t = Double(value(arg)), t > 0 else { fail("--timeout takes seconds > 0") }
        target.deadline = t
    case "--max-message":
        guard let n = Int(value(arg)), n > 0 else { fail("--max-message takes bytes > 0") }
        target.maxMessage = n
    case "--verbose", "-v": verbose = true
    case "--list": list = true
    case "-h", "--help": usage(0)
    default: fail("unknown argument \(arg) (try --help)")
    }
}

let runner = Runner(target: target)
let cases = runner.cases(groups: groups, ids: ids)
guard !cases.isEmpty else { fail("no case matches") }
if list {
    for c in cases { print("\(c.id)\t\(c.group.rawValue)\t\(c.description)") }
    exit(0)
}

print("wsconform: \(cases.count) cases against ws://\(target.host.contains(":") ? "[\(target.host)]" : target.host):\(target.port)\(target.path)")
let results = runner.run(cases) { r in
    guard verbose else { return }
    let reason = r.verdict.reason.map { ": \($0)" } ?? ""
    print("\(r.verdict.label.padding(7)) \(r.testCase.id) [\(r.testCase.group.rawValue)] \(r.testCase.description)\(reason)")
}
let report = Report(results)
print(report.text())
exit(report.failed.isEmpty ? 0 : 1)

extension String {
    func padding(_ n: Int) -> String { self + String(repeating: " ", count: max(0, n - count)) }
}

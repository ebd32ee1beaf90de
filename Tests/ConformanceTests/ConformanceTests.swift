import ConformanceSuite
import Foundation
import OffThePool
import Logging
import Testing
import WebSocketService

/// Echo: every text and binary message back, unchanged (as `wsdemo --echo`).
struct Echo: RawHandler {
    func handle(service: WebSocketServer, connection: Connection, message: RawMessage, logger: Logger) {
        service.send(message.bytes, opcode: message.opcode, to: connection)
    }
}

let backends: [Configuration.Backend] = [.epoll, .uring]

/// The echo service on 127.0.0.1, any free port; nil (reason printed) when
/// the backend is io_uring and the kernel refuses it.
func startEcho(_ backend: Configuration.Backend) throws -> WebSocketServer? {
    var routes = WebSocketRoutes()
    routes.raw("*", handler: Echo())
    var configuration = Configuration(host: "127.0.0.1", port: 0, loops: 2, backend: backend)
    configuration.idleTimeout = .seconds(60)
    configuration.maxMessageSize = 16 << 20  // the limits group's 16 MiB cases, as the demo's --echo
    configuration.compression = Configuration.Compression()  // so the compression group runs
    let service: WebSocketServer
    do {
        service = try WebSocketServer(routes: routes, configuration: configuration,
                              logger: Logger(label: "conformance") { _ in SwiftLogNoOpLogHandler() })
    } catch {
        guard backend == .uring && error.description.contains("io_uring unavailable") else { throw error }
        print("SKIPPED on io_uring: \(error)")
        return nil
    }
    try service.start()
    return service
}

/// The whole table against the service in echo mode, on each backend: the
/// per-group table is printed, and every FAILED case is an issue (SKIPPED is
/// fine: compression while the service does not negotiate permessage-deflate).
@Suite(.serialized) struct ConformanceTests {
    @Test(arguments: backends)
    func everyCase(_ backend: Configuration.Backend) async throws {
        guard let service = try startEcho(backend) else { return }
        defer { service.stop() }
        let runner = Runner(target: Target(port: service.port, path: "/echo"))
        // Making the cases (their megabytes of payload) and running them take
        // half a minute: on a thread of its own, not one of the two of Swift's
        // cooperative pool, which every other test (and the handlers' timers)
        // of this process share.
        let (groups, results) = await offThePool { () -> (Set<Group>, [CaseResult]) in
            let cases = runner.cases()
            return (Set(cases.map(\.group)), runner.run(cases))
        }
        #expect(groups == Set(Group.allCases))
        let report = Report(results)
        print(report.text(title: "conformance on \(service.backend) (asked: \(backend)), \(results.count) cases:"))
        for r in report.failed {
            Issue.record("[\(r.testCase.group.rawValue)] \(r.testCase.id) \(r.testCase.description): \(r.verdict.reason ?? "")")
        }
    }
}

/// The suite's own parts.
struct SuiteTests {
    @Test func caseIdsAreUniqueAndEveryGroupHasCases() async {
        let cases = await offThePool { Suite.cases(for: Target(port: 1)) }
        var seen = Set<String>()
        for c in cases { #expect(seen.insert(c.id).inserted, "duplicate id \(c.id)") }
        for g in Group.allCases { #expect(cases.contains { $0.group == g }, "no case in \(g)") }
    }

    @Test func deflateRoundTrips() throws {
        var inflater = Inflater()
        let text = Array("Hello, Hello, Hello, Hello! abcabcabcabc".utf8)
        #expect(try inflater.message(Deflate.stored(text)) == text)
        #expect(try inflater.message(Deflate.fixed(text)) == text)
        // Context takeover: the second message refers to the first.
        #expect(try inflater.message(Deflate.fixed(text, history: text)) == text)
        #expect(try inflater.message([0x00]) == [])
        let big = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        #expect(try inflater.message(Deflate.stored(big)) == big)
        #expect(try inflater.message(Deflate.bomb(1_000_000)).count == 1_000_000)
        // A dynamic-Huffman message: zlib level 9, raw deflate, sync-flushed,
        // 00 00 FF FF stripped, of 600 pseudo-random letters (this LCG).
        let alphabet = Array("eeeeeeettttaaaooiinnsshrdlu  ".utf8)
        var x = 1
        var letters: [UInt8] = []
        for _ in 0..<600 {
            x = (x &* 1103515245 &+ 12345) % (1 << 31)
            letters.append(alphabet[(x >> 16) % alphabet.count])
        }
        let zlib: [UInt8] = [
            0x1c, 0x92, 0x61, 0x0a, 0xc5, 0x30, 0x08, 0x83, 0xaf, 0xe2, 0xd5, 0x84, 0x06, 0x26, 0x14, 0x05,
            0x4d, 0xef, 0xff, 0xe2, 0xeb, 0xd8, 0x8f, 0x5a, 0x9b, 0x7c, 0x66, 0xcb, 0x18, 0x1b, 0xf8, 0xc1,
            0x6b, 0xf2, 0xc2, 0xe0, 0x1d, 0x37, 0x27, 0x8c, 0x64, 0x78, 0x18, 0x60, 0xd5, 0x87, 0xb4, 0xf1,
            0x4b, 0x23, 0x9c, 0x18, 0x30, 0xb0, 0x2f, 0x5f, 0xb0, 0x9b, 0x65, 0xc7, 0xfd, 0x8b, 0xcf, 0x81,
            0x79, 0x2f, 0x79, 0x03, 0xee, 0xe3, 0xf8, 0x32, 0xfc, 0x76, 0x64, 0x39, 0x9f, 0x27, 0x70, 0x75,
            0x59, 0x47, 0x15, 0xfe, 0x01, 0x1f, 0x53, 0x42, 0x39, 0x34, 0xe9, 0x78, 0x7e, 0x1d, 0x8c, 0x0b,
            0xf2, 0x38, 0xad, 0xb9, 0x4a, 0xe6, 0x94, 0x93, 0xaa, 0x76, 0x5a, 0xae, 0x94, 0x3f, 0x5c, 0xcf,
            0xd8, 0xb3, 0xe7, 0x86, 0xfa, 0xe0, 0x91, 0x17, 0x0d, 0xad, 0x68, 0x01, 0x11, 0xbd, 0xd0, 0x48,
            0x75, 0x6a, 0x1d, 0x7c, 0xd1, 0x57, 0x5b, 0x13, 0x66, 0x94, 0xd4, 0x55, 0xb4, 0x44, 0x58, 0x32,
            0x49, 0xd7, 0xb0, 0x05, 0xde, 0xfb, 0x84, 0x0a, 0x4f, 0xa5, 0x60, 0xd2, 0xc9, 0xe0, 0x79, 0x1d,
            0x4b, 0xb8, 0x17, 0xa6, 0xbb, 0x74, 0x0c, 0x63, 0xe3, 0x08, 0xdf, 0xb6, 0x18, 0x31, 0x8d, 0x52,
            0x2a, 0x15, 0x28, 0x55, 0x38, 0xcb, 0x77, 0x96, 0xe0, 0xab, 0x32, 0x1e, 0x8d, 0x11, 0xa2, 0xdf,
            0xde, 0x3b, 0xee, 0xc2, 0x66, 0xca, 0xa0, 0xea, 0x5f, 0xad, 0xde, 0x20, 0x0d, 0xb9, 0x9b, 0x4f,
            0x31, 0x1c, 0xab, 0xf2, 0xd2, 0xc8, 0x86, 0x49, 0x59, 0x68, 0x0e, 0x19, 0x62, 0x53, 0x5e, 0x75,
            0x24, 0xbe, 0x87, 0xf6, 0x87, 0x3f, 0xb2, 0xae, 0x08, 0x32, 0x76, 0x44, 0x85, 0x18, 0xab, 0xa4,
            0x1e, 0xca, 0x67, 0x4b, 0xad, 0xf9, 0xce, 0xe8, 0x20, 0xf5, 0x11, 0xda, 0x7b, 0xef, 0xe8, 0x24,
            0xb3, 0x63, 0x97, 0x78, 0xa4, 0x7c, 0xe5, 0xf1, 0xfa, 0x2d, 0x55, 0x0b, 0x38, 0xde, 0xf6, 0xcd,
            0x60, 0xd4, 0x51, 0xf7, 0xe5, 0x1a, 0xdb, 0x8b, 0x6f, 0xe5, 0x86, 0x0f, 0x21, 0x64, 0xf9, 0xba,
            0xf2, 0x3a, 0xfa, 0x33, 0xf0, 0x42, 0x5f, 0x57, 0x28, 0xb6, 0x71, 0x6f, 0x4a, 0xbc, 0x5e, 0xbc,
            0xad, 0xcd, 0x3c, 0x09, 0x39, 0x7e, 0x00,
        ]
        #expect((zlib[0] >> 1) & 3 == 2)
        #expect(try Inflater().messageCopy(zlib) == letters)
    }
}

extension Inflater {
    func messageCopy(_ payload: [UInt8]) throws -> [UInt8] {
        var copy = self
        return try copy.message(payload)
    }
}

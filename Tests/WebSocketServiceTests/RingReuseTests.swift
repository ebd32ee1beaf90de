import CWebSocket
import Foundation
import Synchronization
import Testing
@testable import WebSocketService

#if canImport(Glibc)
import Glibc
#endif

/// Two threads that share nothing a sanitizer can see each create an
/// io_uring server, one after the other: the second one's probe ring is
/// mapped where the first one's rings were unmapped. The kernel orders that;
/// ThreadSanitizer cannot see it, since liburing maps rings with raw system
/// calls, and before the engine said so it reported the second ring's first
/// submission as a race with the first ring's last (CI's sanitize step: one
/// test's probe against another test's loop, running side by side).
/// Under scripts/sanitize (TSan, halt on the first report) this test fails on
/// such a report (it did every time here before the fix: the second probe's
/// ring lands at the first one's address); in a plain run it only checks that
/// both creations succeed.
/// It calls the engine directly so that no Swift runtime lock orders the two
/// threads by accident.
@Suite struct RingReuseTests {
    @Test func aRingMappedWhereAnotherThreadsRingWasIsNoRace() throws {
        let firstDone = RelaxedFlag()
        let secondDone = RelaxedFlag()
        let results = Locked<[String]>([])
        let first = Thread {
            let outcome = createAndDestroyUringServer()
            // Relaxed: no happens-before edge for TSan to follow. The first
            // thread stays until the second is done: TSan forgets the
            // accesses of a thread that has ended (as, in CI, the racing
            // threads were both running).
            firstDone.raise()
            while !secondDone.isRaised { usleep(1_000) }
            results.withLock { $0.append("first: \(outcome)") }
        }
        let second = Thread {
            while !firstDone.isRaised { usleep(1_000) }
            let outcome = createAndDestroyUringServer()
            secondDone.raise()
            results.withLock { $0.append("second: \(outcome)") }
        }
        first.start()
        second.start()
        #expect(eventually(timeout: .seconds(30)) { results.withLock { $0.count } == 2 })
        let seen = results.withLock { $0 }.sorted()
        if seen.contains(where: { $0.contains("io_uring unavailable") }) {
            print("SKIPPED: \(seen)")
            return
        }
        #expect(seen == ["first: created", "second: created"])
    }
}

/// "created", or the engine's reason for failing.
private func createAndDestroyUringServer() -> String {
    var cfg = cws_server_config()
    cws_server_config_init(&cfg)
    cfg.backend = UInt8(CWS_BACKEND_URING.rawValue)
    cfg.loops = 1
    var err = [CChar](repeating: 0, count: 256)
    let server = "127.0.0.1".withCString { host -> OpaquePointer? in
        cfg.host = host
        return cws_server_create(&cfg, &err, err.count)
    }
    guard let server else { return String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    cws_server_destroy(server)
    return "created"
}

/// A flag read and written with relaxed atomics, which order nothing else.
private final class RelaxedFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func raise() { value.store(true, ordering: .relaxed) }
    var isRaised: Bool { value.load(ordering: .relaxed) }
}

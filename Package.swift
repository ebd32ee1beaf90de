// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-websocket-server",
    products: [
        .library(name: "WebSocketService", targets: ["WebSocketService"]),
        // The Swift wrappers over the C core's sans-IO protocol code, for a
        // client, a proxy or a test tool that needs frames but no server.
        .library(name: "WebSocketProtocol", targets: ["WebSocketProtocol"]),
        // The Redis backplane (scale-out across servers): only what imports it links hiredis.
        .library(name: "WebSocketRedis", targets: ["WebSocketRedis"]),
        .executable(name: "wsdemo", targets: ["wsdemo"]),
        .library(name: "ConformanceSuite", targets: ["ConformanceSuite"]),
        .executable(name: "wsconform", targets: ["wsconform"]),
    ],
    dependencies: [
        // The logging API that handlers receive (1.16 for LogHandler.log(event:),
        // which the tests' capture uses).
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        // WebSocketServer is a ServiceLifecycle.Service: graceful shutdown in a ServiceGroup.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // The server's counters and gauges, reported to whatever backend the application bootstraps.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // Only the demo: /metrics in Prometheus' text format.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Only for `swift package generate-documentation` (scripts/docs): a
        // command plugin, which no target depends on, so nothing of it is
        // built into the library or its users' builds.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // The C core: sans-IO protocol code and the io_uring/epoll engine.
        // SIMD kernels are compiled per function with __attribute__((target)) and chosen
        // at run time, so no per-target compiler flags are needed.
        .target(
            name: "CWebSocket",
            path: "CSources/CWebSocket",
            cSettings: [
                .define("_GNU_SOURCE"),
            ],
            linkerSettings: [
                // Debian: liburing-dev, zlib1g-dev, libssl-dev (OpenSSL 3, for TLS).
                .linkedLibrary("uring"),
                .linkedLibrary("z"),
                .linkedLibrary("ssl"),
                .linkedLibrary("crypto"),
            ]
        ),
        // A tiny prefixed (chr_) shim over hiredis for the Redis backplane; it
        // hides redisReply, whose layout differs between hiredis 0.14 and 1.x.
        .target(
            name: "CHiredis",
            path: "CSources/CHiredis",
            linkerSettings: [
                // Debian: libhiredis-dev.
                .linkedLibrary("hiredis"),
            ]
        ),
        // Frames, masking, UTF-8 validation, the accept key, SIMD levels:
        // sans-IO, over CWebSocket only (no engine state, no logging).
        .target(
            name: "WebSocketProtocol",
            dependencies: ["CWebSocket"],
            path: "Sources/WebSocketProtocol"
        ),
        .target(
            name: "WebSocketService",
            dependencies: [
                "CWebSocket",
                "WebSocketProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Sources/WebSocketService"
        ),
        // The Redis pub/sub backplane and cluster presence, over the hiredis shim;
        // `Configuration.backplane = .redis(...)` comes from here.
        .target(
            name: "WebSocketRedis",
            dependencies: [
                "WebSocketService",
                "CHiredis",
                "CWebSocket", // cws_sha1, for EVALSHA
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/WebSocketRedis"
        ),
        .executableTarget(
            name: "wsdemo",
            dependencies: [
                "WebSocketService",
                "WebSocketRedis", // --redis
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/wsdemo"
        ),
        // The autobahn-style conformance suite: cases as data, a runner over raw
        // sockets, usable against any echo server (wsconform) and in `swift test`.
        .target(
            name: "ConformanceSuite",
            dependencies: ["CWebSocket", "WebSocketProtocol"],
            path: "Sources/ConformanceSuite"
        ),
        .executableTarget(
            name: "wsconform",
            dependencies: ["ConformanceSuite"],
            path: "Sources/wsconform"
        ),
        // Test support: child processes via posix_spawn (not Foundation's Process).
        .target(name: "CSpawn", path: "Tests/Support/CSpawn"),
        // Test support: a TLS client over a test's socket (OpenSSL).
        .target(name: "CTestTLS", path: "Tests/Support/CTestTLS",
                linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(name: "ChildProcess", dependencies: ["CSpawn"], path: "Tests/Support/ChildProcess"),
        // Test support: blocking work on a thread of its own, off Swift's cooperative pool.
        .target(name: "OffThePool", path: "Tests/Support/OffThePool"),
        // A C echo server on the engine that the tests run as a child process
        // (a descriptor limit of its own, its CPU readable in /proc).
        .executableTarget(name: "EngineTestHost", dependencies: ["CWebSocket"], path: "Tests/Support/EngineTestHost"),
        .testTarget(
            name: "ConformanceTests",
            dependencies: [
                "ConformanceSuite",
                "WebSocketService",
                "OffThePool",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/ConformanceTests"
        ),
        .testTarget(
            name: "CWebSocketTests",
            dependencies: ["CWebSocket", "WebSocketService", "ChildProcess", "OffThePool"],
            path: "Tests/CWebSocketTests"
        ),
        .testTarget(
            name: "WebSocketServiceTests",
            dependencies: [
                "CWebSocket",
                "WebSocketService",
                "WebSocketRedis", // ScaleOutTests
                "CHiredis", // ClusterHistoryTests: DUMP and RESTORE of a stream
                "ChildProcess",
                "OffThePool",
                "CTestTLS", // TLSTests
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            path: "Tests/WebSocketServiceTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)

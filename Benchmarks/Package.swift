// swift-tools-version:6.1
// Benchmarks live in their own package so the library's users never resolve
// benchmark dependencies.
import PackageDescription

let package = Package(
    name: "Benchmarks",
    dependencies: [
        .package(name: "swift-websocket-server", path: ".."),
        // The peer: Hummingbird WebSocket (SwiftNIO), built only for `hbecho`.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.0.0"),
        // hbecho's wss:// (--tls-cert/--tls-key): HummingbirdTLS over NIOSSL (BoringSSL).
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.0.0"),
        // Micro benchmarks with malloc counts (`swift package benchmark`).
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CoreThroughput",
            dependencies: [.product(name: "WebSocketProtocol", package: "swift-websocket-server")],
            path: "Sources/CoreThroughput"
        ),
        // A self-contained C load generator (epoll): echo, idle-connection and
        // fan-out scenarios against any ws:// server on loopback. See Sources/wsload/main.c.
        .executableTarget(
            name: "wsload",
            path: "Sources/wsload",
            // zlib, for --deflate; OpenSSL, for wss:// URLs
            linkerSettings: [.linkedLibrary("z"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // One hostile client and a canary (issue 12): the canary's round-trip latency,
        // the server's RSS and descriptors under a ping flood, an envelope flood, a
        // compression bomb and the like. See Sources/wsabuse/main.c.
        .executableTarget(
            name: "wsabuse",
            path: "Sources/wsabuse",
            linkerSettings: [.linkedLibrary("z")] // zlib, for the bomb's deflate stream
        ),
        // Echo peer on Hummingbird WebSocket, same semantics as `wsdemo --echo`; wss://
        // with --tls-cert/--tls-key (HummingbirdTLS, NIOSSL), like `wsdemo --tls-cert`.
        // Command-line options shared by the two Hummingbird peers.
        .target(name: "PeerOptions", path: "Sources/PeerOptions"),
        .executableTarget(
            name: "hbecho",
            dependencies: [
                "PeerOptions",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSCompression", package: "hummingbird-websocket"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Sources/hbecho"
        ),
        // Broadcast peer on Hummingbird WebSocket, same semantics as the chat's `say`
        // fan-out (wsload fanout).
        .executableTarget(
            name: "hbbroadcast",
            dependencies: [
                "PeerOptions",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Sources/hbbroadcast"
        ),
        // package-benchmark suites live under Benchmarks/<target> (the plugin's convention).
        .executableTarget(
            name: "CoreMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                // Masking and UTF-8 kernels (KernelBenchmarks); envelopes and fan-out.
                .product(name: "WebSocketProtocol", package: "swift-websocket-server"),
                .product(name: "WebSocketService", package: "swift-websocket-server"),
            ],
            path: "Benchmarks/CoreMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)

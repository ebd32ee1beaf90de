// swift-tools-version:6.0
// Benchmarks live in their own package so the library's users never resolve
// benchmark dependencies.
import PackageDescription

let package = Package(
    name: "Benchmarks",
    dependencies: [
        .package(name: "swift-websocket-server", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "CoreThroughput",
            dependencies: [.product(name: "WebSocketService", package: "swift-websocket-server")],
            path: "Sources/CoreThroughput"
        ),
        // A self-contained C load generator (epoll): echo and idle-connection
        // scenarios against any ws:// server on loopback. See Sources/wsload/main.c.
        .executableTarget(
            name: "wsload",
            path: "Sources/wsload"
        ),
    ],
    swiftLanguageModes: [.v6]
)

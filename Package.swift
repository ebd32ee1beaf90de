// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-websocket-server",
    products: [
        .library(name: "WebSocketService", targets: ["WebSocketService"]),
        .executable(name: "wsdemo", targets: ["wsdemo"]),
    ],
    targets: [
        // The C core: sans-IO protocol code now, the io_uring/epoll engine later.
        // SIMD kernels are compiled per function with __attribute__((target)) and chosen
        // at run time, so no per-target compiler flags are needed.
        .target(
            name: "CWebSocket",
            path: "CSources/CWebSocket",
            cSettings: [
                .define("_GNU_SOURCE"),
            ],
            linkerSettings: [
                // Debian: liburing-dev, zlib1g-dev.
                .linkedLibrary("uring"),
                .linkedLibrary("z"),
            ]
        ),
        .target(
            name: "WebSocketService",
            dependencies: ["CWebSocket"],
            path: "Sources/WebSocketService"
        ),
        .executableTarget(
            name: "wsdemo",
            dependencies: ["WebSocketService"],
            path: "Sources/wsdemo"
        ),
        .testTarget(
            name: "CWebSocketTests",
            dependencies: ["CWebSocket", "WebSocketService"],
            path: "Tests/CWebSocketTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)

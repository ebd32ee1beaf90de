// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Chat",
    dependencies: [
        // The library, checked out beside this package.
        .package(path: "../swift-websocket-server"),
        // The logging API that handlers receive.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        .executableTarget(
            name: "Chat",
            dependencies: [
                .product(name: "WebSocketService", package: "swift-websocket-server"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

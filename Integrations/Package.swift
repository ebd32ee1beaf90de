// swift-tools-version:6.0
// Proof that the library's public names can be used unqualified next to the
// frameworks a Swift server most often has: a file that imports Hummingbird,
// Vapor and ServiceLifecycle with WebSocketService must compile. Its own
// package, so the library's users never resolve Hummingbird or Vapor. CI
// builds it (scripts/check-names).
import PackageDescription

let package = Package(
    name: "Integrations",
    dependencies: [
        .package(name: "swift-websocket-server", path: ".."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/vapor/vapor", from: "4.100.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
    ],
    targets: [
        .executableTarget(
            name: "NameCheck",
            dependencies: [
                .product(name: "WebSocketService", package: "swift-websocket-server"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/NameCheck"
        ),
    ],
    swiftLanguageModes: [.v6]
)

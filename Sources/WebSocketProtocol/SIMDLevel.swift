import CWebSocket

/// The SIMD level the C core's kernels use on this machine.
public enum SIMDLevel: Int32, Sendable, CaseIterable {
    case scalar = 0, sse, avx2, avx512

    public static var active: SIMDLevel { SIMDLevel(rawValue: cws_simd_active()) ?? .scalar }
    public var isSupported: Bool { cws_simd_supported(rawValue) == 1 }
    public var name: String { String(cString: cws_simd_name(rawValue)) }
}

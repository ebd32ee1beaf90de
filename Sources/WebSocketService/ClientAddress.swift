import Foundation

/// Who a request comes from, for the per-address connection cap.
enum ClientAddress {
    /// The IP address of an engine peer string, "1.2.3.4:5" or "[::1]:5".
    static func ip(ofPeer peer: String) -> String {
        if peer.hasPrefix("["), let close = peer.firstIndex(of: "]") {
            return String(peer[peer.index(after: peer.startIndex)..<close])
        }
        if let colon = peer.lastIndex(of: ":") { return String(peer[..<colon]) }
        return peer
    }

    /// The peer's address; when the peer is a trusted proxy, the last
    /// `X-Forwarded-For` address (each proxy appends the one it heard from)
    /// that is not itself a trusted proxy. Every `X-Forwarded-For` line
    /// counts, in order.
    static func resolve(_ request: ServerRequest, trustedProxies: Set<String>) -> String {
        let peer = ip(ofPeer: request.remoteAddress)
        guard !trustedProxies.isEmpty, trustedProxies.contains(peer) else { return peer }
        let hops = request.headers.filter { $0.name.lowercased() == "x-forwarded-for" }
            .flatMap { $0.value.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        for hop in hops.reversed() where !trustedProxies.contains(hop) {
            return normalized(hop)
        }
        return hops.first.map(normalized) ?? peer
    }

    /// "[::1]:80" or "1.2.3.4:80" in a header (some proxies add the port): the address alone.
    private static func normalized(_ hop: String) -> String {
        if hop.hasPrefix("[") { return ip(ofPeer: hop) }
        // One colon: IPv4 with a port; more: a bare IPv6 address.
        if hop.filter({ $0 == ":" }).count == 1 { return ip(ofPeer: hop) }
        return hop
    }
}

/// Open connections per client address, for `maxConnectionsPerAddress`.
final class AddressTable: Sendable {
    private let counts = Locked<[String: Int]>([:])

    /// Counts one more connection from `address` unless it has `limit` already.
    func reserve(_ address: String, limit: Int) -> Bool {
        counts.withLock { c in
            let now = c[address, default: 0]
            guard now < limit else { return false }
            c[address] = now + 1
            return true
        }
    }

    func release(_ address: String) {
        counts.withLock { c in
            guard let now = c[address] else { return }
            c[address] = now > 1 ? now - 1 : nil
        }
    }

    func count(_ address: String) -> Int { counts.withLock { $0[address, default: 0] } }
}

import CHiredis
import Foundation

/// A Redis server: the configured one, or a Redis Cluster master.
struct RedisNode: Hashable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int
    var description: String { "\(host):\(port)" }
}

/// Where each key and shard channel lives, and one connection per node for
/// the thread that owns the router (it is not thread-safe).
///
/// On a single Redis everything lives on the configured node. On a Redis
/// Cluster the slot map comes from CLUSTER SLOTS; a MOVED answer or a lost
/// node sets `needsRefresh` and the owner thread reads the map again.
final class RedisRouter {
    let configuration: RedisConfiguration
    let seed: RedisNode
    /// Slot → index in `nodes`; nil when Redis is not a cluster.
    private var owners: [UInt16]?
    private var nodes: [RedisNode] = []
    private var connections: [RedisNode: OpaquePointer] = [:]
    /// The slot map must be read (again) before the next routed command.
    var needsRefresh = true
    private var lastRefresh: ContinuousClock.Instant?
    /// Read the map on a connection of its own (a subscribed connection
    /// cannot run CLUSTER SLOTS).
    private let separateRefresh: Bool

    init(_ configuration: RedisConfiguration, separateRefresh: Bool = false) {
        self.configuration = configuration
        self.separateRefresh = separateRefresh
        seed = RedisNode(host: configuration.host, port: configuration.port)
    }

    deinit { closeAll() }

    var isCluster: Bool { owners != nil }

    static func slot(_ key: String) -> Int {
        var key = key
        return key.withUTF8 { Int(chr_key_slot(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count)) }
    }

    /// The node that owns this key or shard channel.
    func node(for key: String) -> RedisNode {
        guard let owners else { return seed }
        return nodes[Int(owners[Self.slot(key)])]
    }

    /// The open connection to a node, or a new one; nil and why.
    func connection(to node: RedisNode) -> (connection: OpaquePointer?, error: String) {
        if let c = connections[node] { return (c, "") }
        let opened = connect(node)
        if let c = opened.connection { connections[node] = c }
        return opened
    }

    private func connect(_ node: RedisNode) -> (connection: OpaquePointer?, error: String) {
        var target = configuration
        target.host = node.host
        target.port = node.port
        // Redis Cluster has database 0 only.
        if isCluster { target.database = 0 }
        let opened = RedisConnection.open(target)
        return (opened.connection, opened.error.isEmpty ? "" : "\(node): \(opened.error)")
    }

    var open: [RedisNode: OpaquePointer] { connections }

    func drop(_ node: RedisNode) {
        if let c = connections.removeValue(forKey: node) { chr_free(c) }
    }

    func closeAll() {
        for c in connections.values { chr_free(c) }
        connections = [:]
    }

    /// Reads the slot map from the configured node, else from any node met
    /// before. nil on success, else why not. At most one read per 20 ms, so
    /// a cluster in the middle of a change is not asked in a busy loop.
    func refresh() -> String? {
        if let lastRefresh, case let wait = .milliseconds(20) - (ContinuousClock.now - lastRefresh), wait > .zero {
            Thread.sleep(forTimeInterval: Double(wait.components.attoseconds) / 1e18)
        }
        lastRefresh = .now
        var lastError = "no Redis node answered"
        for node in [seed] + nodes.filter({ $0 != seed }) {
            let (c, error) = separateRefresh ? connect(node) : connection(to: node)
            guard let c else {
                lastError = error
                continue
            }
            defer { if separateRefresh { chr_free(c) } }
            guard RedisConnection.append(c, [Array("CLUSTER".utf8), Array("SLOTS".utf8)]) == 0 else {
                lastError = "\(node): " + String(cString: chr_error(c))
                if !separateRefresh { drop(node) }
                continue
            }
            switch chr_reply(c) {
            case 0:
                var ranges = [chr_slot_range](repeating: chr_slot_range(), count: 1024)
                let count = min(chr_reply_slot_ranges(c, &ranges, ranges.count), ranges.count)
                var owners = [UInt16](repeating: UInt16.max, count: 16384)
                var nodes: [RedisNode] = []
                for range in ranges[0..<count] {
                    var host = range.host.map {
                        String(decoding: UnsafeRawBufferPointer(start: $0, count: range.host_len), as: UTF8.self)
                    } ?? ""
                    if host.isEmpty || host == "?" { host = node.host }
                    let owner = RedisNode(host: host, port: Int(range.port))
                    let index = nodes.firstIndex(of: owner) ?? { nodes.append(owner); return nodes.count - 1 }()
                    for slot in max(0, Int(range.start))...min(16383, Int(range.end)) { owners[slot] = UInt16(index) }
                }
                guard !nodes.isEmpty, !owners.contains(UInt16.max) else {
                    lastError = "\(node): the cluster does not cover every slot"
                    continue
                }
                self.owners = owners
                self.nodes = nodes

                // Connections to nodes that no longer own anything go.
                for stale in connections.keys where !nodes.contains(stale) && stale != seed { drop(stale) }
                needsRefresh = false
                return nil
            case 1 where String(cString: chr_error(c)).contains("cluster support disabled"):
                owners = nil
                nodes = [seed]
                needsRefresh = false
                return nil
            case 1:
                lastError = "\(node): CLUSTER SLOTS: " + String(cString: chr_error(c))
            default:
                lastError = "\(node): " + String(cString: chr_error(c))
                if !separateRefresh { drop(node) }
            }
        }
        return lastError
    }

    /// Whether an error reply says the key lives elsewhere now.
    static func isRedirect(_ error: String) -> Bool {
        error.hasPrefix("MOVED ") || error.hasPrefix("ASK ")
    }

    /// Takes a `MOVED <slot> <host>:<port>` answer into the map: that slot
    /// lives there now. The answer is the cluster's word for the slot, which
    /// a node's CLUSTER SLOTS can lag (Redis 7.0 keeps that reply cached).
    /// The slot, or nil when the error is not a MOVED (an ASK is a migration
    /// in progress: read the map again and retry).
    @discardableResult
    func redirect(_ error: String) -> Int? {
        let parts = error.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED", let slot = Int(parts[1]), (0..<16384).contains(slot),
              let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]) else {
            return nil
        }
        var host = String(parts[2][..<colon])
        if host.isEmpty { host = seed.host }
        let node = RedisNode(host: host, port: port)
        if owners == nil {
            // A cluster after all (it was not one when the map was read).
            owners = [UInt16](repeating: 0, count: 16384)
            nodes = [seed]
        }
        let index = nodes.firstIndex(of: node) ?? { nodes.append(node); return nodes.count - 1 }()
        owners![slot] = UInt16(index)
        return slot
    }
}

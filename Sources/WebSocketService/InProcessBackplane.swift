import Foundation

/// One server: nothing to carry.
final class InProcessBackplane: Backplane {
    var isDistributed: Bool { false }
    func start(serverID: UUID, deliver: @escaping @Sendable (BackplaneMessage) -> Void,
               localMembers: @escaping @Sendable (String?) -> [String: [ClusterMember]], history: BackplaneHistoryHooks) {}
    func stop() {}
    func subscribe(channel: String) {}
    func unsubscribe(channel: String) {}
    func publish(_ message: BackplaneMessage) {}
    func membersChanged(channel: String) {}
    func clusterMembers(in channel: String) async throws -> [ClusterMember] { [] }
    var status: BackplaneStatus {
        BackplaneStatus(kind: "in-process", serverID: "", endpoint: nil, connected: true, subscriptions: 0,
                        published: 0, received: 0, notPropagated: 0, disconnects: 0, lastError: nil)
    }
}

import Foundation

/// A channel member somewhere in the cluster.
public struct ClusterMember: Sendable, Hashable, Codable {
    public var id: UUID
    public var userID: String
    /// The backplane id of the server it is connected to.
    public var serverID: String

    public init(id: UUID, userID: String, serverID: String) {
        self.id = id
        self.userID = userID
        self.serverID = serverID
    }
}

/// Where the chat's lines are kept. An actor in memory here; in a real server
/// a database, which the handler awaits in just the same way.
actor ChatStore {
    private var lines: [String: [Line]] = [:]

    func append(_ line: Line, to room: String) {
        lines[room, default: []].append(line)
    }

    func recent(in room: String, limit: Int = 50) -> [Line] {
        Array(lines[room, default: []].suffix(limit))
    }
}

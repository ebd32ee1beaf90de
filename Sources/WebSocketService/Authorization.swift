/// An authorization hook's answer.
public enum Verdict: Sendable, Hashable {
    case allow
    /// Refused; the reason is told to the client.
    case refuse(String)
}

/// An endpoint's permission checks, run with the connection (and its
/// `profile`) in hand, on the connection's loop thread (they must not block).
public struct Authorization: Sendable {
    /// Every join: `WebSocketServer.join` (from a handler or anywhere else) and the
    /// first channel of an upgrade. A refused join leaves the connection out
    /// of the channel and sends it an `error` envelope (`code`
    /// `"join-refused"`, the channel and the reason); a refused first channel
    /// refuses the upgrade with 403.
    public var join: (@Sendable (_ connection: Connection, _ channel: String) -> Verdict)?
    /// Every envelope, before the handler sees it. Refused: the handler does
    /// not run, and the client gets an `error` envelope (`code`
    /// `"command-refused"`, the cmd and the reason).
    public var command: (@Sendable (_ connection: Connection, _ message: Message) -> Verdict)?

    public init(join: (@Sendable (_ connection: Connection, _ channel: String) -> Verdict)? = nil,
                command: (@Sendable (_ connection: Connection, _ message: Message) -> Verdict)? = nil) {
        self.join = join
        self.command = command
    }

    /// No checks.
    public static var none: Authorization { Authorization() }
}

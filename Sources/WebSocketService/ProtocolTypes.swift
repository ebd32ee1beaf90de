// The service's API names types of the protocol module (`Opcode` in
// `RawMessage` and `send(_:opcode:to:)`, `CloseCode` in `close` and
// `onClose`), so the whole module is re-exported: `import WebSocketService`
// is all a service user writes. Re-exporting the module rather than
// declaring typealiases for those two keeps one name per type, so a file that
// imports both modules (the conformance suite, a tool next to a server) sees
// no second declaration, and code that used FrameParser, Masking or
// UTF8Validator through this module before they moved keeps compiling.
@_exported import WebSocketProtocol

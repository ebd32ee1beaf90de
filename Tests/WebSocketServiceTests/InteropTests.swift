import ChildProcess
import Foundation
import Logging
import Testing
@testable import WebSocketService

/// An independent client: the Python `websockets` library.
@Suite(.serialized) struct InteropTests {
    /// Makes `import websockets` work, installing it with pip if needed;
    /// nil when that is impossible (no python3, no network to PyPI).
    static let python: String? = {
        func run(_ arguments: [String]) -> (Int32, String) {
            do {
                let process = try ChildProcess(arguments[0], Array(arguments.dropFirst()), output: .capture)
                let output = process.readToEnd()
                return (process.wait(), output)
            } catch { return (-1, "\(error)") }
        }
        if run(["python3", "-c", "import websockets"]).0 == 0 { return "python3" }
        let install = run(["python3", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "websockets"])
        if install.0 == 0, run(["python3", "-c", "import websockets"]).0 == 0 { return "python3" }
        print("SKIPPED interop: cannot install the Python websockets library: \(install.1.suffix(300))")
        return nil
    }()

    static let script = #"""
    import asyncio, json, sys
    from websockets.asyncio.client import connect

    async def main(port):
        async with connect(f"ws://127.0.0.1:{port}/ws?ch=py", open_timeout=5, close_timeout=5) as a, \
                   connect(f"ws://127.0.0.1:{port}/ws?ch=py", open_timeout=5, close_timeout=5) as b:
            update = json.loads(await asyncio.wait_for(a.recv(), 5))
            assert update["cmd"] == "online-update" and update["param"]["connected"] is True, update
            await a.send(json.dumps({"channel": "py", "cmd": "say", "param": {"text": "héllo"}}))
            for ws in (a, b):
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert m["cmd"] == "say" and m["channel"] == "py" and m["param"] == {"text": "héllo"}, m
            await b.send("{oops")
            m = json.loads(await asyncio.wait_for(b.recv(), 5))
            assert m["cmd"] == "error", m
            await b.send(json.dumps({"cmd": "echo", "param": [1, 2, 3]}))
            m = json.loads(await asyncio.wait_for(b.recv(), 5))
            assert m == {"cmd": "echo", "param": [1, 2, 3]}, m
        print("interop ok")

    asyncio.run(asyncio.wait_for(main(int(sys.argv[1])), 30))
    """#

    @Test(arguments: backends) func pythonWebsocketsClient(_ backend: Configuration.Backend) throws {
        guard let python = Self.python else { return }
        struct Chat: EnvelopeHandler {
            func handle(service: WebSocketServer, connection: Connection, message: Message, logger: Logger) throws {
                switch message.cmd {
                case "say":
                    service.writeChannel(cmd: "say", param: message.param, channel: message.channel ?? "", from: connection.id)
                case "echo":
                    service.write(Envelope(cmd: "echo", param: message.param), to: connection)
                default:
                    throw TestHandler.TestFailure(description: "unknown \(message.cmd)")
                }
            }
        }
        var routes = WebSocketRoutes()
        routes.socket("/ws", handler: Chat())
        guard let service = try startService(backend, routes: routes) else { return }
        defer { service.stop() }

        let process = try ChildProcess(python, ["-c", Self.script, String(service.port)], output: .capture)
        let output = process.readToEnd()
        #expect(process.wait() == 0, "\(output)")
        #expect(output.contains("interop ok"), "\(output)")
    }
}

import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { loadClient, FakeWebSocket, FakeClock, environment } from "./load.mjs";

const { Socket } = loadClient();

/** A Socket on a fake clock and fake WebSocket, recording its callbacks. */
function make(options = {}, url = "/ws?ch=a") {
    const clock = new FakeClock();
    const { env, logs, listeners } = environment(clock, options.environment);
    const events = [];
    const states = [];
    const socket = new Socket(
        true,
        () => events.push(["open", FakeWebSocket.last().sent.slice()]),
        (m) => events.push(["message", JSON.parse(JSON.stringify(m))]),
        (e) => events.push(["error", e.kind]),
        url,
        {
            backoff: { initial: 100, max: 800, factor: 2, jitter: 0.5 },
            heartbeat: { interval: 1000, timeout: 300 },
            stableAfter: 2000,
            queueLimit: 3,
            ...options,
            environment: env,
            onStateChange: (s, d) => states.push([s, d.retryIn]),
        },
    );
    return { socket, clock, events, logs, states, listeners, ws: () => FakeWebSocket.last() };
}

beforeEach(() => { FakeWebSocket.instances = []; });

test("connects at once to the page-relative URL", () => {
    const { socket, ws } = make();
    assert.equal(ws().url, "ws://example.test:8080/ws?ch=a");
    assert.equal(socket.state, "connecting");
});

test("sends while open; queues while not, flushed in order before onOpen", () => {
    const { socket, events, ws } = make();
    assert.equal(socket.send({ channel: "a", cmd: "say", param: 1 }), false);
    socket.send({ cmd: "say", param: 2 });
    assert.equal(socket.queued, 2);
    ws().serverOpen();
    assert.deepEqual(events[0], ["open", ['{"cmd":"say","param":1,"channel":"a"}', '{"cmd":"say","param":2}']]);
    assert.equal(socket.state, "open");
    assert.equal(socket.send({ cmd: "say" }), true);
    assert.equal(ws().sent[2], '{"cmd":"say","param":null}');
});

test("a socket the server is closing queues instead of losing the send", () => {
    const { socket, ws, clock } = make();
    const first = ws();
    first.serverOpen();
    first.readyState = 2; // CLOSING: onclose has not run yet
    assert.equal(socket.send({ cmd: "late" }), false);
    first.serverClose(1001);
    clock.advance(100);
    ws().serverOpen();
    assert.deepEqual(ws().sent, ['{"cmd":"late","param":null}']);
});

test("the queue is bounded: oldest dropped, counted and logged", () => {
    const { socket, logs, ws } = make();
    for (let i = 1; i <= 5; i++) socket.send({ cmd: "n", param: i });
    assert.equal(socket.dropped, 2);
    assert.equal(socket.queued, 3);
    assert.ok(logs.some((l) => l.includes("offline queue full")), logs.join("\n"));
    ws().serverOpen();
    assert.deepEqual(ws().sent.map((s) => JSON.parse(s).param), [3, 4, 5]);
});

test("reconnects with growing, capped delays; a stable connection resets them", () => {
    const { clock, states, ws } = make({ heartbeat: { interval: 0, timeout: 0 } });
    ws().serverClose(1006);
    assert.deepEqual(states.at(-1), ["waiting", 75]); // 100 less jitter 0.5 * 0.5
    clock.advance(75);
    assert.equal(FakeWebSocket.instances.length, 2);
    ws().serverClose(1006);
    assert.deepEqual(states.at(-1), ["waiting", 150]);
    clock.advance(150);
    ws().serverClose(1006);
    clock.advance(300);
    ws().serverClose(1006);
    clock.advance(600);
    ws().serverClose(1006);
    assert.deepEqual(states.at(-1), ["waiting", 600], "capped at 800 less jitter");
    clock.advance(600);
    ws().serverOpen();
    clock.advance(1000); // open, but not for stableAfter (2000)
    ws().serverSend('{"cmd":"x","param":null}');
    ws().serverClose(1001);
    assert.deepEqual(states.at(-1), ["waiting", 600], "a short connection keeps the backoff");
    clock.advance(600);
    ws().serverOpen();
    clock.advance(2500);
    ws().serverClose(1001);
    assert.deepEqual(states.at(-1), ["waiting", 75], "a stable connection resets it");
});

test("invalid JSON from the server calls onError and keeps the connection", () => {
    const { socket, events, ws } = make();
    ws().serverOpen();
    ws().serverSend("{not json");
    ws().serverSend("[1,2]");
    ws().serverSend('{"cmd":"ok","param":{"a":1}}');
    assert.deepEqual(events.slice(1), [["error", "invalid-json"], ["error", "invalid-envelope"], ["message", { cmd: "ok", param: { a: 1 } }]]);
    assert.equal(socket.state, "open");
    assert.equal(ws().closedWith, undefined);
    assert.equal(FakeWebSocket.instances.length, 1);
});

test("close() stops for good: no reconnect, sends refused", () => {
    const { socket, clock, ws } = make();
    ws().serverOpen();
    socket.close();
    assert.equal(ws().closedWith.code, 1000);
    assert.equal(socket.state, "closed");
    assert.equal(socket.send({ cmd: "late" }), false);
    clock.advance(60_000);
    assert.equal(FakeWebSocket.instances.length, 1);
});

test("the server's close-connection stops reconnecting and reaches onMessage", () => {
    const { socket, clock, events, ws } = make();
    ws().serverOpen();
    ws().serverSend('{"cmd":"close-connection","param":null}');
    assert.deepEqual(events.at(-1), ["message", { cmd: "close-connection", param: null }]);
    assert.equal(socket.state, "closed");
    ws().serverClose(1000);
    clock.advance(60_000);
    assert.equal(FakeWebSocket.instances.length, 1);
});

test("no reconnect while the page unloads; back from the bfcache it reconnects", () => {
    const { socket, clock, listeners, ws } = make();
    ws().serverOpen();
    listeners.pagehide.forEach((f) => f({ persisted: true }));
    ws().serverClose(1001);
    clock.advance(60_000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(socket.state, "closed");
    listeners.pageshow.forEach((f) => f({ persisted: true }));
    assert.equal(FakeWebSocket.instances.length, 2);
});

test("heartbeat: silence sends a probe; its answer keeps the connection", () => {
    const { socket, clock, ws } = make();
    ws().serverOpen();
    clock.advance(1200);
    assert.deepEqual(ws().sent, ['{"cmd":"_heartbeat","param":null}']);
    ws().serverSend('{"cmd":"_heartbeat","param":null}');
    clock.advance(500);
    assert.equal(socket.state, "open");
    assert.equal(FakeWebSocket.instances.length, 1);
});

test("heartbeat: an unanswered probe drops the connection and reconnects", () => {
    const { socket, clock, events, ws } = make();
    const first = ws();
    first.serverOpen();
    clock.advance(1050); // checks every 150 ms: the probe goes out at 1050
    assert.equal(first.sent.length, 1);
    clock.advance(299);
    assert.equal(first.closedWith, undefined);
    clock.advance(1); // 300 ms after the probe
    assert.equal(first.closedWith?.code, 4000);
    assert.equal(socket.state, "waiting");
    assert.ok(!events.some((e) => e[0] === "message"), "the heartbeat answer is not the page's business");
    clock.advance(1000);
    assert.equal(FakeWebSocket.instances.length, 2);
});

test("heartbeat replies are not passed to onMessage", () => {
    const { events, ws } = make();
    ws().serverOpen();
    ws().serverSend('{"cmd":"_heartbeat","param":null}');
    assert.equal(events.length, 1);
});

test("a constructor that throws (bad URL) is a transport error and a retry", () => {
    let n = 0;
    class Throwing extends FakeWebSocket { constructor(url) { super(url); if (n++ === 0) throw new Error("SyntaxError"); } }
    const { events, clock, states } = make({ environment: { WebSocket: Throwing } });
    assert.deepEqual(events, [["error", "transport"]]);
    assert.equal(states.at(-1)[0], "waiting");
    clock.advance(100);
    assert.equal(states.at(-1)[0], "connecting");
});

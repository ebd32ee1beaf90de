import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { loadClient, FakeWebSocket, FakeClock, environment } from "./load.mjs";

const { ns, Socket } = loadClient();

function make(url = "/ws?ch=room") {
    const clock = new FakeClock();
    const { env } = environment(clock);
    const messages = [];
    const recoveries = [];
    const socket = new Socket(false, () => {}, (m) => messages.push(m.offset ?? m.cmd), () => {}, url, {
        backoff: { initial: 100, max: 100, factor: 1, jitter: 0 },
        heartbeat: { interval: 0, timeout: 0 },
        environment: env,
        onRecovery: (channel, recovered) => recoveries.push([channel, recovered]),
    });
    return { socket, clock, messages, recoveries, ws: () => FakeWebSocket.last() };
}

const joined = (channel, epoch, offset, recovered) =>
    JSON.stringify({ channel, cmd: "_joined", param: recovered === undefined ? { epoch, offset } : { epoch, offset, recovered } });
const plain = (value) => JSON.parse(JSON.stringify(value)); // out of the client's V8 context
const say = (channel, offset) => JSON.stringify({ channel, offset, cmd: "say", param: offset });

beforeEach(() => { FakeWebSocket.instances = []; });

test("reconnects from the last offset seen, drops what it saw already, and reports the recovery", () => {
    const { socket, clock, messages, recoveries, ws } = make();
    assert.equal(ws().url, "ws://example.test:8080/ws?ch=room"); // nothing to recover yet
    ws().serverOpen();
    ws().serverSend(joined("room", "e1", 7));
    for (let i = 8; i <= 10; i++) ws().serverSend(say("room", i));
    assert.deepEqual(plain(socket.position("room")), { epoch: "e1", offset: 10 });
    ws().serverClose(1006);
    clock.advance(100);
    const url = new URL(ws().url);
    assert.equal(url.searchParams.get("ch"), "room");
    assert.deepEqual(JSON.parse(url.searchParams.get("recover")), { room: { epoch: "e1", offset: 10 } });
    ws().serverOpen();
    ws().serverSend(joined("room", "e1", 12, true));
    ws().serverSend(say("room", 10)); // a duplicate at the seam is dropped
    ws().serverSend(say("room", 11));
    ws().serverSend(say("room", 12));
    ws().serverSend(say("room", 13));
    assert.deepEqual(messages, [8, 9, 10, 11, 12, 13]);
    assert.deepEqual(recoveries, [["room", true]]);
});

test("not recovered: the page is told, and the stream starts over at the channel's position", () => {
    const { clock, messages, recoveries, ws, socket } = make();
    ws().serverOpen();
    ws().serverSend(joined("room", "e1", 0));
    ws().serverSend(say("room", 1));
    ws().serverClose(1006);
    clock.advance(100);
    ws().serverOpen();
    ws().serverSend(joined("room", "e2", 40, false));
    assert.deepEqual(plain(socket.position("room")), { epoch: "e2", offset: 40 });
    ws().serverSend(say("room", 41));
    assert.deepEqual(messages, [1, 41]);
    assert.deepEqual(recoveries, [["room", false]]);
    clock.advance(0);
    ws().serverClose(1006);
    clock.advance(100);
    assert.deepEqual(JSON.parse(new URL(ws().url).searchParams.get("recover")), { room: { epoch: "e2", offset: 41 } });
});

test("a _joined while connected (a cluster's stream started over) resets the position and reports it", () => {
    const { messages, recoveries, ws, socket } = make();
    ws().serverOpen();
    ws().serverSend(joined("room", "e1", 0));
    ws().serverSend(say("room", 1));
    ws().serverSend(say("room", 2));
    ws().serverSend(joined("room", "e2", 0, false));
    assert.deepEqual(plain(socket.position("room")), { epoch: "e2", offset: 0 });
    ws().serverSend(say("room", 1)); // the new stream's first: not a duplicate of the old one's
    assert.deepEqual(messages, [1, 2, 1]);
    assert.deepEqual(recoveries, [["room", false]]);
});

test("messages without an offset, or in channels without a position, are delivered as they are", () => {
    const { messages, ws } = make();
    ws().serverOpen();
    ws().serverSend(JSON.stringify({ channel: "plain", cmd: "say", param: 1 }));
    ws().serverSend(JSON.stringify({ cmd: "direct", param: 2 }));
    ws().serverSend(say("unknown", 5));
    assert.deepEqual(messages, ["say", "direct", 5]);
});

test("positions are bounded, the least recently heard channel going first", () => {
    const positions = new ns.ChannelPositions(2);
    for (const channel of ["a", "b", "c"]) positions.observe({ channel, cmd: "_joined", param: { epoch: "e", offset: 1 } });
    assert.equal(positions.size, 2);
    assert.equal(positions.get("a"), undefined);
    positions.observe({ channel: "b", offset: 2, cmd: "say", param: null }); // b is now the most recent
    positions.observe({ channel: "d", cmd: "_joined", param: { epoch: "e", offset: 1 } });
    assert.deepEqual([positions.get("b")?.offset, positions.get("c"), positions.get("d")?.offset], [2, undefined, 1]);
    assert.equal(positions.recoveringURL("/ws"), "/ws?recover=" + encodeURIComponent('{"b":{"epoch":"e","offset":2},"d":{"epoch":"e","offset":1}}'));
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { loadClient } from "./load.mjs";

const { ns } = loadClient();

test("items drain in order and the queue empties", () => {
    const q = new ns.OfflineQueue(3);
    q.push("a"); q.push("b");
    assert.equal(q.length, 2);
    assert.deepEqual([...q.drain()], ["a", "b"]);
    assert.equal(q.length, 0);
    assert.deepEqual([...q.drain()], []);
});

test("over the limit the oldest is dropped and counted", () => {
    const q = new ns.OfflineQueue(2);
    assert.equal(q.push(1), undefined);
    assert.equal(q.push(2), undefined);
    assert.equal(q.push(3).dropped, 1);
    assert.equal(q.push(4).dropped, 2);
    assert.equal(q.dropped, 2);
    assert.deepEqual([...q.drain()], [3, 4]);
    assert.equal(q.dropped, 2, "the count survives a drain");
});

test("a zero limit keeps nothing", () => {
    const q = new ns.OfflineQueue(0);
    assert.equal(q.push("x").dropped, "x");
    assert.equal(q.length, 0);
    assert.equal(q.dropped, 1);
});

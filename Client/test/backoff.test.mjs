import { test } from "node:test";
import assert from "node:assert/strict";
import { loadClient } from "./load.mjs";

const { ns } = loadClient();
const options = { initial: 100, max: 1000, factor: 2, jitter: 0.5 };

test("delays double up to the cap (no jitter when random() is 0)", () => {
    const backoff = new ns.Backoff(options, () => 0);
    assert.deepEqual(Array.from({ length: 7 }, () => backoff.next()), [100, 200, 400, 800, 1000, 1000, 1000]);
    assert.equal(backoff.attempts, 7);
});

test("jitter takes off up to its fraction", () => {
    const high = new ns.Backoff(options, () => 0.999999);
    assert.deepEqual([high.next(), high.next(), high.next()], [50, 100, 200]);
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const backoff = new ns.Backoff(options, random);
    for (let i = 0; i < 200; i++) {
        const base = Math.min(1000, 100 * 2 ** Math.min(i, 10));
        const d = backoff.next();
        assert.ok(d >= base / 2 && d <= base, `attempt ${i}: ${d} outside [${base / 2}, ${base}]`);
    }
});

test("reset starts again from the initial delay", () => {
    const backoff = new ns.Backoff(options, () => 0);
    backoff.next(); backoff.next(); backoff.next();
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.next(), 100);
});

test("thousands of attempts stay at the cap, never Infinity or NaN", () => {
    const backoff = new ns.Backoff({ ...options, jitter: 0 }, Math.random);
    let last;
    for (let i = 0; i < 5000; i++) last = backoff.next();
    assert.equal(last, 1000);
});

test("the defaults: 0.5 s first, 10 s cap", () => {
    assert.equal(ns.defaultBackoff.initial, 500);
    assert.equal(ns.defaultBackoff.max, 10000);
});

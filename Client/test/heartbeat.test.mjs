import { test } from "node:test";
import assert from "node:assert/strict";
import { loadClient } from "./load.mjs";

const { ns } = loadClient();
const opts = { interval: 1000, timeout: 300 };

test("traffic within the interval: nothing to do", () => {
    assert.equal(ns.heartbeatAction(1999, 1000, undefined, opts), "none");
});

test("a silence of one interval sends a probe", () => {
    assert.equal(ns.heartbeatAction(2000, 1000, undefined, opts), "probe");
});

test("an unanswered probe is dead after the timeout, not before", () => {
    assert.equal(ns.heartbeatAction(2299, 1000, 2000, opts), "none");
    assert.equal(ns.heartbeatAction(2300, 1000, 2000, opts), "dead");
});

test("anything received after the probe answers it", () => {
    assert.equal(ns.heartbeatAction(2400, 2100, 2000, opts), "none");
    assert.equal(ns.heartbeatAction(3100, 2100, 2000, opts), "probe");
});

test("a timer that fires very late probes first instead of declaring death", () => {
    assert.equal(ns.heartbeatAction(60_000, 1000, undefined, opts), "probe");
});

test("interval 0 turns it off", () => {
    assert.equal(ns.heartbeatAction(1e9, 0, 0, { interval: 0, timeout: 1 }), "none");
});

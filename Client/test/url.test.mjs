import { test } from "node:test";
import assert from "node:assert/strict";
import { loadClient } from "./load.mjs";

const { ns } = loadClient();
const page = (href) => { const u = new URL(href); return { protocol: u.protocol, host: u.host, href }; };

test("a relative path takes the page's host, ws:// from http", () => {
    assert.equal(ns.socketURL("/ws?ch=room", page("http://127.0.0.1:8080/chat")), "ws://127.0.0.1:8080/ws?ch=room");
});

test("an https page gets wss://", () => {
    assert.equal(ns.socketURL("/ws", page("https://example.com/")), "wss://example.com/ws");
});

test("a path without a slash resolves against the page's directory", () => {
    assert.equal(ns.socketURL("ws", page("https://example.com/app/index.html?x=1")), "wss://example.com/app/ws");
});

test("protocol-relative and http(s) URLs change scheme", () => {
    assert.equal(ns.socketURL("//other.test/s", page("https://example.com/")), "wss://other.test/s");
    assert.equal(ns.socketURL("http://other.test:81/s?a=b", page("https://example.com/")), "ws://other.test:81/s?a=b");
    assert.equal(ns.socketURL("https://other.test/s"), "wss://other.test/s");
});

test("ws:// and wss:// URLs are used as they are", () => {
    assert.equal(ns.socketURL("ws://10.0.0.1:9/x#frag", page("https://example.com/")), "ws://10.0.0.1:9/x#frag");
    assert.equal(ns.socketURL("WSS://Example.com/x"), "WSS://Example.com/x");
});

test("fragments are dropped, queries kept", () => {
    assert.equal(ns.socketURL("/ws?ch=a%20b#top", page("http://h/")), "ws://h/ws?ch=a%20b");
});

test("a relative URL without a page is an error", () => {
    assert.throws(() => ns.socketURL("/ws"), /needs a page location/);
});

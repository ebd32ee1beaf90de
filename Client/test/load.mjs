// Loads the compiled client (the very file the library serves) into a fresh
// V8 context, as a browser would load a classic script, and returns its
// namespace. Nothing from the browser is needed: tests pass an environment.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const path = fileURLToPath(new URL("../dist/socket.js", import.meta.url));

export function loadClient() {
    const context = vm.createContext({ URL, console });
    vm.runInContext(readFileSync(path, "utf8"), context, { filename: path });
    return { ns: context.WebSocketClient, Socket: context.Socket };
}

/** A scripted WebSocket: the test opens, feeds and closes it by hand. */
export class FakeWebSocket {
    static instances = [];
    constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        this.closedWith = undefined;
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        FakeWebSocket.instances.push(this);
    }
    send(data) {
        if (this.readyState !== 1) throw new Error("send on a socket that is not open");
        this.sent.push(data);
    }
    close(code, reason) {
        this.closedWith = { code, reason };
        this.readyState = 3;
    }
    // test side
    serverOpen() { this.readyState = 1; this.onopen?.({}); }
    serverSend(data) { this.onmessage?.({ data }); }
    serverClose(code = 1006, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
    static last() { return FakeWebSocket.instances[FakeWebSocket.instances.length - 1]; }
}

/** Timers on a manual clock. */
export class FakeClock {
    constructor() { this.time = 1_000_000; this.timers = new Map(); this.nextID = 1; }
    now = () => this.time;
    setTimeout = (fn, ms) => { const id = this.nextID++; this.timers.set(id, { at: this.time + ms, fn }); return id; };
    clearTimeout = (id) => { this.timers.delete(id); };
    /** Runs every timer due within `ms`, in order, advancing the clock. */
    advance(ms) {
        const end = this.time + ms;
        for (;;) {
            let next;
            for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
            if (!next) break;
            this.timers.delete(next[0]);
            this.time = next[1].at;
            next[1].fn();
        }
        this.time = end;
    }
    pending() { return [...this.timers.values()].map((t) => t.at - this.time).sort((a, b) => a - b); }
}

export function environment(clock, extra = {}) {
    const logs = [];
    const listeners = {};
    return {
        logs,
        listeners,
        env: {
            WebSocket: FakeWebSocket,
            location: { protocol: "http:", host: "example.test:8080", href: "http://example.test:8080/chat/?ch=a" },
            setTimeout: clock.setTimeout,
            clearTimeout: clock.clearTimeout,
            now: clock.now,
            random: () => 0.5,
            log: (...args) => logs.push(args.join(" ")),
            addEventListener: (type, fn) => { (listeners[type] ??= []).push(fn); },
            ...extra,
        },
    };
}

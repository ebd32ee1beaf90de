namespace WebSocketClient {
    /** A message from the server: the library's JSON envelope. */
    export interface Envelope {
        /** The connection that sent it, when it came from another client. */
        from?: string;
        channel?: string;
        /** Its place in the channel's history, when the channel keeps one. */
        offset?: number;
        cmd: string;
        param: unknown;
    }

    /** A message to the server. */
    export interface Outgoing {
        channel?: string;
        cmd: string;
        param?: unknown;
    }

    export type SocketState = "connecting" | "open" | "waiting" | "closed";

    export type ErrorKind = "invalid-json" | "invalid-envelope" | "transport";

    export class SocketError extends Error {
        constructor(readonly kind: ErrorKind, message: string) {
            super(message);
            this.name = "SocketError";
        }
    }

    /** The part of the DOM WebSocket this class uses (tests pass a fake). */
    export interface WebSocketLike {
        readonly readyState: number;
        send(data: string): void;
        close(code?: number, reason?: string): void;
        onopen: ((event: unknown) => void) | null;
        onmessage: ((event: { data: unknown }) => void) | null;
        onclose: ((event: { code: number; reason: string }) => void) | null;
        onerror: ((event: unknown) => void) | null;
    }

    /** Everything the class takes from the browser, so Node can test it. */
    export interface Environment {
        WebSocket: new (url: string) => WebSocketLike;
        location?: PageLocation;
        setTimeout(callback: () => void, ms: number): unknown;
        clearTimeout(handle: unknown): void;
        now(): number;
        random(): number;
        log(...args: unknown[]): void;
        /** Page lifecycle events (pagehide, pageshow); absent outside a page. */
        addEventListener?(type: string, listener: (event: { persisted?: boolean }) => void): void;
    }

    export interface SocketOptions {
        backoff: BackoffOptions;
        heartbeat: HeartbeatOptions;
        /** Messages kept while disconnected. */
        queueLimit: number;
        /** A connection that stayed open this long resets the backoff, in ms. */
        stableAfter: number;
        /** Called on every state change (for a visible connection state). */
        onStateChange?: (state: SocketState, detail: { retryIn?: number; attempt?: number }) => void;
        /**
         * After a reconnect, once per channel with a history that the page
         * rejoined: true when every message missed meanwhile follows (and
         * `onMessage` sees each once, in order), false when the server no
         * longer has them all: fetch fresh state then.
         */
        onRecovery?: (channel: string, recovered: boolean) => void;
        environment?: Partial<Environment>;
    }

    export const defaultOptions: SocketOptions = {
        backoff: defaultBackoff,
        heartbeat: defaultHeartbeat,
        queueLimit: 100,
        stableAfter: 5_000,
    };

    /** The command the server answers without the application's handler. */
    export const heartbeatCommand = "_heartbeat";
    /** A server that sends this command wants the page to stay away. */
    export const closeCommand = "close-connection";

    function browserEnvironment(): Environment {
        const g = globalThis as unknown as {
            WebSocket: new (url: string) => WebSocketLike;
            location?: PageLocation;
            addEventListener?: (type: string, listener: (event: { persisted?: boolean }) => void) => void;
        };
        return {
            WebSocket: g.WebSocket,
            location: g.location,
            setTimeout: (callback, ms) => setTimeout(callback, ms),
            clearTimeout: (handle) => clearTimeout(handle as number),
            now: () => Date.now(),
            random: Math.random,
            log: (...args) => console.debug("[Socket]", ...args),
            addEventListener: g.addEventListener ? g.addEventListener.bind(globalThis) : undefined,
        };
    }

    /**
     * A WebSocket that speaks the library's JSON envelope and stays
     * connected: it reconnects with capped, jittered exponential backoff,
     * queues sends while down (bounded, oldest dropped) and flushes them in
     * order on open before `onOpen` runs, and notices a dead connection with
     * a heartbeat. It stops for good after `close()`, after the server's
     * `close-connection` command, and while the page unloads. In channels
     * with a history it tracks the offsets it has seen and reconnects from
     * there, so nothing sent meanwhile is lost and nothing is seen twice.
     */
    export class Socket {
        readonly url: string;
        private readonly env: Environment;
        private readonly options: SocketOptions;
        private readonly backoff: Backoff;
        private readonly queue: OfflineQueue<string>;
        private readonly positions = new ChannelPositions();
        private ws: WebSocketLike | null = null;
        private currentState: SocketState = "closed";
        private stopped = false;
        private unloading = false;
        private openedAt: number | undefined;
        private lastReceived = 0;
        private probeSent: number | undefined;
        private retryTimer: unknown;
        private heartbeatTimer: unknown;

        constructor(
            private readonly debug: boolean,
            private readonly onOpen: () => void,
            private readonly onMessage: (message: Envelope) => void,
            private readonly onError: (error: SocketError) => void,
            url: string,
            options: Partial<SocketOptions> = {},
        ) {
            this.options = { ...defaultOptions, ...options };
            this.env = { ...browserEnvironment(), ...(options.environment ?? {}) };
            this.url = socketURL(url, this.env.location);
            this.backoff = new Backoff(this.options.backoff, this.env.random);
            this.queue = new OfflineQueue<string>(this.options.queueLimit);
            this.env.addEventListener?.("pagehide", () => {
                // Closing sockets during unload would otherwise schedule a reconnect.
                this.unloading = true;
            });
            this.env.addEventListener?.("pageshow", (event) => {
                // Back from the back/forward cache: the page lives again.
                if (!event.persisted) return;
                this.unloading = false;
                if (!this.stopped && !this.ws) this.connect();
            });
            this.connect();
        }

        get state(): SocketState {
            return this.currentState;
        }

        /** Messages dropped from the offline queue so far. */
        get dropped(): number {
            return this.queue.dropped;
        }

        /** Where the page is in a channel with a history (undefined before its first `_joined`). */
        position(channel: string): ChannelPosition | undefined {
            return this.positions.get(channel);
        }

        /** Messages waiting for the connection. */
        get queued(): number {
            return this.queue.length;
        }

        /**
         * Sends now if open, else queues. Returns true if it went out now.
         * After `close()` (or the server's close-connection) nothing is sent.
         */
        send(message: Outgoing): boolean {
            const envelope: Outgoing = { cmd: message.cmd, param: message.param === undefined ? null : message.param };
            if (message.channel !== undefined) envelope.channel = message.channel;
            const text = JSON.stringify(envelope);
            if (this.stopped) {
                this.log("closed: not sent", text);
                return false;
            }
            // readyState too: between the server's close and onclose a
            // browser silently discards what is sent.
            if (this.ws && this.currentState === "open" && this.ws.readyState === 1) {
                this.ws.send(text);
                return true;
            }
            const overflow = this.queue.push(text);
            if (overflow) this.log(`offline queue full (${this.queue.limit}): dropped the oldest message, ${this.queue.dropped} dropped so far`, overflow.dropped);
            return false;
        }

        /** Closes for good: no reconnect, the offline queue is discarded. */
        close(): void {
            this.stop(1000, "closed by the page");
        }

        private log(...args: unknown[]): void {
            if (this.debug) this.env.log(...args);
        }

        private setState(state: SocketState, detail: { retryIn?: number; attempt?: number } = {}): void {
            this.currentState = state;
            this.options.onStateChange?.(state, detail);
        }

        private stop(code: number, reason: string): void {
            if (this.stopped) return;
            this.stopped = true;
            this.env.clearTimeout(this.retryTimer);
            this.stopHeartbeat();
            this.queue.clear();
            const ws = this.ws;
            this.ws = null;
            if (ws) {
                detach(ws);
                ws.close(code, reason);
            }
            this.log("stopped:", reason);
            this.setState("closed");
        }

        private connect(): void {
            if (this.stopped || this.unloading) return;
            this.setState("connecting", { attempt: this.backoff.attempts });
            let ws: WebSocketLike;
            try {
                ws = new this.env.WebSocket(this.positions.recoveringURL(this.url));
            } catch (error) {
                this.onError(new SocketError("transport", `cannot open ${this.url}: ${error}`));
                this.scheduleReconnect();
                return;
            }
            this.ws = ws;
            ws.onopen = () => this.opened(ws);
            ws.onmessage = (event) => this.received(ws, event.data);
            ws.onerror = () => {
                if (ws !== this.ws) return;
                this.log("socket error");
                this.onError(new SocketError("transport", `connection to ${this.url} failed`));
            };
            ws.onclose = (event) => {
                if (ws !== this.ws) return;
                this.log(`closed (${event.code}${event.reason ? ", " + event.reason : ""})`);
                this.lost();
            };
        }

        private opened(ws: WebSocketLike): void {
            if (ws !== this.ws) return;
            const now = this.env.now();
            this.openedAt = now;
            this.lastReceived = now;
            this.probeSent = undefined;
            const queued = this.queue.drain();
            if (queued.length) this.log(`open: sending ${queued.length} queued message(s)`);
            for (const text of queued) ws.send(text);
            this.setState("open");
            this.startHeartbeat();
            this.onOpen();
        }

        private received(ws: WebSocketLike, data: unknown): void {
            if (ws !== this.ws) return;
            this.lastReceived = this.env.now();
            if (typeof data !== "string") {
                this.onError(new SocketError("invalid-envelope", "binary message from the server"));
                return;
            }
            let value: unknown;
            try {
                value = JSON.parse(data);
            } catch (error) {
                this.onError(new SocketError("invalid-json", `invalid JSON from the server: ${data.slice(0, 200)}`));
                return;
            }
            if (!isEnvelope(value)) {
                this.onError(new SocketError("invalid-envelope", `not an envelope: ${data.slice(0, 200)}`));
                return;
            }
            if (value.cmd === heartbeatCommand) return;
            const seen = this.positions.observe(value);
            if (seen.kind === "duplicate") {
                this.log("seen already, dropped:", value.channel, value.offset);
                return;
            }
            if (seen.kind === "joined") {
                if (seen.recovered !== undefined) {
                    this.log(`${value.channel}: ${seen.recovered ? "recovered" : "not recovered"}`);
                    this.options.onRecovery?.(value.channel as string, seen.recovered);
                }
                return;
            }
            if (value.cmd === closeCommand) {
                this.log("the server asked to close");
                this.stop(1000, "close-connection");
            }
            this.onMessage(value);
        }

        /** The connection is gone (closed, failed or found dead): maybe reconnect. */
        private lost(): void {
            const ws = this.ws;
            this.ws = null;
            if (ws) detach(ws);
            this.stopHeartbeat();
            if (this.openedAt !== undefined && this.env.now() - this.openedAt >= this.options.stableAfter) {
                this.backoff.reset();
            }
            this.openedAt = undefined;
            if (this.stopped) return;
            if (this.unloading) {
                this.setState("closed");
                return;
            }
            this.scheduleReconnect();
        }

        private scheduleReconnect(): void {
            const attempt = this.backoff.attempts;
            const delay = this.backoff.next();
            this.log(`reconnecting in ${delay} ms (attempt ${attempt + 1})`);
            this.setState("waiting", { retryIn: delay, attempt: attempt + 1 });
            this.env.clearTimeout(this.retryTimer);
            this.retryTimer = this.env.setTimeout(() => this.connect(), delay);
        }

        private startHeartbeat(): void {
            const { interval, timeout } = this.options.heartbeat;
            if (interval <= 0) return;
            // Checking at half the shorter period finds a silence or a dead
            // probe within 50% of its deadline.
            const tick = Math.max(50, Math.min(interval, timeout) / 2);
            const check = () => {
                const ws = this.ws;
                if (!ws || this.currentState !== "open") return;
                const now = this.env.now();
                switch (heartbeatAction(now, this.lastReceived, this.probeSent, this.options.heartbeat)) {
                    case "probe":
                        this.probeSent = now;
                        ws.send(JSON.stringify({ cmd: heartbeatCommand, param: null }));
                        break;
                    case "dead":
                        this.log(`no answer to the heartbeat within ${timeout} ms: reconnecting`);
                        // Closing a dead TCP connection can take minutes to
                        // report; drop it now and let the close happen behind.
                        ws.close(4000, "heartbeat timeout");
                        this.lost();
                        return;
                    case "none":
                        break;
                }
                this.heartbeatTimer = this.env.setTimeout(check, tick);
            };
            this.heartbeatTimer = this.env.setTimeout(check, tick);
        }

        private stopHeartbeat(): void {
            this.env.clearTimeout(this.heartbeatTimer);
            this.heartbeatTimer = undefined;
        }
    }

    function detach(ws: WebSocketLike): void {
        ws.onopen = null;
        ws.onmessage = null;
        ws.onclose = null;
        ws.onerror = null;
    }

    export function isEnvelope(value: unknown): value is Envelope {
        return typeof value === "object" && value !== null && !Array.isArray(value)
            && typeof (value as { cmd?: unknown }).cmd === "string";
    }
}

/** The class pages use: `new Socket(debug, onOpen, onMessage, onError, url)`. */
// var, not const: a page that loads the script twice keeps working.
var Socket = WebSocketClient.Socket;

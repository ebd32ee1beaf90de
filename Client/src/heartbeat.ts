namespace WebSocketClient {
    export interface HeartbeatOptions {
        /** Silence (nothing received) for this long sends a probe, in ms; 0 turns the heartbeat off. */
        interval: number;
        /** No answer to a probe within this long: the connection is dead, in ms. */
        timeout: number;
    }

    export const defaultHeartbeat: HeartbeatOptions = { interval: 25_000, timeout: 10_000 };

    export type HeartbeatAction = "none" | "probe" | "dead";

    /**
     * What the heartbeat timer should do now. Browsers answer the server's
     * pings without telling the page, so the page cannot use them: it sends
     * its own probe (`{"cmd":"_heartbeat"}`, answered by the server) after a
     * silence, and any message received counts as an answer.
     *
     * Dead is only declared `timeout` after a probe went out, never from the
     * silence alone: background tabs run timers late (once a minute in
     * Chrome), and a late timer must not kill a healthy connection.
     *
     * @param lastReceived when the last message arrived (or the socket opened)
     * @param probeSent when the unanswered probe went out, or undefined
     */
    export function heartbeatAction(now: number, lastReceived: number, probeSent: number | undefined,
                                    options: HeartbeatOptions): HeartbeatAction {
        if (options.interval <= 0) return "none";
        const waiting = probeSent !== undefined && probeSent >= lastReceived;
        if (waiting) return now - probeSent! >= options.timeout ? "dead" : "none";
        return now - lastReceived >= options.interval ? "probe" : "none";
    }
}

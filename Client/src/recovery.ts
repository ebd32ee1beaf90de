namespace WebSocketClient {
    /** Where the page is in one channel's stream (see the server's `Configuration.History`). */
    export interface ChannelPosition {
        epoch: string;
        offset: number;
    }

    /** The command a server sends to a member that joins a channel with a history. */
    export const joinedCommand = "_joined";

    /**
     * The page's position in each channel with a history: the epoch from the
     * channel's `_joined`, and the offset of the last message seen. On a
     * reconnect the positions go in the URL (`recover`), so the server
     * replays what was missed; a message at or below the position is one
     * already seen, and is dropped. At most `limit` channels are kept, the
     * least recently heard from going first (the URL must stay short).
     */
    export class ChannelPositions {
        private positions = new Map<string, ChannelPosition>();

        constructor(readonly limit = 50) {}

        /**
         * Takes what `envelope` says of its channel's position. Returns
         * "deliver", "duplicate" (seen already: drop it), or "joined" with
         * `recovered` (true or false when the page asked to recover, undefined
         * for a first join) for a `_joined`.
         */
        observe(envelope: Envelope): { kind: "deliver" | "duplicate" } | { kind: "joined"; recovered: boolean | undefined } {
            const channel = envelope.channel;
            if (channel === undefined) return { kind: "deliver" };
            if (envelope.cmd === joinedCommand) {
                const param = envelope.param as { epoch?: unknown; offset?: unknown; recovered?: unknown } | null;
                const recovered = typeof param?.recovered === "boolean" ? param.recovered : undefined;
                // Recovered: the missed messages follow, from the page's own
                // position. Else the stream starts over at the channel's now.
                if (recovered !== true && param && typeof param.epoch === "string" && typeof param.offset === "number") {
                    this.set(channel, { epoch: param.epoch, offset: param.offset });
                }
                return { kind: "joined", recovered };
            }
            const offset = (envelope as { offset?: unknown }).offset;
            const known = this.positions.get(channel);
            if (typeof offset !== "number" || !known) return { kind: "deliver" };
            if (offset <= known.offset) return { kind: "duplicate" };
            this.set(channel, { epoch: known.epoch, offset });
            return { kind: "deliver" };
        }

        get(channel: string): ChannelPosition | undefined {
            return this.positions.get(channel);
        }

        get size(): number {
            return this.positions.size;
        }

        /** `url` with the positions in its `recover` query item (unchanged without any). */
        recoveringURL(url: string): string {
            if (!this.positions.size) return url;
            const all: { [channel: string]: ChannelPosition } = {};
            this.positions.forEach((position, channel) => { all[channel] = position; });
            return url + (url.includes("?") ? "&" : "?") + "recover=" + encodeURIComponent(JSON.stringify(all));
        }

        private set(channel: string, position: ChannelPosition): void {
            // Re-inserted: a Map keeps insertion order, so the first key is the least recent.
            this.positions.delete(channel);
            this.positions.set(channel, position);
            if (this.positions.size > this.limit) {
                const oldest = this.positions.keys().next().value as string;
                this.positions.delete(oldest);
            }
        }
    }
}

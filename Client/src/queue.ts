namespace WebSocketClient {
    /**
     * What `send` keeps while the socket is down: at most `limit` items; a
     * push beyond it drops the oldest (a chat would rather lose old lines than
     * new ones) and counts it.
     */
    export class OfflineQueue<T> {
        private items: T[] = [];
        /** Items dropped since creation. */
        dropped = 0;

        constructor(readonly limit: number) {}

        /** Adds `item`; returns the item dropped to make room, if any. */
        push(item: T): { dropped: T } | undefined {
            if (this.limit <= 0) {
                this.dropped += 1;
                return { dropped: item };
            }
            this.items.push(item);
            if (this.items.length <= this.limit) return undefined;
            this.dropped += 1;
            return { dropped: this.items.shift() as T };
        }

        get length(): number {
            return this.items.length;
        }

        /** Everything queued, oldest first; the queue is empty afterwards. */
        drain(): T[] {
            const items = this.items;
            this.items = [];
            return items;
        }

        clear(): void {
            this.items = [];
        }
    }
}

namespace WebSocketClient {
    export interface BackoffOptions {
        /** First delay, in ms. */
        initial: number;
        /** Delays never exceed this, in ms. */
        max: number;
        factor: number;
        /** Fraction of each delay that is random: 0.5 gives delays in [d/2, d]. */
        jitter: number;
    }

    export const defaultBackoff: BackoffOptions = { initial: 500, max: 10_000, factor: 2, jitter: 0.5 };

    /**
     * Capped exponential backoff with jitter, so that a thousand pages that
     * lost the same server do not come back in the same millisecond.
     */
    export class Backoff {
        private attempt = 0;

        constructor(readonly options: BackoffOptions = defaultBackoff, private readonly random: () => number = Math.random) {}

        /** The delay before the next attempt, in ms. */
        next(): number {
            const { initial, max, factor, jitter } = this.options;
            const base = Math.min(max, initial * Math.pow(factor, this.attempt));
            // Bounded so a page left alone for days does not count to infinity.
            if (this.attempt < 64) this.attempt += 1;
            const j = Math.min(1, Math.max(0, jitter));
            return Math.round(base * (1 - j * this.random()));
        }

        /** Attempts made since the last reset. */
        get attempts(): number {
            return this.attempt;
        }

        reset(): void {
            this.attempt = 0;
        }
    }
}

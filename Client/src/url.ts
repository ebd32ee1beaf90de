// Everything lives in one namespace so the compiled file is a classic script
// that adds two globals (WebSocketClient and Socket) and nothing else.
namespace WebSocketClient {
    /** The parts of `window.location` that URL building needs. */
    export interface PageLocation {
        protocol: string;
        host: string;
        href: string;
    }

    /**
     * The WebSocket URL for `url` as seen from a page at `page`: ws:// and
     * wss:// URLs are used as they are; http(s):// URLs change scheme; anything
     * else is resolved against the page, and gets wss:// when the page is
     * https (a browser refuses ws:// from an https page). Fragments are dropped:
     * WebSocket URLs may not have them.
     */
    export function socketURL(url: string, page?: PageLocation): string {
        if (/^wss?:\/\//i.test(url)) return url;
        const absolute = /^https?:\/\//i.test(url);
        if (!absolute && !page) throw new Error(`a relative socket URL (${url}) needs a page location`);
        const resolved = new URL(url, absolute ? undefined : page!.href);
        const secure = resolved.protocol === "https:";
        return (secure ? "wss://" : "ws://") + resolved.host + resolved.pathname + resolved.search;
    }
}

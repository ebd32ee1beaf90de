#!/usr/bin/env python3
"""Interop with independent clients: Python `websockets` and `aiohttp`.

    interop.py ws://127.0.0.1:PORT/ [--expect-deflate]
    interop.py wss://localhost:PORT/ --ca CA.pem [--expect-deflate]

Against an echo server, each client (with and without permessage-deflate)
sends text, binary, a fragmented message (websockets only: aiohttp cannot
send fragments) and large messages, checks every echo byte for byte, then
closes with a code and checks the server echoed it. Over wss:// each client
trusts only the CA given with --ca and checks the host name. With --expect-deflate,
the compressed variants must have negotiated permessage-deflate.
Prints one line per check and a closing "N passed, N failed" line.
"""
import asyncio
import os
import ssl
import sys

import aiohttp
import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

TIMEOUT = 30
results = []
TLS = None  # an ssl.SSLContext for wss:// (--ca)


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def payloads():
    text = "héllo κόσμε 🌍 " * 3
    return [
        ("text small", text),
        ("binary small", bytes(range(256))),
        ("text empty", ""),
        ("binary 1 MiB", os.urandom(1 << 20)),
        ("text 4 MiB", ("{\"k\": \"v\", \"n\": 12345}" * ((4 << 20) // 24))),
    ]


async def websockets_client(url, compression, expect_deflate, tag):
    kwargs = {"max_size": 16 << 20, "compression": compression}
    if TLS:
        kwargs["ssl"] = TLS
    if compression == "custom":
        kwargs["compression"] = None
        kwargs["extensions"] = [ClientPerMessageDeflateFactory(
            client_max_window_bits=10, server_max_window_bits=12,
            client_no_context_takeover=True, server_no_context_takeover=True)]
    async with websockets.connect(url, **kwargs) as ws:
        negotiated = any(type(e).__name__ == "PerMessageDeflate" for e in ws.protocol.extensions)
        if expect_deflate:
            check(f"{tag} negotiated permessage-deflate", negotiated == (compression is not None))
        for name, data in payloads():
            await ws.send(data)
            echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
            check(f"{tag} {name}", echo == data, f"got {len(echo)} bytes of {type(echo).__name__}")
        fragments = ["frag-1 ", "fragment-2 κ ", "3"]
        await ws.send(fragments)  # an iterable is sent as one fragmented message
        echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
        check(f"{tag} fragmented text", echo == "".join(fragments))
        await ws.send([b"\x00\x01", b"\x02" * 70000, b"\x03"])
        echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
        check(f"{tag} fragmented binary", echo == b"\x00\x01" + b"\x02" * 70000 + b"\x03")
        await ws.close(code=4000, reason="bye")
        # RFC 6455 7.4: the code is echoed; the reason need not be.
        check(f"{tag} close code echoed", ws.close_code == 4000, f"got {ws.close_code}")


async def aiohttp_client(url, compress, expect_deflate, tag):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, compress=compress, max_msg_size=16 << 20, ssl=TLS or True) as ws:
            if expect_deflate:
                check(f"{tag} negotiated permessage-deflate", bool(ws.compress) == bool(compress))
            for name, data in payloads():
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
                msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
                check(f"{tag} {name}", msg.data == data, f"got {msg.type}")
            await ws.close(code=4001, message=b"done")
            check(f"{tag} close code echoed", ws.close_code == 4001, f"got {ws.close_code}")


async def main():
    global TLS
    url = sys.argv[1]
    expect_deflate = "--expect-deflate" in sys.argv
    if url.startswith("wss://"):
        TLS = ssl.create_default_context(cafile=sys.argv[sys.argv.index("--ca") + 1])
        async with websockets.connect(url, ssl=TLS) as ws:
            version = ws.transport.get_extra_info("ssl_object").version()
        check(f"TLS handshake ({version})", version in ("TLSv1.2", "TLSv1.3"))
    await websockets_client(url, None, expect_deflate, "websockets (no compression)")
    await websockets_client(url, "deflate", expect_deflate, "websockets (deflate)")
    await websockets_client(url, "custom", expect_deflate, "websockets (deflate, window bits, no takeover)")
    await aiohttp_client(url, 0, expect_deflate, "aiohttp (no compression)")
    await aiohttp_client(url, 15, expect_deflate, "aiohttp (deflate)")


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 300))
    except Exception as e:  # a client error is a failed check, not a crash
        check("client run", False, repr(e))
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and all(results) else 1)

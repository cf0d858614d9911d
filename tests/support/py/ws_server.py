"""A tiny WebSocket server for wsgate's tests, on Python's `websockets`.

    python3 ws_server.py --unix PATH           # listen on a Unix socket
    python3 ws_server.py --port N              # listen on 127.0.0.1:N

Every connection gets one text message describing its handshake:
{"type":"hello","path":...,"host":...,"extensions":...}, then whatever
each line of the environment variable WS_SEND holds, then the server reads
until the client goes away. Prints "ready" on stdout once listening.
"""

import asyncio
import json
import os
import sys


def handshake(ws):
    request = getattr(ws, "request", None)
    if request is not None:  # websockets >= 13 (new asyncio API)
        path, headers = request.path, request.headers
    else:  # the legacy API (Debian's 10.x)
        path, headers = ws.path, ws.request_headers
    return {
        "type": "hello",
        "path": path,
        "host": headers.get("Host"),
        "user_agent": headers.get("User-Agent"),
        "extensions": headers.get("Sec-WebSocket-Extensions"),
    }


async def handler(ws, *_):
    await ws.send(json.dumps(handshake(ws)))
    for line in filter(None, os.environ.get("WS_SEND", "").split("\n")):
        await ws.send(line)
    try:
        async for _ in ws:
            pass
    except Exception:
        pass


async def main(argv):
    try:
        from websockets.asyncio.server import serve, unix_serve
    except ImportError:
        from websockets.server import serve, unix_serve
    # WS_COMPRESSION: "deflate" (the library's default, context takeover),
    # "no_context_takeover" (server_no_context_takeover), or "none".
    mode = os.environ.get("WS_COMPRESSION", "deflate")
    options = {"compression": None if mode != "deflate" else "deflate"}
    if mode == "no_context_takeover":
        from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
        options["extensions"] = [ServerPerMessageDeflateFactory(server_no_context_takeover=True)]
    if argv[1] == "--unix":
        server = unix_serve(handler, argv[2], **options)
    else:
        server = serve(handler, "127.0.0.1", int(argv[2]), **options)
    async with server:
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv))

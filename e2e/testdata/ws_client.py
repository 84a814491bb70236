"""WebSocket client for TestWebSocket: connects to the URL given as the only
argument, exchanges text and binary messages with an echo server that greets
first, and prints one JSON object describing what it received."""

import asyncio
import hashlib
import json
import sys

import websockets


async def main(url):
    out = {}
    async with websockets.connect(url, max_size=None, open_timeout=10, close_timeout=5) as ws:
        greeting = await asyncio.wait_for(ws.recv(), 10)
        out["greeting"] = greeting
        texts = []
        for i in range(3):
            await ws.send(f"ping {i}")
            texts.append(await asyncio.wait_for(ws.recv(), 10))
        out["texts"] = texts
        payload = bytes(range(256)) * 1024  # 256 KiB, several TCP segments
        await ws.send(payload)
        echo = await asyncio.wait_for(ws.recv(), 10)
        out["binary_type"] = type(echo).__name__
        out["binary_len"] = len(echo)
        out["binary_equal"] = echo == payload
        out["binary_sha256"] = hashlib.sha256(echo).hexdigest()
        await ws.close()
        out["close_code"] = ws.close_code
    print(json.dumps(out, sort_keys=True))


asyncio.run(main(sys.argv[1]))

"""Benchmark of the simulator through its real server: matched orders/s and market-data messages/s.

Starts ``tradebaas sim`` (module entry) in a temporary TRADEBAAS_HOME, then
- orders: several WebSocket clients keep a window of requests in flight, alternating a market buy and a market
  sell (each a full match: order + trade + position + portfolio events), and count acknowledged orders;
- market data: the simulator runs at a high ``--speed``; subscribers to ticker/trades/book/chart channels of
  both instruments count notifications.
Prints one JSON line per measurement. Usage: ``python bench/sim.py [--seconds 5] [--clients 4]``.

The order benchmark also reports the simulator process's CPU time per acknowledged order (``cpu_us_per_order``,
from /proc on Linux): on a shared machine throughput follows the other load, CPU time per order much less, so
that is the figure to compare persistence modes by (``persist`` true = the journal of ``durable.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp


def start_sim(home: str, *args: str) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    env = dict(os.environ, TRADEBAAS_HOME=home, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tradebaas.exchange.sim.cli", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    ws_url = proc.stdout.readline().strip()
    proc.stdout.readline()
    creds = json.loads(open(os.path.join(home, "sim", "credentials.json")).read())
    return proc, ws_url, creds


async def order_client(url: str, creds: dict[str, str], seconds: float, window: int, out: list[int]) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"id": 0, "method": "public/auth", "params": {
            "grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]}}))
        while True:
            m = json.loads((await ws.receive()).data)
            if m.get("id") == 0:
                break
        sent = acked = errors = 0
        deadline = time.monotonic() + seconds

        async def send_one() -> None:
            nonlocal sent
            side = "private/buy" if sent % 2 == 0 else "private/sell"
            sent += 1
            await ws.send_str(f'{{"jsonrpc":"2.0","id":{sent},"method":"{side}","params":{{"instrument_name":'
                              '"BTC_USDC-PERPETUAL","amount":0.001,"type":"market"}}')

        for _ in range(window):
            await send_one()
        while time.monotonic() < deadline:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if '"id":' in msg.data[:40] or '"result"' in msg.data or '"error"' in msg.data:
                if '"error"' in msg.data:
                    errors += 1
                acked += 1
                await send_one()
        out.append(acked - errors)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_orders(seconds: float, clients: int, window: int, persist: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        extra = () if persist else ("--no-persist",)
        proc, url, creds = start_sim(home, "--rate-limits", "off", "--account", "bench:benchsecret:100000000", *extra)
        creds = {"client_id": "bench", "client_secret": "benchsecret"}
        try:
            counts: list[int] = []
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            await asyncio.gather(*(order_client(url, creds, seconds, window, counts) for _ in range(clients)))
            dt = time.monotonic() - t0
            cpu1 = cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    n = sum(counts)
    cpu = round((cpu1 - cpu0) / n * 1e6, 1) if cpu0 is not None and cpu1 is not None and n else None
    return {"bench": "sim_orders", "orders_per_s": round(n / dt), "orders": n, "cpu_us_per_order": cpu,
            "seconds": round(dt, 2), "clients": clients, "window": window, "persist": persist, "kind": "market buy/sell, each matched"}


async def subscriber(url: str, channels: list[str], seconds: float, out: list[tuple[int, float]]) -> None:
    """Count notification frames with a minimal WebSocket reader (frame headers only, no JSON decoding), so the
    measurement is bounded by the server rather than by a Python client's parsing."""
    host, _, rest = url.removeprefix("ws://").partition("/")
    h, _, port = host.partition(":")
    reader, writer = await asyncio.open_connection(h, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps({"id": 1, "method": "public/subscribe", "params": {"channels": channels}}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(struct.pack("!BBH", 0x81, 0x80 | 126, len(payload)) + mask + masked)
    await writer.drain()
    buf = b""
    n = 0
    t_first = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        i = 0
        while len(buf) - i >= 2:
            ln = buf[i + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if len(buf) - i < 4:
                    break
                ln, hdr = struct.unpack_from("!H", buf, i + 2)[0], 4
            elif ln == 127:
                if len(buf) - i < 10:
                    break
                ln, hdr = struct.unpack_from("!Q", buf, i + 2)[0], 10
            if len(buf) - i < hdr + ln:
                break
            if buf.startswith(b'{"jsonrpc":"2.0","method":"subscription"', i + hdr):
                if not n:
                    t_first = time.monotonic()
                n += 1
            i += hdr + ln
        buf = buf[i:]
    out.append((n, time.monotonic() - t_first if n else 0.0))
    writer.close()


async def bench_market_data(seconds: float, subscribers: int, speed: float) -> dict[str, Any]:
    chans = [f"{c}.{i}.100ms" for i in ("BTC-PERPETUAL", "BTC_USDC-PERPETUAL") for c in ("ticker", "trades", "book")]
    chans += ["chart.trades.BTC-PERPETUAL.1", "chart.trades.BTC_USDC-PERPETUAL.1"]
    with tempfile.TemporaryDirectory() as home:
        proc, url, _ = start_sim(home, "--speed", str(speed), "--synthetic", "1", "--no-persist")
        try:
            res: list[tuple[int, float]] = []
            await asyncio.gather(*(subscriber(url, chans, seconds, res) for _ in range(subscribers)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    n = sum(c for c, _ in res)
    dt = max(d for _, d in res)
    return {"bench": "sim_market_data", "messages_per_s": round(n / dt), "messages": n, "seconds": round(dt, 2), "subscribers": subscribers, "channels_each": len(chans), "speed": speed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--subscribers", type=int, default=4)
    ap.add_argument("--speed", type=float, default=100000.0)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(bench_orders(a.seconds, a.clients, a.window, persist=True))), flush=True)
    print(json.dumps(asyncio.run(bench_orders(a.seconds, a.clients, a.window, persist=False))), flush=True)
    print(json.dumps(asyncio.run(bench_market_data(a.seconds, a.subscribers, a.speed))), flush=True)


if __name__ == "__main__":
    main()

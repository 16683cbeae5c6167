"""The load generator of bench/tracking.py, run as its own process so that the client's
CPU is not the server's: C keep-alive HTTP/1.1 connections, one request in flight per
connection (no pipelining), raw asyncio protocols on uvloop (no HTTP client library
per request). Prints one JSON object: hits, elapsed seconds, statuses, latencies (ms,
sorted percentiles).

    python bench/hitload.py PORT PATHS_FILE --hits N [--connections C]
    python bench/hitload.py --calibrate   # the client alone against a trivial server

`--calibrate` starts a canned-response server in a child process and drives it the same
way: the client's own ceiling, which must sit well above the figures it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time
from collections import deque

import uvloop

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
CANNED = b"HTTP/1.1 200 OK\r\ncontent-type: image/gif\r\ncontent-length: 43\r\n\r\n" + b"G" * 43


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `run.answered(self)` after each complete response."""

    def __init__(self, run: _Run):
        self.run, self.buf, self.t0 = run, b"", 0.0
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.ready(self)

    def send(self, request: bytes, t0: float) -> None:
        self.t0 = t0  # closed loop: now; open loop: when the request was due
        self.transport.write(request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        length = 0
        if at >= 0:
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15 : eol if eol >= 0 else len(head)])
        if len(self.buf) < end + 4 + length:
            return
        self.run.latencies.append(time.perf_counter() - self.t0)
        status = int(self.buf[9:12])
        self.run.statuses[status] = self.run.statuses.get(status, 0) + 1
        self.buf = self.buf[end + 4 + length :]
        self.run.ready(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.run.idle:  # the server closed an idle keep-alive connection
            self.run.idle.remove(self)
        if not self.done.done():
            self.done.set_result(exc)
        self.run.freed.set()  # the pacer re-checks (every connection may be gone)


class _Run:
    """Closed loop (rate None): each connection sends its next request as soon as the
    last is answered. Open loop: request i is due at start + i/rate whatever the
    answers; it waits for a free connection if all are busy, and its latency counts from
    when it was due (no coordinated omission: a stalled server cannot hide its queue)."""

    def __init__(self, port: int, paths: list[str], hits: int, rate: float | None):
        self.hits, self.sent, self.rate = hits, 0, rate
        self.requests = [
            f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {UA}\r\n\r\n".encode()
            for p in paths
        ]
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.idle: deque[_Conn] = deque()  # first in, first out: every connection stays warm
        self.all: list[_Conn] = []
        self.start = 0.0
        # Set when a connection turns idle: the pacer sleeps on it while every connection is
        # busy (polling instead took CPU from the server exactly when it was behind, on a
        # 2-core box turning a late server into a collapsed one).
        self.freed = asyncio.Event()

    def _next(self) -> bytes:
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        return request

    def ready(self, conn: _Conn) -> None:
        if self.rate is None:
            if self.sent >= self.hits:
                conn.transport.close()
            else:
                conn.send(self._next(), time.perf_counter())
        elif self.sent < self.hits and self.start + self.sent / self.rate <= time.perf_counter():
            conn.send(self._next(), self.start + (self.sent) / self.rate)  # overdue: at once
        else:
            self.idle.append(conn)
            self.freed.set()

    async def pace(self) -> None:
        """Open loop: hand each request to an idle connection when it is due."""
        assert self.rate is not None
        while self.sent < self.hits:
            due = self.start + self.sent / self.rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if self.idle:
                self.idle.popleft().send(self._next(), due)
            elif all(c.done.done() for c in self.all):
                break  # every connection closed: nothing left to send on
            else:  # all busy: it stays due (latency counts) until a connection is free
                self.freed.clear()
                await self.freed.wait()
        while len(self.latencies) < self.hits and not all(c.done.done() for c in self.all):
            await asyncio.sleep(0.001)
        for conn in self.all:
            conn.transport.close()


async def _drive(
    port: int, paths: list[str], hits: int, connections: int, rate: float | None = None
) -> dict:
    run = _Run(port, paths, hits, rate)
    loop = asyncio.get_running_loop()
    if rate is not None:
        run.start = float("inf")  # connect first, then start the clock
    start = time.perf_counter()
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Conn(run), "127.0.0.1", port)
        run.all.append(conn)
    conns = run.all
    if rate is not None:
        start = time.perf_counter()
        run.start = start
        await run.pace()
    errors = [e for e in await asyncio.gather(*(c.done for c in conns)) if e is not None]
    elapsed = time.perf_counter() - start
    lat = sorted(run.latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1000 if lat else 0.0  # noqa: E731
    return {
        "hits": len(lat),
        "elapsed": elapsed,
        "rate": len(lat) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "max_ms": lat[-1] * 1000 if lat else 0.0,
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "errors": [repr(e) for e in errors],
        "latencies": [x * 1000 for x in run.latencies],
    }


def drive(
    port: int, paths: list[str], hits: int, connections: int, rate: float | None = None
) -> dict:
    return uvloop.run(_drive(port, paths, hits, connections, rate))


def _canned_server(sock: socket.socket) -> None:
    class Canned(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                self.buf = self.buf[end + 4 :]
                self.transport.write(CANNED)  # type: ignore[attr-defined]

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Canned, sock=sock)
        await server.serve_forever()

    uvloop.run(serve())


def calibrate(hits: int, connections: int, rate: float | None = None) -> dict:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = multiprocessing.get_context("fork").Process(target=_canned_server, args=(sock,))
    server.start()
    try:
        path = "/automail-public/o/t1.c1-1." + "x" * 43
        return drive(sock.getsockname()[1], [path], hits, connections, rate)
    finally:
        server.terminate()
        server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("paths_file", nargs="?")
    parser.add_argument("--hits", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, help="open loop at this many hits/s")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--latencies", action="store_true", help="every latency (ms) too")
    args = parser.parse_args()
    if args.calibrate:
        result = calibrate(args.hits, args.connections, args.rate)
    else:
        with open(args.paths_file, encoding="ascii") as f:
            paths = f.read().split()
        result = drive(args.port, paths, args.hits, args.connections, args.rate)
    if not args.latencies:
        del result["latencies"]
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()

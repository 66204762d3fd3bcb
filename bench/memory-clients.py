#!/usr/bin/env python3
"""The client side of bench/memory.sh: many raw HTTP/1.1 connections to one local instance.

  memory-clients.py idle      URL -c N [--hold S]                 N keep-alive connections, one GET
                                                                  each, then held open
  memory-clients.py busy      URL -c N --seconds S --path P...    N connections in a closed loop
                                 [--header 'Name: value']...       (GET, keep-alive), paths cycled
  memory-clients.py slowloris URL -c N --seconds S [--head-bytes B]
                                                                  N connections sending a request
                                                                  head that never ends: B bytes
                                                                  at once, then a byte a second
  memory-clients.py abandon   URL -c N --seconds S [--path P] [--body JSON] [--partial]
                                                                  N at a time: send a request
                                                                  (--partial: half its body),
                                                                  close without reading, again
  memory-clients.py signups   URL -c N                            N sign-ups at once, each on its
                                                                  own connection

Each mode prints `ready` on stdout once its load is in place (the caller samples /proc then) and
a last line `result key=value ...`. Loopback targets only. Python 3 stdlib only (asyncio).
"""

import argparse
import asyncio
import collections
import os
import resource
import sys
import time
import uuid
from urllib.parse import urlparse


def target(url):
    parsed = urlparse(url)
    if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"memory-clients: {url} is not a loopback http:// address")
    return parsed.hostname, parsed.port or 80


def raise_file_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def request(method, path, host, headers=(), body=None):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += headers
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + (body or b"")


async def read_answer(reader):
    """Reads one answer (Content-Length or chunked); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


def ready():
    print("ready", flush=True)


def result(**fields):
    print("result " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


async def connect(host, port, opened, failed):
    try:
        conn = await asyncio.open_connection(host, port)
        opened[0] += 1
        return conn
    except OSError:
        failed[0] += 1
        return None


async def idle(args):
    host, port = target(args.url)
    statuses = collections.Counter()
    opened, failed = [0], [0]
    conns = []

    async def one(i):
        conn = await connect(host, port, opened, failed)
        if conn is None:
            return
        reader, writer = conn
        writer.write(request("GET", args.path[0], host))
        try:
            statuses[await read_answer(reader)] += 1
            conns.append(writer)
        except (OSError, asyncio.IncompleteReadError):
            statuses["closed"] += 1

    # In batches, so that the listen backlog does not overflow.
    for start in range(0, args.connections, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 200, args.connections))))
    ready()
    await asyncio.sleep(args.hold)
    result(open=len(conns), failed=failed[0], statuses=dict(statuses))
    for writer in conns:
        writer.close()


async def busy(args):
    host, port = target(args.url)
    statuses = collections.Counter()
    opened, failed = [0], [0]
    done = [0]
    payloads = [request("GET", path, host, args.header) for path in args.path]
    started = asyncio.Event()
    deadline = [0.0]

    async def one(i):
        conn = await connect(host, port, opened, failed)
        if conn is None:
            return
        reader, writer = conn
        await started.wait()
        n = i
        try:
            while time.monotonic() < deadline[0]:
                writer.write(payloads[n % len(payloads)])
                n += 1
                statuses[await read_answer(reader)] += 1
                done[0] += 1
        except (OSError, asyncio.IncompleteReadError):
            statuses["closed"] += 1
        writer.close()

    tasks = []
    for start in range(0, args.connections, 200):
        batch = [asyncio.create_task(one(i)) for i in range(start, min(start + 200, args.connections))]
        tasks += batch
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    begin = time.monotonic()
    deadline[0] = begin + args.seconds
    started.set()
    await asyncio.sleep(min(1.0, args.seconds / 2))
    ready()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - begin
    result(connections=opened[0], failed=failed[0], requests=done[0], req_per_s=f"{done[0] / elapsed:.0f}",
           statuses=dict(statuses))


async def slowloris(args):
    host, port = target(args.url)
    opened, failed = [0], [0]
    outcome = collections.Counter()
    stop = time.monotonic() + args.seconds
    head = request("GET", "/health", host).rstrip(b"\r\n") + b"\r\nX-Padding: "
    filler = head + b"a" * max(0, args.head_bytes - len(head))

    async def one(i):
        conn = await connect(host, port, opened, failed)
        if conn is None:
            return
        reader, writer = conn
        try:
            writer.write(filler)
            await writer.drain()
            while time.monotonic() < stop:
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=1.0)
                except asyncio.TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
                    continue
                if data.startswith(b"HTTP/1.1 503"):
                    outcome["refused (503)"] += 1
                elif data:
                    outcome[f"answered {data[9:12].decode()}"] += 1
                else:
                    outcome["closed by the server"] += 1
                return
            outcome["still open at the end"] += 1
        except (OSError, asyncio.IncompleteReadError):
            outcome["closed by the server"] += 1
        finally:
            writer.close()

    tasks = []
    for start in range(0, args.connections, 200):
        tasks += [asyncio.create_task(one(i)) for i in range(start, min(start + 200, args.connections))]
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    ready()
    await asyncio.gather(*tasks)
    result(connections=opened[0], failed=failed[0], outcome=dict(outcome))


async def abandon(args):
    host, port = target(args.url)
    opened, failed = [0], [0]
    sent = [0]
    body = args.body.encode() if args.body is not None else None
    method = "POST" if body is not None else "GET"
    stop = time.monotonic() + args.seconds
    first = asyncio.Event()

    async def one(i):
        n = 0
        while time.monotonic() < stop:
            conn = await connect(host, port, opened, failed)
            if conn is None:
                await asyncio.sleep(0.05)
                continue
            _, writer = conn
            payload = body.replace(b"{n}", f"{i}-{n}-{uuid.uuid4().hex[:8]}".encode()) if body else None
            whole = request(method, args.path[0], host, args.header, payload)
            # --partial: the head and half the body, then gone.
            writer.write(whole[: len(whole) - len(payload) // 2] if args.partial and payload else whole)
            try:
                await writer.drain()
            except OSError:
                pass
            sent[0] += 1
            n += 1
            # Gone before the answer: the server finds the socket closed.
            writer.transport.abort()
            if sent[0] >= args.connections:
                first.set()
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(one(i)) for i in range(args.connections)]
    await first.wait()
    ready()
    await asyncio.gather(*tasks)
    result(requests_abandoned=sent[0], failed=failed[0])


async def signups(args):
    host, port = target(args.url)
    statuses = collections.Counter()
    opened, failed = [0], [0]
    tag = uuid.uuid4().hex[:10]
    go = asyncio.Event()
    ready_count = [0]

    async def one(i):
        conn = await connect(host, port, opened, failed)
        if conn is None:
            return
        reader, writer = conn
        body = f'{{"email":"m{tag}-{i}@memory.test","password":"mem-{tag}-pw-{i}","name":"M {i}"}}'.encode()
        ready_count[0] += 1
        await go.wait()
        writer.write(request("POST", "/api/v1/users", host, (), body))
        try:
            statuses[await read_answer(reader)] += 1
        except (OSError, asyncio.IncompleteReadError):
            statuses["closed"] += 1
        writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(args.connections)]
    while ready_count[0] + failed[0] < args.connections:
        await asyncio.sleep(0.05)
    began = time.monotonic()
    go.set()
    ready()
    await asyncio.gather(*tasks)
    result(signups=args.connections, failed=failed[0], seconds=f"{time.monotonic() - began:.1f}",
           statuses=dict(statuses))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["idle", "busy", "slowloris", "abandon", "signups"])
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--path", action="append")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body")
    parser.add_argument("--head-bytes", type=int, default=64)
    parser.add_argument("--partial", action="store_true")
    args = parser.parse_args()
    args.path = args.path or ["/health"]
    raise_file_limit(args.connections + 256)
    mode = {"idle": idle, "busy": busy, "slowloris": slowloris, "abandon": abandon, "signups": signups}[args.mode]
    asyncio.run(mode(args))


if __name__ == "__main__":
    if os.environ.get("PYTHONASYNCIODEBUG"):
        print("memory-clients: asyncio debug mode slows the clients down", file=sys.stderr)
    main()

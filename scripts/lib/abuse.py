#!/usr/bin/env python3
"""Bounded abuse against one running instance, for scripts/faults.sh (scenarios 4, 5 and 6).

  abuse.py slowloris URL PID --rss-mib N      half-open sockets and slow headers
  abuse.py hash-flood URL PID --rss-mib N     thousands of logins, half of them abandoned
  abuse.py metrics URL PID --rss-mib N        made-up methods and paths, then /metrics

Each attack runs for a bounded time while /health is timed every 250 ms on a fresh connection
(from a process of its own); it must answer 200 within 100 ms (on a shared machine one probe in
ten may be later, none over 1 s; FAULTS_HEALTH_STRICT=1 allows none), and the instance's RSS
(from /proc) must stay under the bound during and after. Prints one line per check ("ok   ..." or "FAIL ...") and exits 1 on
any FAIL. Python 3 stdlib only.
"""

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import random
import resource
import socket
import string
import sys
import threading
import time
from urllib.parse import urlparse

HEALTH_MS = 100.0
# On a machine shared with other work a probe is sometimes late for reasons of its own: one in ten
# may take longer than HEALTH_MS, none longer than HARD_MS. FAULTS_HEALTH_STRICT=1: none may.
HARD_MS = 1000.0
STRICT = os.environ.get("FAULTS_HEALTH_STRICT") == "1"
FAILED = False


def check(name, ok, detail):
    global FAILED
    print(f"  {'ok  ' if ok else 'FAIL'} {name} ({detail})", flush=True)
    FAILED |= not ok


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _watch(host, port, pid, stop, results):
    probes, rss = [], []
    while not stop.is_set():
        start = time.monotonic()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/health")
            status = conn.getresponse().status
            conn.close()
        except Exception as err:  # noqa: BLE001 - any failure is a failed probe
            status = f"error {type(err).__name__}"
        probes.append((status, (time.monotonic() - start) * 1000))
        rss.append(rss_mib(pid))
        stop.wait(0.25)
    results.put((probes, rss))


class Watch:
    """Times GET /health on a fresh connection every 250 ms and samples RSS, until reported. It
    runs in a process of its own, so that the attack's threads (and Python's lock) do not delay
    the probes."""

    def __init__(self, host, port, pid):
        self.stop = multiprocessing.Event()
        self.results = multiprocessing.Queue()
        self.process = multiprocessing.Process(target=_watch, args=(host, port, pid, self.stop, self.results),
                                               daemon=True)
        self.probes, self.rss = [], []

    def start(self):
        self.process.start()

    def join(self):
        self.probes, self.rss = self.results.get(timeout=30)
        self.process.join()

    def report(self, rss_bound, phase):
        self.stop.set()
        self.join()
        failed = [p for p in self.probes if p[0] != 200 or p[1] > HARD_MS]
        slow = [p for p in self.probes if p[1] > HEALTH_MS]
        allowed = 0 if STRICT else len(self.probes) // 10
        worst = max((p[1] for p in self.probes), default=0.0)
        check(f"/health during the {phase}: 200 within {HEALTH_MS:.0f} ms"
              + ("" if STRICT else f" (at most 1 in 10 slower, none over {HARD_MS:.0f} ms)"),
              bool(self.probes) and not failed and len(slow) <= allowed,
              f"{len(self.probes)} probes, slowest {worst:.1f} ms, {len(slow)} over {HEALTH_MS:.0f} ms, "
              f"failed {failed[:3]}")
        peak = max(self.rss, default=0.0)
        check(f"RSS during the {phase} under {rss_bound} MiB", peak < rss_bound, f"peak {peak:.0f} MiB")


def after(host, port, pid, rss_bound, phase):
    watch = Watch(host, port, pid)
    watch.start()
    time.sleep(2)
    watch.report(rss_bound, f"2 s after the {phase}")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def slowloris(host, port, pid, rss_bound, sockets, seconds):
    """Half the sockets send a request head a byte at a time and never finish it; the other half
    connect and send nothing. The server must close them all (header timeout) and keep serving."""
    raise_fd_limit()
    watch = Watch(host, port, pid)
    watch.start()
    slow, silent = [], []
    for i in range(sockets):
        s = socket.create_connection((host, port), timeout=5)
        if i % 2 == 0:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        else:
            silent.append(s)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in slow:
            try:
                s.send(b"a")
            except OSError:
                pass
        time.sleep(0.5)
    closed = 0
    for s in slow + silent:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    watch.report(rss_bound, "slowloris")
    check("every half-open and slow socket closed by the server", closed == sockets,
          f"{closed}/{sockets} closed after {seconds} s")
    after(host, port, pid, rss_bound, "slowloris")


def hash_flood(host, port, pid, rss_bound, requests, seconds):
    """`requests` login attempts on their own connections: half read their answer, half close
    right after sending (abandoned). Then a real login must not wait behind the flood."""
    raise_fd_limit()
    watch = Watch(host, port, pid)
    watch.start()
    # Every attempt names another email: the failed-login throttle (10 per email and address,
    # tested in crates/server/tests/abuse.rs) would otherwise answer 429 before any hashing, and
    # this scenario is about the hashing queue behind it.
    def login_body(n):
        return json.dumps({"email": f"flood-{n}@example.com", "password": "not-the-password"}).encode()

    def login_request(n):
        body = login_body(n)
        return (b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    statuses = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    numbers = itertools.count()

    def attacker(count, abandon):
        for _ in range(count):
            if time.monotonic() > deadline:
                return
            request = login_request(next(numbers))
            try:
                s = socket.create_connection((host, port), timeout=10)
                s.sendall(request)
                if abandon:
                    s.close()
                    status = "abandoned"
                else:
                    status = s.recv(64).split(b" ")[1].decode()
                    s.close()
            except (OSError, IndexError) as err:
                status = type(err).__name__
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=attacker, args=(requests // 50, i % 2 == 1)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watch.report(rss_bound, "login flood")
    answered = {k: v for k, v in statuses.items() if k != "abandoned"}
    check("the flood was answered 401 or 503 at once, nothing else",
          set(answered) <= {"401", "503"} and answered.get("503", 0) > 0, f"answers {statuses}")
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/api/v1/auth/token", login_body("after"), {"Content-Type": "application/json"})
    status = conn.getresponse().status
    waited = time.monotonic() - start
    check("a login right after the flood is hashed at once (no backlog of abandoned jobs)",
          status == 401 and waited < 2.0, f"{status} after {waited:.2f} s")
    after(host, port, pid, rss_bound, "login flood")


def metrics_flood(host, port, pid, rss_bound, requests, seconds):
    """`requests` requests with made-up methods and made-up paths, pipelined on a few
    connections; /metrics must not grow with them."""
    def scrape():
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read()
        conn.close()
        return text

    # Every kind of label value once, so that the baseline has its series.
    for method, path in [("GET", "/health"), ("BREW", "/health"), ("GET", "/no/such/path")]:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request(method, path)
        conn.getresponse().read()
        conn.close()
    before = len(scrape())
    watch = Watch(host, port, pid)
    watch.start()
    deadline = time.monotonic() + seconds
    sent = 0
    letters = string.ascii_uppercase
    while sent < requests and time.monotonic() < deadline:
        s = socket.create_connection((host, port), timeout=10)
        batch = []
        for _ in range(200):
            method = "".join(random.choices(letters, k=40))
            path = "/" + "".join(random.choices(string.ascii_lowercase, k=30))
            target = "/health" if sent % 2 else path
            batch.append(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sent += 1
        s.sendall(b"".join(batch))
        s.settimeout(10)
        received = 0
        try:
            while received < len(batch):
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk.count(b"HTTP/1.1 ")
        except OSError:
            pass
        s.close()
    watch.report(rss_bound, "made-up methods and paths")
    text = scrape()
    check("/metrics did not grow with made-up methods and paths",
          len(text) < before * 1.2 + 4096, f"{before} -> {len(text)} bytes after {sent} requests")
    bad = [line for line in text.decode().splitlines() if "method=" in line
           and not any(f'method="{m}"' in line for m in
                       ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"])]
    check("every method label is one of the eight", not bad, f"{bad[:2]}")
    after(host, port, pid, rss_bound, "made-up methods and paths")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=["slowloris", "hash-flood", "metrics"])
    parser.add_argument("url")
    parser.add_argument("pid", type=int)
    parser.add_argument("--rss-mib", type=int, required=True)
    parser.add_argument("--count", type=int, default=0, help="sockets or requests (a default per attack)")
    parser.add_argument("--seconds", type=float, default=0, help="how long the attack runs at most")
    args = parser.parse_args()
    url = urlparse(args.url)
    host, port = url.hostname, url.port
    if args.attack == "slowloris":
        slowloris(host, port, args.pid, args.rss_mib, args.count or 600, args.seconds or 8)
    elif args.attack == "hash-flood":
        hash_flood(host, port, args.pid, args.rss_mib, args.count or 3000, args.seconds or 30)
    else:
        metrics_flood(host, port, args.pid, args.rss_mib, args.count or 10000, args.seconds or 20)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Create (or show) the JetStream stream ECOMMERCE_ORDERS, replicated on a NATS cluster.

    deploy/nats/create-stream.py --server 127.0.0.1:4222 --replicas 3 --max-age-days 30
    deploy/nats/create-stream.py --server 127.0.0.1:4222 --info

The ecommerce server creates the stream itself when it is missing, with one replica. On a
cluster, run this once before the first instance starts so that the stream has three replicas
and the retention the data platform replays from; the server then uses the stream as it is.

Plain Python 3 (standard library only): it speaks the NATS text protocol to the JetStream API
($JS.API.STREAM.CREATE / INFO), so no NATS command-line tool is needed. Exit status 0 when the
stream exists with the requested replicas afterwards.
"""

import argparse
import json
import socket
import sys

STREAM = "ECOMMERCE_ORDERS"
SUBJECTS = ["ecommerce.order.*"]
NANOS_PER_SECOND = 1_000_000_000


class Nats:
    """The few protocol verbs a request/reply needs: CONNECT, SUB, PUB, PING/PONG, MSG."""

    def __init__(self, address, timeout):
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        self.buffer = b""
        info = self._line()
        if not info.startswith(b"INFO "):
            raise RuntimeError(f"not a NATS server: {info[:80]!r}")
        self.info = json.loads(info[5:])
        self._send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
                   b'"name":"ecommerce-create-stream"}\r\nPING\r\n')
        while self._line() != b"PONG":
            pass

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        self.buffer += chunk

    def _line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        if line.startswith(b"-ERR"):
            raise RuntimeError(line.decode(errors="replace"))
        return line

    def _exact(self, size):
        while len(self.buffer) < size + 2:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
        return data

    def request(self, subject, payload):
        inbox = "_INBOX.ecommerce-create-stream"
        body = json.dumps(payload).encode()
        self._send(f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(body)}\r\n".encode() + body + b"\r\n")
        while True:
            line = self._line()
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                data = self._exact(int(line.split()[-1]))
                self._send(b"UNSUB 1\r\n")
                return json.loads(data)
            elif line.startswith(b"HMSG "):
                # A header-only answer: "503 No Responders" when JetStream is not enabled.
                parts = line.split()
                raw = self._exact(int(parts[-1]))
                raise RuntimeError(f"no JetStream answer: {raw[:int(parts[-2])].decode(errors='replace').strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:4222", help="host:port of any node")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--max-age-days", type=float, default=30,
                        help="how long events stay replayable (0: until the size limit)")
    parser.add_argument("--max-gb", type=float, default=10, help="size cap of the stream")
    parser.add_argument("--info", action="store_true", help="only show the stream")
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()

    nats = Nats(args.server, args.timeout)
    if not args.info:
        config = {
            "name": STREAM,
            "subjects": SUBJECTS,
            "retention": "limits",          # events stay after delivery: consumers replay them
            "storage": "file",
            "num_replicas": args.replicas,
            "discard": "old",               # at the cap the oldest events go, publishing never stops
            "max_age": int(args.max_age_days * 86_400 * NANOS_PER_SECOND),
            "max_bytes": int(args.max_gb * 1024**3),
            "max_msgs": -1,
            "max_msg_size": 1024 * 1024,
            "duplicate_window": 300 * NANOS_PER_SECOND,   # Nats-Msg-Id de-duplication, as the server sets it
        }
        answer = nats.request(f"$JS.API.STREAM.CREATE.{STREAM}", config)
        error = answer.get("error")
        if error and error.get("err_code") == 10058:
            print(f"{STREAM} exists with another configuration; updating it", file=sys.stderr)
            answer = nats.request(f"$JS.API.STREAM.UPDATE.{STREAM}", config)
            error = answer.get("error")
        if error:
            print(f"cannot create {STREAM}: {error.get('description')} (code {error.get('err_code')})",
                  file=sys.stderr)
            return 1
    answer = nats.request(f"$JS.API.STREAM.INFO.{STREAM}", {})
    if "error" in answer:
        print(f"{STREAM}: {answer['error'].get('description')}", file=sys.stderr)
        return 1
    config, cluster, state = answer["config"], answer.get("cluster", {}), answer["state"]
    replicas = [cluster.get("leader", "?")] + [r["name"] for r in cluster.get("replicas", [])]
    print(json.dumps({
        "stream": config["name"],
        "subjects": config["subjects"],
        "replicas": config.get("num_replicas", 1),
        "placed_on": replicas,
        "leader": cluster.get("leader"),
        "max_age_seconds": config.get("max_age", 0) // NANOS_PER_SECOND,
        "duplicate_window_seconds": config.get("duplicate_window", 0) // NANOS_PER_SECOND,
        "messages": state["messages"],
        "first_seq": state["first_seq"],
        "last_seq": state["last_seq"],
    }, indent=2))
    if not args.info and config.get("num_replicas", 1) != args.replicas:
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, RuntimeError) as err:
        print(f"create-stream: {err}", file=sys.stderr)
        sys.exit(1)

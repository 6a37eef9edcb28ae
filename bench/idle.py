#!/usr/bin/env python3
"""bench/idle.py — holds N idle keep-alive HTTP/1.1 connections open (bench/run.sh MODE=idle).

Usage: idle.py HOST PORT N

Opens N connections to HOST:PORT one after the other; on each sends one `GET /` and reads
the whole answer (its Content-Length body), so that every connection is an idle keep-alive
connection the proxy has served once. Then prints one line, `IDLE open=… failed=…`, and
holds every connection open, sending nothing more, until it is killed (SIGTERM). A connection that fails (refused, reset, not 200, 5 s without an answer)
counts as failed and is closed. Standard library only.
"""

import signal
import socket
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: switchyard-bench-idle\r\n\r\n"


def one_request(sock):
    """Sends REQUEST and reads the answer; True when it was a 200 with its whole body."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if len(lines[0].split()) < 2 or lines[0].split()[1] != b"200":
        return False
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    held, failed = [], 0
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect((host, port))
            ok = one_request(sock)
        except OSError:
            ok = False
        if ok:
            held.append(sock)
        else:
            failed += 1
            sock.close()
    print(f"IDLE open={len(held)} failed={failed}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()

"""gRPC test client (grpcio), one JSON line of results per command.

  client.py TARGET spread N          N unary calls on one channel: {"counts": {name: n}}
  client.py TARGET call METHOD [TIMEOUT]  one unary call: {"code", "details", "trailing", "reply"}
  client.py TARGET codes METHOD N    N unary calls: {"codes": {status name: n}}
  client.py TARGET collect N M GAP   N client-streaming calls to Collect, each M messages GAP
                                     seconds apart: {"codes": {status name: n}, "replies": [...]}
  client.py TARGET bidi N            N messages each way on one stream, checked in order
  client.py TARGET retrying N        N unary calls, each retried (UNAVAILABLE) up to 5
                                     attempts by grpcio's retry policy: {"failed": n, "counts"}
  client.py TARGET flood SECONDS     reads one message of a server stream, then stops
                                     reading for SECONDS: {"received": 1}
"""

import json
import sys
import time

import grpc

RETRY_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "test.Echo"}],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})


def channel(target, retry=False):
    options = [("grpc.enable_retries", 1 if retry else 0)]
    if retry:
        options.append(("grpc.service_config", RETRY_CONFIG))
    return grpc.insecure_channel(target, options=options)


def out(value):
    print(json.dumps(value), flush=True)


def main():
    target, command = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    if command == "spread":
        ch = channel(target)
        call = ch.unary_unary("/test.Echo/Unary")
        counts = {}
        for i in range(int(args[0])):
            reply = call(b"%d" % i, timeout=20)
            name = reply.split(b":")[0].decode()
            counts[name] = counts.get(name, 0) + 1
        out({"counts": counts})
    elif command == "call":
        ch = channel(target)
        call = ch.unary_unary("/" + args[0])
        timeout = float(args[1]) if len(args) > 1 else 20
        try:
            reply = call(b"hello", timeout=timeout)
            out({"code": "OK", "reply": reply.decode()})
        except grpc.RpcError as error:
            out({
                "code": error.code().name,
                "details": error.details(),
                "trailing": dict(error.trailing_metadata() or ()),
            })
    elif command == "codes":
        ch = channel(target)
        call = ch.unary_unary("/" + args[0])
        codes = {}
        for i in range(int(args[1])):
            try:
                call(b"%d" % i, timeout=20)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            codes[code] = codes.get(code, 0) + 1
        out({"codes": codes})
    elif command == "collect":
        ch = channel(target)
        call = ch.stream_unary("/test.Echo/Collect")
        n, m, gap = int(args[0]), int(args[1]), float(args[2])
        codes, replies = {}, []

        def messages(i):
            for j in range(m):
                if j:
                    time.sleep(gap)
                yield b"%d.%d" % (i, j)

        for i in range(n):
            try:
                replies.append(call(messages(i), timeout=20).decode())
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            codes[code] = codes.get(code, 0) + 1
        out({"codes": codes, "replies": replies})
    elif command == "bidi":
        n = int(args[0])
        ch = channel(target)
        call = ch.stream_stream("/test.Echo/Bidi")
        messages = (b"message-%06d" % i for i in range(n))
        received = 0
        for i, reply in enumerate(call(messages, timeout=300)):
            expected = b"message-%06d" % i
            if reply != expected:
                out({"error": f"message {i}: {reply!r} != {expected!r}"})
                return
            received += 1
        out({"received": received})
    elif command == "retrying":
        ch = channel(target, retry=True)
        call = ch.unary_unary("/test.Echo/Unary")
        failed, counts, errors = 0, {}, []
        for i in range(int(args[0])):
            try:
                reply = call(b"%d" % i, timeout=20)
                name = reply.split(b":")[0].decode()
                counts[name] = counts.get(name, 0) + 1
            except grpc.RpcError as error:
                failed += 1
                errors.append(f"{error.code().name}: {error.details()}")
            time.sleep(0.005)
        out({"failed": failed, "counts": counts, "errors": errors[:5]})
    elif command == "flood":
        ch = channel(target)
        call = ch.unary_stream("/test.Echo/Flood")
        stream = call(b"go", timeout=120)
        next(stream)
        print("reading stopped", flush=True)
        time.sleep(float(args[0]))
        stream.cancel()
        out({"received": 1})
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()

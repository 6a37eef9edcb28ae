"""A gRPC test server (grpcio, generic handlers over raw bytes: no generated code).

Methods of service test.Echo:
  Unary         answers "<name>:<request>"
  Fail          aborts NOT_FOUND "no such order" with trailing metadata x-order-id: 42
  Slow          sleeps 3 s, then answers
  Bidi          echoes each message of a bidirectional stream, in order
  Flood         server streaming: 64 KiB messages until the client cancels
  Flaky         UNAVAILABLE from a server whose name starts with "bad", else like Unary
  Collect       client streaming: answers "<name>:<count>:<messages joined by ,>"; UNAVAILABLE
                (after reading the whole stream) from a server whose name starts with "bad"
  Partial       server streaming: one message "<name>:partial", then DATA_LOSS "stream broke"
                (the status in trailers after data, not trailers-only)
grpc.health.v1.Health answers from a status set on stdin ("SERVING" / "NOT_SERVING").

Usage: server.py PORT NAME [CERT KEY] (with CERT and KEY: TLS, ALPN h2). Prints "ready" once listening; SIGTERM stops gracefully
(GOAWAY, calls in flight finish within 5 s).
"""

import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main():
    port, name = int(sys.argv[1]), sys.argv[2]

    def unary(request, context):
        return name.encode() + b":" + request

    def fail(request, context):
        context.set_trailing_metadata((("x-order-id", "42"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such order")

    def slow(request, context):
        time.sleep(3)
        return b"slow"

    def flaky(request, context):
        if name.startswith("bad"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "bad instance")
        return name.encode() + b":" + request

    def bidi(requests, context):
        for message in requests:
            yield message

    def flood(request, context):
        chunk = b"x" * 65536
        while context.is_active():
            yield chunk

    def collect(requests, context):
        messages = [m.decode() for m in requests]
        if name.startswith("bad"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "bad instance")
        return ("%s:%d:%s" % (name, len(messages), ",".join(messages))).encode()

    def partial(request, context):
        yield name.encode() + b":partial"
        context.abort(grpc.StatusCode.DATA_LOSS, "stream broke")

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Flood": grpc.unary_stream_rpc_method_handler(flood),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
        "Partial": grpc.unary_stream_rpc_method_handler(partial),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
    }
    # No SO_REUSEPORT (grpcio's default): a port another test's server holds must fail
    # here, not silently share the port with it.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if len(sys.argv) > 4:
            with open(sys.argv[3], "rb") as cert, open(sys.argv[4], "rb") as key:
                credentials = grpc.ssl_server_credentials(((key.read(), cert.read()),))
            bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
        else:
            bound = server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError:
        bound = 0
    if bound != port:
        print("bind failed", flush=True)
        sys.exit(2)
    server.start()

    stopped = threading.Event()

    def on_term(*_):
        server.stop(grace=5).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_term)

    def read_stdin():
        for line in sys.stdin:
            status = line.strip()
            if status in ("SERVING", "NOT_SERVING"):
                value = getattr(health_pb2.HealthCheckResponse, status)
                health_servicer.set("", value)
                health_servicer.set("test.Echo", value)
                print(f"health {status}", flush=True)

    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    while not stopped.wait(0.2):
        pass


if __name__ == "__main__":
    main()

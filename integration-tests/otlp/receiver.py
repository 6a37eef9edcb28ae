"""A minimal OTLP trace receiver for the tests, built on the official generated classes of
the `opentelemetry-proto` package (PyPI) and, for OTLP/gRPC, on `grpcio`: nothing of
Switchyard's.

Two modes, as the OTLP specification defines the transports:
- `http` (the default): serves POST /v1/traces (protobuf ExportTraceServiceRequest,
  optionally gzip-encoded, as the OTLP/HTTP spec allows);
- `grpc`: serves the `opentelemetry.proto.collector.trace.v1.TraceService/Export` method
  through the generated `trace_service_pb2_grpc` servicer on a grpcio server (plain HTTP/2,
  gzip handled by grpcio).

Either way it appends one JSON line per span to the file named by its second argument: ids
in hex, kind and status by name, start and end times (Unix nanoseconds), attributes and
resource attributes as plain values, and the request's `authorization` header (gRPC:
metadata). Usage: receiver.py PORT OUT_FILE [http|grpc]. Binds 127.0.0.1 only.
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

WRITE = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def record(request, authorization):
    """Appends the spans of one ExportTraceServiceRequest to the output file."""
    lines = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind),
                    "status": Status.StatusCode.Name(span.status.code),
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "resource": resource,
                    "authorization": authorization,
                }))
    with WRITE, open(sys.argv[2], "a") as out:
        for line in lines:
            out.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        record(request, self.headers.get("Authorization"))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def serve_http(port):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("listening", flush=True)
    server.serve_forever()


def serve_grpc(port):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            metadata = dict(context.invocation_metadata())
            record(request, metadata.get("authorization"))
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        sys.exit(f"cannot bind 127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else "http"
    {"http": serve_http, "grpc": serve_grpc}[mode](int(sys.argv[1]))

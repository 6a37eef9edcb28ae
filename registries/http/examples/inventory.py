"""A Prometheus HTTP SD inventory server for Switchyard: python3 inventory.py PORT FILE.
FILE maps services to targets, {"orders": ["10.0.0.5:8080", "10.0.0.6:8080"]}; replace it
with a query of your own inventory (a CMDB, a cloud API, a database)."""
import hashlib, http.server, json, sys

class Targets(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2]) as f:
            services = json.load(f)
        body = json.dumps([{"targets": targets, "labels": {"__service__": name}}
                           for name, targets in services.items()]).encode()
        etag = '"%s"' % hashlib.sha1(body).hexdigest()
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304); self.send_header("ETag", etag); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Targets).serve_forever()

#!/usr/bin/env python3
"""bench/scale/tool.py — the etcd and metrics side of bench/scale.sh (Python 3 std-only).

Subcommands (each prints one machine-readable line starting with its name in capitals):

  load    writes every endpoint key into etcd through its JSON gateway (POST /v3/kv/txn,
          up to 128 puts per transaction, a few keep-alive connections in parallel)
  config  prints the gateway's TOML config for a scale (one etcd registry, one upstream per
          service, ROUTES path-prefix routes per upstream, a probe upstream and route)
  churn   makes RATE endpoint changes per second for DURATION seconds, open loop: weight
          changes, deletes, and re-adds of what was deleted a second earlier; all changes
          due at one instant go into one transaction on one keep-alive connection
  probe   every INTERVAL seconds moves the probe upstream's one priority-0 endpoint between
          two backends and times, from the put's response, until the change is visible:
          in the admin API (`GET /api/upstreams/probe`) when the gateway has that path,
          else on the data plane (the `x-instance` header of `GET /probe/`). The time is
          taken when the first poll that sees the change returns: an upper bound, up to one
          poll round trip (printed) above the true time; the send time of the last poll that
          did not see it is printed as a lower bound (0 when the first poll saw it)
  hist    Δ of a Prometheus histogram between two /metrics scrapes: count, mean, and
          p50/p99 interpolated within buckets (as PromQL's histogram_quantile does)

Data layout (DESIGN §5): key `<prefix>/<service>/<instance-id>`, value
`{"host":"127.1.0.7","port":P,"weight":10}`. Service `sNNNN` holds instances `i000`..`iNNN`,
instance `iA` on host 127.1.0.(A+1). The probe service holds 99 backup instances (priority
1, on the shared backends) and `live` (priority 0) on one of the two probe backends.
"""

import argparse
import base64
import http.client
import json
import random
import sys
import threading
import time

PROBE_SERVICE = "probe"
PROBE_KEY = "live"
DEFAULT_WEIGHT = 10


def b64(text):
    return base64.b64encode(text.encode()).decode()


def host_of(address_index):
    """The loopback host of shared backend number `address_index` (0-based)."""
    return f"127.1.0.{address_index + 1}"


def value(host, port, weight=DEFAULT_WEIGHT, priority=None):
    record = {"host": host, "port": port, "weight": weight}
    if priority is not None:
        record["priority"] = priority
    return json.dumps(record, separators=(",", ":"))


def endpoint_key(prefix, service, instance):
    return f"{prefix}/{service}/{instance}"


def service_name(index):
    return f"s{index:04d}"


def instance_name(index):
    return f"i{index:03d}"


class Etcd:
    """A keep-alive connection to etcd's JSON gateway."""

    def __init__(self, url):
        assert url.startswith("http://"), url
        host, port = url[len("http://"):].rstrip("/").split(":")
        self.host, self.port = host, int(port)
        self.conn = None

    def post(self, path, body):
        data = json.dumps(body).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"etcd {path}: {response.status} {payload[:300]!r}")
            return json.loads(payload)
        raise AssertionError("unreachable")

    def txn(self, ops):
        """ops: list of ("put", key, value) or ("del", key, None)."""
        success = []
        for op, key, val in ops:
            if op == "put":
                success.append({"requestPut": {"key": b64(key), "value": b64(val)}})
            else:
                success.append({"requestDeleteRange": {"key": b64(key)}})
        return self.post("/v3/kv/txn", {"success": success})

    def put(self, key, val):
        return self.post("/v3/kv/put", {"key": b64(key), "value": b64(val)})


# --- load ------------------------------------------------------------------------------

def all_keys(args):
    keys = []
    for s in range(args.upstreams):
        for a in range(args.addresses):
            keys.append((endpoint_key(args.prefix, service_name(s), instance_name(a)),
                         value(host_of(a), args.port)))
    # The probe upstream: 99 backups (priority 1) and the live endpoint (priority 0).
    for a in range(1, args.addresses):
        keys.append((endpoint_key(args.prefix, PROBE_SERVICE, instance_name(a)),
                     value(host_of(a), args.port, priority=1)))
    keys.append((endpoint_key(args.prefix, PROBE_SERVICE, PROBE_KEY),
                 value(args.probe_a, args.port, priority=0)))
    return keys


def cmd_load(args):
    keys = all_keys(args)
    batches = [keys[i:i + args.batch] for i in range(0, len(keys), args.batch)]
    errors = []
    lock = threading.Lock()
    next_batch = [0]

    def worker():
        etcd = Etcd(args.etcd)
        while True:
            with lock:
                if next_batch[0] >= len(batches) or errors:
                    return
                batch = batches[next_batch[0]]
                next_batch[0] += 1
            try:
                etcd.txn([("put", k, v) for k, v in batch])
            except Exception as error:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(str(error))
                return

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    if errors:
        print(f"load failed: {errors[0]}", file=sys.stderr)
        return 1
    print(f"LOAD keys={len(keys)} txns={len(batches)} seconds={seconds:.2f} "
          f"keys_per_s={len(keys) / seconds:.0f}")
    return 0


# --- config ----------------------------------------------------------------------------

def cmd_config(args):
    out = []
    w = out.append
    w("# Generated by bench/scale/tool.py config for bench/scale.sh.")
    w(f"# {args.upstreams} upstreams x {args.addresses} endpoints from one etcd registry,")
    w(f"# {args.upstreams * args.routes} routes ({args.routes} per upstream), plus a probe upstream and route.")
    w("[server]")
    w(f'listen = "{args.listen}"')
    w(f"workers = {args.workers}")
    # /readyz then means "every source synced" for the whole start-up measured here.
    w('startup_grace = "600s"')
    w("")
    w("[admin]")
    w(f'listen = "{args.admin}"')
    w("")
    w("[log]")
    w("access = false")
    w('level = "warn"')
    w("")
    w("[registries.etcd]")
    w('type = "etcd"')
    w(f'endpoints = ["{args.etcd}"]')
    w(f'prefix = "{args.prefix}"')
    w("")
    for name in [service_name(s) for s in range(args.upstreams)] + [PROBE_SERVICE]:
        w(f"[upstreams.{name}]")
        w(f"[[upstreams.{name}.sources]]")
        w('registry = "etcd"')
        w(f'service = "{name}"')
        w("")
    for s in range(args.upstreams):
        name = service_name(s)
        for r in range(args.routes):
            w("[[routes]]")
            w(f'name = "{name}-r{r}"')
            w(f'path_prefix = "/{name}/r{r}/"')
            w(f'upstream = "{name}"')
            w("")
    w("[[routes]]")
    w('name = "probe"')
    w('path_prefix = "/probe/"')
    w(f'upstream = "{PROBE_SERVICE}"')
    print("\n".join(out))
    return 0


# --- churn -----------------------------------------------------------------------------

def cmd_churn(args):
    rng = random.Random(args.seed)
    etcd = Etcd(args.etcd)
    weights = {}  # (service, instance) -> current weight, for the ones changed
    deleted = []  # FIFO of (time, service, instance)
    deleted_set = set()
    counts = {"weight": 0, "delete": 0, "readd": 0}
    txns = errors = 0
    worst_late = 0.0
    total = int(args.rate * args.duration)
    start = time.monotonic()
    due_index = 0

    def pick_live():
        for _ in range(100):
            item = (rng.randrange(args.upstreams), rng.randrange(args.addresses))
            if item not in deleted_set:
                return item
        return None

    while due_index < total:
        now = time.monotonic()
        due_at = start + due_index / args.rate
        if due_at > now:
            time.sleep(due_at - now)
            now = time.monotonic()
        worst_late = max(worst_late, now - due_at)
        # Every change due by now, in one transaction (distinct keys only, at most
        # --max-ops: etcd's --max-txn-ops, 128 by default; the rest goes in the next).
        ops, touched, kinds = [], set(), {"weight": 0, "delete": 0, "readd": 0}
        while due_index < total and start + due_index / args.rate <= now and len(ops) < args.max_ops:
            due_index += 1
            if deleted and now - deleted[0][0] >= args.readd_after and deleted[0][1:] not in touched:
                _, s, a = deleted.pop(0)
                deleted_set.discard((s, a))
                touched.add((s, a))
                weights.pop((s, a), None)
                ops.append(("put", endpoint_key(args.prefix, service_name(s), instance_name(a)),
                            value(host_of(a), args.port)))
                kinds["readd"] += 1
                continue
            item = pick_live()
            if item is None or item in touched:
                continue
            touched.add(item)
            s, a = item
            key = endpoint_key(args.prefix, service_name(s), instance_name(a))
            if rng.random() < 0.5:
                old = weights.get(item, DEFAULT_WEIGHT)
                new = rng.choice([w for w in range(1, 21) if w != old])
                weights[item] = new
                ops.append(("put", key, value(host_of(a), args.port, weight=new)))
                kinds["weight"] += 1
            else:
                deleted.append((now, s, a))
                deleted_set.add(item)
                ops.append(("del", key, None))
                kinds["delete"] += 1
        if not ops:
            continue
        try:
            etcd.txn(ops)
            txns += 1
            for kind, n in kinds.items():
                counts[kind] += n
        except Exception as error:  # noqa: BLE001 - counted and printed
            errors += 1
            print(f"churn: {error}", file=sys.stderr)
    seconds = time.monotonic() - start
    changes = sum(counts.values())
    # Put back what is still deleted (after the window; not counted as changes).
    restore = [("put", endpoint_key(args.prefix, service_name(s), instance_name(a)),
                value(host_of(a), args.port)) for _, s, a in deleted]
    for i in range(0, len(restore), 128):
        etcd.txn(restore[i:i + 128])
    print(f"CHURN changes={changes} weight={counts['weight']} delete={counts['delete']} "
          f"readd={counts['readd']} txns={txns} errors={errors} seconds={seconds:.2f} "
          f"rate={changes / seconds:.1f} late_max_ms={worst_late * 1000:.1f} restored={len(restore)}")
    return 0 if errors == 0 else 1


# --- probe -----------------------------------------------------------------------------

class Http:
    """A keep-alive HTTP/1.1 client for GETs on loopback."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = None

    def get(self, path):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                body = response.read()
                return response.status, response.headers, body
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def cmd_probe(args):
    etcd = Etcd(args.etcd)
    admin = Http(args.admin)
    gateway = Http(args.gateway)
    status, _, _ = admin.get(f"/api/upstreams/{PROBE_SERVICE}")
    mode = "admin" if status == 200 else "data-plane"
    key = endpoint_key(args.prefix, PROBE_SERVICE, PROBE_KEY)
    targets = [(args.probe_b, "probe-b"), (args.probe_a, "probe-a")]

    def visible(host, name):
        if mode == "admin":
            _, _, body = admin.get(f"/api/upstreams/{PROBE_SERVICE}")
            return f'"{host}:{args.port}"'.encode() in body
        _, headers, _ = gateway.get("/probe/x")
        return headers.get("x-instance") == name

    samples, lower, timeouts, rtts, first_poll = [], [], 0, [], 0
    start = time.monotonic()
    for i in range(args.count):
        due = start + args.first + i * args.interval
        time.sleep(max(0.0, due - time.monotonic()))
        host, name = targets[i % 2]
        etcd.put(key, value(host, args.port, priority=0))
        t0 = time.monotonic()
        deadline = t0 + args.timeout
        seen = False
        polls = 0
        last_miss = t0  # when the last poll that did not see it was sent
        while time.monotonic() < deadline:  # bounded by the deadline
            polls += 1
            sent = time.monotonic()
            found = visible(host, name)
            rtts.append(time.monotonic() - sent)
            if found:
                seen = True
                break
            last_miss = sent
        if seen:
            first_poll += polls == 1
            # Not visible yet when the last missing poll was sent: a lower bound.
            lower.append(last_miss - t0)
            # Visible at the latest when the first poll that saw it returned: an upper
            # bound, one poll round trip (printed as poll_rtt) above the true time.
            samples.append(time.monotonic() - t0)
        else:
            timeouts += 1
            print(f"probe {i}: {name} not visible within {args.timeout}s ({polls} polls)",
                  file=sys.stderr)
    ms = sorted(s * 1000 for s in samples)
    rtt = sorted(r * 1000 for r in rtts)
    low = sorted(s * 1000 for s in lower)
    print(f"PROBE mode={mode} n={len(ms)} timeouts={timeouts} "
          f"p50_ms={percentile(ms, 50):.2f} max_ms={(ms[-1] if ms else float('nan')):.2f} "
          f"min_ms={(ms[0] if ms else float('nan')):.2f} "
          f"polls={len(rtt)} poll_rtt_p50_ms={percentile(rtt, 50):.2f} first_poll={first_poll} "
          f"lower_p50_ms={percentile(low, 50):.2f} "
          f"samples_ms={','.join(f'{m:.2f}' for m in ms)}")
    return 0


# --- hist ------------------------------------------------------------------------------

def parse_histogram(path, name):
    """(buckets {le: count}, sum, count) of an unlabelled histogram, or None when absent."""
    buckets, total, count, found = {}, 0.0, 0.0, False
    with open(path, encoding="utf-8", errors="replace") as text:
        for line in text:
            if not line.startswith(name):
                continue
            rest = line[len(name):]
            try:
                metric, number = rest.rsplit(" ", 1)
                number = float(number)
            except ValueError:
                continue
            if metric.startswith("_bucket{"):
                le = metric.split('le="', 1)[1].split('"', 1)[0]
                buckets[float("inf") if le == "+Inf" else float(le)] = number
                found = True
            elif metric == "_sum":
                total, found = number, True
            elif metric == "_count":
                count, found = number, True
    return (buckets, total, count) if found else None


def quantile(q, bounds, cumulative):
    """histogram_quantile over cumulative bucket counts (bounds ascending, last +Inf)."""
    total = cumulative[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative):
        if count >= rank:
            if bound == float("inf"):
                return previous_bound  # above the last finite bucket: its bound, a floor
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


def cmd_hist(args):
    before = parse_histogram(args.before, args.name)
    after = parse_histogram(args.after, args.name)
    if after is None:
        print("HIST present=0")
        return 0
    if before is None:
        before = ({}, 0.0, 0.0)
    bounds = sorted(after[0])
    cumulative = [after[0][b] - before[0].get(b, 0.0) for b in bounds]
    count = after[2] - before[2]
    total = after[1] - before[1]
    if count <= 0:
        print("HIST present=1 count=0")
        return 0
    print(f"HIST present=1 count={count:.0f} mean_us={total / count * 1e6:.1f} "
          f"p50_us={quantile(0.5, bounds, cumulative) * 1e6:.1f} "
          f"p99_us={quantile(0.99, bounds, cumulative) * 1e6:.1f} "
          f"le_1ms={next((c for b, c in zip(bounds, cumulative) if b >= 0.001), 0) / count * 100:.1f}")
    return 0


# --- main ------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def layout(p):
        p.add_argument("--prefix", required=True)
        p.add_argument("--upstreams", type=int, required=True)
        p.add_argument("--addresses", type=int, default=100)
        p.add_argument("--port", type=int, required=True)

    p = sub.add_parser("load")
    layout(p)
    p.add_argument("--etcd", required=True)
    p.add_argument("--probe-a", required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--parallel", type=int, default=4)

    p = sub.add_parser("config")
    p.add_argument("--prefix", required=True)
    p.add_argument("--upstreams", type=int, required=True)
    p.add_argument("--addresses", type=int, default=100)
    p.add_argument("--routes", type=int, default=10)
    p.add_argument("--etcd", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--workers", type=int, default=1)

    p = sub.add_parser("churn")
    layout(p)
    p.add_argument("--etcd", required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--readd-after", type=float, default=1.0)
    p.add_argument("--max-ops", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("probe")
    p.add_argument("--prefix", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--etcd", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--probe-a", required=True)
    p.add_argument("--probe-b", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--first", type=float, default=1.0)
    p.add_argument("--interval", type=float, default=2.5)
    p.add_argument("--timeout", type=float, default=10.0)

    p = sub.add_parser("hist")
    p.add_argument("--name", required=True)
    p.add_argument("before")
    p.add_argument("after")

    args = parser.parse_args()
    return {"load": cmd_load, "config": cmd_config, "churn": cmd_churn, "probe": cmd_probe,
            "hist": cmd_hist}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

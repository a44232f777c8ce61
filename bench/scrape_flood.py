#!/usr/bin/env python3
"""Accept-to-Jenkins latency of a queue-mode hookgate with a large store, without and with a
flood of `/metrics` scrapes.

The gateway runs from a temporary directory against a fake Jenkins in this process. Its store
is prefilled with N delivered calls (a week of traffic), then one call is sent every 50 ms for
S seconds, first alone (baseline), then while `wrk -t2 -c16` scrapes `/metrics` as fast as it
can. For each phase it reports the time from the 202 answer to the call's arrival at Jenkins,
the 202 answer's own response time, the scrapes/s wrk achieved and the calls that never reached
Jenkins. Needs python3 and `wrk`; only 127.0.0.1 is contacted.

    python3 bench/scrape_flood.py --binary target/release/hookgate --rows 400000 --seconds 10 \
        [--admin-port 9091]

`--admin-port` is for binaries with the admin listener (`[admin] listen`, where `/metrics` is
served); without it the config has no `[admin]` section, as older binaries reject it, and
`/metrics` is scraped on the public listener.
"""
import argparse, http.client, http.server, json, math, os, re, signal, socket, sqlite3
import subprocess, sys, tempfile, threading, time

RULE, SENDER_TOKEN, JOB_TOKEN = "bench", "bench-token", "job-token"
INTERVAL = 0.05
GRACE_SECS = 30
GWT_ANSWER = (b'{"jobs":{"job":{"triggered":true,"id":1,"url":"queue/item/1/"}},'
              b'"message":"Triggered jobs."}')


class JenkinsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        arrived = time.monotonic()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.split("?")[0] == "/generic-webhook-trigger/invoke":
            with self.server.lock:
                self.server.arrivals.setdefault(self.headers.get("X-Hookgate-Delivery"), arrived)
            status, body = 200, GWT_ANSWER
        else:
            status, body = 404, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FakeJenkins(http.server.ThreadingHTTPServer):
    """GWT's answer to every invoke; remembers when each delivery id first arrived."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), JenkinsHandler)
        self.lock = threading.Lock()
        self.arrivals = {}

    def arrival(self, delivery):
        with self.lock:
            return self.arrivals.get(delivery)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class Gateway:
    def __init__(self, binary, directory, port):
        self.binary, self.directory, self.port = binary, directory, port
        self.log_path = os.path.join(directory, "hookgate.log")
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", "--config", "hookgate.toml"], cwd=self.directory,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"hookgate exited with {self.process.returncode}")
            try:
                if get(self.port, "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.fail("hookgate did not answer /healthz within 120 s")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.fail("hookgate did not stop within 30 s of SIGTERM")

    def fail(self, reason):
        with open(self.log_path, errors="replace") as log:
            tail = "".join(log.readlines()[-20:])
        sys.exit(f"{reason}; last log lines:\n{tail}")


def write_config(directory, port, admin_port, jenkins_port):
    admin = f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n' if admin_port else ""
    with open(os.path.join(directory, "hookgate.toml"), "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\nrate_per_client = 0\nrate_per_rule = 0\n'
                f'{admin}[jenkins.main]\nurl = "http://127.0.0.1:{jenkins_port}"\n'
                f'[delivery]\nmode = "queue"\nstore = "store"\n'
                f'done_retention_secs = {10 * 365 * 24 * 3600}\n')
    os.mkdir(os.path.join(directory, "rules"))
    with open(os.path.join(directory, "rules", f"{RULE}.toml"), "w") as f:
        f.write(f'token = "{SENDER_TOKEN}"\n[allow]\nips = ["127.0.0.1"]\n[verify]\nscheme = "none"\n'
                f'[[variables]]\nname = "ID"\njsonpath = "$.id"\n[dispatch]\ntoken = "{JOB_TOKEN}"\n')


def prefill(store_file, rows):
    """Inserts `rows` delivered calls, each with a small body, in one transaction."""
    now_ms = int(time.time() * 1000)
    row = {"id": "printf('prefill-%09d', i)", "rule": f"'{RULE}'", "jenkins": "'main'",
           "state": "'done'", "content_type": "'application/json'", "accepted_at": str(now_ms),
           "next_attempt_at": str(now_ms), "attempts": "1", "finished_at": str(now_ms),
           "queue_id": "1", "queue_url": "'queue/item/1/'"}
    conn = sqlite3.connect(store_file, isolation_level=None)
    try:
        tables = {t: {c[1]: c for c in conn.execute(f"PRAGMA table_info({t})")}
                  for t in ("deliveries", "bodies")}
        required = {name for name, (_, _, _, notnull, default, pk) in tables["deliveries"].items()
                    if notnull and default is None and not pk}
        unknown = set(row) - set(tables["deliveries"])
        if required - set(row) or unknown or set(tables["bodies"]) != {"delivery_seq", "body"}:
            sys.exit(f"unexpected store schema: deliveries {sorted(tables['deliveries'])}, "
                     f"bodies {sorted(tables['bodies'])}")
        started = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"INSERT INTO deliveries ({', '.join(row)}) "
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                     f"SELECT {', '.join(row.values())} FROM n", (rows,))
        conn.execute("INSERT INTO bodies (delivery_seq, body) "
                     "SELECT seq, CAST('{\"id\":\"prefill\"}' AS BLOB) FROM deliveries "
                     "WHERE id LIKE 'prefill-%'")
        conn.execute("COMMIT")
        return time.monotonic() - started
    finally:
        conn.close()


def send_calls(port, seconds, tag):
    """One call every INTERVAL for `seconds`: (delivery id, 202 received at, response secs)
    per accepted call, and the number of calls not answered 202."""
    accepted, refused = [], 0
    deadline = time.monotonic() + seconds
    next_at, n = time.monotonic(), 0
    while next_at < deadline:
        time.sleep(max(0.0, next_at - time.monotonic()))
        n += 1
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", f"/generic-webhook-trigger/invoke?token={SENDER_TOKEN}",
                         json.dumps({"id": f"{tag}-{n}"}), {"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            received = time.monotonic()
            if response.status == 202:
                accepted.append((json.loads(body)["jobs"][RULE]["delivery"], received,
                                 received - started))
            else:
                refused += 1
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            refused += 1
        finally:
            conn.close()
        next_at = max(next_at + INTERVAL, time.monotonic())
    return accepted, refused


def wait_delivered(jenkins, ids, grace):
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(jenkins.arrival(i) is None for i in ids):
        time.sleep(0.05)


def percentiles(values):
    """p50, p99 and max (nearest rank); empty when there are no values."""
    if not values:
        return []
    values = sorted(values)
    rank = lambda p: values[max(0, math.ceil(p * len(values)) - 1)]
    return [rank(0.50), rank(0.99), values[-1]]


def milliseconds(seconds):
    return " / ".join(f"{s * 1000:.2f}" for s in seconds) or "-"


def ratios(flood, baseline):
    if len(flood) != 3 or len(baseline) != 3:
        return "-"
    return " / ".join(f"{f / b:.1f}x" if b > 0 else "-" for f, b in zip(flood, baseline))


def phase(port, jenkins, seconds, tag, scrape_url=None):
    wrk = None
    if scrape_url:
        wrk = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{seconds}s", scrape_url],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    accepted, refused = send_calls(port, seconds, tag)
    scrapes = errors = "-"
    if wrk:
        out = wrk.communicate()[0]
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if wrk.returncode != 0 or not rate:
            sys.exit(f"wrk failed:\n{out}")
        scrapes = f"{float(rate.group(1)):.0f}"
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                            out)
        errors = str((int(bad.group(1)) if bad else 0)
                     + (sum(map(int, sockets.groups())) if sockets else 0))
    wait_delivered(jenkins, [a[0] for a in accepted], GRACE_SECS)
    latencies = [jenkins.arrival(i) - at for i, at, _ in accepted
                 if jenkins.arrival(i) is not None]
    return {"calls": len(accepted) + refused, "refused": refused,
            "latency": percentiles(latencies), "answer": percentiles([a[2] for a in accepted]),
            "scrapes": scrapes, "errors": errors, "lost": len(accepted) - len(latencies)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True, help="the hookgate binary to measure")
    ap.add_argument("--rows", type=int, default=400_000, help="delivered calls in the store")
    ap.add_argument("--seconds", type=int, default=10, help="length of each phase")
    ap.add_argument("--admin-port", type=int,
                    help="configure [admin] listen on this port and scrape /metrics there")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable")

    jenkins = FakeJenkins()
    threading.Thread(target=jenkins.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="scrape-flood-") as directory:
        port = free_port()
        metrics_port = args.admin_port or port
        write_config(directory, port, args.admin_port, jenkins.server_address[1])
        gateway = Gateway(binary, directory, port)
        try:
            gateway.start()
            gateway.stop()
            took = prefill(os.path.join(directory, "store", "deliveries.sqlite3"), args.rows)
            print(f"prefilled {args.rows} delivered calls in {took:.1f} s")
            gateway.start()

            status, text = get(metrics_port, "/metrics")
            done = re.search(r'hookgate_queue_deliveries\{state="done"\} (\d+)', text)
            if status != 200 or not done or int(done.group(1)) < args.rows:
                sys.exit(f"GET /metrics on port {metrics_port}: {status}, no done gauge of at "
                         f"least {args.rows} (wrong --admin-port?)")
            warm, _ = send_calls(port, INTERVAL, "warm-up")
            wait_delivered(jenkins, [a[0] for a in warm], GRACE_SECS)
            if not warm or jenkins.arrival(warm[0][0]) is None:
                sys.exit("the warm-up call was not accepted or never reached Jenkins")

            results = [("baseline", phase(port, jenkins, args.seconds, "baseline")),
                       ("scrape flood", phase(port, jenkins, args.seconds, "flood",
                                              f"http://127.0.0.1:{metrics_port}/metrics"))]
        finally:
            gateway.stop()

    print(f"{binary}: {args.rows} rows, {args.seconds} s per phase, one call per "
          f"{INTERVAL * 1000:.0f} ms, wrk -t2 -c16 on http://127.0.0.1:{metrics_port}/metrics")
    header = ("phase", "calls", "not 202", "accept->Jenkins p50/p99/max ms",
              "202 answer p50/p99/max ms", "scrapes/s", "scrape errors", "never reached")
    rows = [header] + [(name, str(r["calls"]), str(r["refused"]), milliseconds(r["latency"]),
                        milliseconds(r["answer"]), r["scrapes"], r["errors"], str(r["lost"]))
                       for name, r in results]
    (_, base), (_, flood) = results
    rows.append(("flood/baseline", "", "", ratios(flood["latency"], base["latency"]),
                 ratios(flood["answer"], base["answer"]), "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"scrape errors: non-2xx answers and socket errors (wrk times a scrape out after 2 s); "
          f"never reached: accepted calls not at Jenkins {GRACE_SECS} s after their phase")


if __name__ == "__main__":
    main()

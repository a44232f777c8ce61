#!/usr/bin/env python3
"""hookgate's benchmark suite: side by side with an nginx proxy ceiling and adnanh/webhook, then
scaling by rules, body size and connections. Every figure is printed beside a reference
measured in the same run; nothing is asserted. Run through `bash bench/run.sh`, which installs
nginx, wrk and webhook first.

    python3 bench/run.py [--rounds 5] [--seconds 5] [--quick] [--pin] [--only side,rules,...]

By default every process shares every CPU, as in ../shared/reference/peers.md §6.3. With
`--pin` (two or more CPUs) hookgate and both nginx run on CPU 0 and wrk on CPU 1, which is less
noisy, but webhook is left unpinned there: Go's scheduler and one curl fork per call collapse to
a few hundred calls/s on one core, which would flatter every ratio against it. Work a target
leaves behind (queue mode's backlog, webhook's curl processes) is drained before the next
target runs, so it cannot slow the next measurement.
"""
import argparse, base64, hashlib, hmac, json, os, re, shutil, socket, statistics
import subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
SECRET, SENDER, JOB = "bench-port-secret", "bench-sender-token", "bench-job-token"
WEBHOOK_SECRET = "bench-webhook-secret"
UPSTREAM, CEILING, DIRECT, QUEUE, WEBHOOK = 19000, 19001, 19002, 19003, 19004
# Each gateway's admin listener (/metrics) is on its public port plus this, so the direct and
# queue gateways, which run side by side, do not both claim the default 9091.
ADMIN_OFFSET = 100
SECTIONS = ["side", "latency", "rules", "bodies", "connections"]
GWT_ANSWER = ('{"jobs":{"deploy":{"regexpFilterExpression":"","triggered":true,"resolvedVariables":{},'
              '"regexpFilterText":"","id":1,"url":"queue/item/1/"}},"message":"Triggered jobs."}')


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return time.time()
        except OSError:
            time.sleep(0.01)
    sys.exit(f"nothing listens on {port}")


def rss(pid, field="VmHWM"):
    """Peak (VmHWM) or current (VmRSS) resident memory in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak(pid):
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each point reports its own peak.
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="hookgate-bench-")
        self.procs = []

    def pinned(self, argv, cpu):
        return ["taskset", "-c", str(cpu)] + argv if self.args.pin else argv

    def spawn(self, argv, pin=True, **kw):
        p = subprocess.Popen(self.pinned(argv, 0) if pin else argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        self.procs.remove(p)

    def close(self):
        for p in list(self.procs):
            self.stop(p)
        shutil.rmtree(self.work, ignore_errors=True)

    # --- peers -------------------------------------------------------------------------------

    def nginx(self, name, server_block, workers):
        d = os.path.join(self.work, name)
        os.makedirs(os.path.join(d, "logs"), exist_ok=True)
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(f"""worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log crit;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_max_body_size 4m;
  client_body_buffer_size 4m;
  {server_block}
}}
""")
        return self.spawn(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")])

    def server_workers(self):
        return 1 if self.args.pin else 2

    def start_peers(self):
        # The upstream: answers exactly what GWT answers for one triggered job.
        self.nginx("upstream", f"""server {{ listen 127.0.0.1:{UPSTREAM};
    location / {{ default_type application/json; return 200 '{GWT_ANSWER}'; }} }}""", 1)
        # The ceiling: forwarding with no checks at all.
        self.nginx("ceiling", f"""upstream gwt {{ server 127.0.0.1:{UPSTREAM}; keepalive 256; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{CEILING};
    location / {{ proxy_pass http://gwt; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""",
                   self.server_workers())
        hooks = [{
            "id": "jenkins", "execute-command": "/usr/bin/curl", "http-methods": ["POST"],
            "success-http-response-code": 202, "response-message": "queued\n",
            "trigger-rule-mismatch-http-response-code": 403,
            "pass-arguments-to-command": [
                {"source": "string", "name": "-sS"}, {"source": "string", "name": "--max-time"},
                {"source": "string", "name": "10"}, {"source": "string", "name": "-o"},
                {"source": "string", "name": "/dev/null"}, {"source": "string", "name": "-H"},
                {"source": "string", "name": "Content-Type: application/json"},
                {"source": "string", "name": "--data-binary"}, {"source": "raw-request-body"},
                {"source": "string",
                 "name": f"http://127.0.0.1:{UPSTREAM}/generic-webhook-trigger/invoke?token={JOB}"}],
            "trigger-rule": {"and": [
                {"match": {"type": "ip-whitelist", "ip-range": "127.0.0.0/8"}},
                {"match": {"type": "payload-hmac-sha1", "secret": WEBHOOK_SECRET,
                           "parameter": {"source": "header", "name": "X-Hub-Signature"}}}]}}]
        path = os.path.join(self.work, "hooks.json")
        with open(path, "w") as f:
            json.dump(hooks, f)
        self.webhook = self.spawn(["webhook", "-hooks", path, "-ip", "127.0.0.1", "-port", str(WEBHOOK)],
                                  pin=False)
        for port in (UPSTREAM, CEILING, WEBHOOK):
            wait_port(port)

    def hookgate(self, name, port, mode, rules=1, max_body=4 * 1024 * 1024, wrap=None):
        d = os.path.join(self.work, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "rules"))
        with open(os.path.join(d, "hookgate.toml"), "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{port}"
max_body_bytes = {max_body}
rate_per_client = 0       # all load comes from one address
rate_per_rule = 0
workers = {self.server_workers()}
max_connections = 8192
[admin]
listen = "127.0.0.1:{port + ADMIN_OFFSET}"
[jenkins.main]
url = "http://127.0.0.1:{UPSTREAM}"
max_in_flight = 256
[delivery]
mode = "{mode}"
store = "{d}/store"
[log]
level = "warn"
""")
        # The full path: token, Port v1 HMAC-SHA256, three JSONPath variables, a filter.
        # wrk repeats one signed request, so replay rejection is off for the benchmark rule.
        for i in range(rules):
            token = SENDER if i == rules // 2 else f"other-{i}"
            with open(os.path.join(d, "rules", f"r{i:05}.toml"), "w") as f:
                f.write(f"""token = "{token}"
[verify]
scheme = "port"
secret = "{SECRET}"
reject_replays = false
[[variables]]
name = "ACTION"
jsonpath = "$.action"
[[variables]]
name = "RUN_ID"
jsonpath = "$.context.runId"
[[variables]]
name = "SERVICE"
jsonpath = "$.payload.properties.service"
[filter]
text = "$ACTION"
expression = "^deploy_service$"
[dispatch]
token = "{JOB}"
""")
        started = time.time()
        argv = [os.path.join(REL, "hookgate"), "serve", "--config", "hookgate.toml"]
        p = self.spawn((wrap or []) + argv, cwd=d)
        ready = wait_port(port, 120)
        return p, ready - started

    # --- load --------------------------------------------------------------------------------

    def body(self, size):
        base = json.load(open(os.path.join(ROOT, "examples", "payloads", "port-deploy.json")))
        text = json.dumps(base, separators=(",", ":"))
        pad = max(0, size - len(text) - len(',"pad":""'))
        base["pad"] = "x" * pad
        data = json.dumps(base, separators=(",", ":")).encode()
        path = os.path.join(self.work, f"body-{size}.json")
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    def wrk(self, port, body, headers, connections, seconds, path, pause_ms=0):
        script = os.path.join(self.work, f"req-{port}.lua")
        lines = ['wrk.method = "POST"', f'wrk.path = "{path}"']
        if pause_ms:
            # Each connection waits this long before each request: a near-fixed offered rate
            # (wrk2 is not packaged), so latency is measured below saturation.
            lines.append(f"function delay() return {pause_ms} end")
        lines.append(f"local f = io.open({json.dumps(body)}, 'rb'); wrk.body = f:read('*a'); f:close()")
        for k, v in headers.items():
            lines.append(f'wrk.headers[{json.dumps(k)}] = {json.dumps(v)}')
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        threads = 1 if connections < 64 or self.args.pin else 2
        out = subprocess.run(self.pinned(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                              "-s", script, f"http://127.0.0.1:{port}"], 1),
                             capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

        def pct(p):
            m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
            if not m:
                return float("nan")
            value, unit = float(m.group(1)), m.group(2)
            return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        return {"rps": rps, "p50": pct(50), "p99": pct(99),
                "non2xx": int(non2xx.group(1)) if non2xx else 0,
                "errors": errors.group(1) if errors else ""}

    def port_headers(self, data):
        ts = str(int(time.time()))
        mac = hmac.new(SECRET.encode(), ts.encode() + b"." + data, hashlib.sha256).digest()
        return {"Content-Type": "application/json", "X-Port-Timestamp": ts,
                "X-Port-Signature": "v1," + base64.b64encode(mac).decode()}

    def hook_headers(self, data):
        mac = hmac.new(WEBHOOK_SECRET.encode(), data, hashlib.sha1).hexdigest()
        return {"Content-Type": "application/json", "X-Hub-Signature": "sha1=" + mac}

    def drain(self, name):
        """Waits until the target has finished the work it accepted (at most 120 s)."""
        deadline = time.time() + 120
        while time.time() < deadline:
            if name == "queue":
                url = f"http://127.0.0.1:{QUEUE + ADMIN_OFFSET}/metrics"
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                m = re.search(r"^hookgate_queue_oldest_pending_age_seconds ([\d.e+-]+)", text, re.M)
                if m and float(m.group(1)) == 0:
                    return
            elif name == "webhook":
                children = subprocess.run(["pgrep", "-P", str(self.webhook.pid)],
                                          capture_output=True, text=True).stdout.split()
                if not children:
                    return
            else:
                return
            time.sleep(0.2)

    def target(self, name, body, data, connections, seconds, pause_ms=0):
        result = self.run_target(name, body, data, connections, seconds, pause_ms)
        self.drain(name)
        return result

    def run_target(self, name, body, data, connections, seconds, pause_ms=0):
        invoke = f"/generic-webhook-trigger/invoke?token={SENDER}"
        if name == "ceiling":
            return self.wrk(CEILING, body, {"Content-Type": "application/json"}, connections, seconds,
                            f"/generic-webhook-trigger/invoke?token={JOB}", pause_ms)
        if name == "webhook":
            return self.wrk(WEBHOOK, body, self.hook_headers(data), connections, seconds,
                            "/hooks/jenkins", pause_ms)
        port = DIRECT if name == "direct" else QUEUE
        return self.wrk(port, body, self.port_headers(data), connections, seconds, invoke, pause_ms)


def median_of(results, key):
    return statistics.median(r[key] for r in results)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one round of 2 s per point")
    ap.add_argument("--pin", action="store_true",
                    help="hookgate and nginx on CPU 0, wrk on CPU 1 (webhook stays unpinned)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated sections: " + ", ".join(SECTIONS))
    args = ap.parse_args()
    args.pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    only = set(args.only.split(","))
    if args.quick:
        args.rounds, args.seconds = 1, 2
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hookgate"], cwd=ROOT, check=True)
    b = Bench(args)
    try:
        print(f"# {os.cpu_count()} CPUs; " + ("hookgate and nginx pinned to CPU 0, wrk to CPU 1"
                                              if args.pin else "every process shares every CPU"))
        b.start_peers()
        body, data = b.body(2048)
        names = ["ceiling", "direct", "queue", "webhook"]
        if only & {"side", "latency"}:
            direct, _ = b.hookgate("direct", DIRECT, "direct")
            queue, _ = b.hookgate("queue", QUEUE, "queue")
            for n in names:  # warm-up
                b.target(n, body, data, 32, 1)
        if "side" in only:
            print(f"# side by side: ~2 KB Port payload ({len(data)} B), wrk 32 connections, "
                  f"median of {args.rounds} x {args.seconds} s")
            results = {n: [] for n in names}
            for _ in range(args.rounds):
                for n in names:  # interleaved, so every target sees the same machine noise
                    results[n].append(b.target(n, body, data, 32, args.seconds))
            rps = {n: median_of(results[n], "rps") for n in names}
            for n in names:
                r = results[n][-1]
                rounds = ", ".join(f"{x['rps']:.0f}" for x in results[n])
                print(f"{n:8} {rps[n]:10.0f} req/s   p50 {median_of(results[n], 'p50'):.2f} ms  "
                      f"p99 {median_of(results[n], 'p99'):.2f} ms  non-2xx {r['non2xx']}  {r['errors']}"
                      f"  (rounds: {rounds})")
            print(f"ratios: direct/ceiling {rps['direct']/rps['ceiling']:.2f}x, "
                  f"queue/ceiling {rps['queue']/rps['ceiling']:.2f}x, "
                  f"direct/webhook {rps['direct']/rps['webhook']:.1f}x, "
                  f"queue/webhook {rps['queue']/rps['webhook']:.1f}x")
        if "latency" in only:
            print(f"# latency at a moderate rate: 10 connections, each pausing 10 ms between calls "
                  f"(at most 1,000 req/s), median of {args.rounds} x {args.seconds} s")
            lat = {n: [] for n in names}
            for _ in range(args.rounds):
                for n in names:
                    lat[n].append(b.target(n, body, data, 10, args.seconds, pause_ms=10))
            for n in names:
                print(f"{n:8} p50 {median_of(lat[n], 'p50'):.3f} ms  p99 {median_of(lat[n], 'p99'):.3f} ms  "
                      f"({median_of(lat[n], 'rps'):.0f} req/s)")
            print(f"p99 ratios: direct/webhook "
                  f"{median_of(lat['direct'], 'p99') / median_of(lat['webhook'], 'p99'):.2f}x, "
                  f"queue/webhook {median_of(lat['queue'], 'p99') / median_of(lat['webhook'], 'p99'):.2f}x")
        if only & {"side", "latency"}:
            b.stop(direct)
            b.stop(queue)

        if "rules" in only:
            print("# scaling: rules loaded (direct mode), start-up time and throughput")
            base = None
            for n in [1, 100, 10_000]:
                p, startup = b.hookgate(f"rules-{n}", DIRECT, "direct", rules=n)
                b.target("direct", body, data, 32, 1)
                reset_peak(p.pid)
                r = [b.target("direct", body, data, 32, args.seconds) for _ in range(args.rounds)]
                value = median_of(r, "rps")
                base = base or value
                print(f"{n:6} rules: start-up {startup*1000:.0f} ms, {value:.0f} req/s "
                      f"({value/base:.2f}x of 1 rule), peak RSS {rss(p.pid):.1f} MiB")
                b.stop(p)

        if "bodies" in only:
            p, _ = b.hookgate("bodies", DIRECT, "direct")
            print("# scaling: body size (direct mode; MB/s verified and forwarded)")
            for size in [1024, 64 * 1024, 1024 * 1024]:
                body_n, data_n = b.body(size)
                reset_peak(p.pid)
                conns = 32 if size < 1024 * 1024 else 8
                r, c = [], []
                for _ in range(args.rounds):
                    r.append(b.target("direct", body_n, data_n, conns, args.seconds))
                    c.append(b.target("ceiling", body_n, data_n, conns, args.seconds))
                value, ceil = median_of(r, "rps"), median_of(c, "rps")
                print(f"{size:8} B: {value:.0f} req/s = {value*len(data_n)/1e6:.0f} MB/s "
                      f"(ceiling {ceil*len(data_n)/1e6:.0f} MB/s, ratio {value/ceil:.2f}x), "
                      f"peak RSS {rss(p.pid):.1f} MiB")

            b.stop(p)

        if "connections" in only:
            print("# scaling: concurrent connections (direct mode, ~2 KB payload)")
            for conns in [16, 256, 2000]:
                # A fresh gateway per point: the allocator keeps freed memory for reuse, so a
                # peak from an earlier point would show through.
                p, _ = b.hookgate(f"connections-{conns}", DIRECT, "direct")
                b.target("direct", body, data, conns, 1)
                r = [b.target("direct", body, data, conns, args.seconds) for _ in range(args.rounds)]
                value = median_of(r, "rps")
                print(f"{conns:5} connections: {value:.0f} req/s, p99 {median_of(r, 'p99'):.2f} ms, "
                      f"peak RSS {rss(p.pid):.1f} MiB")
                b.stop(p)
    finally:
        b.close()


if __name__ == "__main__":
    main()

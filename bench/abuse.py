#!/usr/bin/env python3
"""Memory while holding 2000 idle connections, and responsiveness during a 10 s flood of bad
signatures, measured on release builds. Figures are ratios against a baseline taken in the
same run.

    python3 bench/abuse.py [--idle 2000] [--flood-secs 10] [--flood-connections 64]
"""
import argparse, base64, hashlib, hmac, http.client, json, os, socket, statistics
import subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET, SENDER, JOB = "abuse-port-secret", "abuse-sender-token", "abuse-job-token"

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")

def signed(body, secret=SECRET):
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).digest()
    return {"Content-Type": "application/json", "X-Port-Timestamp": ts,
            "X-Port-Signature": "v1," + base64.b64encode(mac).decode()}

def good_call(port, payload, n):
    body = payload.replace(b"{{RUN_ID}}", f"r_good_{n}".encode())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start = time.perf_counter()
    conn.request("POST", f"/generic-webhook-trigger/invoke?token={SENDER}", body, signed(body))
    status = conn.getresponse().status
    conn.close()
    return status, (time.perf_counter() - start) * 1000

def probe(port, payload, seconds, tag):
    latencies, statuses, n = [], {}, 0
    end = time.time() + seconds
    while time.time() < end:
        n += 1
        status, ms = good_call(port, payload, f"{tag}_{n}")
        latencies.append(ms)
        statuses[status] = statuses.get(status, 0) + 1
        time.sleep(0.05)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, statuses

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--flood-secs", type=float, default=10)
    ap.add_argument("--flood-connections", type=int, default=64)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hookgate",
                    "--example", "fake_jenkins", "--example", "loadgen"], cwd=ROOT, check=True)
    rel = os.path.join(ROOT, "target", "release")
    work = tempfile.mkdtemp()
    procs = []
    try:
        procs.append(subprocess.Popen([f"{rel}/examples/fake_jenkins", "--listen", "127.0.0.1:18091",
                                       "--job", f"{JOB}=abuse", "--quiet"], stdout=subprocess.DEVNULL))
        os.makedirs(f"{work}/rules")
        with open(f"{work}/hookgate.toml", "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:18092"
rate_per_client = 0   # measure the signature path itself, not the cheaper 429
rate_per_rule = 0
[admin]
listen = "127.0.0.1:18093"
[jenkins.main]
url = "http://127.0.0.1:18091"
[delivery]
mode = "queue"
store = "{work}/store"
[log]
level = "warn"
""")
        with open(f"{work}/rules/port.toml", "w") as f:
            f.write('token_env = "A_SENDER"\n[verify]\nscheme = "port"\nsecret_env = "A_SECRET"\n'
                    '[[variables]]\nname = "RUN_ID"\njsonpath = "$.context.runId"\n'
                    '[dispatch]\ntoken_env = "A_JOB"\n')
        env = dict(os.environ, A_SENDER=SENDER, A_SECRET=SECRET, A_JOB=JOB)
        gw = subprocess.Popen([f"{rel}/hookgate", "serve", "--config", "hookgate.toml"], cwd=work,
                              env=env, stderr=open(f"{work}/log", "w"))
        procs.append(gw)
        wait_port(18092)
        payload = open(f"{ROOT}/examples/payloads/port-deploy.json", "rb").read().replace(
            b"r_QOz6WoOB1Q2lmhZZ", b"{{RUN_ID}}")
        with open(f"{work}/payload.json", "wb") as f:
            f.write(payload)
        for i in range(50):
            good_call(18092, payload, f"warm_{i}")
        time.sleep(0.5)

        # 1. Idle connections.
        rss_before = rss_kib(gw.pid)
        idle = [socket.create_connection(("127.0.0.1", 18092)) for _ in range(args.idle)]
        time.sleep(1.0)
        rss_idle = rss_kib(gw.pid)
        status, ms = good_call(18092, payload, "with_idle")
        for s in idle:
            s.close()
        print(f"idle connections: {args.idle}; RSS {rss_before/1024:.1f} MiB before, "
              f"{rss_idle/1024:.1f} MiB holding them ({(rss_idle-rss_before)/args.idle:.1f} KiB each); "
              f"a signed call meanwhile: {status} in {ms:.1f} ms")

        # 2. Flood of bad signatures, with a signed call every 50 ms alongside.
        base_p50, base_p99, _ = probe(18092, payload, 3, "base")
        flood = subprocess.Popen([f"{rel}/examples/loadgen", "--label", "flood",
                                  "--url", f"http://127.0.0.1:18092/generic-webhook-trigger/invoke?token={SENDER}",
                                  "--secret", "not-the-secret", "--payload", f"{work}/payload.json",
                                  "--connections", str(args.flood_connections),
                                  "--seconds", str(args.flood_secs)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        p50, p99, statuses = probe(18092, payload, args.flood_secs - 1, "flood")
        flood_result = json.loads(flood.communicate()[0])
        rss_flood = rss_kib(gw.pid)
        print(f"flood: {flood_result['rps']} bad-signature req/s for {args.flood_secs:.0f} s "
              f"(statuses {flood_result['statuses']}); RSS after {rss_flood/1024:.1f} MiB")
        print(f"signed calls during the flood: {statuses}, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
              f"before it p50 {base_p50:.1f} ms, p99 {base_p99:.1f} ms "
              f"(p50 ratio {p50/base_p50:.1f}x)")
        alive = good_call(18092, payload, "after")[0]
        print(f"after the flood: a signed call answers {alive}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()

if __name__ == "__main__":
    main()

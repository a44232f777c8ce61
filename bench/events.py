#!/usr/bin/env python3
"""Benchmarks for issue 12: the build events endpoint beside the trigger path, and the trigger path
before and after the outbox refactor, each figure beside a reference measured in the same run.
Nothing is asserted: these 2-core machines are noisy, so read the ratios.

    python3 bench/events.py                       # everything; builds d04cb43 once in /tmp
    python3 bench/events.py --only refactor --before-bin /path/to/old/target/release/hookgate
    python3 bench/events.py --only latency,saturation --rounds 5

Sections (`--only`, comma-separated):
- latency:    `POST /jenkins/main/events` at a fixed rate (`--rate`, by default 250 then 1000 calls/s;
              open loop as wrk2 does, latency counted from when each call was due) beside the
              queue-mode trigger path (signed Port calls, each with its own run id) at the same
              rate, on the same gateway, rounds interleaved. Target: events p99 <= 1.2x trigger p99
              (both wait for one fsync).
- saturation: events accepted durably per second at 32 connections (wrk, every event a new build,
              so none is a cheaper duplicate) beside the queue-mode trigger path's calls/s, with
              the gateway's CPU per call (accept and deliveries) by thread group.
- refactor:   direct and queue mode calls/s of the build before the outbox refactor (`--before-rev`,
              default d04cb43) and of this checkout, one config for both, rounds A B B A ...
              Target: within 5%.

The events gateway runs in queue mode with the Port rule of bench/run.py, the Jenkins target's
events token, and three sinks (allstacks, alert, forward); all of them, and Jenkins, point at one
nginx that answers 200 at once for every path. The event is
examples/payloads/jenkins-freestyle-finalized.json, which every sink matches: each event is stored
with three deliveries and its build's facts. Latency and saturation also run `events0`: the same
event from a second Jenkins target that no sink takes, stored with its facts but no delivery,
which splits the events figure into the accept and the three deliveries the worker makes (and
commits) meanwhile. Each sink keeps the product's max_in_flight (8) unless `--sink-max-in-flight`
says otherwise; the Jenkins target has 256, as in bench/run.py. Work a target leaves behind (the
queue's backlog) is drained before the next one runs.

Needs nginx and wrk (installed with apt-get when missing, as bench/run.sh does); builds this
checkout's release binaries (hookgate, loadgen) and, for `refactor`, the old one in a detached
worktree (`--before-dir`, kept for the next run; `git worktree remove DIR` when done).
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ADMIN_OFFSET, GWT_ANSWER, JOB, ROOT, SECRET, SENDER, Bench, wait_port  # noqa: E402

REL = os.path.join(ROOT, "target", "release")
EVENTS_TOKEN = "bench-events-token"
# The sinks' credentials: the gateway reads them from its environment, as a real one would.
SINK_ENV = {"BENCH_EVENTS_TOKEN": EVENTS_TOKEN, "BENCH_ALLSTACKS_TOKEN": "bench-allstacks-pat",
            "BENCH_ITOC360_TOKEN": "bench-itoc360-token"}
# Ports apart from bench/run.py's 19000-19004, so the two suites cannot collide.
UPSTREAM, EVENTS_GW = 19010, 19011
OLD_DIRECT, NEW_DIRECT, OLD_QUEUE, NEW_QUEUE = 19012, 19013, 19014, 19015
SECTIONS = ["latency", "saturation", "refactor"]
LABELS = ["events", "events0", "trigger"]
EVENT_SAMPLE = "jenkins-freestyle-finalized.json"
# `events` reach all three sinks; `events0` come from a Jenkins target no sink takes, so they cost
# the accept alone (a diagnostic: how much of the events figure is the three deliveries).
EVENT_PATHS = {"events": f"/jenkins/main/events?token={EVENTS_TOKEN}",
               "events0": f"/jenkins/quiet/events?token={EVENTS_TOKEN}"}


def sh(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout.strip()


def ensure_tools():
    missing = [t for t in ("nginx", "wrk") if not (shutil.which(t) or os.access(f"/usr/sbin/{t}", os.X_OK))]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    os.environ["PATH"] += ":/usr/sbin"


def build_before(rev, directory):
    """The hookgate binary of `rev`, from a detached worktree at `directory` (built once)."""
    binary = os.path.join(directory, "target", "release", "hookgate")
    if not os.path.isdir(directory):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", directory, rev], check=True)
    at = sh(["git", "-C", directory, "rev-parse", "HEAD"])
    if at != sh(["git", "-C", ROOT, "rev-parse", rev]):
        sys.exit(f"{directory} is at {at[:10]}, not {rev}: remove it or pass another --before-dir")
    print(f"# building {rev} in {directory} (release, fat LTO: minutes)", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hookgate"], cwd=directory, check=True)
    return binary


def fsyncs_per_second(directory, seconds=2.0):
    """How many write + fsync of 100 bytes the store's disk does per second, alone."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    n, end = 0, time.time() + seconds
    while time.time() < end:
        os.write(fd, b"x" * 100)
        os.fsync(fd)
        n += 1
    os.close(fd)
    os.unlink(path)
    return n / seconds


def thread_cpu(pid):
    """CPU seconds the process has used so far: in all (exited threads included) and by each live
    thread's name."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(stat):
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / tick
    with open(f"/proc/{pid}/stat") as f:
        used = {"": seconds(f.read())}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        used[name] = used.get(name, 0.0) + seconds(stat)
    return used


def cpu_split(before, after, calls):
    """Microseconds of gateway CPU per call between two `thread_cpu` readings: the store's writer
    thread, the actix threads (HTTP workers and the outbox worker, which share names), and the
    rest, which is the blocking pool's store reads (its threads come and go, so it is what the
    process used beyond the long-lived threads)."""
    def delta(name):
        return after.get(name, 0.0) - before.get(name, 0.0)
    writer = delta("hookgate-store")
    actix = sum(delta(n) for n in set(before) | set(after) if n.startswith("actix") or n == "hookgate")
    split = {"writer": writer, "http+worker": actix, "reads": delta("") - writer - actix}
    return {g: v * 1e6 / max(calls, 1) for g, v in split.items()}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


class Suite(Bench):
    def __init__(self, args):
        super().__init__(args)
        self.seq = 0  # each load run numbers its events from its own range: none repeats

    def next_seq_base(self):
        self.seq += 100_000_000
        return self.seq

    def gateway(self, name, binary, port, mode, events=False, sink_cap=None):
        """A gateway with bench/run.py's config and Port rule; `events` adds the events token and
        three sinks (keys the build before the refactor does not know)."""
        d = os.path.join(self.work, name)
        os.makedirs(os.path.join(d, "rules"))
        extra = ""
        cap = f"max_in_flight = {sink_cap}\n" if sink_cap else ""
        if events:
            # `quiet` posts events that no sink takes: the accept alone, without the deliveries.
            extra = f"""events_token_env = "BENCH_EVENTS_TOKEN"
[jenkins.quiet]
url = "http://127.0.0.1:{UPSTREAM}"
events_token_env = "BENCH_EVENTS_TOKEN"
[sinks.dora]
kind = "allstacks"
url = "http://127.0.0.1:{UPSTREAM}/webhook/company/1234/cicd_job"
token_env = "BENCH_ALLSTACKS_TOKEN"
service_id = 42
match.jenkins = ["main"]
{cap}[sinks.oncall]
kind = "alert"
url = "http://127.0.0.1:{UPSTREAM}/functions/v1/events"
token_env = "BENCH_ITOC360_TOKEN"
match.jenkins = ["main"]
{cap}[sinks.relay]
kind = "forward"
url = "http://127.0.0.1:{UPSTREAM}/forward"
match.jenkins = ["main"]
{cap}"""
        with open(os.path.join(d, "hookgate.toml"), "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{port}"
max_body_bytes = {4 * 1024 * 1024}
rate_per_client = 0       # all load comes from one address
rate_per_rule = 0
workers = {self.server_workers()}
max_connections = 8192
[admin]
listen = "127.0.0.1:{port + ADMIN_OFFSET}"
[delivery]
mode = "{mode}"
store = "{d}/store"
max_store_bytes = 0       # a run stores a few GB: the default 1 GiB cap would answer 503
[log]
level = "warn"
[jenkins.main]
url = "http://127.0.0.1:{UPSTREAM}"
max_in_flight = 256
{extra}""")
        # wrk repeats one signed request, so replay rejection is off, as in bench/run.py.
        with open(os.path.join(d, "rules", "port.toml"), "w") as f:
            f.write(f"""token = "{SENDER}"
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
        check = subprocess.run([binary, "check", "--config", "hookgate.toml"], cwd=d, capture_output=True,
                               text=True, env={**os.environ, **SINK_ENV})
        if check.returncode != 0:
            sys.exit(f"{name}: hookgate check failed:\n{check.stdout}{check.stderr}")
        p = self.spawn([binary, "serve", "--config", "hookgate.toml"], cwd=d, env={**os.environ, **SINK_ENV})
        wait_port(port, 120)
        return p

    # --- load ---------------------------------------------------------------------------------

    def templates(self):
        """The Port sample with a run id per call, and the Notification sample with a build number
        per call (build.number, build.url, build.full_url and queue_id)."""
        port = open(os.path.join(ROOT, "examples", "payloads", "port-deploy.json")).read()
        port = port.replace("r_QOz6WoOB1Q2lmhZZ", "{{RUN_ID}}")
        event = json.load(open(os.path.join(ROOT, "examples", "payloads", EVENT_SAMPLE)))
        if self.args.job_per_event:
            # Each event a build of its own job: no two deliveries share a per-job ordering key.
            event["name"] = event["display_name"] = "payments-deploy-1234567"
            event["url"] = "job/payments-deploy-1234567/"
        build = event["build"]
        build["number"] = 1234567
        build["queue_id"] = 1234567
        build["url"] = f"{event['url']}1234567/"
        build["full_url"] = f"https://jenkins.example.com/{event['url']}1234567/"
        text = json.dumps(event, separators=(",", ":")).replace("1234567", "{{SEQ}}")
        paths = {}
        for name, data in (("port", port), ("event", text)):
            paths[name] = os.path.join(self.work, f"{name}.template.json")
            with open(paths[name], "w") as f:
                f.write(data)
        self.port_template, self.event_template = paths["port"], paths["event"]
        return port, text

    def loadgen(self, label, port, rate, seconds, connections=10):
        if label.startswith("events"):
            url = f"http://127.0.0.1:{port}{EVENT_PATHS[label]}"
            extra = ["--payload", self.event_template]
        else:
            url = f"http://127.0.0.1:{port}/generic-webhook-trigger/invoke?token={SENDER}"
            extra = ["--payload", self.port_template, "--secret", SECRET]
        out = sh(self.pinned([os.path.join(REL, "examples", "loadgen"), "--label", label, "--url", url,
                              "--connections", str(connections), "--seconds", str(seconds), "--rate", str(rate),
                              "--seq-base", str(self.next_seq_base())] + extra, 1))
        return json.loads(out)

    def wrk_run(self, label, port, seconds, connections=32, small=False):
        """Closed loop: the Port call as one signed request repeated (bench/run.py's `side`), or
        events each numbered by a Lua request() so that every one is a new build."""
        script = os.path.join(self.work, f"{label}-{port}.lua")
        if label.startswith("events"):
            path = EVENT_PATHS[label]
            lua = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open({json.dumps(self.event_template)}, "rb"); local template = f:read("*a"); f:close()
local threads, base, counter = 0, {self.next_seq_base()}, 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) counter = 0 end
function request()
  counter = counter + 1
  local seq = string.format("%d", base + tid * 10000000 + counter)
  return wrk.format(nil, {json.dumps(path)}, nil, (template:gsub("{{{{SEQ}}}}", seq)))
end
"""
        else:
            path = f"/generic-webhook-trigger/invoke?token={SENDER}"
            body, data = (self.static_small_path, self.static_small) if small else (self.static_port_path, self.static_port)
            lines = ['wrk.method = "POST"', f'wrk.path = "{path}"',
                     f"local f = io.open({json.dumps(body)}, 'rb'); wrk.body = f:read('*a'); f:close()"]
            for k, v in self.port_headers(data).items():
                lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
            lua = "\n".join(lines) + "\n"
        with open(script, "w") as f:
            f.write(lua)
        out = sh(self.pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script,
                              f"http://127.0.0.1:{port}"], 1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        requests = int(re.search(r"(\d+) requests in", out).group(1))

        def pct(p):
            m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
            value, unit = float(m.group(1)), m.group(2)
            return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        return {"label": label, "rps": rps, "requests": requests, "p50_ms": pct(50), "p99_ms": pct(99),
                "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else ""}

    def metrics(self, port):
        return urllib.request.urlopen(f"http://127.0.0.1:{port + ADMIN_OFFSET}/metrics", timeout=5).read().decode()

    def drain(self, port, timeout=300):
        """Waits until the gateway's queue has no pending delivery; returns the seconds waited."""
        start = time.time()
        while time.time() - start < timeout:
            m = re.search(r"^hookgate_queue_oldest_pending_age_seconds ([\d.e+-]+)", self.metrics(port), re.M)
            if m and float(m.group(1)) == 0:
                return time.time() - start
            time.sleep(0.2)
        sys.exit(f"the queue on {port} did not drain in {timeout} s")

    def outcomes(self, port):
        """Deliveries by state and sink deliveries by outcome, from /metrics."""
        text = self.metrics(port)
        states = dict(re.findall(r'^hookgate_queue_deliveries\{state="(\w+)"\} ([\d.e+]+)', text, re.M))
        sinks = re.findall(r'^hookgate_sink_deliveries_total\{([^}]*)\} ([\d.e+]+)', text, re.M)
        events = re.findall(r'^hookgate_events_total\{([^}]*)\} ([\d.e+]+)', text, re.M)
        return states, sinks, events


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5, help="seconds per saturation and refactor round")
    ap.add_argument("--latency-seconds", type=int, default=10, help="seconds per fixed-rate round")
    ap.add_argument("--rate", default="250,1000",
                    help="calls/s of the fixed-rate rounds; a comma-separated list runs each in turn")
    ap.add_argument("--before-rev", default="d04cb43", help="the build before the outbox refactor")
    ap.add_argument("--before-dir", default=None,
                    help="worktree for --before-rev (default: $TMPDIR/hookgate-before-<rev>)")
    ap.add_argument("--before-bin", default=None, help="an already built hookgate of the old build")
    ap.add_argument("--sink-max-in-flight", type=int, default=None,
                    help="each sink's max_in_flight (default: the product's, 8; the Jenkins target has 256)")
    ap.add_argument("--job-per-event", action="store_true",
                    help="each event a build of its own job (default: every build of the sample's one job)")
    ap.add_argument("--pin", action="store_true", help="gateways and nginx on CPU 0, wrk and loadgen on CPU 1")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    args = ap.parse_args()
    args.pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    only = set(args.only.split(","))
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hookgate", "--example", "loadgen"],
                   cwd=ROOT, check=True)
    new_bin = os.path.join(REL, "hookgate")
    old_bin = None
    if "refactor" in only:
        old_bin = args.before_bin or build_before(
            args.before_rev, args.before_dir or os.path.join(tempfile.gettempdir(), f"hookgate-before-{args.before_rev}"))
    s = Suite(args)
    try:
        head = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
        dirty = " (with uncommitted changes)" if sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]) else ""
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}, this checkout {head}{dirty}; {os.cpu_count()} x {cpu}; "
              + ("gateways and nginx on CPU 0, load on CPU 1" if args.pin else "every process shares every CPU"))
        print(f"# the store's disk: {fsyncs_per_second(s.work):.0f} fsync/s (write + fsync of 100 B, alone)")
        s.nginx("upstream", f"""server {{ listen 127.0.0.1:{UPSTREAM};
    location / {{ default_type application/json; return 200 '{GWT_ANSWER}'; }} }}""", 1)
        wait_port(UPSTREAM)
        port_text, event_text = s.templates()
        s.static_port_path, s.static_port = s.body(2048)  # bench/run.py's side-by-side body
        s.static_small = port_text.replace("{{RUN_ID}}", "r_QOz6WoOB1Q2lmhZZ").encode()
        s.static_small_path = os.path.join(s.work, "port-small.json")
        with open(s.static_small_path, "wb") as f:
            f.write(s.static_small)

        if only & {"latency", "saturation"}:
            gw = s.gateway("events", new_bin, EVENTS_GW, "queue", events=True, sink_cap=args.sink_max_in_flight)
            print(f"# events gateway: queue mode; Jenkins max_in_flight 256, each sink's "
                  f"{args.sink_max_in_flight or '8 (the default)'}; events are builds of "
                  + ("a job of their own each" if args.job_per_event else "one job"))
            # Warm-up, and a check that every sink gets its delivery.
            s.loadgen("events", EVENTS_GW, 200, 1)
            s.loadgen("trigger", EVENTS_GW, 200, 1)
            s.drain(EVENTS_GW)
            states, sinks, _ = s.outcomes(EVENTS_GW)
            print(f"# warm-up: deliveries by state {states}; sink deliveries {sinks}")

        rates = [float(x) for x in args.rate.split(",")] if "latency" in only else []
        for rate in rates:
            print(f"# fixed rate: {rate:.0f} calls/s over 10 connections (open loop, latency from when each "
                  f"call was due), {args.rounds} x {args.latency_seconds} s each, in turn; event "
                  f"{len(event_text.replace('{{SEQ}}', '1234567'))} B (events: 3 sinks; events0: none), "
                  f"Port call {len(s.static_small)} B signed with its own run id")
            lat = {label: [] for label in LABELS}
            for r in range(args.rounds):
                for label in LABELS[r % 3:] + LABELS[:r % 3]:  # each label first in turn
                    row = s.loadgen(label, EVENTS_GW, rate, args.latency_seconds)
                    row["drain_s"] = s.drain(EVENTS_GW)
                    lat[label].append(row)
                    print(f"  round {r + 1} {label:8} {row['rps']:6.0f}/s  p50 {row['p50_ms']:.3f}  p90 {row['p90_ms']:.3f}  "
                          f"p99 {row['p99_ms']:.3f}  p99.9 {row['p999_ms']:.3f}  max {row['max_ms']:.1f} ms  "
                          f"{row['statuses']}  backlog drained in {row['drain_s']:.1f} s", flush=True)
            for label in LABELS:
                rows = lat[label]
                p99s = ", ".join(f"{x['p99_ms']:.2f}" for x in rows)
                print(f"{label:8} p50 {median(rows, 'p50_ms'):.3f} ms  p99 {median(rows, 'p99_ms'):.3f} ms  "
                      f"(rounds' p99: {p99s})")
            for label in ("events", "events0"):
                ratios = ", ".join(f"{e['p99_ms'] / t['p99_ms']:.2f}" for e, t in zip(lat[label], lat["trigger"]))
                print(f"{label}/trigger: p50 {median(lat[label], 'p50_ms') / median(lat['trigger'], 'p50_ms'):.2f}x, "
                      f"p99 {median(lat[label], 'p99_ms') / median(lat['trigger'], 'p99_ms'):.2f}x of the medians "
                      f"(per round: {ratios}; target for events <= 1.2x)")

        if "saturation" in only:
            print(f"# saturation: wrk 32 connections, {args.rounds} x {args.seconds} s each, in turn; every event a "
                  f"new build; the Port call ({len(s.static_small)} B) repeated, replay rejection off; the backlog "
                  f"drained after each")
            sat = {label: [] for label in LABELS}
            for r in range(args.rounds):
                for label in LABELS[r % 3:] + LABELS[:r % 3]:
                    cpu = thread_cpu(gw.pid)
                    row = s.wrk_run(label, EVENTS_GW, args.seconds, small=True)
                    row["drain_s"] = s.drain(EVENTS_GW)
                    # The CPU of the accepts and of the deliveries they queued (drained by now).
                    row["cpu"] = cpu_split(cpu, thread_cpu(gw.pid), row["requests"])
                    sat[label].append(row)
                    split = "  ".join(f"{g} {v:.0f}" for g, v in sorted(row["cpu"].items()))
                    print(f"  round {r + 1} {label:8} {row['rps']:8.0f}/s  p50 {row['p50_ms']:.2f}  p99 {row['p99_ms']:.2f} ms"
                          f"  non-2xx {row['non2xx']} {row['errors']}  backlog drained in {row['drain_s']:.1f} s"
                          f"  CPU us/call: {split}", flush=True)
            t = median(sat["trigger"], "rps")
            for label, what in (("events", "accepted/s, 3 sink deliveries each"), ("events0", "accepted/s, no sink"),
                                ("trigger", "calls/s")):
                rounds = ", ".join(f"{x['rps']:.0f}" for x in sat[label])
                groups = sorted({g for x in sat[label] for g in x["cpu"]})
                split = ", ".join(f"{g} {statistics.median(x['cpu'].get(g, 0) for x in sat[label]):.0f}" for g in groups)
                # What the gateway sustains with every delivery made: accepted calls over the round
                # and the drain of its backlog.
                through = statistics.median(x["requests"] / (args.seconds + x["drain_s"]) for x in sat[label])
                print(f"{label:8} {median(sat[label], 'rps'):8.0f} {what}; {median(sat[label], 'rps') / t:.2f}x trigger; "
                      f"p99 {median(sat[label], 'p99_ms'):.2f} ms; backlog drained in "
                      f"{median(sat[label], 'drain_s'):.1f} s, so {through:.0f}/s with every delivery made "
                      f"(rounds: {rounds}); gateway CPU per call, accept and deliveries, us: {split}")

        if only & {"latency", "saturation"}:
            states, sinks, events = s.outcomes(EVENTS_GW)
            print(f"# after: deliveries by state {states}")
            print(f"# sink deliveries {sinks}")
            print(f"# events {events}")
            s.stop(gw)

        if "refactor" in only:
            old = sh([old_bin, "--version"])
            print(f"# the refactor: {old} at {old_bin} against this checkout's; bench/run.py's config and rule, "
                  f"2 KB Port call, wrk 32 connections, {args.rounds} x {args.seconds} s, order A B B A per round")
            gws = {OLD_DIRECT: s.gateway("old-direct", old_bin, OLD_DIRECT, "direct"),
                   NEW_DIRECT: s.gateway("new-direct", new_bin, NEW_DIRECT, "direct"),
                   OLD_QUEUE: s.gateway("old-queue", old_bin, OLD_QUEUE, "queue"),
                   NEW_QUEUE: s.gateway("new-queue", new_bin, NEW_QUEUE, "queue")}
            ports = {("before", "direct"): OLD_DIRECT, ("after", "direct"): NEW_DIRECT,
                     ("before", "queue"): OLD_QUEUE, ("after", "queue"): NEW_QUEUE}
            for port in ports.values():  # warm-up
                s.wrk_run("trigger", port, 1)
                s.drain(port)
            res = {k: [] for k in ports}
            for r in range(args.rounds):
                for mode in ("direct", "queue"):
                    for build in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
                        port = ports[(build, mode)]
                        cpu = thread_cpu(gws[port].pid)
                        row = s.wrk_run("trigger", port, args.seconds)
                        if mode == "queue":
                            row["drain_s"] = s.drain(port)
                        # The old build reads the store on its async threads: its "reads" are in
                        # http+worker, so the totals are what compare.
                        row["split"] = cpu_split(cpu, thread_cpu(gws[port].pid), row["requests"])
                        row["cpu"] = sum(row["split"].values())
                        res[(build, mode)].append(row)
                        print(f"  round {r + 1} {mode:6} {build:6} {row['rps']:8.0f}/s  p50 {row['p50_ms']:.2f}  "
                              f"p99 {row['p99_ms']:.2f} ms  non-2xx {row['non2xx']} {row['errors']}  "
                              f"gateway CPU {row['cpu']:.0f} us/call", flush=True)
            for mode in ("direct", "queue"):
                b, a = median(res[("before", mode)], "rps"), median(res[("after", mode)], "rps")
                per_round = [x["rps"] / y["rps"] for x, y in zip(res[("after", mode)], res[("before", mode)])]
                print(f"{mode:6} before {b:8.0f}/s  after {a:8.0f}/s  after/before {a / b:.3f}x  "
                      f"(per round: {', '.join(f'{x:.2f}' for x in per_round)}; target >= 0.95x)  "
                      f"p99 {median(res[('before', mode)], 'p99_ms'):.2f} / {median(res[('after', mode)], 'p99_ms'):.2f} ms  "
                      f"gateway CPU {median(res[('before', mode)], 'cpu'):.0f} / {median(res[('after', mode)], 'cpu'):.0f} us/call")
                for build in ("before", "after"):
                    rows = res[(build, mode)]
                    split = ", ".join(f"{g} {statistics.median(x['split'][g] for x in rows):.0f}"
                                      for g in ("http+worker", "reads", "writer"))
                    print(f"       {build:6} CPU us/call by thread: {split}")
            for p in gws.values():
                s.stop(p)
    finally:
        s.close()


if __name__ == "__main__":
    main()

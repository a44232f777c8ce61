#!/usr/bin/env python3
"""Profiles one hookgate mode under wrk load and prints where the time goes, with the same
peers, rule and payload as bench/run.py.

    python3 bench/profile.py [--mode direct|queue] [--tool perf|callgrind] [--seconds 10]

`perf` (Debian's linux-perf) samples the software clock with call graphs and prints the hottest
symbols. `callgrind` runs hookgate under valgrind, zeroes the counters after a warm-up, and
divides the instructions executed during the load by the requests answered: instructions per
request, which is repeatable on a noisy machine, and the functions that spend them (inclusive).
Builds `--profile profiling` (release with line tables); reports go to target/profile/.
"""
import argparse, os, re, subprocess, sys, threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="direct", choices=["direct", "queue"])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tool", default="perf", choices=["perf", "callgrind"])
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--profile", "profiling", "--quiet", "--bin", "hookgate"],
                   cwd=run.ROOT, check=True)
    run.REL = os.path.join(run.ROOT, "target", "profiling")
    opts = argparse.Namespace(pin=False, rounds=1, seconds=args.seconds)
    b = run.Bench(opts)
    out = os.path.join(run.ROOT, "target", "profile")
    os.makedirs(out, exist_ok=True)
    data_file = os.path.join(out, f"{args.mode}.data")
    try:
        b.start_peers()
        port = run.DIRECT if args.mode == "direct" else run.QUEUE
        out_file = os.path.join(out, f"{args.mode}.callgrind")
        wrap = None
        if args.tool == "callgrind":
            wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
        p, _ = b.hookgate(args.mode, port, args.mode, wrap=wrap)
        body, data = b.body(args.size)
        b.target(args.mode, body, data, args.connections, 2)  # warm-up
        if args.tool == "callgrind":
            return callgrind(b, p, args, body, data, out_file)
        result = {}
        load = threading.Thread(target=lambda: result.update(
            b.run_target(args.mode, body, data, args.connections, args.seconds + 2)))
        load.start()
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-o", data_file,
                        "-p", str(p.pid), "--", "sleep", str(args.seconds)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load.join()
        print(f"{args.mode}: {result['rps']:.0f} req/s under perf")
    finally:
        b.close()
    report = subprocess.run(["perf", "report", "-i", data_file, "--no-children", "--percent-limit",
                             "0.5", "--stdio", "-g", "none", "--sort", "symbol"],
                            capture_output=True, text=True).stdout
    path = os.path.join(out, f"{args.mode}.txt")
    with open(path, "w") as f:
        f.write(report)
    print("\n".join(l for l in report.splitlines() if l and not l.startswith("#"))[:6000])
    print(f"(full report: {path})")


def callgrind(b, p, args, body, data, out_file):
    subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, stdout=subprocess.DEVNULL)
    result = b.run_target(args.mode, body, data, args.connections, args.seconds)
    subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, stdout=subprocess.DEVNULL)
    b.drain(args.mode)
    dumps = sorted(f for f in os.listdir(os.path.dirname(out_file))
                   if f.startswith(os.path.basename(out_file) + "."))
    dump = os.path.join(os.path.dirname(out_file), dumps[-1])
    requests = result["rps"] * args.seconds
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", dump],
                            capture_output=True, text=True).stdout
    total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", report).group(1).replace(",", ""))
    print(f"{args.mode}: {requests:.0f} requests, {total:,} instructions, "
          f"{total / requests:,.0f} instructions per request")
    path = os.path.join(os.path.dirname(out_file), f"{args.mode}-callgrind.txt")
    with open(path, "w") as f:
        f.write(report)
    lines = [l for l in report.splitlines() if re.match(r"^\s*[\d,]+ \(", l)]
    for line in lines[:60]:
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", line)
        if m:
            per = int(m.group(1).replace(",", "")) / requests
            print(f"{per:10,.0f}  {m.group(2):>6}%  {m.group(3)[:150]}")
    print(f"(full report: {path})")


if __name__ == "__main__":
    main()

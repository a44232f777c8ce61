#!/usr/bin/env bash
# Queue mode (durable 202) against direct mode (Jenkins called inside the request), in the same
# run, on the Port sample payload: requests per second, p50/p99 latency, and store size per
# 10,000 deliveries. Figures are ratios against direct mode measured alongside.
#
#   bash bench/queue_vs_direct.sh [rounds=3] [seconds=10] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_ROUND=${2:-10}
CONNECTIONS=${3:-32}

cargo build --release --quiet --bin hookgate --example fake_jenkins --example loadgen
BIN=target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

SECRET=bench-port-secret
SENDER=bench-sender-token
JOB=bench-job-token
JENKINS_PORT=18081
"$BIN/examples/fake_jenkins" --listen 127.0.0.1:$JENKINS_PORT --job "$JOB=bench" --quiet >"$WORK/jenkins.log" &

# The Port sample with a unique run id per call (the loadgen fills it in).
sed 's/r_QOz6WoOB1Q2lmhZZ/{{RUN_ID}}/' examples/payloads/port-deploy.json >"$WORK/payload.json"

start_gateway() { # mode port
  local dir="$WORK/$1"
  mkdir -p "$dir/rules"
  cat >"$dir/hookgate.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
rate_per_client = 0               # the load comes from one address
rate_per_rule = 0
[admin]                           # both gateways run at once: not both on the default 9091
listen = "127.0.0.1:$(($2 + 100))"
[jenkins.main]
url = "http://127.0.0.1:$JENKINS_PORT"
max_in_flight = 64
[delivery]
mode = "$1"
store = "$dir/store"
[log]
level = "warn"
TOML
  # Every check on: token, Port v1 HMAC-SHA256, 3 JSONPath variables, a filter.
  cat >"$dir/rules/port.toml" <<'TOML'
token_env = "BENCH_SENDER"
[verify]
scheme = "port"
secret_env = "BENCH_SECRET"
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
token_env = "BENCH_JOB"
TOML
  (cd "$dir" && BENCH_SECRET=$SECRET BENCH_SENDER=$SENDER BENCH_JOB=$JOB \
    exec "$OLDPWD/$BIN/hookgate" serve --config hookgate.toml >"$dir/log" 2>&1) &
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "gateway ($1) did not start:"; cat "$dir/log"; exit 1
}

start_gateway direct 18082
start_gateway queue 18083

run() { # label port
  "$BIN/examples/loadgen" --label "$1" --url "http://127.0.0.1:$2/generic-webhook-trigger/invoke?token=$SENDER" \
    --secret "$SECRET" --payload "$WORK/payload.json" --connections "$CONNECTIONS" --seconds "$SECONDS_PER_ROUND"
}

# Warm up both, then alternate rounds so both modes see the same machine noise.
run warmup 18082 >/dev/null; run warmup 18083 >/dev/null
for r in $(seq "$ROUNDS"); do
  run direct 18082 | tee -a "$WORK/results"
  run queue 18083 | tee -a "$WORK/results"
done

# Let the worker drain, then measure the store.
for _ in $(seq 100); do
  pending=$(cd "$WORK/queue" && "$OLDPWD/$BIN/hookgate" --config hookgate.toml deliveries list --state queued --limit 1 | grep -c '^01' || true)
  [ "$pending" = "0" ] && break
  sleep 0.2
done
delivered=$(cd "$WORK/queue" && "$OLDPWD/$BIN/hookgate" --config hookgate.toml deliveries list --limit 100000000 | grep -c '^01' || true)
store_bytes=$(du -sb "$WORK/queue/store" | cut -f1)

python3 - "$WORK/results" "$delivered" "$store_bytes" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(label, key):
    return statistics.median(r[key] for r in rows if r["label"] == label)
d, q = med("direct", "rps"), med("queue", "rps")
print()
print(f"median of {len(rows)//2} rounds per mode")
print(f"direct: {d:8.0f} req/s  p50 {med('direct','p50_ms'):.2f} ms  p99 {med('direct','p99_ms'):.2f} ms")
print(f"queue : {q:8.0f} req/s  p50 {med('queue','p50_ms'):.2f} ms  p99 {med('queue','p99_ms'):.2f} ms")
print(f"queue/direct throughput: {q/d:.2f}x")
delivered, size = int(sys.argv[2]), int(sys.argv[3])
if delivered:
    print(f"store: {size} bytes for {delivered} deliveries = {size*10000/delivered/1e6:.1f} MB per 10,000")
PY

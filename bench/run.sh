#!/usr/bin/env bash
# The benchmark suite in one command: installs its Debian packages (nginx, wrk, webhook) when
# missing, builds release binaries and runs bench/run.py. Arguments go to run.py
# (--rounds N, --seconds S, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in nginx wrk webhook; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"
exec python3 bench/run.py "$@"

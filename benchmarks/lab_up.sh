#!/usr/bin/env bash
# Benchmark (not a test): how long the lab takes to build and come up on this machine.
#   cold build : Go servers built with empty Go module and build caches (nothing cached)
#   cold up    : lab up from an empty state directory, binaries cached
#   warm up    : lab up again while it runs (the idempotent no-op)
#   restart up : lab up after 'down' (processes stopped, state kept)
# Runs a separate lab on shifted ports (offset 200) in temporary directories, so a running
# lab is not disturbed. Usage: benchmarks/lab_up.sh [--skip-cold-build]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
work=$(mktemp -d /tmp/tapio-bench.XXXXXX)
export TAPIO_LAB_PORT_OFFSET=200 TAPIO_LAB_STATE=$work/state
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
machine() {
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}
machine
if [ "${1:-}" != "--skip-cold-build" ]; then
  t0=$(now)
  GOMODCACHE=$work/gomod GOCACHE=$work/gobuild TAPIO_LAB_CACHE=$work/cache lab/bin/build-binaries >"$work/build.log" 2>&1
  echo "cold build (etcd, kwok, kwokctl, natscli, kube-apiserver, kube-controller-manager, kube-scheduler): $(secs "$t0" "$(now)") s"
  chmod -R u+w "$work/gomod" 2>/dev/null || true
  rm -rf "$work/gomod" "$work/gobuild" "$work/cache"
fi
t0=$(now); scripts/lab up >"$work/up-cold.log" 2>&1; echo "cold lab up (empty state, cached binaries): $(secs "$t0" "$(now)") s"
t0=$(now); scripts/lab up >"$work/up-warm.log" 2>&1; echo "warm lab up (already running): $(secs "$t0" "$(now)") s"
scripts/lab down >/dev/null 2>&1
t0=$(now); scripts/lab up >"$work/up-restart.log" 2>&1; echo "restart lab up (after down, state kept): $(secs "$t0" "$(now)") s"
scripts/lab down -e lab_purge=true >/dev/null 2>&1
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$work"

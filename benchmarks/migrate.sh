#!/usr/bin/env bash
# Benchmark (not a test): wall time of migrate.yml on the lab, from the pre-migration
# state, and of the idempotent re-run, with the simulator publishing throughout.
# Uses whatever lab TAPIO_LAB_STATE/TAPIO_LAB_PORT_OFFSET point at; resets it first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
log=$(mktemp -d /tmp/tapio-migrate-bench.XXXXXX)
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
scripts/lab up >"$log/up.log" 2>&1
scripts/lab reset >"$log/reset.log" 2>&1
t0=$(now); ansible-playbook migrate.yml >"$log/migrate.log" 2>&1; t1=$(now)
echo "migrate.yml from the pre-migration state: $(secs "$t0" "$t1") s ($(grep -E '^lab ' "$log/migrate.log" | tr -s ' '))"
t0=$(now); ansible-playbook migrate.yml >"$log/rerun.log" 2>&1; t1=$(now)
echo "migrate.yml again (idempotent): $(secs "$t0" "$t1") s ($(grep -E '^lab ' "$log/rerun.log" | tr -s ' '))"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "logs: $log"

#!/usr/bin/env bash
# Benchmark (not a test): wall time of migrate.yml on the lab in one invocation, with the
# simulator publishing throughout:
#   1. migrate.yml from the pre-migration state (first run)
#   2. migrate.yml again (idempotent re-run, changed=0)
#   3. migrate.yml --check --diff
#   4. rollback.yml -e tapio_rollback_mode=restore
# and the ratios of 2 and 3 to 1, and the number of tasks each run executed. The machine's
# load moves a run by a second or more: TAPIO_BENCH_REPEAT=N (default 3) runs 1 (each from a
# freshly reset lab), 2 and 3 N times each and the ratios use their medians.
# Uses whatever lab TAPIO_LAB_STATE/TAPIO_LAB_PORT_OFFSET point at; resets it first and
# leaves it rolled back. Extra arguments go to every ansible-playbook run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
# Each log ends with the 25 slowest tasks (benchmarks/callback_plugins/task_times.py).
export ANSIBLE_CALLBACK_PLUGINS="$root/benchmarks/callback_plugins" ANSIBLE_CALLBACKS_ENABLED=task_times
log=$(mktemp -d /tmp/tapio-migrate-bench.XXXXXX)
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
recap() { grep -E '^lab ' "$1" | tr -s ' ' | sed 's/^lab : //'; }
tasks() { grep -cE '^(TASK|RUNNING HANDLER) \[' "$1" || true; }
declare -A took
run() {  # name, then ansible-playbook arguments
  local name=$1; shift
  local t0 t1 rc=0
  t0=$(now); ansible-playbook "$@" "${extra[@]}" >"$log/$name.log" 2>&1 || rc=$?; t1=$(now)
  took[$name]=$(secs "$t0" "$t1")
  printf '%-10s %7s s  %3s tasks  rc=%s  %s\n' "$name" "${took[$name]}" "$(tasks "$log/$name.log")" "$rc" "$(recap "$log/$name.log")"
  [ "$rc" -eq 0 ] || { echo "$name failed, see $log/$name.log" >&2; exit "$rc"; }
}
extra=("$@")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
scripts/lab up >"$log/up.log" 2>&1
repeat=${TAPIO_BENCH_REPEAT:-3}
firsts=()
for i in $(seq "$repeat"); do
  scripts/lab reset >"$log/reset$i.log" 2>&1
  run "first$i" migrate.yml; firsts+=("${took[first$i]}")
done
reruns=() checks=()
for i in $(seq "$repeat"); do run "rerun$i" migrate.yml; reruns+=("${took[rerun$i]}"); done
for i in $(seq "$repeat"); do run "check$i" migrate.yml --check --diff; checks+=("${took[check$i]}"); done
run rollback rollback.yml -e tapio_rollback_mode=restore
python3 - "${firsts[*]}" "${reruns[*]}" "${checks[*]}" <<'PY'
import statistics
import sys
first, rerun, check = (statistics.median(map(float, arg.split())) for arg in sys.argv[1:])
print(f"median first run {first:.1f} s, median re-run {rerun:.1f} s, median check {check:.1f} s")
print(f"re-run / first run: {100 * rerun / first:.0f} %   check / first run: {100 * check / first:.0f} %")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "logs: $log"

#!/usr/bin/env bash
# Benchmark (not a test): wall time of migrate.yml on the lab in one invocation, with the
# simulator publishing throughout:
#   1. migrate.yml from the pre-migration state (first run)
#   2. migrate.yml again (idempotent re-run, changed=0)
#   3. migrate.yml --check --diff
#   4. rollback.yml -e tapio_rollback_mode=restore
# and the ratios of 2 and 3 to 1, the CPU time each run used (ansible-playbook and its workers,
# user + system), and the number of tasks each run executed. The machine's speed drifts (the
# lab's own servers share its cores): TAPIO_BENCH_REPEAT=N (default 3) runs 1, 2 and 3 back to
# back N times, each time from a freshly reset lab, so every ratio compares runs made under the
# same conditions; the ratios printed are the medians of the N per-repetition ratios.
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
declare -A took cpu
# The calling shell's children's user + system seconds: the second line of `times` (e.g.
# 0m3.1s 0m1.2s), written to a file, because in a pipe or $(...) it would be a subshell's own.
children_cpu() {
  times >"$log/times"
  tail -1 "$log/times" | sed -E 's/([0-9]+)m([0-9.]+)s/\1 \2/g' | awk '{print $1 * 60 + $2 + $3 * 60 + $4}'
}
run() {  # name, then ansible-playbook arguments
  local name=$1; shift
  local t0 t1 rc=0
  # CPU of the run alone: this subshell's only children are ansible-playbook (with its
  # workers) and date.
  read -r t0 t1 cpu[$name] < <(
    t0=$(now); ansible-playbook "$@" "${extra[@]}" >"$log/$name.log" 2>&1 || echo "rc=$?" >"$log/$name.rc"
    t1=$(now); children_cpu >"$log/$name.cpu"; echo "$t0 $t1 $(cat "$log/$name.cpu")")
  [ -f "$log/$name.rc" ] && rc=$(cut -d= -f2 "$log/$name.rc")
  took[$name]=$(secs "$t0" "$t1")
  printf '%-10s %7s s  %6.1f s CPU  %3s tasks  rc=%s  %s\n' "$name" "${took[$name]}" "${cpu[$name]}" \
    "$(tasks "$log/$name.log")" "$rc" "$(recap "$log/$name.log")"
  [ "$rc" -eq 0 ] || { echo "$name failed, see $log/$name.log" >&2; exit "$rc"; }
}
extra=("$@")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
# Another run on the machine stretches every number here (a loop of re-runs beside it took them
# from 4.2 s to 9.5 s): say so, so that the numbers are read with it.
others=$(pgrep -fc '(^|/)(ansible-playbook|pytest|molecule)( |$)' || true)
[ "$others" -eq 0 ] || echo "WARNING: $others other ansible-playbook, pytest or molecule process(es) running: the times below are shared"
scripts/lab up >"$log/up.log" 2>&1
repeat=${TAPIO_BENCH_REPEAT:-3}
rows=()
for i in $(seq "$repeat"); do
  scripts/lab reset >"$log/reset$i.log" 2>&1
  run "first$i" migrate.yml
  run "rerun$i" migrate.yml
  run "check$i" migrate.yml --check --diff
  rows+=("${took[first$i]},${took[rerun$i]},${took[check$i]},${cpu[first$i]},${cpu[rerun$i]},${cpu[check$i]}")
done
run rollback rollback.yml -e tapio_rollback_mode=restore
python3 - "${rows[@]}" <<'PY'
import statistics
import sys
rows = [tuple(map(float, arg.split(","))) for arg in sys.argv[1:]]
median = lambda values: statistics.median(values)  # noqa: E731
first, rerun, check = (median(row[i] for row in rows) for i in range(3))
print(f"median first run {first:.1f} s, median re-run {rerun:.1f} s, median check {check:.1f} s")
print("re-run / first run per repetition: " + ", ".join(f"{100 * r[1] / r[0]:.0f} %" for r in rows)
      + "   check / first run: " + ", ".join(f"{100 * r[2] / r[0]:.0f} %" for r in rows))
print(f"re-run / first run: {100 * median(r[1] / r[0] for r in rows):.0f} %   "
      f"check / first run: {100 * median(r[2] / r[0] for r in rows):.0f} %   (medians of the repetitions)")
print(f"CPU: first run {median(r[3] for r in rows):.1f} s, re-run {median(r[4] for r in rows):.1f} s, "
      f"check {median(r[5] for r in rows):.1f} s (medians)")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "logs: $log"

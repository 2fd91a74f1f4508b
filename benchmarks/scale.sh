#!/usr/bin/env bash
# Benchmark (not a test): migrate.yml's wall time against the cluster's size, in one invocation.
# For each size N in the list (default "3 500"):
#   1. a lab with N kwok fake nodes (one pod per node and collector DaemonSet) on shifted ports
#      (offset 300) in a temporary state directory, the simulator publishing TOTAL events/s in
#      all: TOTAL / (N x collectors) per pod, so every size sees the same event rate;
#   2. migrate.yml from that pre-migration state (inventories/lab with the lab's env vars);
#      rc 0 required, and the verify phase's ledger line (0 lost, 0 delivered twice) found in
#      the log; wall time and the number of tasks it executed;
#   3. the lab purged (scripts/lab down -e lab_purge=true) before the next size, and on exit.
# Prints the machine, the commit, load averages, each time, and the ratio of the largest size
# to the smallest. Extra arguments go to every ansible-playbook migrate.yml run.
#
# Usage: benchmarks/scale.sh [--sizes "3 500"] [--total-rate 2070] [--port-offset 300]
#                            [--max-unavailable N|P%] [--client-qps N] [ARGS...]
# --max-unavailable sets the collector DaemonSets' rollingUpdate.maxUnavailable in the lab
# (lab_tapio_collector_max_unavailable, default 1: one node at a time, as the lab installs them).
# --client-qps sets kube-controller-manager's and kube-scheduler's client-side rate limit
# towards the API server (lab_kubernetes_client_qps, burst twice that; default 0: Kubernetes'
# own 20/30 and 50/100). Both apply at every size.
# The simulator shares one NATS connection among its emulated pods at every size
# (lab_simulator_nats_connections=shared: one process cannot open 1,500 connections in time).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sizes="3 500" total_rate=2070 offset=300 max_unavailable=1 client_qps=0
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    --total-rate) total_rate=$2; shift 2 ;;
    --port-offset) offset=$2; shift 2 ;;
    --max-unavailable) max_unavailable=$2; shift 2 ;;
    --client-qps) client_qps=$2; shift 2 ;;
    *) break ;;
  esac
done
extra=("$@")
[ -x .venv/bin/ansible-playbook ] || scripts/bootstrap --lab
export PATH="$root/.venv/bin:$PATH"
# Each migrate log ends with the 25 slowest tasks (benchmarks/callback_plugins/task_times.py).
export ANSIBLE_CALLBACK_PLUGINS="$root/benchmarks/callback_plugins" ANSIBLE_CALLBACKS_ENABLED=task_times
export TAPIO_LAB_PORT_OFFSET=$offset
work=$(mktemp -d /tmp/tapio-scale-bench.XXXXXX)
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
tasks() { grep -cE '^(TASK|RUNNING HANDLER) \[' "$1" || true; }
recap() { grep -E '^lab ' "$1" | tr -s ' ' | sed 's/^lab : //; s/ $//'; }
lab_down() {
  [ -n "${TAPIO_LAB_STATE:-}" ] && [ -d "$TAPIO_LAB_STATE" ] || return 0
  scripts/lab down -e lab_purge=true >"$work/down-$(basename "$TAPIO_LAB_STATE").log" 2>&1 \
    || echo "lab down failed, see $work/down-$(basename "$TAPIO_LAB_STATE").log" >&2
}
trap lab_down EXIT
if curl -sk -o /dev/null --max-time 3 "https://127.0.0.1:$((16443 + offset))/readyz"; then
  echo "a lab already answers on port $((16443 + offset)) (offset $offset): stop it or pick --port-offset" >&2
  exit 2
fi
collectors=$(python3 -c "import yaml; print(len(yaml.safe_load(open('inventories/lab/group_vars/all/tapio.yml'))['tapio_collectors']))")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'); sizes: $sizes nodes; $total_rate events/s in all; collectors' maxUnavailable $max_unavailable; control plane client QPS $([ "$client_qps" = 0 ] && echo default || echo "$client_qps"); port offset $offset"
echo "load average at start: $(load)"
declare -A took
for n in $sizes; do
  pods=$((n * collectors))
  rate=$(python3 -c "print(f'{$total_rate / $pods:.4g}')")
  export TAPIO_LAB_STATE=$work/state-$n
  # The lab's waits count retries of one second plus a list of every node or pod: room for 500 nodes.
  t0=$(now)
  rc=0
  scripts/lab up -e lab_kubernetes_nodes="$n" -e lab_simulator_rate="$rate" -e lab_simulator_nats_connections=shared \
    -e lab_tapio_collector_max_unavailable="$max_unavailable" -e lab_kubernetes_client_qps="$client_qps" \
    -e lab_kubernetes_ready_timeout=900 -e lab_tapio_rollout_timeout=900 >"$work/up-$n.log" 2>&1 || rc=$?
  up=$(secs "$t0" "$(now)")
  [ "$rc" -eq 0 ] || { echo "$n nodes: lab up failed after $up s, see $work/up-$n.log" >&2; exit "$rc"; }
  printf '%4s nodes: lab up %7s s (%s collector pods at %s events/s each), load %s\n' "$n" "$up" "$pods" "$rate" "$(load)"
  log=$work/migrate-$n.log
  t0=$(now)
  rc=0
  ansible-playbook -i inventories/lab migrate.yml -e tapio_artifacts_dir="$work/artifacts-$n" "${extra[@]}" >"$log" 2>&1 || rc=$?
  took[$n]=$(secs "$t0" "$(now)")
  printf '%4s nodes: migrate.yml %7s s  %3s tasks  rc=%s  %s; load %s\n' "$n" "${took[$n]}" "$(tasks "$log")" "$rc" "$(recap "$log")" "$(load)"
  [ "$rc" -eq 0 ] || { echo "$n nodes: migrate.yml failed, see $log" >&2; exit "$rc"; }
  ledger=$(grep -oE '0 events lost and 0 delivered twice across [0-9]+ sources \([0-9]+ emitted\)' "$log" || true)
  [ -n "$ledger" ] || { echo "$n nodes: no ledger verdict (0 lost, 0 duplicates) in $log" >&2; exit 1; }
  echo "            ledger: $ledger"
  t0=$(now)
  lab_down
  echo "            lab down (purged) in $(secs "$t0" "$(now)") s"
done
set -- $sizes
small=$1 large=${!#}
if [ "$small" != "$large" ]; then
  python3 - "$large" "$small" "${took[$large]}" "${took[$small]}" <<'PY'
import sys
large, small, t_large, t_small = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
print(f"{large} nodes / {small} nodes: {t_large / t_small:.1f} x (goal <= 3x)")
PY
fi
echo "load average at end: $(load)"
echo "logs: $work"

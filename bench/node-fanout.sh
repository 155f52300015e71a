#!/usr/bin/env bash
# Compute-node benchmarks on the test suite's real multi-node Slurm cluster (one slurmctld, three
# slurmd each in its own network namespace with its own node-local disk, a TCP relay to the
# registry on loopback: tests/integration/support/cluster.rs), issue 12:
#   - fan-out: one SIF onto 3 nodes with `hpc-registry fetch --all-nodes` (one download, sbcast,
#     verify on each node) against 3 nodes fetching for themselves at once (srun -N3 … fetch);
#   - start-up: a job's first line to its first command (`hpc-registry run REF -- CMD`, the
#     stand-in apptainer records when it was exec'd), cold node cache against warm.
# The measuring code is tests/integration/bench_nodes.rs (#[ignore]d: `cargo test` never runs
# it); this script runs it, collects its `BENCH …` lines into bench/results/node-fanout.raw and
# writes the table bench/results/node-fanout.md (median and every run;
# bench/summarize_node_fanout.py rebuilds it from the raw file).
#
#   bash bench/node-fanout.sh [REPS] [LAYER_MIB]        # defaults 5 and 300; as root
#   CARGO_PROFILE_FLAG=--release bash bench/node-fanout.sh   # default: the dev profile
#   BENCH_NODES_TESTS=bench_nodes_sbcast_pieces BENCH_NAME=node-fanout-pieces bash bench/node-fanout.sh 3
#       # one benchmark only (a test-name filter), into bench/results/BENCH_NAME.{raw,md,log}
#
# Cleanup: the harness tears the cluster down when a benchmark ends or panics. If the test
# binary is killed instead (Ctrl-C, a timeout), this script removes what that binary left
# behind, and only that: the network namespaces and bridges named after its PID, the Slurm
# daemons and registry it started (recorded while it ran, checked by PID and command line), and
# their temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REPS=${1:-5}
MIB=${2:-300}
OUT=${BENCH_OUT:-$REPO/bench/results}
PROFILE=${CARGO_PROFILE_FLAG:-}
mkdir -p "$OUT"
TESTS=${BENCH_NODES_TESTS:-bench_nodes}
NAME=${BENCH_NAME:-node-fanout}
RAW=$OUT/$NAME.raw
MD=$OUT/$NAME.md
WORK=$(mktemp -d /var/tmp/bench-node-fanout.XXXXXX)
log() { echo "[$(date -u +%T)] $*" >&2; }

CARGO_PID=
cleanup() {
  set +e
  if [ -n "$CARGO_PID" ] && kill -0 "$CARGO_PID" 2>/dev/null; then
    # The test binary first (its daemons get SIGTERM from PR_SET_PDEATHSIG), then cargo.
    for p in $(sort -u "$WORK/testpids" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    kill -TERM "$CARGO_PID" 2>/dev/null
    wait "$CARGO_PID" 2>/dev/null
  fi
  sleep 1
  # Processes the test binary started that outlived it: same PID and same command line.
  if [ -f "$WORK/procs" ]; then
    sort -u "$WORK/procs" | while IFS=' ' read -r pid cmd; do
      [ -r "/proc/$pid/cmdline" ] || continue
      now=$({ tr '\0' ' ' < "/proc/$pid/cmdline" | base64 -w0; } 2>/dev/null)
      if [ "$now" = "$cmd" ]; then log "stopping leftover pid $pid"; kill -TERM "$pid" 2>/dev/null; fi
    done
  fi
  # Network namespaces and bridges named after a test binary of this run that is gone.
  for p in $(sort -u "$WORK/testpids" 2>/dev/null); do
    kill -0 "$p" 2>/dev/null && continue
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^hpcr-$p-" || true); do
      subnet=$(echo "$ns" | cut -d- -f3)
      log "removing leftover namespace $ns"
      ip netns del "$ns" 2>/dev/null
      ip link del "hpcrb$subnet" 2>/dev/null
    done
    rm -rf "/var/tmp/hpcreg-shared-$p"
  done
  # The cluster dirs of the recorded slurmctld (… -f DIR/slurm.conf), if the harness left them.
  if [ -f "$WORK/procs" ]; then
    sort -u "$WORK/procs" | while IFS=' ' read -r pid cmd; do
      conf=$(echo "$cmd" | base64 -d | grep -o -- '-f [^ ]*/slurm.conf' | head -n1 | cut -d' ' -f2)
      dir=${conf%/slurm.conf}
      case "$dir" in /var/tmp/hpcr-cluster.*) [ -d "$dir" ] && { log "removing $dir"; rm -rf "$dir"; } ;; esac
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for t in slurmctld slurmd sbcast srun ip nsenter munge skopeo umoci; do
  command -v "$t" >/dev/null || { echo "missing $t: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root: the cluster creates network namespaces" >&2; exit 1; }

log "building the test binary (${PROFILE:-dev profile})"
cargo test $PROFILE --test integration --no-run >&2

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +%FT%TZ)
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo "+dirty")
log "running (reps $REPS, layer $MIB MiB), load $LOAD_START"
BENCH_NODES_REPS=$REPS BENCH_NODES_MIB=$MIB \
  cargo test $PROFILE --test integration "$TESTS" -- --ignored --nocapture --test-threads 1 \
  > "$WORK/out" 2>&1 &
CARGO_PID=$!
# Record the test binary (cargo's child) and everything it starts, for the cleanup above.
while kill -0 "$CARGO_PID" 2>/dev/null; do
  for t in $(pgrep -P "$CARGO_PID" || true); do
    echo "$t" >> "$WORK/testpids"
    for c in $(pgrep -P "$t" || true) $(pgrep -f "^nsenter --net=/run/netns/hpcr-$t-" || true); do
      cmd=$({ tr '\0' ' ' < "/proc/$c/cmdline" | base64 -w0; } 2>/dev/null) || continue
      [ -n "$cmd" ] && echo "$c $cmd" >> "$WORK/procs"
    done
  done
  sleep 1
done
set +e
wait "$CARGO_PID"
RC=$?
set -e
CARGO_PID=
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
END=$(date -u +%FT%TZ)
{
  echo "# $NAME ($TESTS) $START .. $END commit $COMMIT profile ${PROFILE:-dev} reps $REPS layer_mib $MIB"
  echo "# load start $LOAD_START end $LOAD_END; nproc $(nproc)"
  grep '^BENCH ' "$WORK/out" || true
} > "$RAW"
cp "$WORK/out" "$OUT/$NAME.log"
if [ "$RC" != 0 ]; then
  log "the benchmark failed ($RC); its output: $OUT/$NAME.log"
fi

python3 bench/summarize_node_fanout.py "$RAW" > "$MD"
log "wrote $RAW and $MD"
cat "$MD"
exit "$RC"

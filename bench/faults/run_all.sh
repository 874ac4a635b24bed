#!/usr/bin/env bash
# Runs every fault scenario (issue 7, and the Sidekiq intake's of issue 11) one after the other and prints one line per scenario:
#   <name> trials=<n> failures=<n> <figures...>
# Exit status: 0 when every scenario ran with failures=0, 1 otherwise.
# Traffic goes to 127.0.0.1 only; every scenario starts (and stops) its own servers.
# Pass LOAD_ARGS="--duration 60 --jobs 20000" for a quicker load scenario.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
LOG_DIR=${LOG_DIR:-bench/results/faults/logs}
mkdir -p "$LOG_DIR"

scenarios=(
  "worker_kill bench/faults/worker_kill.py"
  "intake_kill bench/faults/intake_kill.py"
  "pg_restart bench/faults/pg_restart.py"
  "redis_outage bench/faults/redis_outage.py"
  "github_faults bench/faults/github_faults.py"
  "idempotency bench/faults/idempotency.py"
  "hostile_input bench/faults/hostile_input.py"
  "fuzz bench/faults/fuzz.py"
  "secrets bench/faults/secret_leaks.py"
  "load bench/faults/load.py ${LOAD_ARGS:-}"
)

status=0
started=$(date +%s)
summary=()
for entry in "${scenarios[@]}"; do
  name=${entry%% *}
  command=${entry#* }
  begin=$(date +%s)
  # shellcheck disable=SC2086  # the command line is split on purpose
  timeout 1500 $PY $command >"$LOG_DIR/$name.log" 2>&1
  code=$?
  line=$(grep '^SCENARIO ' "$LOG_DIR/$name.log" | tail -1 | cut -d' ' -f2-)
  [ -n "$line" ] || line="$name trials=0 failures=1 error=no-summary-line(exit=$code)"
  [ "$code" -eq 0 ] || status=1
  summary+=("$line wall_s=$(( $(date +%s) - begin ))")
  echo "${summary[-1]}"
done
echo "all scenarios: $(( $(date +%s) - started )) s, $([ $status -eq 0 ] && echo 'no failures' || echo 'FAILURES (see logs in '"$LOG_DIR"')')"
exit $status

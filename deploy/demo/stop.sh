#!/usr/bin/env bash
# `make stop`: end the demo's services (SIGTERM, then SIGKILL after 20 s).
set -uo pipefail
cd "$(dirname "$0")/../.."
for pidfile in var/demo/bridge.pid var/demo/ehr.pid var/demo/hospital.pid var/demo/reading.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
  fi
  rm -f "$pidfile"
done

#!/usr/bin/env bash
# `make demo`: start a hospital PACS Orthanc (orthanc.json), a reading-archive Orthanc and
# `bridge serve`, push a synthetic study with planted identities from the PACS to the bridge,
# and show it arriving de-identified at the reading archive. `make stop` ends the services.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEMO=$ROOT/var/demo
mkdir -p "$DEMO/hospital" "$DEMO/reading" "$DEMO/bridge"
export TCP_NODELAY=1

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {  # name pidfile logfile command...
  local name=$1 pidfile=$2 logfile=$3; shift 3
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "  $name already running (pid $(cat "$pidfile"))"; return
  fi
  nohup "$@" >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
  echo "  $name started (pid $!, log $logfile)"
}

wait_http() {  # url seconds (with the venv's Python: no curl needed)
  for _ in $(seq 1 $(( $2 * 10 ))); do
    "$ROOT/.venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; return 1
}

for p in 8142 4342 8143 4343 8080 11112 2575 8144; do
  if port_busy $p && ! ls "$DEMO"/*.pid >/dev/null 2>&1; then
    echo "port $p is in use by another program; stop it or run 'make stop' first" >&2; exit 1
  fi
done

[ -f "$DEMO/secret" ] || (umask 077; head -c 32 /dev/urandom | base64 > "$DEMO/secret")
[ -f "$DEMO/token" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DEMO/token")

echo "Starting the demo services:"
start "hospital PACS (Orthanc)" "$DEMO/hospital.pid" "$DEMO/hospital.log" /usr/sbin/Orthanc "$ROOT/orthanc.json"
start "reading archive (Orthanc)" "$DEMO/reading.pid" "$DEMO/reading.log" /usr/sbin/Orthanc "$ROOT/deploy/demo/reading-orthanc.json"
wait_http http://127.0.0.1:8142/system 30
wait_http http://127.0.0.1:8143/system 30
start "hospital EHR (RIS on MLLP :2575, FHIR on :8144)" "$DEMO/ehr.pid" "$DEMO/ehr.log" "$ROOT/.venv/bin/python" "$ROOT/deploy/demo/ehr.py" "$DEMO/ehr"

export BRIDGE_DATA_DIR="$DEMO/bridge"
export BRIDGE_DEID__SECRET="$(cat "$DEMO/secret")"
export BRIDGE_API_TOKEN="$(cat "$DEMO/token")"
export BRIDGE_READING__DICOMWEB_URL=http://127.0.0.1:8143/dicom-web
export BRIDGE_PACS__DICOMWEB_URL=http://127.0.0.1:8142/dicom-web
export BRIDGE_STUDY_STABLE_SECONDS=5
export BRIDGE_LOG_FORMAT=console
# results to the EHR: ORU^R01 to the RIS, a FHIR transaction, a PDF with the summary
export BRIDGE_HL7__HOST=127.0.0.1 BRIDGE_HL7__PORT=2575 BRIDGE_HL7__RECEIVING_APPLICATION=RIS
export BRIDGE_HL7__WADO_RS_URL=http://127.0.0.1:8142/dicom-web
export BRIDGE_FHIR__URL=http://127.0.0.1:8144 BRIDGE_FHIR__TOKEN_URL=http://127.0.0.1:8144/token
export BRIDGE_FHIR__CLIENT_ID=secondopinion BRIDGE_FHIR__CLIENT_SECRET=client-secret
export BRIDGE_FINDINGS__PDF=true
start "bridge" "$DEMO/bridge.pid" "$DEMO/bridge.log" "$ROOT/.venv/bin/bridge" serve
wait_http http://127.0.0.1:8080/healthz 30

"$ROOT/.venv/bin/python" "$ROOT/deploy/demo/demo.py" --token "$BRIDGE_API_TOKEN" --work "$DEMO"

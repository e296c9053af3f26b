#!/usr/bin/env bash
# Autobahn|Testsuite against the Rust SDK's WebSocket, as a client: the suite's fuzzingserver
# plays the cases and crates/wirehub-client/src/autobahn.rs connects once per case through
# the SDK's own socket code and echoes every message.
#   scripts/autobahn-client.sh [--cases LIST] [--exclude LIST] [--dev] [OUTDIR]
# LIST: comma-separated case patterns ("1.*,6.4.*"); default all but 12.* and 13.*
# (permessage-deflate, 20+ minutes in all). --dev runs the driver from the workspace's debug
# test build (what `cargo test --workspace` built: no extra compile; slow at inflating large
# messages) instead of a release build. Uses the venv of ../shared/autobahn/install.sh.
# Its last line is "autobahn-client: N ok, N non-strict, N informational, N failed, N
# unimplemented of N cases"; exit 0 only when none failed and none is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${WIREHUB_SHARED:-$ROOT/../shared}"
CASES="*"
EXCLUDE="12.*,13.*"
CARGO_TEST=(cargo test --release -p wirehub-client --lib)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cases) CASES="$2"; shift 2 ;;
    --exclude) EXCLUDE="$2"; shift 2 ;;
    --dev) CARGO_TEST=(cargo test --workspace --lib); shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "autobahn-client.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
OUTDIR="${1:-${TMPDIR:-/tmp}/autobahn-client-reports}"
VENV="${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/autobahn-py3}"
VPY="$VENV/bin/python"
AGENT="wirehub-client"

"$SHARED/autobahn/install.sh" >/dev/null
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
rm -f "$OUTDIR"/index.json "$OUTDIR"/index.html "$OUTDIR"/*_case_*.json "$OUTDIR"/*_case_*.html
# Build first (release: inflating in a debug build is slow), so that the fuzzingserver does
# not wait for the compiler.
(cd "$ROOT" && "${CARGO_TEST[@]}" --no-run --quiet)

PORT=$("$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VPY" - "$PORT" "$OUTDIR" "$CASES" "$EXCLUDE" <<'PY'
import json, os, sys
port, outdir, cases, exclude = sys.argv[1:]
split = lambda s: [c.strip() for c in s.split(",") if c.strip()]
spec = {"url": "ws://127.0.0.1:%s" % port, "outdir": outdir, "cases": split(cases),
        "exclude-cases": split(exclude), "exclude-agent-cases": {}}
json.dump(spec, open(os.path.join(outdir, "spec.json"), "w"), indent=1)
PY
LOG="$OUTDIR/wstest.log"
(cd "$OUTDIR" && exec "$VPY" -W ignore "$VENV/bin/wstest" -m fuzzingserver -s spec.json --webport 0) \
  >"$LOG" 2>&1 &
FUZZER=$!
trap 'kill "$FUZZER" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "^Cases = " "$LOG" 2>/dev/null && break
  sleep 0.1
done
START=$(date +%s)
set +e
(cd "$ROOT" && WIREHUB_AUTOBAHN_URL="ws://127.0.0.1:$PORT" WIREHUB_AUTOBAHN_AGENT="$AGENT" \
  timeout --signal=TERM --kill-after=30 1800 \
  "${CARGO_TEST[@]}" --quiet autobahn::autobahn_fuzzingserver -- --ignored --exact) \
  >"$OUTDIR/driver.log" 2>&1
RC=$?
set -e
ELAPSED=$(( $(date +%s) - START ))
kill "$FUZZER" 2>/dev/null || true
wait "$FUZZER" 2>/dev/null || true
[[ $RC -ne 0 ]] && { echo "autobahn-client: the driver exited $RC:"; tail -n 20 "$OUTDIR/driver.log"; }

"$VPY" - "$OUTDIR" "$LOG" "$AGENT" "$ELAPSED" <<'PY'
import ast, collections, json, os, sys
outdir, log, agent, elapsed = sys.argv[1:]
planned = []
for line in open(log, errors="replace"):
    if line.startswith("Cases = ["):
        planned = ast.literal_eval(line[len("Cases = "):].strip())
try:
    results = json.load(open(os.path.join(outdir, "index.json"))).get(agent, {})
except (OSError, ValueError):
    results = {}
known = ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED")
count = collections.Counter()
bad, missing = [], []
for cid in planned:
    r = results.get(cid)
    if r is None:
        missing.append(cid); count["FAILED"] += 1; continue
    b = r["behavior"] if r["behavior"] in known else "FAILED"
    count[b] += 1
    if b in ("FAILED", "NON-STRICT"):
        bad.append("%s %s (%s / close %s, code %s)" % (b, cid, r["behavior"], r["behaviorClose"], r["remoteCloseCode"]))
for b in bad:
    print("autobahn-client: " + b)
if missing:
    print("autobahn-client: %d case(s) missing from the report: %s" % (len(missing), " ".join(missing[:40])))
print("autobahn-client: report %s/index.html, %ss" % (outdir, elapsed))
print("autobahn-client: %d ok, %d non-strict, %d informational, %d failed, %d unimplemented of %d cases"
      % (count["OK"], count["NON-STRICT"], count["INFORMATIONAL"], count["FAILED"], count["UNIMPLEMENTED"], len(planned)))
sys.exit(0 if planned and count["FAILED"] == 0 else 1)
PY

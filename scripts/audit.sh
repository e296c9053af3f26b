#!/usr/bin/env bash
# The audit run: real nodes on a real Redis plus a memory-broker node, subscribers through the
# Rust SDK, `wirehub sub` and the TypeScript SDK, publishers over HTTP and WebSocket, random
# faults from a seed, and delivery oracles (docs/audit.md).
#   ./scripts/audit.sh                       60 s with a random seed (printed first)
#   ./scripts/audit.sh --seed 42             the same fault schedule again
#   ./scripts/audit.sh --duration 10m        a soak
#   ./scripts/audit.sh --help                every option
# Exit status: 0 every promise held, 1 a violation (the first ones are printed), 2 the run
# could not be carried out. The run stops by itself (a hard timeout) and every process it
# started is killed when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Only --duration matters here, for the hard timeout; the rest goes to the binary as is.
duration_s=60
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --duration) value="${args[$((i + 1))]:-60s}" ;;
    --duration=*) value="${args[$i]#--duration=}" ;;
    *) continue ;;
  esac
  case "$value" in
    *ms) duration_s=1 ;;
    *s) duration_s="${value%s}" ;;
    *m) duration_s=$(( ${value%m} * 60 )) ;;
    *h) duration_s=$(( ${value%h} * 3600 )) ;;
    *) duration_s="$value" ;;
  esac
done

command -v redis-server >/dev/null || { echo "audit: redis-server is not installed (./scripts/test.sh installs it)" >&2; exit 2; }
if [[ -z "${AUDIT_SKIP_BUILD:-}" ]]; then
  cargo build --release -p wirehub -p wirehub-audit
  if [[ ! -f clients/typescript/dist/index.js || ! -d clients/typescript/node_modules ]]; then
    (cd clients/typescript && npm ci && npm run build)
  fi
fi

# The binary runs in a process group of its own: whatever happens to it, the trap kills the
# whole group (nodes, Redis, subscribers).
set -m
timeout --kill-after=10 "$((duration_s + 300))" ./target/release/wirehub-audit "$@" &
pid=$!
set +m
cleanup() { kill -KILL -- "-$pid" 2>/dev/null || true; }
trap cleanup EXIT
trap 'kill -INT -- "-$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
# A second wait when the first one was interrupted by a signal.
if kill -0 "$pid" 2>/dev/null; then wait "$pid" || status=$?; fi
exit "$status"

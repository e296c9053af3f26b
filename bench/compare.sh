#!/usr/bin/env bash
# Runs the same `wirehub bench` scenarios against wirehub (release build) and the plain Node
# `ws` reference server in bench/reference/, and prints a table of ratios.
#
# Each scenario gets a fresh server, pinned to CPU 0 (`taskset -c 0`); the load generator
# runs on CPU 1. Every run is bounded in count and time (see --max-time below) and targets
# 127.0.0.1 only. Raw JSON lines and server logs go to $RESULTS (default: bench/results/DATE,
# which git ignores).
#
# Usage: bench/compare.sh [SCENARIO...]
#   scenarios: fanout-max fanout-50 conns-10k conns-19k rooms ping churn (default: all)
# Environment:
#   RESULTS=DIR      where to write results
#   SERVERS="wirehub node"   which servers to run
#   SKIP_BUILD=1     use the existing target/release/wirehub
#   WIREHUB_BIN=PATH run this wirehub binary instead (implies SKIP_BUILD; to compare builds)
#   WIREHUB_ARGS="..."  extra `wirehub serve` flags, e.g. "--broker redis://127.0.0.1:6379"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RESULTS=${RESULTS:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}
SERVERS=${SERVERS:-"wirehub node"}
ALL_SCENARIOS="fanout-max fanout-50 conns-10k conns-19k rooms ping churn"
SCENARIOS=${*:-$ALL_SCENARIOS}
BIN=${WIREHUB_BIN:-$ROOT/target/release/wirehub}
[[ -n ${WIREHUB_BIN:-} ]] && SKIP_BUILD=1
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
mkdir -p "$RESULTS"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --quiet
fi
if [[ $SERVERS == *node* && ! -d bench/reference/node_modules/ws ]]; then
    (cd bench/reference && npm ci --silent --no-audit --no-fund)
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "cpus: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "kernel: $(uname -r)"
    echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
    echo "open files (ulimit -n): $(ulimit -n)"
    echo "node: $(node --version 2>/dev/null || echo none)"
} > "$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

SERVER_PID=
SERVER_PORT=

# start_server KIND LOG: starts a fresh server on a free port, sets SERVER_PID and SERVER_PORT.
start_server() {
    local kind=$1 log=$2
    case $kind in
        wirehub)
            RUST_LOG=warn,wirehub_server=info,wirehub_server::session=warn taskset -c "$SERVER_CPU" "$BIN" serve \
                --listen 127.0.0.1:0 --publish-rate 0 ${WIREHUB_ARGS:-} >"$log" 2>&1 &
            ;;
        node)
            taskset -c "$SERVER_CPU" node bench/reference/server.js 0 127.0.0.1 >"$log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    SERVER_PORT=
    for _ in $(seq 100); do
        SERVER_PORT=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$log" | head -1 | cut -d: -f2 || true)
        [[ -n $SERVER_PORT ]] && break
        sleep 0.1
    done
    if [[ -z $SERVER_PORT ]]; then
        echo "compare.sh: $kind did not start; see $log" >&2
        kill "$SERVER_PID" 2>/dev/null || true
        return 1
    fi
    # Let the runtime settle before the baseline memory reading.
    sleep 1
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# The arguments of each scenario (the same for both servers).
scenario_args() {
    case $1 in
        fanout-max) echo "fanout -n 1000 -m 20000 --duration 30s --max-time 3m" ;;
        fanout-50) echo "fanout -n 1000 -m 1000 --rate 50 --max-time 2m" ;;
        conns-10k) echo "conns -n 10000 -k 10 --settle 3s --hold 5s --max-time 3m" ;;
        conns-19k) echo "conns -n 19000 -k 10 --settle 3s --hold 5s --max-time 3m" ;;
        rooms) echo "rooms --rooms 100 --members 10 --rate-per-room 5 --duration 15s --max-time 2m" ;;
        ping) echo "ping -n 1000 -m 3000 --interval 1ms --max-time 2m" ;;
        churn) echo "churn -m 5000 -w 16 --duration 30s --max-time 2m" ;;
        *) echo "compare.sh: unknown scenario $1" >&2; return 1 ;;
    esac
}

JSONL=$RESULTS/results.jsonl
for scenario in $SCENARIOS; do
    args=$(scenario_args "$scenario")
    for server in $SERVERS; do
        echo "== $scenario on $server" >&2
        start_server "$server" "$RESULTS/$server-$scenario.log"
        # shellcheck disable=SC2086
        line=$(taskset -c "$GENERATOR_CPU" "$BIN" bench $args --quiet \
            --url "ws://127.0.0.1:$SERVER_PORT/ws" --server-pid "$SERVER_PID" --label "$server" \
            2> >(tee -a "$RESULTS/$server-$scenario.summary" >&2) | tail -n 1) || true
        stop_server
        if [[ -n $line ]]; then
            echo "$line" | jq -c --arg case "$scenario" '. + {case: $case}' >> "$JSONL"
        else
            echo "{\"case\":\"$scenario\",\"label\":\"$server\",\"ok\":false}" >> "$JSONL"
        fi
        sleep 1
    done
done

# The table: one row per figure, wirehub next to the reference, and the ratio.
jq -rs '
  def fig($c; $l; $f): (map(select(.case == $c and .label == $l)) | first | .[$f[0]] | if $f[1] then (.[$f[1]]? // null) else . end);
  def num: if . == null then "-" elif (. | type) == "number" then (if . >= 100 then (. | round | tostring) else ((. * 100 | round) / 100 | tostring) end) else tostring end;
  [
    ["fanout-max", "deliveries_per_s", null, "deliveries/s", "higher", ">= 10x"],
    ["fanout-max", "server_cpu_us_per_delivery", null, "server CPU µs/delivery", "lower", "<= 1/10"],
    ["fanout-max", "latency_us", "p99", "p99 latency µs", "lower", ""],
    ["fanout-50", "latency_us", "p99", "p99 latency µs @50 msg/s", "lower", "<= 1/5"],
    ["fanout-50", "latency_us", "p50", "p50 latency µs @50 msg/s", "lower", ""],
    ["fanout-50", "server_cpu_us_per_delivery", null, "server CPU µs/delivery @50 msg/s", "lower", ""],
    ["conns-10k", "server_rss_per_conn_kib", null, "RSS KiB/conn @10k", "lower", "<= 4 KiB"],
    ["conns-10k", "connect_per_s", null, "connects/s @10k", "higher", ""],
    ["conns-19k", "server_rss_per_conn_kib", null, "RSS KiB/conn @19k", "lower", "<= 4 KiB"],
    ["rooms", "latency_us", "p99", "rooms p99 latency µs", "lower", ""],
    ["ping", "latency_us", "p99", "ping p99 round trip µs", "lower", ""],
    ["churn", "cycles_per_s", null, "churn cycles/s", "higher", ""]
  ] as $rows
  | . as $all
  | ["case", "figure", "wirehub", "node ws", "ratio", "bar"],
    ($rows[] | . as $r
      | ($all | fig($r[0]; "wirehub"; [$r[1], $r[2]])) as $w
      | ($all | fig($r[0]; "node"; [$r[1], $r[2]])) as $n
      | select($w != null or $n != null)
      | [$r[0], $r[3], ($w | num), ($n | num),
         (if ($w | type) == "number" and ($n | type) == "number" and $n != 0 and $w != 0
          then (if $r[4] == "higher" then ($w / $n) else ($n / $w) end
                | if . >= 1 then ((. * 10 | round) / 10 | tostring) + "x better"
                  else ((1 / . * 10 | round) / 10 | tostring) + "x worse" end)
          else "-" end),
         $r[5]]),
    (["checks", "missing/duplicated/out of order (all runs)",
      ([$all[] | select(.label == "wirehub") | ((.missing // 0) + (.duplicated // 0) + (.out_of_order // 0))] | add // 0 | tostring),
      ([$all[] | select(.label == "node") | ((.missing // 0) + (.duplicated // 0) + (.out_of_order // 0))] | add // 0 | tostring),
      "-", "0"])
  | @tsv' "$JSONL" | column -t -s $'\t' | tee "$RESULTS/table.txt"
echo >&2
echo "results: $RESULTS" >&2

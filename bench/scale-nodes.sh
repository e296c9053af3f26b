#!/usr/bin/env bash
# Scale run (docs/performance.md, "100 000 connections across six nodes"): six wirehub nodes
# on one Redis (or a 3-master Redis Cluster with --cluster), and six `wirehub bench fanout`
# processes that each hold 1/6 of the connections spread over all six nodes and publish on
# their own channel through the first node; every process stays below the 20 000 open
# files a process may hold here. Loopback only, bounded in time.
#
#   bench/scale-nodes.sh [--cluster] [TOTAL_CONNECTIONS]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=single
if [[ "${1:-}" == "--cluster" ]]; then mode=cluster; shift; fi
total=${1:-100000}
nodes=6
gens=6
per_gen=$(( total / gens ))
bin=target/release/wirehub
work=$(mktemp -d /tmp/wirehub-scale.XXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [[ $mode == single ]]; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.1; done
  broker="redis://127.0.0.1:$rport"
else
  seeds=()
  for i in 1 2 3; do
    p=$(free_port); b=$(free_port)
    redis-server --port "$p" --cluster-port "$b" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$work/nodes-$p.conf" --dir "$work" >"$work/redis-$p.log" 2>&1 &
    pids+=($!)
    until redis-cli -p "$p" ping >/dev/null 2>&1; do sleep 0.1; done
    seeds+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${seeds[@]}" --cluster-yes >/dev/null
  until redis-cli -p "${seeds[0]#*:}" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
  broker="redis+cluster://$(IFS=,; echo "${seeds[*]}")"
fi

urls=()
node_pids=()
for i in $(seq 1 $nodes); do
  p=$(free_port)
  (ulimit -n 20000; exec $bin serve --listen "127.0.0.1:$p" --broker "$broker" --heartbeat-interval 60s) \
    >"$work/node-$i.log" 2>&1 &
  pids+=($!); node_pids+=($!)
  urls+=("ws://127.0.0.1:$p/ws")
done
for u in "${urls[@]}"; do
  hp=${u#ws://}; hp=${hp%/ws}
  until curl -sf "http://$hp/readyz" >/dev/null; do sleep 0.1; done
done
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
before=(); for pid in "${node_pids[@]}"; do before+=($(rss "$pid")); done
url_list=$(IFS=,; echo "${urls[*]}")

# RSS of every node, sampled each second (the peak is while all connections are held).
( while true; do line=""; for pid in "${node_pids[@]}"; do line+="$(rss "$pid") "; done; echo "$line"; sleep 1; done ) >"$work/rss.log" &
sampler=$!; pids+=($sampler)

gen_pids=()
start=$(date +%s.%N)
for g in $(seq 1 $gens); do
  (ulimit -n 20000; exec $bin bench fanout --url "$url_list" -n "$per_gen" -m 20 --rate 2 \
     --channel "scale-$g" --sources 6 --connect-concurrency 32 --reply-timeout 30s \
     --drain-timeout 30s --max-time 4m -q --label "$mode") >"$work/gen-$g.json" 2>"$work/gen-$g.err" &
  gen_pids+=($!); pids+=($!)
done
status=0
for pid in "${gen_pids[@]}"; do wait "$pid" || status=1; done
end=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true

echo "mode=$mode broker=$broker total=$total nodes=$nodes generators=$gens work=$work"
echo "wall time: $(python3 -c "print(round($end-$start,1))") s; generators exit status: $status"
echo "node RSS before (KiB): ${before[*]}"
python3 - "$work" "$total" "$nodes" "${before[@]}" <<'PY'
import json, sys, glob
work, total, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = [int(x) for x in sys.argv[4:]]
rows = [[int(x) for x in l.split()] for l in open(f"{work}/rss.log") if len(l.split()) == nodes]
peak = [max(r[i] for r in rows) for i in range(nodes)] if rows else before
print("node RSS peak (KiB):", peak)
per = [(p - b) / (total / nodes) for p, b in zip(peak, before)]
print("node RSS per connection (KiB):", [round(x, 2) for x in per])
for f in sorted(glob.glob(f"{work}/gen-*.json")):
    try:
        j = json.loads(open(f).read().strip().splitlines()[-1])
    except Exception as e:
        print(f, "no JSON:", open(f.replace('.json', '.err')).read()[-400:]); continue
    keys = [k for k in j if k not in ("scenario", "label", "url", "server", "generator")]
    print(f.rsplit('/',1)[1], {k: j[k] for k in keys})
PY

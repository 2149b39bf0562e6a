#!/usr/bin/env bash
# A/B of two Ripstream builds with the same load generator, interleaved round
# by round so a slow spell of this shared machine hits both alike; prints the
# median of the rounds per workload (records/s, p99, records per server core).
#
#   bench/ab.sh OLD_BINARY NEW_BINARY            # 3 rounds, 6 s per workload
#   ROUNDS=5 DURATION=10 bench/ab.sh old new
#
# Workloads: PutRecords 1 KiB x 500 (8 producers), GetRecords of that backlog,
# PutRecord 1 KiB at concurrency 64. Servers run with their defaults (fsync
# before every acknowledgement) and --quotas off.
set -euo pipefail
OLD=${1:?old binary}
NEW=${2:?new binary}
GEN=${GEN:-$NEW}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
LOG=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [[ $which == new ]] && bin=$NEW
    dir=$(mktemp -d)
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" --quotas off > "$dir/out" 2> "$dir/err" &
    pid=$!
    for _ in $(seq 100); do grep -q http "$dir/out" && break; sleep 0.1; done
    url=$(head -1 "$dir/out" | awk '{print $NF}')
    run() { "$GEN" bench "$@" --endpoint "$url" --server-pid "$pid" --json 2>/dev/null | tail -1; }
    echo "$which PutRecords $(run produce --duration "$DURATION")" >> "$LOG"
    echo "$which GetRecords $(run consume)" >> "$LOG"
    echo "$which PutRecord-c64 $(run produce --stream single --batch 1 --concurrency 64 --duration "$DURATION")" >> "$LOG"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
python3 - "$LOG" <<'PY'
import collections, json, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    which, kind, js = line.split(" ", 2)
    d = json.loads(js)
    rows[(kind, which)].append(d)
for kind in ["PutRecords", "GetRecords", "PutRecord-c64"]:
    med = lambda which, f: statistics.median(f(d) for d in rows[(kind, which)])
    rate = lambda d: d["records_per_sec"]
    core = lambda d: d["records_per_sec"] / max(d["server_cpu_cores"], 1e-9)
    bad = sum(d["lost"] + d["duplicated"] + d["corrupted"] for w in ("old", "new") for d in rows[(kind, w)])
    print(f"{kind:14} old {med('old', rate):>9.0f} rec/s  new {med('new', rate):>9.0f} rec/s  "
          f"ratio {med('new', rate) / med('old', rate):.3f}  per server core {med('new', core) / med('old', core):.3f}  "
          f"p99 {med('old', lambda d: d['p99_ms']):.2f} -> {med('new', lambda d: d['p99_ms']):.2f} ms  lost/dup/corrupt {bad}")
PY
rm -f "$LOG"

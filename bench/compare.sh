#!/usr/bin/env bash
# Runs the same workloads against Ripstream and two peers on this machine, one
# after the other, measures the machine's own limits in the same run, and
# writes a table of figures with the ratio Ripstream/peer.
#
#   bench/compare.sh                      # everything, 10 s per workload
#   DURATION=20 PEERS="ferrokinesis" bench/compare.sh
#   ROUNDS=3 bench/compare.sh             # 3 interleaved rounds, the median kept
#
# Peers: kinesalite (Node, installed from npm) and ferrokinesis (Rust,
# in-memory, installed with `cargo install`). Both bind every interface, so each
# runs inside a private network namespace (`unshare -n`) together with the load
# generator. Ripstream runs with its defaults (fsync before every
# acknowledgement) and `--quotas off`, since the peers enforce no per-shard
# quotas either. Results go to bench/results/ (raw JSON lines and table.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/results}
DURATION=${DURATION:-10}
# ROUNDS rounds, each running every system once (fresh server, all workloads),
# so a slow spell of this shared machine hits all systems alike; per system and
# workload the round with the median records/s goes into the table.
ROUNDS=${ROUNDS:-1}
# Firehose: the delivery stream's BufferingHints.IntervalInSeconds, and how
# long its bucket is missing in the destination-down run (0 skips that run).
FIREHOSE_INTERVAL=${FIREHOSE_INTERVAL:-10}
FIREHOSE_DOWN=${FIREHOSE_DOWN:-60}
PEERS=${PEERS:-"kinesalite ferrokinesis"}
TOOLS=$OUT/tools
mkdir -p "$OUT" "$TOOLS"
RESULTS=$OUT/results.jsonl
# PEERS_ONLY=1 appends the peers' figures to the results of an earlier run.
PEERS_ONLY=${PEERS_ONLY:-0}
[[ $PEERS_ONLY == 1 ]] || : > "$RESULTS"

echo "== building ripstream (release)"
cargo build --release -p ripstream
RS=${CARGO_TARGET_DIR:-$ROOT/target}/release/ripstream

if [[ " $PEERS " == *" kinesalite "* && ! -f $TOOLS/node_modules/kinesalite/cli.js ]]; then
  echo "== installing kinesalite from npm"
  npm install --silent --prefix "$TOOLS" kinesalite@3 >/dev/null
fi
if [[ " $PEERS " == *" ferrokinesis "* && ! -x $TOOLS/bin/ferrokinesis ]]; then
  echo "== installing ferrokinesis with cargo install (a few minutes)"
  cargo install --quiet --locked --root "$TOOLS" ferrokinesis
fi

if [[ $PEERS_ONLY != 1 ]]; then
echo "== machine limits"
python3 - "$OUT" >> "$RESULTS" <<'PY'
import json, os, socket, subprocess, sys, threading, time
out = sys.argv[1]
# Sequential write bandwidth with a final fdatasync (dd conv=fdatasync).
path = os.path.join(out, "dd.tmp")
r = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", "count=1024", "conv=fdatasync"], capture_output=True, text=True)
os.remove(path)
line = r.stderr.strip().splitlines()[-1]
secs = float(line.split(" copied, ")[1].split(" s")[0])
disk_mib = 1024 / secs
# fdatasync latency of small appends, as a group commit pays it.
fd = os.open(os.path.join(out, "sync.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
lat = []
for _ in range(500):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter(); os.fdatasync(fd); lat.append((time.perf_counter() - t) * 1000)
os.close(fd); os.remove(os.path.join(out, "sync.tmp"))
lat.sort()
# Loopback bandwidth with one TCP stream.
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
total = 2 * 1024 ** 3
def sink():
    c, _ = srv.accept(); n = 0
    while n < total:
        d = c.recv(1 << 20)
        if not d: break
        n += len(d)
    c.close()
t = threading.Thread(target=sink); t.start()
s = socket.create_connection(("127.0.0.1", port)); buf = b"\0" * (1 << 20)
start = time.perf_counter()
for _ in range(total >> 20): s.sendall(buf)
s.close(); t.join()
loop_mib = 2048 / (time.perf_counter() - start)
print(json.dumps({"target": "machine", "disk_fdatasync_seq_mib_s": disk_mib, "fdatasync_p50_ms": lat[len(lat)//2],
                  "fdatasync_p99_ms": lat[int(len(lat)*0.99)], "loopback_mib_s": loop_mib,
                  "cores": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}))
PY
fi # PEERS_ONLY

# Workloads: name and bench arguments.
WORKLOADS=(
  "putrecords-1k|produce --record-size 1024 --batch 500 --concurrency 8"
  "putrecord-c64|produce --record-size 1024 --batch 1 --concurrency 64"
  "consume-backlog|consume"
  "e2e-getrecords|e2e --record-size 1024 --batch 10 --concurrency 4"
)

run_workloads() { # target endpoint round
  local target=$1 endpoint=$2 round=$3 spec name args stream line
  for spec in "${WORKLOADS[@]}"; do
    name=${spec%%|*}; args=${spec#*|}
    # consume reads the backlog the PutRecords workload left in its stream.
    if [[ $name == consume-backlog ]]; then stream=bench-putrecords-1k; else stream=bench-$name; fi
    echo "-- round $round, $target: $name" >&2
    line=$("$RS" bench $args --endpoint "$endpoint" --stream "$stream" --shards 4 --duration "$DURATION" --json 2>/dev/null | tail -n 1) || true
    if [[ $line == \{* ]]; then
      python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["target"]=sys.argv[2]; d["name"]=sys.argv[3]; d["round"]=int(sys.argv[4]); print(json.dumps(d))' "$line" "$target" "$name" "$round"
    else
      echo "{\"target\": \"$target\", \"name\": \"$name\", \"round\": $round, \"failed\": true}"
    fi
  done
}
export -f run_workloads
export RS DURATION
WORKLOADS_STR=$(printf '%s\n' "${WORKLOADS[@]}")

for round in $(seq "$ROUNDS"); do
  if [[ $PEERS_ONLY != 1 ]]; then
    echo "== round $round: ripstream"
    DATA=$(mktemp -d)
    "$RS" serve --listen 127.0.0.1:45670 --data-dir "$DATA" --quotas off --log-level warn > /dev/null 2>&1 &
    PID=$!
    for _ in $(seq 50); do curl -fs http://127.0.0.1:45670/health >/dev/null 2>&1 && break; sleep 0.2; done
    run_workloads ripstream http://127.0.0.1:45670 "$round" >> "$RESULTS"
    "$RS" bench e2e-efo --record-size 1024 --batch 1 --concurrency 8 --endpoint http://127.0.0.1:45670 --stream bench-efo --shards 4 --duration "$DURATION" --json 2>/dev/null | tail -n 1 \
      | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["target"]="ripstream"; d["name"]="e2e-efo-push"; d["round"]=int(sys.argv[1]); print(json.dumps(d))' "$round" >> "$RESULTS" || true
    # Firehose into a GZIP S3 delivery stream on the same server, beside
    # Data Streams' putrecords-1k of this round (the ratio's denominator).
    echo "-- round $round, ripstream: firehose-gzip" >&2
    "$RS" bench firehose --record-size 1024 --batch 500 --concurrency 8 --buffer-interval "$FIREHOSE_INTERVAL" \
      --endpoint http://127.0.0.1:45670 --duration "$DURATION" --json 2>/dev/null | tail -n 1 \
      | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["target"]="ripstream"; d["name"]="firehose-gzip"; d["round"]=int(sys.argv[1]); print(json.dumps(d))' "$round" >> "$RESULTS" || true
    kill -TERM $PID; wait $PID || true
    rm -rf "$DATA"
  fi

  for peer in $PEERS; do
    echo "== round $round: $peer (in a private network namespace)"
    case $peer in
      kinesalite) START="node $TOOLS/node_modules/kinesalite/cli.js --port 45671 --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 --shardLimit 1000" ;;
      ferrokinesis) START="$TOOLS/bin/ferrokinesis --port 45671 --create-stream-ms 0 --delete-stream-ms 0 --update-stream-ms 0" ;;
    esac
    unshare -n bash -c "
      ip link set lo up
      $START > /dev/null 2>&1 &
      for _ in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/45671) 2>/dev/null && break; sleep 0.1; done
      WORKLOADS=(); while IFS= read -r l; do WORKLOADS+=(\"\$l\"); done <<< \"$WORKLOADS_STR\"
      $(declare -f run_workloads)
      run_workloads $peer http://127.0.0.1:45671 $round
      kill %1 2>/dev/null || true
    " >> "$RESULTS" || true
  done
done

if [[ $PEERS_ONLY != 1 ]]; then
# Ripstream's own limits: memory with 1,000 idle shards, and the time from a
# kill -9 to serving again with RESTART_GB of data in the log.
RESTART_GB=${RESTART_GB:-10}
echo "== ripstream: 1,000 idle shards"
DATA=$(mktemp -d -p "$OUT")
"$RS" serve --listen 127.0.0.1:45670 --data-dir "$DATA" --shard-limit 2000 --log-level warn > /dev/null 2>&1 &
PID=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:45670/health >/dev/null 2>&1 && break; sleep 0.2; done
for i in $(seq 0 9); do
  "$RS" stream create idle-$i --shards 100 --endpoint http://127.0.0.1:45670 > /dev/null
done
sleep 2
IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
kill -TERM $PID; wait $PID || true
rm -rf "$DATA"
echo "{\"target\": \"ripstream\", \"name\": \"idle-1000-shards\", \"server_rss_mib\": $((IDLE_RSS / 1024))}" >> "$RESULTS"

echo "== ripstream: restart with ${RESTART_GB} GB in the log"
DATA=$(mktemp -d -p "$OUT")
"$RS" serve --listen 127.0.0.1:45670 --data-dir "$DATA" --quotas off --log-level warn > /dev/null 2>&1 &
PID=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:45670/health >/dev/null 2>&1 && break; sleep 0.2; done
while (( $(du -sm "$DATA" | cut -f1) < RESTART_GB * 1024 )); do
  "$RS" bench produce --record-size 100000 --batch 50 --concurrency 4 --endpoint http://127.0.0.1:45670 \
    --stream bench-restart --shards 4 --duration 10 --json > /dev/null 2>&1
done
DATA_GB=$(du -sm "$DATA" | awk '{printf "%.1f", $1 / 1024}')
kill -KILL $PID; wait $PID 2>/dev/null || true
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
START_NS=$(date +%s%N)
"$RS" serve --listen 127.0.0.1:45670 --data-dir "$DATA" --quotas off --log-level warn > /dev/null 2>&1 &
PID=$!
until curl -fs http://127.0.0.1:45670/health >/dev/null 2>&1; do sleep 0.01; done
READY_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))
# Serving means reading: the newest records of the stream come back.
"$RS" tail bench-restart --endpoint http://127.0.0.1:45670 --from latest > /dev/null 2>&1 || true
RESTART_RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
kill -TERM $PID; wait $PID || true
rm -rf "$DATA"
echo "{\"target\": \"ripstream\", \"name\": \"restart\", \"data_gb\": $DATA_GB, \"ready_ms\": $READY_MS, \"server_rss_mib\": $((RESTART_RSS / 1024))}" >> "$RESULTS"

if (( FIREHOSE_DOWN > 0 )); then
echo "== ripstream: Firehose with its destination down for ${FIREHOSE_DOWN} s under load"
DATA=$(mktemp -d -p "$OUT")
"$RS" serve --listen 127.0.0.1:45670 --data-dir "$DATA" --quotas off --log-level warn > /dev/null 2>&1 &
PID=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:45670/health >/dev/null 2>&1 && break; sleep 0.2; done
"$RS" bench firehose --record-size 1024 --batch 500 --concurrency 8 --buffer-interval "$FIREHOSE_INTERVAL" \
  --destination-down "$FIREHOSE_DOWN" --duration $((FIREHOSE_DOWN + 20)) --endpoint http://127.0.0.1:45670 --json 2>/dev/null | tail -n 1 \
  | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["target"]="ripstream"; d["name"]="firehose-destination-down"; print(json.dumps(d))' >> "$RESULTS" || true
kill -TERM $PID; wait $PID || true
rm -rf "$DATA"
fi

fi # PEERS_ONLY

echo "== table"
python3 - "$RESULTS" "$OUT/table.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
machine = next((r for r in rows if r["target"] == "machine"), {})
for r in rows:
    if r.get("records_per_sec") and r.get("server_cpu_cores"):
        r["records_per_server_core_sec"] = r["records_per_sec"] / r["server_cpu_cores"]
# Per system and workload, the round with the median records/s.
groups = {}
for r in rows:
    if r["target"] != "machine":
        groups.setdefault((r["target"], r.get("name")), []).append(r)
by = {}
for key, rs_ in groups.items():
    ok = sorted((r for r in rs_ if not r.get("failed")), key=lambda r: r.get("records_per_sec", 0))
    by[key] = ok[len(ok) // 2] if ok else rs_[0]
    by[key]["rounds"] = [round(r.get("records_per_sec", 0)) for r in ok]
names = ["putrecords-1k", "putrecord-c64", "consume-backlog", "e2e-getrecords", "e2e-efo-push"]
peers = sorted({t for t, _ in by if t != "ripstream"})
out = []
out.append(f"Machine: {machine.get('cores')} cores, {machine.get('mem_gib')} GiB; disk sequential write with fdatasync "
           f"{machine.get('disk_fdatasync_seq_mib_s', 0):.0f} MiB/s; fdatasync p50 {machine.get('fdatasync_p50_ms', 0):.2f} ms, "
           f"p99 {machine.get('fdatasync_p99_ms', 0):.2f} ms; loopback {machine.get('loopback_mib_s', 0):.0f} MiB/s.\n")
hdr = "| workload | figure | ripstream | " + " | ".join(f"{p} | ripstream/{p}" for p in peers) + " |"
out.append(hdr)
out.append("|" + "---|" * (3 + 2 * len(peers)))
def fmt(v):
    return "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")
for n in names:
    for fig in ["records_per_sec", "mib_per_sec", "p50_ms", "p99_ms", "server_rss_mib_peak", "server_cpu_cores", "records_per_server_core_sec"]:
        r = by.get(("ripstream", n), {})
        if r.get(fig) is None:
            continue
        cells = [n, fig, fmt(r.get(fig))]
        for p in peers:
            pv = by.get((p, n), {}).get(fig)
            ratio = (r[fig] / pv) if pv else None
            cells += [fmt(pv), "-" if ratio is None else f"{ratio:.2f}x"]
        out.append("| " + " | ".join(cells) + " |")
    r = by.get(("ripstream", n), {})
    if r.get("lost") is not None:
        out.append(f"| {n} | lost/duplicated/corrupted | {r['lost']}/{r['duplicated']}/{r['corrupted']} | " + " | ".join(
            f"{by.get((p, n), {}).get('lost', '-')}/{by.get((p, n), {}).get('duplicated', '-')}/{by.get((p, n), {}).get('corrupted', '-')} | " for p in peers) + " |")
w = by.get(("ripstream", "putrecords-1k"), {}).get("mib_per_sec")
if w and machine.get("disk_fdatasync_seq_mib_s"):
    out.append(f"\nRipstream PutRecords ingest: {w:.1f} MiB/s of payload = {100 * w / machine['disk_fdatasync_seq_mib_s']:.0f}% of the disk's sequential fdatasync bandwidth.")
idle = by.get(("ripstream", "idle-1000-shards"))
if idle:
    out.append(f"Ripstream RSS serving 1,000 idle shards: {idle['server_rss_mib']} MiB.")
rounds = [f"{t} {n}: {', '.join(f'{x:,}' for x in r['rounds'])}" for (t, n), r in sorted(by.items()) if len(r.get("rounds", [])) > 1]
if rounds:
    out.append("\nRecords/s of each round (the median is in the table): " + "; ".join(rounds) + ".")
fh = by.get(("ripstream", "firehose-gzip"))
ds = by.get(("ripstream", "putrecords-1k"))
if fh and not fh.get("failed"):
    ratio = f" = {100 * fh['records_per_sec'] / ds['records_per_sec']:.0f}% of Data Streams PutRecords (putrecords-1k) on the same server" if ds and ds.get("records_per_sec") else ""
    out.append(f"\nFirehose PutRecordBatch 1 KiB x 500 into a GZIP S3 delivery stream: {fh['records_per_sec']:,.0f} records/s{ratio}; "
               f"freshness (send to object listed, 200 ms listing) p50 {fh['freshness_p50_s']:.2f} s, p99 {fh['freshness_p99_s']:.2f} s "
               f"with a {fh['buffer_interval_s']} s buffer interval; {fh['lost']} lost, {fh['duplicated']} delivered twice; peak RSS {fh.get('server_rss_mib_peak') or 0:.0f} MiB.")
down = by.get(("ripstream", "firehose-destination-down"))
if down and not down.get("failed"):
    out.append(f"Firehose with its bucket missing for the first {down['destination_down_s']} s under load: {down['records_per_sec']:,.0f} records/s accepted, "
               f"peak RSS {down['server_rss_mib_peak_while_down']:.0f} MiB while down ({down.get('server_rss_mib_peak') or 0:.0f} MiB overall), "
               f"every record delivered {down['drain_secs']:.1f} s after the producers stopped; {down['lost']} lost.")
rs = by.get(("ripstream", "restart"))
if rs:
    out.append(f"Ripstream restart after kill -9 with {rs['data_gb']} GB in the log: healthy in {rs['ready_ms']} ms (RSS {rs['server_rss_mib']} MiB).")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY

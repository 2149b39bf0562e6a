#!/usr/bin/env bash
# PutRecord latency while a consumer catches up on a cold backlog, and the
# GetRecords rate on a warm one.
#
#   bench/cold_read.sh target/release/ripstream       # one binary
#   FILL_SECS=30 DURATION=10 bench/cold_read.sh BIN
#
# 1. fills stream `backlog` (4 shards) with 256 KiB records for FILL_SECS;
# 2. `bench consume` reads it back warm (the GetRecords figure);
# 3. drops the page cache (needs root) and runs PutRecord (1 KiB, 64 tasks)
#    against stream `hot` with no reader: the baseline;
# 4. drops the page cache again and runs the same PutRecord load while
#    `bench consume` reads the whole cold backlog.
# Prints one JSON line per phase (the bench's --json output).
set -euo pipefail
BIN=$(realpath "${1:?usage: bench/cold_read.sh RIPSTREAM_BINARY}")
FILL_SECS=${FILL_SECS:-20}
DURATION=${DURATION:-10}
PORT=${PORT:-4599}
EP=http://127.0.0.1:$PORT
DIR=$(mktemp -d /tmp/ripstream-cold.XXXXXX)
"$BIN" serve --listen 127.0.0.1:"$PORT" --data-dir "$DIR/data" --quotas off \
  >"$DIR/stdout" 2>"$DIR/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do grep -q listening "$DIR/stdout" && break; sleep 0.1; done

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
bench() { "$BIN" bench "$@" --endpoint "$EP" --json | tail -1; }

echo "# fill: $FILL_SECS s of 256 KiB records"
bench produce --stream backlog --shards 4 --record-size 262144 --batch 8 \
  --concurrency 4 --duration "$FILL_SECS"
echo "# backlog on disk: $(du -sm "$DIR/data/log" | cut -f1) MiB"
echo "# consume, warm page cache"
bench consume --stream backlog
echo "# putrecord-c64, cold cache, no reader"
drop_caches
bench produce --stream hot --shards 4 --record-size 1024 --batch 1 \
  --concurrency 64 --duration "$DURATION"
echo "# putrecord-c64 while consume reads the cold backlog"
drop_caches
bench consume --stream backlog >"$DIR/consume.json" &
READER=$!
sleep 0.5
bench produce --stream hot --shards 4 --record-size 1024 --batch 1 \
  --concurrency 64 --duration "$DURATION"
wait $READER
echo "# the concurrent consume"
cat "$DIR/consume.json"

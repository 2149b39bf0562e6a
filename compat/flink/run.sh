#!/usr/bin/env bash
# Apache Flink's Kinesis connector (flink-connector-kinesis 4.3.0-1.19 on Flink 1.19.3: the FLIP-27
# KinesisStreamsSource, the legacy FlinkKinesisConsumer polling and with enhanced fan-out, and
# KinesisStreamsSink) in a local mini-cluster against the ripstream binary
# in $RIPSTREAM_BIN (default: target/debug/ripstream). Maven's cache is the default ~/.m2, shared
# with compat/java, so a second run downloads nothing. Extra arguments go to Maven.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
export RIPSTREAM_BIN="${RIPSTREAM_BIN:-$ROOT/target/debug/ripstream}"
test -x "$RIPSTREAM_BIN" || { echo "no ripstream binary at $RIPSTREAM_BIN (cargo build first)" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1; }
if ! need mvn || ! need java; then
    echo "installing a JDK and Maven"
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    $sudo_ apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
fi

# -ntp keeps download progress out of the log; Surefire prints its "Tests run: ..." summary and
# mvn exits non-zero on any failure.
start=$(date +%s)
status=0
echo "== compat/flink: Flink 1.19.3 mini-cluster, flink-connector-kinesis 4.3.0-1.19"
mvn -B -ntp test "$@" || status=$?
echo "compat/flink: $(( $(date +%s) - start )) s, exit $status (client log in compat/flink/target/client.log)"
exit $status

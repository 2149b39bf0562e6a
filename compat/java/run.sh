#!/usr/bin/env bash
# The Java clients (AWS SDK for Java v2, KCL 3.x and 2.x, KPL) against the ripstream binary in
# $RIPSTREAM_BIN (default: target/debug/ripstream). Maven's cache is the default ~/.m2, so a second
# run downloads nothing. Each test class starts its own servers on 127.0.0.1:0 and stops them.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
export RIPSTREAM_BIN="${RIPSTREAM_BIN:-$ROOT/target/debug/ripstream}"
test -x "$RIPSTREAM_BIN" || { echo "no ripstream binary at $RIPSTREAM_BIN (cargo build first)" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1; }
if ! need mvn || ! need java || ! need keytool || ! need openssl; then
    echo "installing a JDK and Maven"
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    $sudo_ apt-get install -y -qq openjdk-17-jdk-headless maven openssl >/dev/null
fi

# -ntp keeps download progress out of the log; Surefire's per-class lines and its
# "Tests run: N, Failures: F, Errors: E, Skipped: S" summary are printed, and mvn
# exits non-zero on any failure. Extra arguments go to Maven (e.g. -Dtest=SdkKinesisTest).
start=$(date +%s)
status=0
echo "== compat/java: AWS SDK for Java v2, KCL 3.x, KPL"
mvn -B -ntp test "$@" || status=$?
# KCL 2.x and 3.x share package names, so the last 2.x release gets a Maven run of its own.
echo "== compat/java: KCL 2.x"
mvn -B -ntp -Pkcl2 test "$@" || status=$?
echo "compat/java: $(( $(date +%s) - start )) s, exit $status (client logs in compat/java/target/*.log)"
exit $status

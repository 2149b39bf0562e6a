#!/usr/bin/env bash
# The Java clients (AWS SDK for Java v2, KCL 3.x and 2.x, KPL, the MultiLangDaemon) against the ripstream binary in
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

# amazon_kclpy for the MultiLangDaemon test: its Python sources from PyPI. (Installing it with pip
# fails: its build downloads amazon-kinesis-client(-multilang) 3.5.3 jars, which Maven Central
# answers with 404 from here; the daemon comes from Maven instead.)
KCLPY_VERSION=3.2.0
export KCLPY_PATH="$HOME/.cache/ripstream-compat/amazon_kclpy-$KCLPY_VERSION"
if [ ! -f "$KCLPY_PATH/amazon_kclpy/kcl.py" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "amazon_kclpy==$KCLPY_VERSION" -d "$tmp"
    mkdir -p "$KCLPY_PATH"
    tar -xzf "$tmp"/amazon_kclpy-"$KCLPY_VERSION".tar.gz -C "$KCLPY_PATH" --strip-components=1
    rm -rf "$tmp"
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
echo "== compat/java: the MultiLangDaemon with an amazon_kclpy record processor"
mvn -B -ntp -Pmultilang test "$@" || status=$?
echo "compat/java: $(( $(date +%s) - start )) s, exit $status (client logs in compat/java/target/*.log)"
exit $status

#!/usr/bin/env bash
# The AWS SDK for JavaScript v3 in a browser: a page bundled with esbuild,
# served from one loopback port, calls the real ripstream binary
# ($RIPSTREAM_BIN) on another, in Debian's headless Chromium driven by
# playwright-core. `npm ci` installs the versions package-lock.json pins,
# through npm's cache in the home directory (~/.npm), so a second run
# downloads nothing. Playwright's own browser downloads are never used (they
# cannot be fetched here): the test launches /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")"
start=$SECONDS

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node/npm not found: installing Debian's nodejs and npm"
    as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "/usr/bin/chromium not found: installing Debian's chromium"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "node $(node --version), npm $(npm --version), $(/usr/bin/chromium --version 2>/dev/null)"

: "${RIPSTREAM_BIN:=$PWD/../../target/debug/ripstream}"
export RIPSTREAM_BIN
test -x "$RIPSTREAM_BIN" || { echo "no ripstream binary at $RIPSTREAM_BIN (cargo build first)" >&2; exit 1; }

# playwright-core alone never downloads a browser; say so to any package
# that might try.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --prefer-offline --no-audit --no-fund --loglevel=error
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true

# The test stops the browser and both servers itself, also on SIGINT and
# SIGTERM; the trap passes an interruption of this script on to it, and
# kills what is left if it does not finish in time.
test_pid=
stop_test() {
    if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
        kill -TERM "$test_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$test_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$test_pid" 2>/dev/null || true
    fi
}
trap stop_test EXIT
trap 'stop_test; exit 130' INT
trap 'stop_test; exit 143' TERM

status=0
node --test --test-timeout=180000 &
test_pid=$!
wait "$test_pid" || status=$?
test_pid=
echo "browser suite: $([ "$status" -eq 0 ] && echo passed || echo "FAILED (exit $status)") in $((SECONDS - start)) s"
exit "$status"

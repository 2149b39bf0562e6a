#!/usr/bin/env bash
# The AWS SDK for JavaScript v3 against the real ripstream binary
# ($RIPSTREAM_BIN), with node's built-in test runner. `npm ci` installs the
# versions package-lock.json pins, through npm's cache in the home directory
# (~/.npm), so a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node/npm not found: installing Debian's nodejs and npm"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
echo "node $(node --version), npm $(npm --version)"

: "${RIPSTREAM_BIN:=$PWD/../../target/debug/ripstream}"
export RIPSTREAM_BIN
test -x "$RIPSTREAM_BIN" || { echo "no ripstream binary at $RIPSTREAM_BIN (cargo build first)" >&2; exit 1; }

npm ci --prefer-offline --no-audit --no-fund --loglevel=error

# The SDK warns once per test file that its releases after January 2027 need
# node >= 22; say it once here instead (the lockfile keeps today's versions).
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ]; then
    echo "note: AWS SDK for JavaScript releases after January 2027 require node >= 22"
fi
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true

# Every test file starts its own servers on 127.0.0.1:0 and stops them in its
# `after` hook (and kills them if the file's process exits early).
node --test

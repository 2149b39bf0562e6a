#!/usr/bin/env bash
# The AWS SDK for Go v2 against the real ripstream binary ($RIPSTREAM_BIN).
# Modules come from the Go module proxy into the default module cache in the
# home directory, so a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
    echo "go not found: installing Debian's golang"
    apt-get update -qq && apt-get install -y -qq golang >/dev/null
fi
go version

: "${RIPSTREAM_BIN:=$PWD/../../target/debug/ripstream}"
export RIPSTREAM_BIN
test -x "$RIPSTREAM_BIN" || { echo "no ripstream binary at $RIPSTREAM_BIN (cargo build first)" >&2; exit 1; }

# go.mod and go.sum are committed; -mod=mod lets a newer toolchain adjust
# them without failing the run.
export GOFLAGS=-mod=mod
# Each test starts its servers on 127.0.0.1:0 and stops them when it ends;
# a test binary that dies takes its servers with it (Pdeathsig).
go test ./... -v -count=1 -timeout 10m

#!/usr/bin/env bash
# Fuzzes every decoder that input reaches: JSON and CBOR request bodies (through
# the model validator and the whole service), DynamoDB expressions and attribute
# values (through the lease-table operations), SigV4 headers and query strings,
# aws-chunked bodies (streaming payload signatures: garbage and mutated bodies),
# shard iterator tokens, and the shard log's recovery and reader over garbage
# and bit-flipped segments. Then the front door's hostile requests against the
# real binary: silent and preface-only connection floods, one source taking
# every slot, pinging-but-idle HTTP/2 connections, many large bodies at once,
# CBOR bodies of millions of one-byte items, PutRecords with millions of
# broken entries and DynamoDB expressions reusing a 15 MB placeholder (each
# with a peak-RSS bound), plus /metrics, DNS-rebinding and log redaction.
#
#   fuzz/run.sh            # about 20k cases per target (a few minutes on 2 cores)
#   CASES=200000 fuzz/run.sh
#
# The targets are proptest properties: a failure is shrunk to a minimal input
# and saved under proptest-regressions/ next to the test, where every later
# `cargo test` replays it first. Commit those files with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${CASES:-20000}"
start=$(date +%s)
cargo test --release -p ripstream-server fuzz
cargo test --release -p ripstream-kinesis fuzz
# Firehose's record format conversion: any record, any Joda pattern.
PROPTEST_CASES=$(( PROPTEST_CASES / 10 )) cargo test --release -p ripstream-convert fuzz
PROPTEST_CASES=$(( PROPTEST_CASES / 20 )) cargo test --release -p ripstream-log fuzz
# Each case opens a fresh table store, so fewer cases.
PROPTEST_CASES=$(( PROPTEST_CASES / 20 )) cargo test --release -p ripstream-dynamo fuzz
cargo test --release -p ripstream --test integration hostile
echo "fuzzing done in $(( $(date +%s) - start )) s with ${PROPTEST_CASES} cases per target"

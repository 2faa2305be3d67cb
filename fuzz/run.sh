#!/bin/sh
# Fuzz the given targets one after another (one process at a time), each for
# $SECONDS_PER_TARGET seconds (default 600), with the built binaries (no rebuild:
# run `cargo fuzz build --sanitizer none` first). Logs in $LOGS (default
# artifacts/logs, git-ignored).
#   fuzz/run.sh tiff jpeg png ...
set -u
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-600}
logs=${LOGS:-artifacts/logs}
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p "$logs"
for t in "$@"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: $(date -u +%H:%M:%S) for ${secs}s" >> "$logs/summary.txt"
    "$bin/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" \
        -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -timeout=10 -max_len=65536 > "$logs/$t.log" 2>&1
    echo "   rc=$? end $(date -u +%H:%M:%S); last stats: $(grep -a '^#' "$logs/$t.log" | tail -1)" >> "$logs/summary.txt"
    echo "   corpus: $(ls "corpus/$t" | wc -l) files; artifacts: $(ls "artifacts/$t" | wc -l)" >> "$logs/summary.txt"
done

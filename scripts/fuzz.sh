#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time:
#   scripts/fuzz.sh [seconds-per-target]   (default 60)
#   FUZZ_TARGETS="frames_decode config_parse" scripts/fuzz.sh 30   # a subset
#
# Targets (fuzz/fuzz_targets/): frames_decode (reassembly + decode +
# envelope), subscriber_control (the /ws endpoint and Session::control,
# in-process), query_parse (/ws query strings and filters), config_parse
# (config text plus environment overrides).
#
# The seed corpora in fuzz/corpus/<target>/ are read, never written: new
# inputs go to fuzz/target/corpus/<target>/. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit 1 after all targets ran.
#
# cargo-fuzz wants nightly; RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# its -Z flags. AddressSanitizer is used when it builds (FUZZ_SANITIZER=none
# to skip it); debug assertions are on, so an integer overflow is a crash.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET=${1:-60}
case "$SECONDS_PER_TARGET" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2; exit 2;; esac
TARGETS=${FUZZ_TARGETS:-"frames_decode subscriber_control query_parse config_parse"}
export RUSTC_BOOTSTRAP=1

log() { printf 'fuzz: %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

SANITIZER=${FUZZ_SANITIZER:-address}
if ! cargo fuzz build -a --sanitizer "$SANITIZER" >&2; then
    if [ "$SANITIZER" = none ]; then exit 1; fi
    log "build with --sanitizer $SANITIZER failed; trying --sanitizer none"
    SANITIZER=none
    cargo fuzz build -a --sanitizer none >&2
fi

failed=()
for t in $TARGETS; do
    mkdir -p "target/corpus/$t"
    log "$t: ${SECONDS_PER_TARGET}s (sanitizer $SANITIZER)"
    # -timeout: one input taking over 10 s is a hang, reported as a crash.
    # The /ws query target takes inputs up to 64 KiB (a hostile handshake)
    # and must answer each within 2 s: a slow filter build is a finding.
    case "$t" in
        query_parse) limits="-max_len=65536 -len_control=0 -timeout=2" ;;
        *) limits="-max_len=8192 -timeout=10" ;;
    esac
    # shellcheck disable=SC2086
    if ! cargo fuzz run -a --sanitizer "$SANITIZER" "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" $limits -rss_limit_mb=2048 \
        -print_final_stats=1 2> >(tee "target/$t.log" | grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|==[0-9]+==|thread .* panicked|SUMMARY)' >&2); then
        failed+=("$t")
        log "$t: CRASH (input in fuzz/artifacts/$t/, log in fuzz/target/$t.log)"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    log "crashed: ${failed[*]}"
    exit 1
fi
log "no crash in: $TARGETS"

#!/usr/bin/env bash
# Soak test (issue 5, SPEC §5, §10): scripts/soak.sh [minutes]   (default 10)
#
# Builds wsgate (release) and the helpers in soak/, then runs, all on
# 127.0.0.1:
#   - a feed (soak/ `feed`) sending numbered JSON at a steady rate, killed
#     and restarted every 30 s (alternately SIGTERM: clean close, and
#     SIGKILL: no close frame), down ~1 s each time;
#   - the real wsgate configured against it;
#   - 50 subscribers (soak/ `subs`): 49 healthy ones that account for every
#     message, and one that connects and never reads.
# At the end it reports wsgate crashes, messages lost by healthy subscribers
# outside the upstream's downtime, reconnects (wsgate_upstream_connects_total),
# RSS after warm-up and at the end, and writes the summary to docs/soak.md
# (SOAK_DOC=path to write elsewhere). Exits 1 when a crash, a loss or RSS
# growth of 10 % or more was seen.
#
# Bounded: every wait has a deadline; only processes started here are
# signalled, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MINUTES=${1:-10}
RATE=${SOAK_RATE:-200}              # feed messages per second
HEALTHY=49
STALLED=1
RESTART_EVERY=30                    # seconds between feed kills
FEED_DOWN=1                         # seconds the feed stays down
WARMUP=$(( MINUTES * 60 / 10 ))     # RSS "start" is sampled after this
[ "$WARMUP" -gt 60 ] && WARMUP=60
[ "$WARMUP" -lt 10 ] && WARMUP=10
DOC=${SOAK_DOC:-$ROOT/docs/soak.md}

log() { printf 'soak: %s\n' "$*" >&2; }

case "$MINUTES" in ''|*[!0-9]*) echo "usage: scripts/soak.sh [minutes]" >&2; exit 2;; esac
[ "$MINUTES" -ge 1 ] || { echo "minutes must be at least 1" >&2; exit 2; }

BUILT_FROM=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then BUILT_FROM="$BUILT_FROM (with uncommitted changes in src/)"; fi
log "building wsgate (release) from $BUILT_FROM"
cargo build --release --bin wsgate --quiet
log "building soak helpers (release, own target dir)"
CARGO_TARGET_DIR="$ROOT/soak/target" cargo build --release --quiet --manifest-path soak/Cargo.toml
WSGATE="$ROOT/target/release/wsgate"
HELPER="$ROOT/soak/target/release/wsgate-soak"

WORK=$(mktemp -d /tmp/wsgate-soak.XXXXXX)
log "work dir $WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
FEED_PORT=$(free_port)
GW_PORT=$(free_port)
GW="127.0.0.1:$GW_PORT"

cat > "$WORK/wsgate.toml" <<EOF
[server]
listen = "$GW"
shutdown_timeout = "10s"

[log]
level = "info"

[subscribers]
queue_capacity = 1024
overflow = "drop_oldest"

[[upstreams]]
name = "soak"
url = "ws://127.0.0.1:$FEED_PORT/feed"

[upstreams.heartbeat]
interval = "5s"
timeout = "10s"

[upstreams.reconnect]
initial = "200ms"
max = "2s"

[upstreams.decode]
format = "json"
topic = "/type"
EOF

FEED_PID=""
GW_PID=""
SUBS_PID=""
cleanup() {
    for pid in "$SUBS_PID" "$FEED_PID" "$GW_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
}
trap cleanup EXIT

start_feed() {
    "$HELPER" feed --listen "127.0.0.1:$FEED_PORT" --rate "$RATE" --log "$WORK/feed.log" 2>>"$WORK/feed.err" &
    FEED_PID=$!
}
start_gateway() {
    RUST_LOG=info "$WSGATE" run --config "$WORK/wsgate.toml" 2>>"$WORK/wsgate.log" >/dev/null &
    GW_PID=$!
}
# wait_for SECONDS DESCRIPTION COMMAND...: polls every 0.2 s until COMMAND succeeds.
wait_for() {
    local deadline=$(( $(date +%s) + $1 )) what=$2
    shift 2
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then log "timed out waiting for $what"; return 1; fi
        sleep 0.2
    done
}
# wait_exit PID SECONDS: waits for a child to exit; its exit code (or
# "timeout") goes to EXIT_CODE. Not in a subshell: only this shell can wait.
wait_exit() {
    local deadline=$(( $(date +%s) + $2 ))
    EXIT_CODE=timeout
    while kill -0 "$1" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then return; fi
        sleep 0.1
    done
    EXIT_CODE=0
    wait "$1" || EXIT_CODE=$?
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$GW/readyz")" = 200 ]; }
subs_ready() { grep -q READY "$WORK/subs.out" 2>/dev/null; }
metric() { # metric NAME{labels} from $WORK/metrics.txt, 0 when absent
    awk -v s="$1" 'index($0, s" ") == 1 {print $2; found=1} END {if (!found) print 0}' "$WORK/metrics.txt"
}

CRASHES=0
CRASH_CODES=""
start_feed
start_gateway
GW_START_PID=$GW_PID
wait_for 30 "wsgate /readyz 200" ready

"$HELPER" subs --url "ws://$GW/ws" --healthy "$HEALTHY" --stalled "$STALLED" --feed-log "$WORK/feed.log" \
    --out "$WORK/report.json" --max-seconds $(( MINUTES * 60 + 300 )) >"$WORK/subs.out" 2>"$WORK/subs.err" &
SUBS_PID=$!
wait_for 60 "subscribers connected" subs_ready

T0=$(date +%s)
END=$(( T0 + MINUTES * 60 ))
NEXT_KILL=$(( T0 + RESTART_EVERY ))
NEXT_SAMPLE=$T0
RSS_START=""
KILLS=0
echo "seconds,rss_kib" > "$WORK/rss.csv"
log "running $MINUTES min: feed $RATE msg/s on :$FEED_PORT, wsgate on $GW (pid $GW_PID), $HEALTHY+$STALLED subscribers"

# The main loop: one pass per second, bounded by END.
while [ "$(date +%s)" -lt "$END" ]; do
    now=$(date +%s)
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        wait_exit "$GW_PID" 1
        code=$EXIT_CODE
        CRASHES=$(( CRASHES + 1 ))
        CRASH_CODES="$CRASH_CODES $code"
        log "wsgate exited (code $code) at +$(( now - T0 ))s; restarting it"
        start_gateway
    fi
    if [ "$now" -ge "$NEXT_SAMPLE" ]; then
        echo "$(( now - T0 )),$(rss_kib "$GW_PID")" >> "$WORK/rss.csv"
        NEXT_SAMPLE=$(( NEXT_SAMPLE + 10 ))
    fi
    if [ -z "$RSS_START" ] && [ $(( now - T0 )) -ge "$WARMUP" ]; then
        RSS_START=$(rss_kib "$GW_PID")
        log "RSS after ${WARMUP}s warm-up: ${RSS_START} KiB"
    fi
    if [ "$now" -ge "$NEXT_KILL" ] && [ $(( END - now )) -gt 5 ]; then
        KILLS=$(( KILLS + 1 ))
        if [ $(( KILLS % 2 )) -eq 1 ]; then sig=TERM; else sig=KILL; fi
        kill -"$sig" "$FEED_PID" 2>/dev/null || true
        wait_exit "$FEED_PID" 5
        sleep "$FEED_DOWN"
        start_feed
        NEXT_KILL=$(( NEXT_KILL + RESTART_EVERY ))
    fi
    sleep 1
done

# Wind down: the feed stops for good, subscribers drain what is in flight.
kill -TERM "$FEED_PID" 2>/dev/null || true
wait_exit "$FEED_PID" 5
FEED_PID=""
sleep 3
RSS_END=$(rss_kib "$GW_PID")
[ -n "$RSS_START" ] || RSS_START=$RSS_END
curl -s --max-time 5 "http://$GW/metrics" > "$WORK/metrics.txt" || true
HEALTHZ=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$GW/healthz" || true)
kill -TERM "$SUBS_PID" 2>/dev/null || true
wait_exit "$SUBS_PID" 60
SUBS_CODE=$EXIT_CODE
SUBS_PID=""
kill -TERM "$GW_PID" 2>/dev/null || true
wait_exit "$GW_PID" 20
GW_EXIT=$EXIT_CODE
GW_PID=""

[ -s "$WORK/report.json" ] || { log "no subscriber report (subs exit $SUBS_CODE); see $WORK/subs.err"; exit 1; }
R() { jq -r "$1" "$WORK/report.json"; }
LOST=$(R .lost_total)
LOST_MID=$(R .lost_mid_link_total)
LOST_END=$(R .lost_at_link_end_total)
CONNECTS=$(metric 'wsgate_upstream_connects_total{upstream="soak"}')
MESSAGES=$(metric 'wsgate_upstream_messages_total{upstream="soak"}')
DROPPED=$(metric 'wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}')
WS_SUBS=$(metric 'wsgate_subscribers{kind="websocket"}')
DISC_SLOW=$(metric 'wsgate_subscriber_disconnects_total{reason="slow"}')
DISC_ERR=$(metric 'wsgate_subscriber_disconnects_total{reason="error"}')
DISC_CLIENT=$(metric 'wsgate_subscriber_disconnects_total{reason="client"}')
DISCONNECTS=$(grep '^wsgate_upstream_disconnects_total{' "$WORK/metrics.txt" | sed 's/^wsgate_upstream_disconnects_total//' | tr '\n' ' ' || true)
GROWTH=$(awk -v a="$RSS_START" -v b="$RSS_END" 'BEGIN { if (a > 0) printf "%.1f", (b - a) * 100 / a; else print "n/a" }')
RSS_MAX=$(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m + 0}' "$WORK/rss.csv")
VERDICT=pass
if [ "$CRASHES" -ne 0 ] || [ "$LOST" != 0 ] || ! awk -v g="$GROWTH" 'BEGIN { exit !(g < 10) }'; then VERDICT=fail; fi

mkdir -p "$(dirname "$DOC")"
cat > "$DOC" <<EOF
# Soak test

\`scripts/soak.sh [minutes]\` (default 10) builds wsgate in release mode and
the helpers in \`soak/\`, then runs everything on 127.0.0.1:

- a feed sending numbered JSON (\`{"type":"tick","n":N,...}\`, ~100 bytes)
  at $RATE msg/s, killed every ${RESTART_EVERY} s (alternately SIGTERM, which
  closes with 1001, and SIGKILL, which sends no close frame) and restarted
  ${FEED_DOWN} s later; it logs every number it wrote to a socket, and sends
  only while wsgate is connected, so the upstream's downtime is never in its log;
- the real wsgate (\`target/release/wsgate run\`), heartbeat 5 s / 10 s,
  reconnect backoff 200 ms .. 2 s, queue 1024, \`drop_oldest\`;
- 50 subscribers on \`/ws\`: 49 healthy ones that record every \`data.n\` and
  check that \`seq\` is consecutive, and one that connects and never reads
  (wsgate drops it: the kernel closes its socket after \`stall_timeout\`
  (30 s) of unacknowledged data, or the session's 45 s client timeout
  fires because it answers no ping; the helper then connects a new
  never-reading one, so one is always there).

Loss = numbers in the feed's log (after a subscriber's first message) that a
healthy subscriber did not get. "At link end" are the last few (≤ 20)
messages of a feed connection that never arrived, i.e. died with the
upstream; anything else is "mid-link" loss. Both count as loss below.
A healthy subscriber's count is a little below the feed's total: the
feed starts sending when wsgate connects, before the subscribers are up.
RSS "start" is sampled ${WARMUP} s after the subscribers connected.

## Last result

Run $(date -u +%Y-%m-%dT%H:%M:%SZ), ${MINUTES} min, on this repo's build machine (2 cores),
wsgate built from commit $BUILT_FROM.

| what | result |
|---|---|
| verdict (0 crashes, 0 loss, RSS growth < 10 %) | **$VERDICT** |
| wsgate crashes (unexpected exits, restarted by the script) | $CRASHES${CRASH_CODES:+ (exit codes:$CRASH_CODES)} |
| wsgate exit code on the final SIGTERM | $GW_EXIT |
| /healthz at the end | $HEALTHZ |
| feed restarts | $KILLS |
| upstream connects (\`wsgate_upstream_connects_total\`) | $CONNECTS |
| upstream disconnects by reason | \`$DISCONNECTS\` |
| messages sent by the feed / received by wsgate | $(R .feed_sent) / $MESSAGES |
| healthy subscribers | $(R .healthy_subscribers) |
| messages per healthy subscriber (min .. max) | $(R .received_min) .. $(R .received_max) |
| lost by healthy subscribers (total, mid-link, at link end) | $LOST, $LOST_MID, $LOST_END |
| \`seq\` jumps / gap events at healthy subscribers | $(R .seq_jumps_total) / $(R .gap_events_total) |
| healthy subscriber disconnects | $(R .subscriber_disconnects_total) |
| times the non-reading subscriber was dropped by wsgate and came back | $(R .stalled_replaced) |
| dropped for the non-reading subscriber (\`wsgate_subscriber_dropped_total\` overflow) | $DROPPED |
| subscriber disconnects: slow / error / client | $DISC_SLOW / $DISC_ERR / $DISC_CLIENT |
| WebSocket subscribers at the end | $WS_SUBS |
| RSS after warm-up | $(( RSS_START / 1024 )) MiB ($RSS_START KiB) |
| RSS at the end | $(( RSS_END / 1024 )) MiB ($RSS_END KiB) |
| RSS growth | $GROWTH % |
| RSS peak (10 s samples) | $(( RSS_MAX / 1024 )) MiB ($RSS_MAX KiB) |

RSS every 10 s (KiB): $(awk -F, 'NR > 1 {printf "%s%s", sep, $2; sep=" "}' "$WORK/rss.csv")
EOF
log "summary written to $DOC (logs in $WORK)"
cat "$DOC" >&2
[ "$VERDICT" = pass ]

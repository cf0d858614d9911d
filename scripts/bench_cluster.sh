#!/usr/bin/env bash
# wsgate through NATS (issue 15): deliveries per second and latency to /ws
# subscribers of a replica that does NOT hold the upstream (so every message
# goes feed -> owner -> JetStream -> this replica's stream reader -> /ws),
# beside the same feed straight through one gateway (feed -> /ws).
# Needs NATS with JetStream on 127.0.0.1:4222. Writes docs/bench/cluster.md.
#
#   scripts/bench_cluster.sh                 # rates 2000 and 0 (= as fast as the socket takes them), 10 clients
#   RATES="5000" CLIENTS=1 scripts/bench_cluster.sh
#
# Environment: WSGATE_BIN (default target/release/wsgate, built when missing),
# WSBENCH (default bench/target/release/wsbench, built when missing).
# Every process is started here, bounded in time, and stopped by its own PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RATES=${RATES:-"2000 0"}
CLIENTS=${CLIENTS:-10}
MEASURE=${MEASURE:-4}
OUT=$ROOT/docs/bench
mkdir -p "$OUT"

if [[ -z "${WSGATE_BIN:-}" ]]; then
    cargo build --release --quiet --bin wsgate
    WSGATE_BIN=$ROOT/target/release/wsgate
fi
if [[ -z "${WSBENCH:-}" ]]; then
    cargo build --release --quiet --manifest-path bench/Cargo.toml
    WSBENCH=$ROOT/bench/target/release/wsbench
fi
(exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || { echo "skipped: no NATS on 127.0.0.1:4222" >&2; exit 0; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # port
    for _ in $(seq 1 200); do
        if curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "gateway on $1 not ready; its log:" >&2
    cat "$TMP"/*.log >&2
    return 1
}

gateway() { # name port feed_port [cluster lines]
    local cfg=$TMP/$1.toml
    printf '[server]\nlisten = "127.0.0.1:%s"\n[subscribers]\nqueue_capacity = 4096\n%s\n[[upstreams]]\nname = "bench"\nurl = "ws://127.0.0.1:%s/"\n[upstreams.decode]\ntopic = "/type"\n' \
        "$2" "${4:-}" "$3" >"$cfg"
    timeout 120 "$WSGATE_BIN" run --config "$cfg" >/dev/null 2>"$TMP/$1.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
}

stop() { # pids: SIGTERM, then wait for them to be gone
    kill -TERM "$@" 2>/dev/null || true
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

swarm() { # port
    timeout 60 "$WSBENCH" swarm --url "ws://127.0.0.1:$1/ws" --clients "$CLIENTS" --warmup 1.5 --measure "$MEASURE" \
        | grep '"event":"result"' | tail -1
}

field() { python3 -c "import json,sys; v=json.loads(sys.argv[1]); print(round(v['$2']))" "$1"; }

# Deletes a stream and a KV bucket through the JetStream API (raw protocol).
nats_delete() { # stream bucket
    python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", 4222)); f = s.makefile("rb"); f.readline()
s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.bench 1\r\n')
for subj in (f"$JS.API.STREAM.DELETE.{sys.argv[1]}", f"$JS.API.STREAM.DELETE.KV_{sys.argv[2]}"):
    s.sendall(f"PUB {subj} _INBOX.bench 0\r\n\r\n".encode())
    while not f.readline().startswith(b"MSG"):
        pass
    f.readline()
EOF
}

ROWS=()
for rate in $RATES; do
    feed_out=$TMP/feed-$rate.out
    # The feed exits at the end of its stdin: keep one open.
    sleep 130 | timeout 120 "$WSBENCH" feed --rate "$rate" --duration 100 >"$feed_out" &
    FEED=$!
    PIDS+=($FEED)
    for _ in $(seq 1 100); do grep -q listening "$feed_out" 2>/dev/null && break; sleep 0.05; done
    fport=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['port'])" "$feed_out")

    # 1. Direct: one gateway, its own /ws.
    p=$(free_port)
    gateway direct "$p" "$fport"
    gw=$GW_PID
    wait_ready "$p"
    direct=$(swarm "$p")
    stop "$gw"

    # 2. Through NATS: two replicas; the subscribers on the one that does not hold the lease.
    id=$$x$rate
    cl=$(printf '[cluster]\nenabled = true\nlease_ttl = "3s"\nbucket = "bench_%s"\nstream = "BENCH_%s"\nsubject_prefix = "bench%s"\n' "$id" "$id" "$id")
    pa=$(free_port); pb=$(free_port)
    gateway a "$pa" "$fport" "$cl
node = \"a\""
    ga=$GW_PID
    gateway b "$pb" "$fport" "$cl
node = \"b\""
    gb=$GW_PID
    wait_ready "$pa"; wait_ready "$pb"
    owner=$(curl -fs "http://127.0.0.1:$pa/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["upstreams"][0]["owner"])')
    reader=$pb; [[ $owner == b ]] && reader=$pa
    via=$(swarm "$reader")
    stop "$ga" "$gb"
    nats_delete "BENCH_$id" "bench_$id"
    stop "$FEED"

    label=$([[ $rate == 0 ]] && echo "max (feed unpaced)" || echo "$rate msg/s")
    ROWS+=("| $label | $CLIENTS | $(field "$direct" deliveries_per_s) | $(field "$via" deliveries_per_s) | $(field "$direct" lat_us_p50) / $(field "$direct" lat_us_p99) | $(field "$via" lat_us_p50) / $(field "$via" lat_us_p99) | $(field "$direct" missed) / $(field "$via" missed) |")
    echo "rate $rate: direct $direct" >&2
    echo "rate $rate: via NATS $via" >&2
done

{
    echo "# wsgate through NATS JetStream vs. direct /ws (issue 15)"
    echo
    echo "Written by \`scripts/bench_cluster.sh\` on $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Envelope subscribers, ${MEASURE} s window after 1.5 s warm-up. *Via NATS*: the subscribers are on the"
    echo "replica that does not hold the upstream, so each message goes owner -> JetStream publish (acked) ->"
    echo "ordered consumer -> hub -> /ws."
    echo
    echo "| feed rate | subscribers | direct deliveries/s | via NATS deliveries/s | direct p50 / p99 µs | via NATS p50 / p99 µs | missed direct / via |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT/cluster.md"
cat "$OUT/cluster.md"

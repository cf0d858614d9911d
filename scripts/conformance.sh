#!/usr/bin/env bash
# The Autobahn TestSuite (RFC 6455, RFC 7692) against both of wsgate's frame
# layers, beside Python's `websockets` library as the reference:
#
#   client side: the fuzzing server ("${WSTEST[@]}" -m fuzzingserver) serves one
#     connection per case; `wsgate tail URL --echo` is run once per case
#     (one process per case, so a case that wedges a process cannot spoil
#     the next), then the websockets client does the same.
#   server side: the fuzzing client ("${WSTEST[@]}" -m fuzzingclient) runs cases
#     1-10 against `wsgate run`'s test-only GET /__echo (the /ws session
#     frame layer, echoing; built with `--features test-hooks`) and against
#     a websockets echo server.
#
# The summary (counts per behaviour, every case not OK with Autobahn's
# reason) replaces the generated part of the output file; the hand-written
# explanations around it are kept. The HTML and JSON reports stay in
# target/conformance/{full,quick}/reports/.
#
# Usage: scripts/conformance.sh [--quick] [--no-reference] [--out FILE]
#   --quick         a representative subset (the one `cargo test --test
#                   conformance` runs, a few minutes): every case of 1-7 and
#                   10 on the client side, a few of 9, 12 and 13; on the
#                   server side 2-5, 6.1-6.4, 7.1, 7.3, 7.13 and 10, a few
#                   of 1, 7 and 9.
#                   Default out: target/conformance/quick.md. Without it,
#                   every case (client 1-13, server 1-10; about 40 minutes,
#                   the websockets client's 12.x and 13.x are slow) into
#                   docs/conformance.md.
#   --no-reference  skip the websockets runs.
# Environment: WSGATE_BIN (a wsgate built with --features test-hooks; else
# this script builds one), PYTHON2 (default: `python` with
# PYENV_VERSION=2.7.18), PYTHON (python3 with `websockets`),
# WSGATE_CONFORMANCE_CACHE (where the suite is installed; default
# target/conformance/site).
# Exit status: 0 when no case of ours is FAILED, UNIMPLEMENTED, unclean or
# with a wrong close code; 1 otherwise; 2 on usage or setup errors; 3 when
# Python 2.7 is absent (nothing ran).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

log() { printf 'conformance.sh: %s\n' "$*" >&2; }

quick=0
reference=1
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --no-reference) reference=0 ;;
        --out) out="$2"; shift ;;
        *) log "unknown argument $1"; exit 2 ;;
    esac
    shift
done
if [ -z "$out" ]; then
    if [ "$quick" = 1 ]; then out="target/conformance/quick.md"; else out="docs/conformance.md"; fi
fi

PYTHON="${PYTHON:-python3}"
# An array, not a function: `"${PY2[@]}" ... &` is then the PID of Python
# itself (env and pyenv's shims exec), which stop_all can end.
if [ -n "${PYTHON2:-}" ]; then
    PY2=("$PYTHON2")
else
    PY2=(env PYENV_VERSION=2.7.18 python)
fi
if ! "${PY2[@]}" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; then
    log "SKIPPED: no Python 2.7 (the Autobahn TestSuite needs it; set PYTHON2 or install 2.7.18 under pyenv)"
    exit 3
fi
if ! "$PYTHON" -c 'import websockets' >/dev/null 2>&1; then
    log "python3 without the websockets library (scripts/install-test-tools.sh installs it)"
    exit 2
fi

# The suite, once per cache folder, with pinned versions.
CACHE="${WSGATE_CONFORMANCE_CACHE:-$ROOT/target/conformance/site}"
REQS="$ROOT/scripts/conformance/requirements.txt"
stamp="$CACHE/.installed-$(cksum <"$REQS" | cut -d' ' -f1)"
if [ ! -e "$stamp" ]; then
    log "installing the Autobahn TestSuite into $CACHE"
    rm -rf "$CACHE"
    mkdir -p "$CACHE"
    "${PY2[@]}" -m pip install --disable-pip-version-check --no-warn-script-location -q --target "$CACHE" -r "$REQS" >&2
    touch "$stamp"
fi
WSTEST=("${PY2[@]}" "$ROOT/scripts/conformance/wstest.py" "$CACHE")

if [ -z "${WSGATE_BIN:-}" ]; then
    log "building wsgate with --features test-hooks"
    cargo build --features test-hooks >&2
    WSGATE_BIN="$ROOT/target/debug/wsgate"
fi

# The quick and the full run apart, so that the test and a manual run do
# not remove each other's reports.
if [ "$quick" = 1 ]; then WORK="$ROOT/target/conformance/quick"; else WORK="$ROOT/target/conformance/full"; fi
REPORTS="$WORK/reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS" "$WORK/logs"

# Everything started here is stopped by PID on the way out.
pids=()
stop_all() {
    local p
    for p in "${pids[@]+"${pids[@]}"}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]+"${pids[@]}"}"; do
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
trap stop_all EXIT
trap 'exit 143' TERM INT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits (60 s at most) until 127.0.0.1:$1 accepts connections.
wait_port() {
    local port="$1" what="$2" i
    for i in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "$what did not listen on 127.0.0.1:$port within 60 s"
    exit 2
}
json_list() { "$PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }

if [ "$quick" = 1 ]; then
    client_cases=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' 9.1.1 9.1.6 9.2.1 9.2.6 9.3.1 9.5.1 '10.*' 12.1.1 12.1.2 12.2.1 12.5.1 13.1.1 13.2.1 13.3.1 13.4.1 13.5.1 13.6.1 13.7.1)
    # Each server-side case costs about a second (the close linger,
    # docs/conformance.md), so fewer of each group than on the client side.
    server_cases=(1.1.1 1.1.6 1.1.8 1.2.1 1.2.8 '2.*' '3.*' '4.*' '5.*' '6.1.*' '6.2.*' '6.3.*' '6.4.*'
        '7.1.*' '7.3.*' 7.5.1 7.7.1 7.7.13 7.9.1 7.9.9 '7.13.*' 9.1.1 9.2.1 '10.*')
    client_label="1-7, 10; some of 9, 12, 13"
    server_label="2-5, 6.1-6.4, 7.1, 7.3, 7.13, 10; some of 1, 7 and 9"
else
    client_cases=('*')
    server_cases=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*')
    client_label="all (1-13)"
    server_label="1-10"
fi

runs=()
run_entry() { # testee side index agent gate cases
    runs+=("$("$PYTHON" -c 'import json, sys; a = sys.argv[1:]; print(json.dumps({"testee": a[0], "side": a[1], "index": a[2], "agent": a[3], "gate": a[4] == "1", "cases": a[5]}))' "$@")")
}

# === client side: the fuzzing server against wsgate tail --echo ===
port="$(free_port)"
cat >"$WORK/fuzzingserver.json" <<EOF
{"url": "ws://127.0.0.1:$port", "outdir": "$REPORTS/clients", "cases": $(json_list "${client_cases[@]}"),
 "exclude-cases": [], "exclude-agent-cases": {}}
EOF
log "client side: fuzzing server on 127.0.0.1:$port (cases: $client_label)"
"${WSTEST[@]}" -m fuzzingserver -s "$WORK/fuzzingserver.json" -u 0 >"$WORK/logs/fuzzingserver.log" 2>&1 &
pids+=($!)
wait_port "$port" "the fuzzing server"
"$PYTHON" scripts/conformance/drive.py cases "ws://127.0.0.1:$port" wsgate -- \
    "$WSGATE_BIN" tail '{url}' --echo --proxy none --timeout 110s 2>"$WORK/logs/client-wsgate.log" || true
tail -n 1 "$WORK/logs/client-wsgate.log" >&2
run_entry "wsgate tail --echo" client "$REPORTS/clients/index.json" wsgate 1 "$client_label"
if [ "$reference" = 1 ]; then
    "$PYTHON" scripts/conformance/drive.py cases "ws://127.0.0.1:$port" websockets --websockets \
        2>"$WORK/logs/client-websockets.log" || true
    tail -n 1 "$WORK/logs/client-websockets.log" >&2
    run_entry "websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)') client (reference)" \
        client "$REPORTS/clients/index.json" websockets 0 "$client_label"
fi
stop_all

# === server side: the fuzzing client against GET /__echo ===
gw_port="$(free_port)"
cat >"$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$gw_port"
[log]
level = "warn"
EOF
"$WSGATE_BIN" run --config "$WORK/gateway.toml" 2>"$WORK/logs/gateway.log" &
pids+=($!)
wait_port "$gw_port" "wsgate run"
servers="[{\"agent\": \"wsgate\", \"url\": \"ws://127.0.0.1:$gw_port/__echo\"}"
if [ "$reference" = 1 ]; then
    rm -f "$WORK/echo-server.port"
    "$PYTHON" scripts/conformance/drive.py echo-server "$WORK/echo-server.port" 2>"$WORK/logs/echo-server.log" &
    pids+=($!)
    for _ in $(seq 1 600); do [ -s "$WORK/echo-server.port" ] && break; sleep 0.1; done
    ref_port="$(cat "$WORK/echo-server.port" 2>/dev/null || true)"
    [ -n "$ref_port" ] || { log "the websockets echo server did not start"; exit 2; }
    servers="$servers, {\"agent\": \"websockets\", \"url\": \"ws://127.0.0.1:$ref_port/\"}"
fi
cat >"$WORK/fuzzingclient.json" <<EOF
{"outdir": "$REPORTS/servers", "servers": $servers], "cases": $(json_list "${server_cases[@]}"),
 "exclude-cases": [], "exclude-agent-cases": {}}
EOF
log "server side: fuzzing client against 127.0.0.1:$gw_port/__echo (cases: $server_label)"
started=$SECONDS
"${WSTEST[@]}" -m fuzzingclient -s "$WORK/fuzzingclient.json" >"$WORK/logs/fuzzingclient.log" 2>&1 || true
log "server side: done in $((SECONDS - started))s"
run_entry "wsgate GET /__echo (the /ws frame layer)" server "$REPORTS/servers/index.json" wsgate 1 "$server_label"
if [ "$reference" = 1 ]; then
    run_entry "websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)') server (reference)" \
        server "$REPORTS/servers/index.json" websockets 0 "$server_label"
fi
stop_all

printf '%s\n' "${runs[@]}" | "$PYTHON" -c 'import json, sys; print(json.dumps([json.loads(l) for l in sys.stdin]))' \
    >"$WORK/runs.json"
"$PYTHON" scripts/conformance/summary.py "$out" "$WORK/runs.json"

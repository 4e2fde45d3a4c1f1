#!/usr/bin/env bash
# scripts/demo without a terminal, as a service manager or a script runs it:
# stopped with SIGTERM, with SIGINT, or killed outright, every process it
# started (ingestd and its PostgreSQL, the IP camera, both recorder loops and
# their recorders) is gone soon after.
. "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
base=$(it_tmpdir)
data="$base/var"
mkdir -p "$data"

# Anything still running that belongs to this demo: its data dir or its
# device files on the command line.
leftovers() { pgrep -af -- "$data" | grep -v -e pgrep -e "demo_stop" || true; }

# run_demo SIGNAL: start it detached (no terminal, stdin closed), wait until
# it streams, stop it with SIGNAL, and check that nothing is left.
run_demo() {
    local sig=$1 i
    local http=$(it_free_port) udp=$(it_free_port) rtsp=$(it_free_port) cam=$(it_free_port)
    local api=$(it_free_port)
    note "demo stopped with SIG$sig"
    CUSTOS_DATA_DIR="$data" CUSTOS_HTTP_PORT=$http CUSTOS_UDP_PORT=$udp CUSTOS_RTSP_PORT=$rtsp \
        CUSTOS_CAMERA_PORT=$cam CUSTOS_API_PORT=$api CUSTOS_RECORDERS=1 \
        setsid "$root/scripts/demo" </dev/null >"$base/demo-$sig.log" 2>&1 &
    local pid=$!
    IT_PIDS+=("$pid")
    for i in $(seq 1 600); do
        pgrep -f -- "recorders --devices $data/demo-rtsp-devices.jsonl" >/dev/null &&
            pgrep -f -- "recorders --devices $data/demo-devices.jsonl" >/dev/null &&
            curl -fsS "http://127.0.0.1:$http/metrics" 2>/dev/null | grep -q '^custos_rtsp_connections 1' &&
            break
        kill -0 "$pid" 2>/dev/null || fail "demo exited: $(tail -20 "$base/demo-$sig.log")"
        sleep 0.1
    done
    [ -n "$(pgrep -f -- "recorders --devices $data/demo-rtsp-devices.jsonl")" ] ||
        fail "the RTSP recorder never ran: $(tail -20 "$base/demo-$sig.log")"
    [ -n "$(leftovers)" ] || fail "nothing of the demo runs"
    kill "-$sig" "$pid"
    it_wait_exit "$pid" 40
    [ "$IT_STATUS" != timeout ] || fail "demo did not stop on SIG$sig"
    if [ "$sig" != KILL ]; then
        [ "$IT_STATUS" = 0 ] || fail "demo exit $IT_STATUS: $(tail -5 "$base/demo-$sig.log")"
        grep -q "ingestd and its database stopped cleanly" "$base/demo-$sig.log" ||
            fail "$(tail -5 "$base/demo-$sig.log")"
    fi
    for i in $(seq 1 150); do
        [ -z "$(leftovers)" ] && it_wait_no_postgres "$data" 1 && return 0
        sleep 0.1
    done
    fail "left running after SIG$sig: $(leftovers)"
}

run_demo TERM
run_demo INT
run_demo KILL
echo "demo_stop: ok"

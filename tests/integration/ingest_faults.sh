#!/usr/bin/env bash
# A failing disk under a live stream (fsshim.so preloaded into ingestd): a
# segment whose write, fsync or directory fsync fails damages its recording,
# which is sealed over what was acknowledged, and the stream goes on in a
# continuation recording linked to it; the failure is counted, logged and
# raised as an alert; a seal that fails once is written on the next try.
# Afterwards verify finds no problem and every seal is anchored in the
# audit log.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"
ctl user add --username alice --role officer >/dev/null || fail "user add"
ctl device add --serial CAM-F --officer alice --json >"$base/devices" || fail "device add"

# run SPEC DAMAGES: one ingestd with the fault, one 7-s stream (1-s segments).
closed=0
run() {
    local spec=$1 damages=$2 log="$base/fault-$1.log"
    note "$spec"
    port=$(it_free_port)
    export LD_PRELOAD="$FSSHIM" CUSTOS_FAULT="$spec" CUSTOS_FAULT_LOG="$log"
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
    it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
        --set segment.target_ms=100 --set ingest.idle_timeout_s=3 --set rtsp.port=0 \
        --set rtsps.port=0 --set api.port=0
    pid=$INGESTD_PID
    unset LD_PRELOAD CUSTOS_FAULT CUSTOS_FAULT_LOG
    it_wait_healthy "$port" "$pid" "$base/ingestd.log"
    # (--state: each run goes on with the device's SRTP indexes; one starting
    # over would be refused as a replay of the run before)
    "$RECORDERS" --devices "$base/devices" --seconds 7 --target "127.0.0.1:$INGEST_PORT" \
        --clip "$clip" --state "$base/recorders.state" >"$base/sent.json" || fail "recorders failed"
    local want=$((closed + 1 + damages)) i
    for i in $(seq 1 100); do
        [ "$(as_super -c "SELECT count(*) FROM recordings WHERE state <> 'open'")" -ge "$want" ] &&
            break
        sleep 0.1
    done
    grep -q "^fault " "$log" || fail "$spec: the fault was never injected"
    if [ "$damages" = 1 ]; then
        [ "$(metric custos_ingest_continuations_total)" = 1 ] ||
            fail "$spec: continuations $(metric custos_ingest_continuations_total)"
        [ "$(metric custos_store_recordings_damaged_total)" = 1 ] || fail "$spec: damage not counted"
        grep -q "the stream goes on in a continuation recording" "$base/ingestd.log" ||
            fail "$spec: not logged"
    else
        [ "$(metric custos_store_seal_failures_total)" = 1 ] || fail "$spec: seal failure not counted"
    fi
    kill -TERM "$pid"
    it_wait_exit "$pid" 30
    [ "$IT_STATUS" = 0 ] || fail "$spec: ingestd exit $IT_STATUS: $(tail -5 "$base/ingestd.log")"
    closed=$want
}

run write:seg:5:EIO 1
run fsync:seg:3:ENOSPC 1
run dirfsync:seg:3:EIO 1
run fsync:seal:1:EIO 0

note "each damaged recording is sealed over its acknowledged segments and continued"
# The database through ingestd's cluster again, without faults.
port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set rtsp.port=0 --set rtsps.port=0 --set api.port=0
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
[ "$(as_super -c "SELECT count(*) FROM recordings WHERE state = 'damaged'")" = 3 ] ||
    fail "damaged: $(ctl recordings)"
[ "$(as_super -c "SELECT count(*) FROM recordings r JOIN recordings p ON p.id = r.continues
                   WHERE p.state = 'damaged' AND r.state = 'sealed' AND r.segment_count > 0
                   AND r.device_id = p.device_id AND r.officer_id = p.officer_id")" = 3 ] ||
    fail "continuations: $(as_super -c "SELECT id, continues, state, segment_count FROM recordings")"
[ "$(as_super -c "SELECT count(*) FROM recordings WHERE state = 'damaged' AND segment_count > 0")" = 3 ] ||
    fail "a damaged recording kept nothing"
# Acknowledged, indexed and sealed are the same segments.
[ "$(as_super -c "SELECT count(*) FROM recordings WHERE state <> 'open'
                   AND segment_count <> acked_segments")" = 0 ] || fail "index and seals differ"
[ "$(as_super -c "SELECT count(*) FROM security_alerts WHERE kind = 'recording_damaged'")" = 3 ] ||
    fail "alerts: $(as_super -c "SELECT * FROM security_alerts")"
[ "$(as_super -c "SELECT count(*) FROM recordings r WHERE NOT EXISTS (SELECT 1 FROM audit_log l
                   WHERE l.action = 'recording.seal' AND l.object LIKE 'recording:' || r.id || ' %')")" = 0 ] ||
    fail "a seal without its audit entry"
out=$(ctl verify) || fail "verify: $out"
echo "$out" | tail -1 | grep -q ', 0 problems$' || fail "verify: $out"
out=$(ctl audit verify) || fail "audit verify: $out"
ctl recordings
kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "ingest_faults: ok"

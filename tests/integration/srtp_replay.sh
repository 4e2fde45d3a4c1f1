#!/usr/bin/env bash
# SRTP replay across restarts (docs/srtp-replay.md): an attacker on the path
# (udp_tap) captures what bench/recorders sends, in both suites. ingestd is
# stopped cleanly and started again; the capture, replayed, is refused
# packet for packet (RTP and SRTCP alike) and counted as replay, and no
# recording is made of it. The same after ingestd is killed outright in the
# moment a stream ends: the margin covers what was accepted after the last
# saved mark. (What ingestd never received is not a replay: a capture of
# packets sent while it was down would be taken, once.) Recorders that go on
# with their indexes (bench/recorders --state) are taken after each restart,
# nothing of them refused: after the clean stop from the very next index;
# after the crash two rollovers later (past the crash margin), with the
# rollover counter found again. The marks only grow: the application's role cannot lower or
# delete one.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
replays() { metric 'custos_ingest_dropped_total{reason="replay"}'; }
json_field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
recordings_of() { ctl recordings | awk -v d="$1" '$2 == d' | wc -l; }

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"
ctl device add --serial R-CM --json >"$base/clean.json" || fail "device add"
ctl device add --serial R-GCM --suite aead_aes_256_gcm --json >>"$base/clean.json" ||
    fail "device add gcm"
ctl device add --serial R-CRASH --json >"$base/crash.json" || fail "device add"

port=$(it_free_port)
start_ingestd() { # LOG
    it_start_ingestd "$1" --data-dir "$data" --set http.port="$port" --set ingest.idle_timeout_s=1 \
        --set ingest.replay_save_ms=500
    pid=$INGESTD_PID
    it_wait_healthy "$port" "$pid" "$1"
}
tap_port=$(it_free_port)
start_tap() { # CAPTURE: relay tap_port -> ingestd, saving every datagram
    "$UDP_TAP" relay "$tap_port" "$INGEST_PORT" "$1" >"$1.log" 2>&1 &
    tap=$!
    IT_PIDS+=("$tap")
    for i in $(seq 1 50); do
        grep -q ready "$1.log" && return 0
        sleep 0.1
    done
    fail "udp_tap did not start: $(cat "$1.log")"
}
stop_tap() {
    kill -TERM "$tap"
    it_wait_exit "$tap" 5
    [ "$IT_STATUS" = 0 ] || fail "udp_tap: $(cat "$base"/*.cap.log)"
}
wait_sealed() { # SERIAL COUNT
    for i in $(seq 1 100); do
        [ "$(ctl recordings | awk -v d="$1" '$2 == d && $NF == "sealed"' | wc -l)" -ge "$2" ] &&
            return 0
        sleep 0.1
    done
    fail "$1: not $2 sealed recording(s): $(ctl recordings)"
}
replay_refused() { # CAPTURE WHAT: every datagram of CAPTURE refused as a replay
    local before after sent
    before=$(replays)
    sent=$("$UDP_TAP" replay "$1" "$INGEST_PORT" | awk '{print $2}') || fail "replay $1"
    [ "$sent" -gt 100 ] || fail "$2: only $sent datagrams captured"
    for i in $(seq 1 50); do
        after=$(replays)
        [ $((after - before)) -ge "$sent" ] && break
        sleep 0.1
    done
    [ $((after - before)) = "$sent" ] || fail "$2: $sent replayed, $((after - before)) refused"
    note "$2: $sent datagrams replayed, $((after - before)) refused as replays"
}

note "captured on the way: 3 s from two recorders (both suites)"
start_ingestd "$base/ingestd.1.log"
start_tap "$base/clean.cap"
"$RECORDERS" --devices "$base/clean.json" --seconds 3 --target "127.0.0.1:$tap_port" \
    --clip "$clip" --state "$base/clean.state" >"$base/sent.1.json" || fail "recorders"
wait_sealed R-CM 1
wait_sealed R-GCM 1
stop_tap

note "ingestd stopped cleanly and started again: the capture replayed is refused"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
start_ingestd "$base/ingestd.2.log"
as_custos() { psql -X -q -A -t -v ON_ERROR_STOP=1 "host=$data/pg user=custos dbname=custos" "$@"; }
marks=$(as_custos -c "SELECT d.serial || ' ' || m.clean || ' ' || m.rtp_index || ' ' || m.rtp_step
    FROM srtp_replay_marks m JOIN devices d ON d.id = m.device_id ORDER BY 1")
[ "$(grep -c ' true ' <<<"$marks")" = 2 ] || fail "the marks saved at the clean stop: $marks"
replay_refused "$base/clean.cap" "after a clean restart"
sleep 1.5 # (an idle timeout: a recording would have been closed by now)
[ "$(recordings_of R-CM)" = 1 ] && [ "$(recordings_of R-GCM)" = 1 ] ||
    fail "the replay made a recording: $(ctl recordings)"
go_on() { # DEVICES STATE WHAT: the recorders go on from STATE; nothing refused
    local before_replay before_auth
    before_replay=$(replays)
    before_auth=$(metric 'custos_ingest_dropped_total{reason="srtp_auth"}')
    "$RECORDERS" --devices "$1" --seconds 2 --target "127.0.0.1:$INGEST_PORT" --clip "$clip" \
        --state "$2" >"$base/sent.more.json" || fail "recorders going on"
    sleep 0.3
    note "$3: $(json_field packets_sent <"$base/sent.more.json") packets taken"
    [ "$(replays)" = "$before_replay" ] ||
        fail "$3: $(($(replays) - before_replay)) packets refused as replays"
    [ "$(metric 'custos_ingest_dropped_total{reason="srtp_auth"}')" = "$before_auth" ] ||
        fail "$3: packets failed authentication"
}
go_on "$base/clean.json" "$base/clean.state" "going on after the clean restart"
wait_sealed R-CM 2
wait_sealed R-GCM 2

note "ingestd killed outright as a stream ends: the capture replayed is refused too"
# (killed at once: what it accepted after its last saved mark, up to
# ingest.replay_save_ms of it, is covered by the margin alone)
# (started just before a rollover: the stream crosses into ROC 1)
crash_ssrc=$(sed -n 's/.*"ssrc":\([0-9]*\).*/\1/p' "$base/crash.json")
echo "$crash_ssrc 65000 1" >"$base/crash.state"
start_tap "$base/crash.cap"
"$RECORDERS" --devices "$base/crash.json" --seconds 3 --target "127.0.0.1:$tap_port" \
    --clip "$clip" --state "$base/crash.state" >"$base/sent.2.json" || fail "recorders"
kill -KILL "$pid"
wait "$pid" 2>/dev/null
stop_tap
it_wait_no_postgres "$data" 15 || fail "postgres survived its ingestd"
start_ingestd "$base/ingestd.3.log"
replay_refused "$base/crash.cap" "after a crash"
sleep 1.5
[ "$(recordings_of R-CRASH)" = 1 ] || fail "the replay made a recording: $(ctl recordings)"
read -r ssrc next srtcp <"$base/crash.state"
[ "$next" -gt 65536 ] || fail "the stream did not cross a rollover ($next)"
echo "$ssrc $((next + 2 * 65536)) $((srtcp + 100))" >"$base/crash.state"
go_on "$base/crash.json" "$base/crash.state" "going on after the crash"
wait_sealed R-CRASH 1 # (the one the crash cut is interrupted)
[ "$(recordings_of R-CRASH)" = 2 ] || fail "R-CRASH: $(ctl recordings)"

note "the marks only grow: the application's role cannot lower or delete one"
as_custos() { psql -X -q -A -t -v ON_ERROR_STOP=1 "host=$data/pg user=custos dbname=custos" "$@"; }
[ "$(as_custos -c "SELECT count(*) FROM srtp_replay_marks")" = 3 ] || fail "not 3 marks saved"
out=$(as_custos -c "UPDATE srtp_replay_marks SET rtp_index = 0" 2>&1) && fail "a mark was lowered"
grep -q 'only grows' <<<"$out" || fail "lowering refused for another reason: $out"
out=$(as_custos -c "DELETE FROM srtp_replay_marks" 2>&1) && fail "a mark was deleted"
grep -q 'permission denied' <<<"$out" || fail "deleting refused for another reason: $out"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

#!/usr/bin/env bash
# Live view (docs/live.md), with real WebRTC clients: bench/whep_viewers
# (GStreamer webrtcbin doing WHEP) receives and decodes video from a live
# SRTP recorder, from an RTSP publisher and from an H.265 recorder (through
# the transcode); a new viewer's first frame is a keyframe. Who may watch:
# the officer (own), not another officer (404, audited as denied); no token
# 401. Bad offers 400/415; limits per stream 429 and transcodes 503.
# Sessions end by DELETE, and without one (a viewer that crashed, a viewer
# that stopped reading): reaped, the pipeline stops with the last viewer, and
# ingestd's memory comes back to where it was. Every session is audited at
# start and end; ingest loses nothing meanwhile.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")/.." && pwd)/lsan.supp"
json_field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# The summary (after the per-viewer list) of a whep_viewers report.
summary() { sed -n "s/.*\"$2\":\([-0-9.]*\)[,}].*/\1/p" <<<"${1##*\]}"; }
viewers() { # TOKEN SERIAL [args...]: runs bench/whep_viewers, its report in REPORT
    local tok=$1 serial=$2
    shift 2
    REPORT=$(timeout 60 "$WHEP" --api "https://127.0.0.1:$API_PORT" --cacert "$data/tls/api-cert.pem" \
        --token "$tok" --serial "$serial" "$@" 2>"$base/whep.err") || true
    # The client's own webrtcbin now and then never completes its offer (it then
    # never POSTs: status 0): that run says nothing of the server; once more.
    if grep -q '"status":0,' <<<"$REPORT"; then
        note "(whep_viewers never sent its offer; again)"
        REPORT=$(timeout 60 "$WHEP" --api "https://127.0.0.1:$API_PORT" --cacert "$data/tls/api-cert.pem" \
            --token "$tok" --serial "$serial" "$@" 2>"$base/whep.err") || true
    fi
    cat "$base/whep.err" >>"$base/whep.log"
    [ -n "$REPORT" ] || fail "whep_viewers said nothing: $(tail -5 "$base/whep.err")"
}
wait_metric() { # NAME VALUE SECONDS
    local i
    for i in $(seq 1 $(($3 * 10))); do
        [ "$(metric "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    fail "$1 is $(metric "$1"), not $2, after $3 s"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
listed() { # SERIAL...: wait until alice's recordings list shows each (10 s)
    local i s missing
    for i in $(seq 1 100); do
        api GET /api/v1/recordings "$tok_alice"
        missing=""
        for s in "$@"; do grep -q "\"$s\"" "$base/body" || missing="$missing $s"; done
        [ -z "$missing" ] && return 0
        sleep 0.1
    done
    fail "not recording:$missing"
}

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"
user alice officer
user bob officer
ctl device add --serial CAM-A --officer alice --json >"$base/dev-a" || fail "device add"
pub_dev=$(ctl device add --serial CAM-PUB --officer alice --json) || fail "device add rtsp"
hevc_dev=$(ctl device add --serial CAM-HEVC --officer alice --codec h265 --json) || fail "device add h265"
hevc2_dev=$(ctl device add --serial CAM-HEVC2 --officer alice --codec h265 --json) || fail "device add h265"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.idle_timeout_s=3 --set rtsp.allow_md5=1 --set live.viewer_timeout_s=10 \
    --set live.max_viewers_per_stream=2 --set live.max_transcodes=1
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert
login alice "passphrase of alice ok"
tok_alice=$TOKEN
login bob "passphrase of bob ok"
tok_bob=$TOKEN

note "an SRTP recorder (CAM-A, stamped frames) streams for the whole test"
"$RECORDERS" --devices "$base/dev-a" --seconds 100 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" --stamp >"$base/sent-a.json" &
rec=$!
IT_PIDS+=("$rec")
listed CAM-A

note "not live: 404; no token: 401; not SDP: 415; not an offer: 400"
viewers "$tok_alice" CAM-NONE --seconds 1
[ "$(summary "$REPORT" answered)" = 0 ] && grep -q '"status":404' <<<"$REPORT" || fail "not live: $REPORT"
api POST /api/v1/live/CAM-A/whep "" "v=0"
expect 401
api POST /api/v1/live/CAM-A/whep "$tok_alice" '{"offer":1}'
expect 415 unsupported_media_type
CODE=$(curl -sS --cacert "$data/tls/api-cert.pem" -o "$base/body" -w '%{http_code}' \
    -H "Authorization: Bearer $tok_alice" -H 'Content-Type: application/sdp' \
    --data-binary 'not an offer' "https://127.0.0.1:$API_PORT/api/v1/live/CAM-A/whep")
expect 400 bad_offer

note "bob may not watch alice's recorder: 404, as if it were not there, and audited"
viewers "$tok_bob" CAM-A --seconds 1
grep -q '"status":404' <<<"$REPORT" || fail "bob was not refused: $REPORT"
ctl audit list --last 30 | grep -q "user:bob .*live.watch .*denied" || fail "bob's denial not audited"

note "alice watches CAM-A: the first frame is a keyframe, it decodes, glass to glass is low"
rss0=$(rss_kb)
# (6 s: the first session also starts GStreamer, slowly in a sanitizer build)
viewers "$tok_alice" CAM-A --seconds 6 --decode 1
note "$(summary "$REPORT" frames) frames, join $(summary "$REPORT" join_ms_p50) ms, latency p95 $(summary "$REPORT" latency_ms_p95) ms"
[ "$(summary "$REPORT" answered)" = 1 ] || fail "no session: $REPORT"
[ "$(summary "$REPORT" first_frame_keyframe)" = 1 ] || fail "the first frame was not a keyframe: $REPORT"
[ "$(summary "$REPORT" frames)" -ge 60 ] || fail "too few frames: $REPORT"
[ "$(summary "$REPORT" decoded)" -ge 60 ] || fail "too few frames decoded: $REPORT"
[ "$(summary "$REPORT" deleted)" = 1 ] || fail "the session was not deleted: $REPORT"
awk -v l="$(summary "$REPORT" latency_ms_p95)" 'BEGIN {exit !(l > 0 && l < 500)}' ||
    fail "latency: $REPORT"
wait_metric custos_live_viewers 0 3
wait_metric custos_live_streams 0 3
ctl audit list --last 30 | grep -q "user:alice .*live.start .*recording:.* live whep session" ||
    fail "the start is not audited"
for _ in $(seq 1 30); do
    ctl audit list --last 30 | grep -q "user:alice .*live.end .*deleted after" && break
    sleep 0.1
done
ctl audit list --last 30 | grep -q "user:alice .*live.end .*deleted after" || fail "the end is not audited: $(ctl audit list --last 10)"

note "two viewers of one stream share its pipeline; a third is refused (live.max_viewers_per_stream=2)"
"$WHEP" --api "https://127.0.0.1:$API_PORT" --cacert "$data/tls/api-cert.pem" --token "$tok_alice" \
    --serial CAM-A --viewers 2 --seconds 8 >"$base/two.json" 2>>"$base/whep.log" &
two=$!
IT_PIDS+=("$two")
wait_metric custos_live_viewers 2 10
[ "$(metric custos_live_streams)" = 1 ] || fail "two viewers, $(metric custos_live_streams) pipelines"
viewers "$tok_alice" CAM-A --seconds 1
grep -q '"status":429' <<<"$REPORT" || fail "a third viewer was not refused: $REPORT"
wait "$two" || fail "two viewers: $(cat "$base/two.json")"
[ "$(summary "$(cat "$base/two.json")" first_frame_keyframe)" = 2 ] || fail "two viewers: $(cat "$base/two.json")"

note "a viewer that crashes (no DELETE) and one that stops reading (SIGSTOP) are reaped"
viewers "$tok_alice" CAM-A --seconds 2 --no-delete
[ "$(summary "$REPORT" answered)" = 1 ] || fail "no session: $REPORT"
wait_metric custos_live_viewers 0 25
"$WHEP" --api "https://127.0.0.1:$API_PORT" --cacert "$data/tls/api-cert.pem" --token "$tok_alice" \
    --serial CAM-A --seconds 60 >/dev/null 2>>"$base/whep.log" &
stopped=$!
IT_PIDS+=("$stopped")
wait_metric custos_live_viewers 1 10
sleep 1
kill -STOP "$stopped"
wait_metric custos_live_viewers 0 25
wait_metric custos_live_streams 0 3
kill -KILL "$stopped"
ctl audit list --last 30 | grep -Eq "live.end .*(silent|failed) after" || fail "no reaped session in the audit: $(ctl audit list --last 10)"

note "memory comes back: five more sessions, each ended, leave ingestd where it was"
rss1=$(rss_kb)
for _ in 1 2 3 4 5; do
    viewers "$tok_alice" CAM-A --seconds 1
    [ "$(summary "$REPORT" answered)" = 1 ] || fail "no session: $REPORT"
done
wait_metric custos_live_streams 0 5
rss2=$(rss_kb)
note "RSS before any viewer ${rss0} KiB, after the first sessions ${rss1} KiB, after five more ${rss2} KiB"
[ "$rss2" -le $((rss1 + 8192)) ] || fail "ingestd grew by $((rss2 - rss1)) KiB over five sessions"

note "an RTSP publisher (rtspclientsink, parameter sets in its SDP only) is watched"
pub_pw=$(json_field "$pub_dev" rtsp_password)
timeout 25 gst-launch-1.0 -e videotestsrc is-live=true num-buffers=450 \
    ! video/x-raw,width=640,height=360,framerate=30/1 \
    ! x264enc tune=zerolatency key-int-max=30 bitrate=800 ! video/x-h264,profile=baseline \
    ! rtspclientsink location="rtsp://127.0.0.1:$RTSP_PORT/live/CAM-PUB" user-id=CAM-PUB \
    user-pw="$pub_pw" protocols=tcp >"$base/gst-pub.log" 2>&1 &
pub=$!
IT_PIDS+=("$pub")
listed CAM-PUB
viewers "$tok_alice" CAM-PUB --seconds 6 --decode 1
note "CAM-PUB: $(summary "$REPORT" frames) frames, $(summary "$REPORT" decoded) decoded"
[ "$(summary "$REPORT" first_frame_keyframe)" = 1 ] || fail "RTSP: $REPORT"
[ "$(summary "$REPORT" decoded)" -ge 60 ] || fail "RTSP: too few frames decoded: $REPORT"

note "H.265 recorders: transcoded once while watched; a second one is over live.max_transcodes (503)"
it_hevc_sender "$hevc_dev" 600 "$base/gst-hevc.log" &
h1=$!
it_hevc_sender "$hevc2_dev" 600 "$base/gst-hevc2.log" &
h2=$!
IT_PIDS+=("$h1" "$h2")
listed CAM-HEVC CAM-HEVC2
"$WHEP" --api "https://127.0.0.1:$API_PORT" --cacert "$data/tls/api-cert.pem" --token "$tok_alice" \
    --serial CAM-HEVC --seconds 5 --decode 1 >"$base/hevc.json" 2>>"$base/whep.log" &
hv=$!
wait_metric custos_live_viewers 1 10
viewers "$tok_alice" CAM-HEVC2 --seconds 1
grep -q '"status":503' <<<"$REPORT" || fail "a second transcode was not refused: $REPORT"
wait "$hv" || true
REPORT=$(cat "$base/hevc.json")
note "CAM-HEVC: $(summary "$REPORT" frames) frames, $(summary "$REPORT" decoded) decoded as H.264"
[ "$(summary "$REPORT" first_frame_keyframe)" = 1 ] || fail "H.265: $REPORT"
# (a loaded 2-core machine encodes two H.265 senders and transcodes one: the
# transcode is shown working, not its rate)
[ "$(summary "$REPORT" decoded)" -ge 15 ] || fail "H.265: too few frames decoded: $REPORT"

note "ingest lost nothing while watched, and the store verifies"
# (the H.265 senders are it_hevc_sender subshells: their timeout, a child,
# passes the signal on to gst-launch)
kill -TERM "$rec" "$pub" 2>/dev/null
pkill -TERM -P "$h1" 2>/dev/null
pkill -TERM -P "$h2" 2>/dev/null
wait "$rec" "$pub" "$h1" "$h2" 2>/dev/null
wait_metric custos_ingest_streams 0 30
lost=$(metric custos_ingest_packets_lost_total)
[ "$lost" = 0 ] || fail "ingest lost $lost packets"
kill -TERM "$pid"
it_wait_exit "$pid" 60 || fail "ingestd did not stop"
ctl verify >"$base/verify.txt" 2>&1 || fail "verify: $(tail -5 "$base/verify.txt")"
grep -q ' 0 problems' "$base/verify.txt" || fail "verify: $(tail -3 "$base/verify.txt")"
note "verify: $(tail -1 "$base/verify.txt")"
echo "PASS"

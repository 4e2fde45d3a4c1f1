#!/usr/bin/env bash
# A revoked device is cut off everywhere, at once: GStreamer's rtspclientsink
# publishing, and a camera ingestd pulls from, each have their connection
# closed within a second of `ingestctl device revoke` (the device list is
# read every ingest.device_poll_ms, 500 ms by default); the recording keeps
# its tail and is sealed, and nothing later is stored; the device cannot
# connect again.
. "$(dirname "$0")/lib.sh"
trap '' PIPE

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
json_field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
now_ms() { date +%s%3N; }

cam_port=$(it_free_port)
"$CAMERA" --port "$cam_port" --user viewer --password cam-secret-1 >"$base/camera.log" 2>&1 &
IT_PIDS+=("$!")
for i in $(seq 1 100); do
    grep -q ready "$base/camera.log" && break
    sleep 0.1
done
ctl device add --serial PUB-1 --json >"$base/pub.json" || fail "device add"
ctl device add --serial CAM-1 --pull "rtsp://viewer:cam-secret-1@127.0.0.1:$cam_port/cam" \
    >/dev/null || fail "device add pull"
pw=$(json_field "$(cat "$base/pub.json")" rtsp_password)

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set segment.target_ms=500 --set rtsp.allow_md5=1
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"

note "a publisher recording, a camera pulled"
timeout 60 gst-launch-1.0 -e videotestsrc is-live=true num-buffers=1800 \
    ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! x264enc tune=zerolatency key-int-max=15 bitrate=600 ! video/x-h264,profile=baseline \
    ! rtspclientsink location="rtsp://127.0.0.1:$RTSP_PORT/live/PUB-1" user-id=PUB-1 \
    user-pw="$pw" protocols=tcp >"$base/gst.log" 2>&1 &
gst=$!
IT_PIDS+=("$gst")
for i in $(seq 1 200); do
    [ "$(metric custos_rtsp_connections)" = 1 ] && [ "$(metric custos_rtsp_pull_sessions)" = 1 ] &&
        [ "$(ctl recordings | awk '$2 == "PUB-1" && $6 >= 2' | wc -l)" -ge 1 ] && break
    sleep 0.1
done
[ "$(ctl recordings | awk '$2 == "PUB-1" && $6 >= 2' | wc -l)" -ge 1 ] ||
    fail "not recording: $(ctl recordings; tail -5 "$base/gst.log")"

note "revoked: cut off within a second, tail kept, sealed"
ctl device revoke PUB-1 >/dev/null || fail "revoke"
revoked=$(now_ms)
ctl device revoke CAM-1 >/dev/null || fail "revoke"
# (rtspclientsink keeps trying to connect again: what counts is that no
# stream of either device receives any more)
for i in $(seq 1 100); do
    [ "$(metric custos_ingest_streams)" = 0 ] && [ "$(metric custos_rtsp_pull_sessions)" = 0 ] &&
        break
    sleep 0.02
done
took=$(($(now_ms) - revoked))
note "publisher and pull cut off $took ms after the revocation"
[ "$(metric custos_ingest_streams)" = 0 ] || fail "still receiving: $(tail -5 "$base/ingestd.log")"
[ "$(metric custos_rtsp_pull_sessions)" = 0 ] || fail "the pull still runs"
[ "$took" -le 1500 ] || fail "cut off only after $took ms"
[ "$(metric custos_rtsp_revoked_disconnects_total)" = 1 ] || fail "not counted"
grep -q "device PUB-1 revoked: connection closed" "$base/ingestd.log" || fail "not logged"
for i in $(seq 1 50); do
    [ "$(ctl recordings | awk '$2 == "PUB-1" && $NF == "sealed"' | wc -l)" = 1 ] && break
    sleep 0.1
done
line=$(ctl recordings --json | tr '}' '\n' | grep '"device":"PUB-1"')
echo "$line" | grep -q '"state":"sealed"' || fail "not sealed: $line"
end=$(echo "$line" | sed -n 's/.*"end":"\([^"]*\)".*/\1/p')
end_ms=$(($(date -d "$end" +%s%3N)))
[ "$end_ms" -le $((revoked + 1000)) ] ||
    fail "footage stored $((end_ms - revoked)) ms after the revocation"
sleep 1.5
[ "$(ctl recordings | awk '$2 == "PUB-1"' | wc -l)" = 1 ] || fail "recorded again: $(ctl recordings)"
out=$(ctl verify) || fail "verify: $out"

note "a revoked device cannot connect again"
[ "$(ctl recordings | awk '$2 == "CAM-1" && $NF == "sealed"' | wc -l)" -ge 1 ] ||
    fail "the pulled recording is not sealed: $(ctl recordings)"
sleep 2
[ "$(metric custos_rtsp_pull_sessions)" = 0 ] || fail "the pull came back"
kill "$gst" 2>/dev/null
kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "rtsp_revoke: ok"

#!/usr/bin/env bash
# What a hostile RTSP client tries, refused. Digest as it is by default (rtsp.allow_md5=0): the challenge offers
# SHA-256 only; an MD5 response is refused even with the right password, so
# GStreamer's rtspclientsink (MD5 only) cannot publish, and a camera that
# offers only MD5 (gst-rtsp-server) is not answered. A SHA-256 response is
# bound to its connection: the header captured from one that was accepted is
# refused on another connection, from the same address, with the same
# password. (On its own connection it is not asked again: a connection that
# authenticated is trusted for its device. Nonce counts are checked in
# test_rtsp_auth.) RTP over UDP is taken only from the port the publisher
# declared in SETUP: the same packets from another port are dropped. A
# client that pipelines requests and never reads the answers is cut off once
# they pass rtsp.max_output_bytes, and ingestd's memory stays flat.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rtsp_lib.sh"
trap '' PIPE

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
json_field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
refused() { metric "custos_rtsp_refused_total{reason=\"$1\"}"; }

cam_port=$(it_free_port)
"$CAMERA" --port "$cam_port" --user viewer --password cam-secret-1 --auth digest \
    >"$base/camera.log" 2>&1 &
IT_PIDS+=("$!")
for i in $(seq 1 100); do
    grep -q ready "$base/camera.log" && break
    sleep 0.1
done
ctl device add --serial DIG-1 --json >"$base/dig.json" || fail "device add"
ctl device add --serial UDP-1 --json >"$base/udp.json" || fail "device add"
ctl device add --serial CAM-MD5 --pull "rtsp://viewer:cam-secret-1@127.0.0.1:$cam_port/cam" \
    >/dev/null || fail "device add pull"
pw=$(json_field "$(cat "$base/dig.json")" rtsp_password)
udp_pw=$(json_field "$(cat "$base/udp.json")" rtsp_password)

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.device_poll_ms=100
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
url="rtsp://127.0.0.1:$RTSP_PORT/live/DIG-1"

note "the challenge offers SHA-256 only; MD5 with the right password is refused"
before=$(refused unauthorized)
rtsp_open
announce DIG-1 "$pw" md5
expect 401 "an MD5 response"
[ "$(grep -c '^WWW-Authenticate: Digest' <<<"$RESP")" = 1 ] || fail "one challenge: $RESP"
grep -q 'algorithm=SHA-256' <<<"$RESP" || fail "SHA-256 challenge: $RESP"
grep -q 'MD5' <<<"$RESP" && fail "MD5 offered: $RESP"
rtsp_close
[ "$(refused unauthorized)" -gt "${before:-0}" ] || fail "the MD5 refusal was not counted"

note "GStreamer's rtspclientsink (MD5 only) cannot publish"
rc=0
timeout 15 gst-launch-1.0 -e videotestsrc is-live=true num-buffers=60 \
    ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! x264enc tune=zerolatency key-int-max=30 bitrate=600 ! video/x-h264,profile=baseline \
    ! rtspclientsink location="$url" user-id=DIG-1 user-pw="$pw" protocols=tcp \
    >"$base/gst.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "rtspclientsink published with MD5: $(tail -5 "$base/gst.log")"
grep -q 'Starting recording' "$base/gst.log" && fail "rtspclientsink recorded"

note "SHA-256: accepted; the same header replayed on another connection is refused"
rtsp_open
announce DIG-1 "$pw"
expect 200 "a SHA-256 response"
captured=$AUTH
first=$RT
before=$(refused unauthorized)
rtsp_open
announce_with "$captured" DIG-1
expect 401 "the header replayed on another connection"
announce_with "$(sed 's/nc=00000001/nc=00000002/' <<<"$captured")" DIG-1
expect 401 "the header replayed with another count"
rtsp_close
RT=$first
rtsp_close
[ "$(refused unauthorized)" -ge $((before + 2)) ] || fail "the replays were not counted"
[ -z "$(ctl recordings | awk '$2 == "DIG-1"')" ] || fail "DIG-1 has recordings"

note "a camera offering only MD5 is not answered"
for i in $(seq 1 100); do
    grep -q 'pull CAM-MD5 .*offers no authentication we accept' "$base/ingestd.log" && break
    sleep 0.1
done
grep -q 'pull CAM-MD5 .*offers no authentication we accept' "$base/ingestd.log" ||
    fail "the MD5 camera was not refused: $(grep CAM-MD5 "$base/ingestd.log" | tail -3)"
[ -z "$(ctl recordings | awk '$2 == "CAM-MD5"')" ] || fail "CAM-MD5 has recordings"

note "RTP over UDP only from the declared port: spoofed from another port, dropped"
# (an even port and the next, both taken from the allocator the parallel
# tests share, and another for the spoofer: none can be another test's)
for i in $(seq 1 20); do
    client_port=$(it_free_port)
    [ $((client_port % 2)) = 0 ] && [ "$(it_free_port)" = $((client_port + 1)) ] && break
done
spoof_port=$(it_free_port)
rtsp_open
announce UDP-1 "$udp_pw"
expect 200 "ANNOUNCE UDP-1"
udp_url="rtsp://127.0.0.1:$RTSP_PORT/live/UDP-1"
rtsp_send "SETUP $udp_url/streamid=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=$client_port-$((client_port + 1));mode=record\r\n\r\n"
rtsp_read
expect 200 "SETUP over UDP"
server_port=$(sed -n 's/^Transport: .*server_port=\([0-9]*\)-.*/\1/p' <<<"$RESP")
sess=$(session_of)
[ -n "$server_port" ] && [ -n "$sess" ] || fail "SETUP answer: $RESP"
rtsp_send "RECORD $udp_url RTSP/1.0\r\nCSeq: 4\r\nSession: $sess\r\n\r\n"
rtsp_read
expect 200 "RECORD"
rtp_stream() { # BIND-PORT: 2 s of H.264 over RTP to the server port, sent from BIND-PORT
    gst-launch-1.0 -q videotestsrc is-live=true num-buffers=60 \
        ! video/x-raw,width=320,height=240,framerate=30/1 \
        ! x264enc tune=zerolatency key-int-max=30 bitrate=600 ! video/x-h264,profile=baseline \
        ! rtph264pay pt=96 config-interval=-1 \
        ! udpsink host=127.0.0.1 port="$server_port" bind-port="$1" >"$base/udp-$1.log" 2>&1 ||
        fail "udpsink from $1: $(tail -3 "$base/udp-$1.log")"
}
before=$(refused media)
rtp_stream "$spoof_port"
sleep 0.3
spoofed=$(( $(refused media) - before ))
[ "$spoofed" -ge 50 ] || fail "spoofed datagrams not refused: $spoofed counted"
[ -z "$(ctl recordings | awk '$2 == "UDP-1"')" ] || fail "a spoofed stream was recorded"
before=$(refused media)
rtp_stream "$client_port"
sleep 0.3
[ "$(refused media)" = "$before" ] || fail "datagrams from the declared port refused"
[ -n "$(ctl recordings | awk '$2 == "UDP-1"')" ] || fail "the declared port's stream not recorded"
note "$spoofed datagrams from another port dropped; the declared port's recorded"
rtsp_close

note "a client that pipelines OPTIONS and never reads is cut off; memory stays flat"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
rss_before=$(rss)
before=$(refused output_not_read)
block=$(for i in $(seq 1 2000); do printf 'OPTIONS * RTSP/1.0\r\nCSeq: %d\r\n\r\n' "$i"; done)
block+=$'\n' # (what $(...) took off the end)
rtsp_open
cut=""
for i in $(seq 1 2000); do # at most ~100 MB of requests
    if ! { printf '%s' "$block" >&"$RT"; } 2>/dev/null; then
        cut=$i
        break
    fi
done
rtsp_close
[ -n "$cut" ] || fail "the connection was never closed"
[ "$(refused output_not_read)" -gt "$before" ] || fail "not counted as output_not_read (cut at $cut): $(tail -3 "$base/ingestd.log")"
rss_after=$(rss)
note "cut off after $((cut * 2000)) requests unread; RSS ${rss_before} -> ${rss_after} KiB"
[ "$rss_after" -lt $((rss_before + 32768)) ] || fail "ingestd grew from $rss_before to $rss_after KiB"
rtsp_open
rtsp_send "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"
rtsp_read
expect 200 "OPTIONS on a new connection afterwards"
rtsp_close

kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

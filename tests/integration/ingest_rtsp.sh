#!/usr/bin/env bash
# RTSP publish end to end with real clients: GStreamer's rtspclientsink over
# TCP, over UDP and over TLS (RTSPS), and bench/recorders (RTSP/TCP, with
# TEARDOWN). Every recording verifies, starts on keyframes and keeps its tail.
# Then every refusal: digest failures, unknown and revoked devices, each
# malformed-request class, a bad interleaved frame, a slow client, a silent
# session, too many sessions — while another publisher streams unharmed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rtsp_lib.sh"
trap '' PIPE # writing to a connection the server closed fails, not kills the test

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
json_field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
refused() { metric "custos_rtsp_refused_total{reason=\"$1\"}"; }

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"

note "provision"
for s in CAM-TCP CAM-UDP CAM-TLS CAM-REV CAM-RAW; do
    ctl device add --serial "$s" --json >"$base/$s.json" || fail "device add $s"
done
ctl device add --serial PUB --count 2 --json >"$base/pub.json" || fail "device add PUB"
ctl device add --serial BG --json >"$base/bg.json" || fail "device add BG"
pw() { json_field "$(cat "$base/$1.json")" rtsp_password; }

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set rtsp.request_timeout_s=2 --set rtsp.session_timeout_s=5 \
    --set rtsp.max_sessions_per_device=1 --set ingest.device_poll_ms=100 --set rtsp.allow_md5=1
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"

# The summary lines of a device's recordings: "segment N summary packets P lost L ...".
summaries() {
    local rec
    for rec in $(ctl recordings | awk -v d="$1" '$2 == d {print $1}'); do
        ctl packets --recording "$rec" --summary || fail "packets $1"
    done
}
wait_sealed() { # SERIAL COUNT: until COUNT recordings of SERIAL are sealed (20 s)
    local i
    for i in $(seq 1 200); do
        [ "$(ctl recordings | awk -v d="$1" '$2 == d && $NF == "sealed"' | wc -l)" -ge "$2" ] &&
            return 0
        sleep 0.1
    done
    ctl recordings >&2
    fail "$1: no $2 sealed recording(s)"
}
check_recording() { # SERIAL: sealed, every segment starts on a keyframe, none lost
    wait_sealed "$1" 1
    summaries "$1" >"$base/$1.summary"
    [ -s "$base/$1.summary" ] || fail "$1: no segments"
    grep -q 'starts_with_keyframe no' "$base/$1.summary" && fail "$1: $(cat "$base/$1.summary")"
    grep -vq ' lost 0 ' "$base/$1.summary" && fail "$1 lost packets: $(cat "$base/$1.summary")"
    true
}

# GStreamer 1.22's rtspclientsink has two races at its end, seen with TCP and
# TLS alike (its own debug log shows them): about one run in eight it never
# posts EOS after sending everything and its RTCP BYE, and now and then its
# TEARDOWN fails with "Could not send message" because it closed its own
# connection first. So a run still going after 15 s (4 s of video) is
# stopped, and that failed TEARDOWN is tolerated; the server ends the session
# as for any client that goes away, and the checks on the recording are the
# same. (TEARDOWN itself is checked with bench/recorders below.)
gst_publish() { # SERIAL URL PROTOCOLS [extra rtspclientsink properties]
    local serial=$1 url=$2 protocols=$3 rc=0
    shift 3
    timeout 15 gst-launch-1.0 -e videotestsrc is-live=true num-buffers=120 \
        ! video/x-raw,width=320,height=240,framerate=30/1 \
        ! x264enc tune=zerolatency key-int-max=30 bitrate=800 ! video/x-h264,profile=baseline \
        ! rtspclientsink location="$url" user-id="$serial" user-pw="$(pw "$serial")" \
        protocols="$protocols" "$@" >"$base/gst-$serial.log" 2>&1 || rc=$?
    if [ "$rc" = 124 ] || { [ "$rc" = 1 ] && grep -q 'Could not send message' "$base/gst-$serial.log"; }; then
        grep -q 'Starting recording' "$base/gst-$serial.log" ||
            fail "rtspclientsink $serial never recorded: $(tail -5 "$base/gst-$serial.log")"
        note "rtspclientsink $serial: known end-of-stream race (exit $rc), tolerated"
    elif [ "$rc" != 0 ]; then
        fail "rtspclientsink $serial: $(tail -5 "$base/gst-$serial.log"; tail -5 "$base/ingestd.log")"
    fi
}

note "GStreamer rtspclientsink publishes over TCP, UDP and TLS"
gst_publish CAM-TCP "rtsp://127.0.0.1:$RTSP_PORT/live/CAM-TCP" tcp
check_recording CAM-TCP
gst_publish CAM-UDP "rtsp://127.0.0.1:$RTSP_PORT/live/CAM-UDP" udp
check_recording CAM-UDP
gst_publish CAM-TLS "rtsps://127.0.0.1:$RTSPS_PORT/live/CAM-TLS" tcp tls-validation-flags=0
check_recording CAM-TLS
for s in CAM-TCP CAM-UDP CAM-TLS; do
    n=$(awk '{p += $5} END {print p + 0}' "$base/$s.summary")
    [ "$n" -ge 300 ] || fail "$s: only $n packets in 4 s"
done
grep -q 'transport=udp' <(find "$data/segments" -name meta -exec cat {} +) ||
    fail "no recording says transport=udp"

note "bench/recorders publishes over RTSP/TCP and tears down: every packet kept, tail included"
"$RECORDERS" --devices "$base/pub.json" --seconds 5 --target "127.0.0.1:$RTSP_PORT" \
    --transport rtsp-tcp --clip "$clip" >"$base/pub-sent.json" || fail "recorders rtsp"
for i in 1 2; do
    serial=PUB-0000$i
    check_recording "$serial"
    ssrc=$(json_field "$(sed -n "${i}p" "$base/pub.json")" ssrc)
    sent=$(grep -o "\"ssrc\":$ssrc,\"first_seq\":[0-9]*,\"packets\":[0-9]*" "$base/pub-sent.json" |
        sed 's/.*"packets"://')
    kept=$(awk '{p += $5} END {print p + 0}' "$base/$serial.summary")
    [ -n "$sent" ] && [ "$kept" = "$sent" ] || fail "$serial: sent $sent, kept $kept"
done
grep -q 'teardown' "$base/ingestd.log" || fail "no TEARDOWN logged"

# ---------------------------------------------------------------- raw RTSP


note "a publisher streams in the background while the refusals below happen"
"$RECORDERS" --devices "$base/bg.json" --seconds 25 --target "127.0.0.1:$RTSP_PORT" \
    --transport rtsp-tcp --clip "$clip" >"$base/bg-sent.json" 2>"$base/bg.err" &
bg=$!
IT_PIDS+=("$bg")
sleep 1

note "digest: the challenge offers SHA-256 then MD5; wrong passwords and unknown devices get 401"
rtsp_open
before=$(refused unauthorized)
announce CAM-RAW not-the-password
expect 401 "wrong password"
grep -q 'algorithm=SHA-256' <<<"$RESP" || fail "challenge: $RESP"
[ "$(grep -c '^WWW-Authenticate: Digest' <<<"$RESP")" = 2 ] || fail "two challenges: $RESP"
rtsp_close
rtsp_open
announce NO-SUCH-DEVICE whatever
expect 401 "unknown device"
rtsp_close
[ "$(refused unauthorized)" -ge $((before + 2)) ] || fail "auth failures not counted"

note "a revoked device gets 403, counted"
ctl device revoke CAM-REV >/dev/null || fail "revoke"
sleep 0.5
rtsp_open
rtsp_send "ANNOUNCE rtsp://127.0.0.1:$RTSP_PORT/live/CAM-REV RTSP/1.0\r\nCSeq: 1\r\n\r\n"
rtsp_read
expect 403 "revoked device"
rtsp_close
[ "$(refused revoked)" -ge 1 ] || fail "revoked not counted"

note "malformed requests: 400 (and the connection closed when the framing is broken)"
rtsp_open
rtsp_send "HELLO THERE\r\n\r\n"
rtsp_read
expect 400 "garbage request line"
rtsp_read
expect eof "connection after a broken request line"
rtsp_close
rtsp_open
rtsp_send "OPTIONS * RTSP/1.0\r\n\r\n"
rtsp_read
expect 400 "no CSeq"
rtsp_send "OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n"
rtsp_read
expect 200 "OPTIONS after a 400 on the same connection"
grep -q '^CSeq: 5$' <<<"$RESP" || fail "CSeq not echoed: $RESP"
grep -q '^Public: .*RECORD' <<<"$RESP" || fail "Public: $RESP"
rtsp_send "OPTIONS * RTSP/2.0\r\nCSeq: 6\r\n\r\n"
rtsp_read
expect 505 "RTSP/2.0"
rtsp_close
rtsp_open
rtsp_send "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Pad: $(head -c 17000 /dev/zero | tr '\0' a)\r\n\r\n"
rtsp_read
expect 400 "a header block over 16 KiB"
rtsp_close
rtsp_open
rtsp_send "ANNOUNCE rtsp://127.0.0.1/live/CAM-RAW RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 100000\r\n\r\n"
rtsp_read
expect 413 "a body over the cap"
rtsp_close
rtsp_open
rtsp_send "DESCRIBE rtsp://127.0.0.1/elsewhere RTSP/1.0\r\nCSeq: 1\r\n\r\n"
rtsp_read
expect 404 "a path outside /live/"
rtsp_send "BREW rtsp://127.0.0.1/live/CAM-RAW RTSP/1.0\r\nCSeq: 2\r\n\r\n"
rtsp_read
expect 501 "an unknown method"
rtsp_close

note "session state: 454, 455, 459, 461, 453"
rtsp_open
announce CAM-RAW "$(pw CAM-RAW)"
expect 200 "authenticated ANNOUNCE"
url="rtsp://127.0.0.1:$RTSP_PORT/live/CAM-RAW"
rtsp_send "RECORD $url RTSP/1.0\r\nCSeq: 3\r\nSession: 0123456789abcdef\r\n\r\n"
rtsp_read
expect 454 "RECORD with a session that is not ours"
rtsp_send "SETUP $url/streamid=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;multicast;port=5000-5001\r\n\r\n"
rtsp_read
expect 461 "a multicast transport"
rtsp_send "SETUP rtsp://127.0.0.1:$RTSP_PORT/live/CAM-TCP/streamid=0 RTSP/1.0\r\nCSeq: 5\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
rtsp_read
expect 459 "SETUP of another device's presentation"
rtsp_send "SETUP $url/streamid=0 RTSP/1.0\r\nCSeq: 6\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n\r\n"
rtsp_read
expect 200 "SETUP interleaved"
sess=$(session_of)
[ -n "$sess" ] || fail "no Session: $RESP"
grep -q '^Transport: RTP/AVP/TCP;unicast;interleaved=0-1' <<<"$RESP" || fail "Transport: $RESP"
rtsp_send "RECORD $url RTSP/1.0\r\nCSeq: 7\r\nSession: $sess\r\n\r\n"
rtsp_read
expect 200 "RECORD"
rtsp_send "SETUP $url/streamid=0 RTSP/1.0\r\nCSeq: 8\r\nSession: $sess\r\nTransport: RTP/AVP/TCP;interleaved=2-3\r\n\r\n"
rtsp_read
expect 455 "SETUP while recording"
rtsp_send "GET_PARAMETER $url RTSP/1.0\r\nCSeq: 9\r\nSession: $sess\r\n\r\n"
rtsp_read
expect 200 "keep-alive"
# One session per device here: a second connection for CAM-RAW gets 453.
exec {RT2}<>"/dev/tcp/127.0.0.1/$RTSP_PORT"
RT_SAVE=$RT
RT=$RT2
announce CAM-RAW "$(pw CAM-RAW)"
expect 200 "second ANNOUNCE"
rtsp_send "SETUP $url/streamid=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
rtsp_read
expect 453 "a second session for the device"
rtsp_close
RT=$RT_SAVE

note "an interleaved frame with a bad length closes only its own connection"
before=$(refused bad_frame)
rtsp_send '$\x00\x00\x04abcd'
rtsp_read
expect eof "after a 4-byte RTP frame"
rtsp_close
[ "$(refused bad_frame)" -gt "$before" ] || fail "bad frame not counted"

note "a slow client is dropped after rtsp.request_timeout_s; a silent session after the session timeout"
before_slow=$(refused slow_request)
rtsp_open
rtsp_send "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"
sleep 3.5
rtsp_read
expect eof "slow request"
rtsp_close
[ "$(refused slow_request)" -gt "$before_slow" ] || fail "slow request not counted"
before_to=$(refused session_timeout)
rtsp_open
announce CAM-RAW "$(pw CAM-RAW)"
expect 200 "ANNOUNCE for the timeout"
rtsp_send "SETUP $url/streamid=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
rtsp_read
expect 200 "SETUP for the timeout"
sleep 6.5
[ "$(refused session_timeout)" -gt "$before_to" ] || fail "session timeout not counted"
rtsp_close

note "the background publisher was not disturbed"
wait "$bg" || fail "background recorders: $(cat "$base/bg.err")"
check_recording BG
true

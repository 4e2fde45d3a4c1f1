#!/usr/bin/env bash
# Clips out of the store (docs/export.md): recordings from bench/recorders
# (H.264 over SRTP) and a GStreamer H.265 sender, exported whole and by a middle range with ingestctl
# export. ffprobe shows H.264, every stored access unit as a frame, the
# capture time as creation_time, a range starting on the keyframe at or
# before its start; ffmpeg decodes it without an error. The same over HTTPS
# (GET /api/v1/recordings/{id}/clip.mp4, streamed), 404 for an officer who
# may not read it. Packets dropped on
# purpose show as a gap at their time. A segment altered in the store stops
# the export, naming it, and leaves no file. Every export is audited with
# the SHA-256 of what it wrote.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
# GStreamer in ingestd and ingestctl: GLib's own leak at load is suppressed
# (tests/lsan.supp), which needs full stacks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")/.." && pwd)/lsan.supp"
export_() { ctl export "$@"; }
probe() { ffprobe -v error -of default=nw=1:nk=1 "$@"; }
rec_of() { ctl recordings | awk -v s="$1" '$2 == s {print $1}'; }
stored_aus() { ctl packets --recording "$1" | awk '$3 == "seq" {print $6}' | uniq | wc -l; }
frames_of() { probe -count_frames -select_streams v -show_entries stream=nb_read_frames "$1"; }
wait_sealed() { # SERIAL
    local i
    for i in $(seq 1 100); do
        ctl recordings | awk -v s="$1" '$2 == s' | grep -q ' sealed$' && return 0
        sleep 0.1
    done
    fail "$1 not sealed: $(ctl recordings)"
}
# clip_ok RECORDING FILE CODEC: that codec, every stored access unit a frame,
# decoded by ffmpeg without an error; sets FRAMES.
clip_ok() {
    [ "$(probe -show_entries stream=codec_name "$2")" = "$3" ] || fail "$2: not $3"
    FRAMES=$(frames_of "$2")
    local stored
    stored=$(stored_aus "$1")
    [ "$FRAMES" = "$stored" ] || fail "$2: $FRAMES frames, $stored access units stored"
    local errors
    errors=$(ffmpeg -v error -i "$2" -f null - 2>&1)
    [ -z "$errors" ] || fail "ffmpeg on $2: $errors"
}
start_of() { ctl recordings | awk -v s="$1" '$2 == s {print $4}'; }
# RFC 3339 of a time in seconds since the epoch (with decimals).
at() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.%3NZ; }
secs() { date -u -d "$1" +%s.%N; }
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
flip() { # FILE OFFSET: that byte changed, whatever it was
    local b
    b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "\\$(printf %03o $(((b + 1) % 256)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"
user alice officer
user bob officer
ctl device add --serial CAM-A --officer alice --json >"$base/dev-a" || fail "device add"
ctl device add --serial CAM-B --officer alice --json >"$base/dev-b" || fail "device add"
hevc_dev=$(ctl device add --serial CAM-HEVC --officer alice --codec h265 --json) || fail "device add h265"
pub_dev=$(ctl device add --serial CAM-PUB --officer alice --json) || fail "device add rtsp"
av_dev=$(ctl device add --serial CAM-AV --officer alice --json) || fail "device add rtsp av"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.idle_timeout_s=2 --set rtsp.allow_md5=1
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert

note "recorders: CAM-A 8 s whole; CAM-B 8 s with packets 1500-1559 dropped"
"$RECORDERS" --devices "$base/dev-a" --seconds 8 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >"$base/sent-a.json" &
a=$!
"$RECORDERS" --devices "$base/dev-b" --seconds 8 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" --drop "$(seq -s, 1500 1559)" >"$base/sent-b.json" || fail "recorders B"
wait "$a" || fail "recorders A"
for i in $(seq 1 50); do
    [ "$(ctl recordings | grep -c ' sealed$')" -ge 2 ] && break
    sleep 0.1
done
[ "$(ctl recordings | grep -c ' sealed$')" -ge 2 ] || fail "not sealed: $(ctl recordings)"
rec_a=$(rec_of CAM-A) rec_b=$(rec_of CAM-B)

note "whole: H.264, every stored access unit a frame, creation_time the capture's"
export_ --recording "$rec_a" --out "$base/a.mp4" >"$base/a.json" || fail "export A"
clip_ok "$rec_a" "$base/a.mp4" h264
frames=$FRAMES
created=$(probe -show_entries format_tags=creation_time "$base/a.mp4")
[ "${created%%.*}" = "$(start_of CAM-A | cut -c1-19)" ] ||
    fail "creation_time $created, capture started $(start_of CAM-A)"
duration=$(probe -show_entries format=duration "$base/a.mp4")
note "CAM-A: $frames frames, ${duration} s, created $created, $(wc -c <"$base/a.mp4") bytes"

note "a middle range starts on the keyframe at or before its start"
t0=$(secs "$(start_of CAM-A)")
from=$(at "$(plus "$t0" 3.1)") to=$(at "$(plus "$t0" 5.6)")
export_ --recording "$rec_a" --start "$from" --end "$to" --out "$base/mid.mp4" \
    >"$base/mid.json" || fail "export range"
first=$(sed -n 's/.*"first":"\([^"]*\)".*/\1/p' "$base/mid.json")
last=$(sed -n 's/.*"last":"\([^"]*\)".*/\1/p' "$base/mid.json")
d=$(probe -show_entries format=duration "$base/mid.mp4")
# (the clip's GOP is 2 s: it starts at most 2 s before, ends at the range's end)
awk -v f="$(secs "$first")" -v l="$(secs "$last")" -v s="$(secs "$from")" -v e="$(secs "$to")" \
    -v d="$d" 'BEGIN { exit !(f <= s && s - f <= 2.05 && l <= e && e - l < 0.05 &&
                              d >= e - s - 0.05 && d <= e - s + 2.1) }' ||
    fail "range $from..$to gave $first..$last, $d s"
[ "$(probe -show_entries format_tags=creation_time "$base/mid.mp4" | cut -c1-19)" = "${first:0:19}" ] ||
    fail "range creation_time"
key=$(probe -select_streams v -show_frames -read_intervals '%+#1' -show_entries frame=key_frame "$base/mid.mp4")
[ "$key" = 1 ] || fail "the range does not start on a keyframe"
errors=$(ffmpeg -v error -i "$base/mid.mp4" -f null - 2>&1)
[ -z "$errors" ] || fail "ffmpeg: $errors"
note "range $from..$to: $first..$last, $d s"

note "packets dropped on purpose: a gap at their time, not filled"
export_ --recording "$rec_b" --out "$base/b.mp4" >"$base/b.json" || fail "export B"
grep -q '"lost":60' "$base/b.json" || fail "lost: $(cat "$base/b.json")"
# The stored packet after the hole, and its time from the clip's start.
read -r gap_ts first_ts < <(ctl packets --recording "$rec_b" |
    awk '$3 == "seq" && !f {f = $6} $3 == "seq" && $10 > 0 {print $6, f; exit}')
expect=$(awk -v g="$gap_ts" -v f="$first_ts" 'BEGIN { printf "%.6f", (g - f) / 90000 }')
probe -select_streams v -show_frames -show_entries frame=pts_time "$base/b.mp4" |
    awk -v want="$expect" 'NR > 1 && $1 - prev > 0.1 {gap = $1 - prev; at = $1}
        {prev = $1} END { printf "%.3f %.3f\n", gap, at; exit !(gap > 0.1 && at - want < 0.04 && want - at < 0.04) }' \
    >"$base/gap" || fail "no gap at ${expect}s: $(cat "$base/gap")"
note "CAM-B: a $(cut -d' ' -f1 "$base/gap") s gap before the frame at $(cut -d' ' -f2 "$base/gap") s (expected at $(printf %.3f "$expect") s)"

note "over HTTPS: the officer's clip streams (fragmented MP4), the same frames; another officer's is 404"
login alice "passphrase of alice ok" && tok_alice=$TOKEN
login bob "passphrase of bob ok" && tok_bob=$TOKEN
get_clip() { # TOKEN QUERY FILE -> CODE
    curl -sS --cacert "$data/tls/api-cert.pem" -H "Authorization: Bearer $1" -o "$3" \
        -D "$3.headers" -w '%{http_code} %{time_starttransfer} %{time_total}' \
        "https://127.0.0.1:$API_PORT/api/v1/recordings/$rec_a/clip.mp4$2"
}
read -r code first_byte total < <(get_clip "$tok_alice" "" "$base/api.mp4")
[ "$code" = 200 ] || fail "clip over the API: $code $(head -c 300 "$base/api.mp4")"
grep -qi '^content-type: video/mp4' "$base/api.mp4.headers" || fail "$(cat "$base/api.mp4.headers")"
grep -qi '^transfer-encoding: chunked' "$base/api.mp4.headers" || fail "not streamed"
clip_ok "$rec_a" "$base/api.mp4" h264
[ "$(probe -show_entries format_tags=creation_time "$base/api.mp4")" = "$created" ] ||
    fail "API creation_time"
note "API clip: $FRAMES frames, first byte after ${first_byte} s, all in ${total} s"
read -r code _ _ < <(get_clip "$tok_alice" "?start=$from&end=$to" "$base/api-mid.mp4")
[ "$code" = 200 ] || fail "range over the API: $code"
[ "$(frames_of "$base/api-mid.mp4")" = "$(frames_of "$base/mid.mp4")" ] ||
    fail "the API's range is not ingestctl's"
read -r code _ _ < <(get_clip "$tok_bob" "" "$base/bob.mp4")
[ "$code" = 404 ] || fail "another officer got $code"
read -r code _ _ < <(get_clip "$tok_alice" "?start=yesterday" "$base/bad-range.mp4")
[ "$code" = 400 ] || fail "a bad start gave $code"
read -r code _ _ < <(get_clip "$tok_alice" "?start=2001-01-01T00:00:00Z&end=2001-01-01T00:00:01Z" "$base/empty.mp4")
[ "$code" = 422 ] || fail "an empty range gave $code"
ctl audit list --last 50 | grep -q "user:bob .*recording.export .*denied" || fail "bob's denial not audited"

note "H.265 from a GStreamer sender (x265enc, rtph265pay, srtpenc): exported as HEVC"
json_field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1"; }
hevc_ssrc=$(json_field "$hevc_dev" ssrc)
hevc_key=$(json_field "$hevc_dev" key_b64 | base64 -d | od -An -tx1 | tr -d ' \n')
timeout 60 gst-launch-1.0 -q videotestsrc num-buffers=150 is-live=true \
    ! video/x-raw,width=640,height=360,framerate=30/1 \
    ! x265enc tune=zerolatency key-int-max=30 speed-preset=ultrafast bitrate=800 \
    ! rtph265pay pt=96 ssrc="$hevc_ssrc" config-interval=-1 mtu=1200 \
    ! "application/x-rtp,payload=96,ssrc=(uint)$hevc_ssrc" \
    ! srtpenc key="$hevc_key" rtp-cipher=aes-128-icm rtp-auth=hmac-sha1-80 \
      rtcp-cipher=aes-128-icm rtcp-auth=hmac-sha1-80 \
    ! udpsink host=127.0.0.1 port="$INGEST_PORT" >"$base/gst.log" 2>&1 || fail "gst: $(cat "$base/gst.log")"
wait_sealed CAM-HEVC
rec_h=$(rec_of CAM-HEVC)
export_ --recording "$rec_h" --out "$base/hevc.mp4" >"$base/hevc.json" || fail "export H.265"
clip_ok "$rec_h" "$base/hevc.mp4" hevc
note "CAM-HEVC: $FRAMES frames, $(probe -show_entries format=duration "$base/hevc.mp4") s"

note "an RTSP publish (rtspclientsink): the parameter sets of its SDP given to the depayloader"
pub_pw=$(json_field "$pub_dev" rtsp_password)
rc=0
timeout 15 gst-launch-1.0 -e videotestsrc is-live=true num-buffers=120 \
    ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! x264enc tune=zerolatency key-int-max=30 bitrate=800 ! video/x-h264,profile=baseline \
    ! rtspclientsink location="rtsp://127.0.0.1:$RTSP_PORT/live/CAM-PUB" user-id=CAM-PUB \
    user-pw="$pub_pw" protocols=tcp >"$base/gst-pub.log" 2>&1 || rc=$?
# (GStreamer 1.22's rtspclientsink sometimes never ends, or fails its own
# TEARDOWN: tolerated as in ingest_rtsp, once it recorded)
[ "$rc" = 0 ] || grep -q 'Starting recording' "$base/gst-pub.log" || fail "rtspclientsink: $(tail -5 "$base/gst-pub.log")"
wait_sealed CAM-PUB
rec_p=$(rec_of CAM-PUB)
export_ --recording "$rec_p" --out "$base/pub.mp4" >"$base/pub.json" || fail "export RTSP"
grep -q '"sdp_parameter_sets":true' "$base/pub.json" || fail "SDP parameter sets not used: $(cat "$base/pub.json")"
grep -q '"sdp_parameter_sets":false' "$base/a.json" || fail "SDP parameter sets for SRTP: $(cat "$base/a.json")"
clip_ok "$rec_p" "$base/pub.mp4" h264
note "CAM-PUB: $FRAMES frames, $(probe -show_entries stream=width,height -of csv=p=0 "$base/pub.mp4")"

note "an RTSP publish with AAC audio: one capture of two tracks; the clip carries both, in sync"
av_pw=$(json_field "$av_dev" rtsp_password)
rc=0
# (AAC as RFC 3640, MPEG4-GENERIC: GStreamer 1.22's own LATM payloader and depayloader
# round trip breaks voaacenc's frames — "channel element duplicate" — whoever muxes them)
GST_PLUGIN_FEATURE_RANK=rtpmp4apay:NONE timeout 20 gst-launch-1.0 -e rtspclientsink name=s location="rtsp://127.0.0.1:$RTSP_PORT/live/CAM-AV" \
    user-id=CAM-AV user-pw="$av_pw" protocols=tcp \
    videotestsrc is-live=true num-buffers=150 ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! x264enc tune=zerolatency key-int-max=30 bitrate=800 ! video/x-h264,profile=baseline ! s. \
    audiotestsrc is-live=true num-buffers=215 samplesperbuffer=1024 wave=ticks \
    ! audio/x-raw,rate=44100,channels=1 ! voaacenc bitrate=64000 ! aacparse ! s. \
    >"$base/gst-av.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || grep -q 'Starting recording' "$base/gst-av.log" || fail "rtspclientsink a/v: $(tail -5 "$base/gst-av.log")"
for i in $(seq 1 100); do
    [ "$(ctl recordings | awk '$2 == "CAM-AV"' | grep -c ' sealed$')" = 2 ] && break
    sleep 0.1
done
[ "$(ctl recordings | awk '$2 == "CAM-AV"' | grep -c ' sealed$')" = 2 ] ||
    fail "not two sealed tracks: $(ctl recordings | grep CAM-AV)"
captures=$(as_custos -c "SELECT count(DISTINCT capture_id), count(*) FROM recordings r JOIN devices d ON d.id = r.device_id WHERE d.serial = 'CAM-AV'")
[ "$captures" = "1|2" ] || fail "the two tracks are not one capture: $captures"
rec_av=$(as_custos -c "SELECT r.id FROM recordings r JOIN devices d ON d.id = r.device_id WHERE d.serial = 'CAM-AV' AND EXISTS (SELECT 1 FROM segments s WHERE s.recording_id = r.id) ORDER BY (SELECT min(s.start_us) FROM segments s WHERE s.recording_id = r.id) LIMIT 1")
for r_ in $(as_custos -c "SELECT r.id FROM recordings r JOIN devices d ON d.id = r.device_id WHERE d.serial = 'CAM-AV'"); do
    export_ --recording "$r_" --out "$base/av-$r_.mp4" >"$base/av-$r_.json" 2>"$base/av-$r_.err" &&
        grep -q '"codec":"h264"' "$base/av-$r_.json" && rec_av=$r_
done
export_ --recording "$rec_av" --out "$base/av.mp4" >"$base/av.json" || fail "export a/v: $(cat "$base/av.json")"
grep -q '"audio_tracks":1' "$base/av.json" || fail "no audio track muxed: $(cat "$base/av.json")"
[ "$(probe -show_entries stream=codec_name "$base/av.mp4" | sort | tr '\n' ' ')" = "aac h264 " ] ||
    fail "streams: $(probe -show_entries stream=codec_name "$base/av.mp4")"
errors=$(ffmpeg -v error -i "$base/av.mp4" -f null - 2>&1)
[ -z "$errors" ] || fail "ffmpeg on the a/v clip: $errors"
vd=$(probe -select_streams v -show_entries stream=duration "$base/av.mp4")
ad=$(probe -select_streams a -show_entries stream=duration "$base/av.mp4")
vs=$(probe -select_streams v -show_entries stream=start_time "$base/av.mp4")
as=$(probe -select_streams a -show_entries stream=start_time "$base/av.mp4")
# (in sync: both start together and last as long, within a frame or an AAC frame's worth and the capture clock's jitter)
awk -v vd="$vd" -v ad="$ad" -v vs="$vs" -v as="$as" 'BEGIN { d = vd - ad; s = vs - as;
    exit !(d < 0.25 && d > -0.25 && s < 0.1 && s > -0.1) }' ||
    fail "out of sync: video $vs+$vd s, audio $as+$ad s"
note "CAM-AV: h264 $vs+$vd s, aac $as+$ad s"
api GET "/api/v1/recordings/$rec_av" "$tok_alice"
expect 200
grep -q '"capture": *"[0-9a-f-]\{36\}"' "$base/body" && grep -q '"tracks": *\[ *"[0-9a-f-]\{36\}" *\]' "$base/body" ||
    fail "the recording does not show its capture and other track: $(cat "$base/body")"
read -r code _ _ < <(curl -sS --cacert "$data/tls/api-cert.pem" -H "Authorization: Bearer $tok_alice" \
    -o "$base/api-av.mp4" -w '%{http_code} %{time_starttransfer} %{time_total}' \
    "https://127.0.0.1:$API_PORT/api/v1/recordings/$rec_av/clip.mp4")
[ "$code" = 200 ] || fail "a/v clip over the API: $code"
[ "$(probe -show_entries stream=codec_name "$base/api-av.mp4" | sort | tr '\n' ' ')" = "aac h264 " ] ||
    fail "API a/v streams: $(probe -show_entries stream=codec_name "$base/api-av.mp4")"
errors=$(ffmpeg -v error -i "$base/api-av.mp4" -f null - 2>&1)
[ -z "$errors" ] || fail "ffmpeg on the API's a/v clip: $errors"
# The capture's package holds both tracks (data/tracks/<audio>/), verified; its derived clip has both.
mkdir -p "$base/av-pkg" && chmod 1777 "$base/av-pkg"
ctl package --recording "$rec_av" --out "$base/av-pkg/av.zip" >"$base/av-pkg.json" || fail "package a/v"
unzip -q "$base/av-pkg/av.zip" -d "$base/av-pkg" || fail "unzip"
# (the verifier as an expert builds it, from the package: not this build's, sanitized or not)
cc -O2 -o "$base/av-pkg/custos-verify" "$base"/av-pkg/custos-package-*/verifier/custos-verify.c -lcrypto ||
    fail "the verifier does not build"
out=$("$base/av-pkg/custos-verify" "$base/av-pkg/av.zip") || fail "the a/v package does not verify: $out"
grep -q '^ok    track .* segments: ' <<<"$out" || fail "the audio track is not checked: $out"
grep -q "capture's other tracks" <<<"$out" || fail "the statement does not bind the tracks: $out"
[ "$(probe -show_entries stream=codec_name "$base"/av-pkg/custos-package-*/data/derived/clip.mp4 | sort | tr '\n' ' ')" = "aac h264 " ] ||
    fail "the package's derived clip lacks the audio"

note "every export audited with the SHA-256 of what it wrote"
sum=$(sha256sum "$base/api.mp4" | cut -d' ' -f1)
ctl audit list --last 200 | grep -q "user:alice .*recording.export .*ok .*recording:$rec_a from start to end .*sha256 $sum" ||
    fail "the API clip ($sum) is not audited"
for f in a mid b hevc pub; do
    sum=$(sha256sum "$base/$f.mp4" | cut -d' ' -f1)
    ctl audit list --last 200 | grep -q "recording.export .*ok .*sha256 $sum" ||
        fail "$f.mp4 ($sum) not audited"
done

note "a segment altered in the store: the export stops, naming it; no file left"
seg=$(find "$data/segments" -path "*$rec_a/00000002.seg")
[ -f "$seg" ] || fail "no segment 2"
size=$(stat -c %s "$seg")
flip "$seg" $((size / 2))
out=$(export_ --recording "$rec_a" --out "$base/bad.mp4" 2>&1) && fail "exported: $out"
grep -q "segment 2 .*authentication failed" <<<"$out" || fail "not named: $out"
read -r code _ _ < <(get_clip "$tok_alice" "" "$base/api-bad.mp4")
[ "$code" = 409 ] && grep -q 'segment 2 .*authentication failed' "$base/api-bad.mp4" ||
    fail "the API sent $code: $(head -c 300 "$base/api-bad.mp4")"
[ ! -e "$base/bad.mp4" ] && [ ! -e "$base/bad.mp4.part" ] || fail "a file was left"
ctl audit list --last 5 | grep -q "recording.export .*failed .*recording:$rec_a" ||
    fail "the refusal is not audited"
note "refused: $(head -1 <<<"$out")"
# (what lies before it still comes out)
export_ --recording "$rec_a" --end "$(at "$(plus "$t0" 1)")" --out "$base/head.mp4" \
    >/dev/null || fail "the part before the altered segment"

kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

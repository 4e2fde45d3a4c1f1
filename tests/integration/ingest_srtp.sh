#!/usr/bin/env bash
# Live SRTP ingest end to end, with real senders: bench/recorders (the H.264
# clip, SRTP in both suites) and a GStreamer srtpenc pipeline. Every segment
# verifies and starts with an IDR access unit; gaps appear exactly where
# packets were dropped on purpose; a BYE and an idle timeout each close a
# recording; a revoked device and every kind of bad packet are refused and
# counted by reason.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
json_field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"

note "provision: an officer, two devices (both suites), one more for GStreamer"
ctl user add --username alice --role officer >/dev/null || fail "user add"
ctl device add --serial CAM-A --officer alice --json >"$base/devices" || fail "device add"
ctl device add --serial CAM-B --officer alice --suite aead_aes_256_gcm --json >>"$base/devices" ||
    fail "device add gcm"
gst_dev=$(ctl device add --serial CAM-GST --officer alice --json) || fail "device add gst"
inj_dev=$(ctl device add --serial CAM-INJ --json) || fail "device add inject"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.idle_timeout_s=3
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"

note "bench/recorders: 2 streams, 7 s, packets 100, 101 and 600 of each dropped on purpose"
"$RECORDERS" --devices "$base/devices" --seconds 7 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" --drop 100,101,600 >"$base/sent.json" || fail "recorders failed"
sent=$(json_field "$(cat "$base/sent.json")" packets_sent)
[ "$sent" -gt 5000 ] || fail "only $sent packets sent"

# The BYE closes both recordings: sealed without waiting for the idle timeout.
for i in $(seq 1 40); do
    [ "$(ctl recordings | grep -c ' sealed$')" -ge 2 ] && break
    sleep 0.1
done
[ "$(ctl recordings | grep -c ' sealed$')" -ge 2 ] || fail "BYE did not close: $(ctl recordings)"

note "every segment verifies and starts with an IDR access unit"
out=$(ctl verify) || fail "verify: $out"
while IFS= read -r dev_line; do
    ssrc=$(json_field "$dev_line" ssrc)
    serial=$(json_field "$dev_line" serial)
    rec=$(ctl recordings | awk -v s="$serial" '$2 == s {print $1}')
    [ -n "$rec" ] || fail "no recording for $serial"
    ctl packets --recording "$rec" >"$base/packets.$serial" || fail "packets $serial"
    segs=$(grep -c ' summary ' "$base/packets.$serial")
    [ "$segs" -ge 3 ] || fail "$serial: only $segs segments in 7 s"
    grep ' summary ' "$base/packets.$serial" | grep -q 'starts_with_keyframe no' &&
        fail "$serial: a segment does not start with an IDR: $(grep summary "$base/packets.$serial")"
    # Gaps exactly where packets were dropped: after 100 and 101, and 600.
    first=$(grep -o "{\"ssrc\":$ssrc,\"first_seq\":[0-9]*" "$base/sent.json" | sed 's/.*://')
    gap1=$(((first + 102) % 65536))
    gap2=$(((first + 601) % 65536))
    gaps=$(grep -v ' summary ' "$base/packets.$serial" | grep -v 'lost_before 0 ' |
        awk '{print $4 ":" $10}' | tr '\n' ' ')
    [ "$gaps" = "$gap1:2 $gap2:1 " ] || fail "$serial: gaps at '$gaps', expected '$gap1:2 $gap2:1 '"
    note "$serial: $segs segments, all start with an IDR; gaps at $gaps"
done <"$base/devices"
ctl recordings --json | grep -q '"officer":"alice"' || fail "recordings not owned by alice"

note "a GStreamer srtpenc sender (x264enc, rtph264pay)"
gst_ssrc=$(json_field "$gst_dev" ssrc)
gst_key=$(json_field "$gst_dev" key_b64 | base64 -d | od -An -tx1 | tr -d ' \n')
timeout 60 gst-launch-1.0 -q videotestsrc num-buffers=150 is-live=true \
    ! video/x-raw,width=640,height=360,framerate=30/1 \
    ! x264enc tune=zerolatency key-int-max=30 bframes=0 bitrate=1000 \
    ! rtph264pay pt=96 ssrc="$gst_ssrc" config-interval=-1 mtu=1200 \
    ! "application/x-rtp,payload=96,ssrc=(uint)$gst_ssrc" \
    ! srtpenc key="$gst_key" rtp-cipher=aes-128-icm rtp-auth=hmac-sha1-80 \
      rtcp-cipher=aes-128-icm rtcp-auth=hmac-sha1-80 \
    ! udpsink host=127.0.0.1 port="$INGEST_PORT" >"$base/gst.log" 2>&1 || fail "gst: $(cat "$base/gst.log")"
note "idle timeout (3 s) closes the GStreamer stream's recording (it sends no BYE)"
for i in $(seq 1 60); do
    ctl recordings | awk '$2 == "CAM-GST"' | grep -q ' sealed$' && break
    sleep 0.1
done
ctl recordings | awk '$2 == "CAM-GST"' | grep -q ' sealed$' || fail "idle timeout: $(ctl recordings)"
rec=$(ctl recordings | awk '$2 == "CAM-GST" {print $1}')
ctl packets --recording "$rec" --summary >"$base/packets.gst" || fail "packets gst"
grep -q 'starts_with_keyframe no' "$base/packets.gst" && fail "gst: $(cat "$base/packets.gst")"
[ "$(grep -c summary "$base/packets.gst")" -ge 2 ] || fail "gst: $(cat "$base/packets.gst")"

note "every kind of bad packet is refused and counted by reason"
for r in unknown_ssrc srtp_auth replay malformed oversize revoked; do
    eval "before_$r=\$(metric 'custos_ingest_dropped_total{reason=\"$r\"}')"
done
"$INJECT" "$inj_dev" "$INGEST_PORT" >/dev/null || fail "inject"
sleep 0.5
for r in unknown_ssrc srtp_auth replay malformed oversize; do
    eval "b=\$before_$r"
    now=$(metric "custos_ingest_dropped_total{reason=\"$r\"}")
    [ "$now" -gt "$b" ] || fail "reason $r not counted ($b -> $now)"
done
grep -q 'dropping packets: srtp_auth' "$base/ingestd.log" || fail "no rate-limited log line"
now=$(metric 'custos_ingest_dropped_total{reason="replay"}')
[ "$now" -ge $((before_replay + 9)) ] ||
    fail "a replay from another source port was accepted ($before_replay -> $now, 9 sent)"

note "a revoked device's packets are refused within a second"
ctl device revoke CAM-A >/dev/null || fail "revoke"
sleep 1
grep -v CAM-B "$base/devices" >"$base/revoked"
"$RECORDERS" --devices "$base/revoked" --seconds 1 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >/dev/null || fail "recorders (revoked)"
sleep 0.3
now=$(metric 'custos_ingest_dropped_total{reason="revoked"}')
[ "$now" -gt "$before_revoked" ] || fail "revoked device's packets not refused"
[ "$(ctl recordings | awk '$2 == "CAM-A"' | wc -l)" = 1 ] || fail "a revoked device recorded"

kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
out=$(ctl verify) || fail "final verify: $out"
echo "$out" | tail -1
echo "ingest_srtp: ok"

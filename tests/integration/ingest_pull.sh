#!/usr/bin/env bash
# Pulling from cameras, end to end: a real gst-rtsp-server camera
# (rtsp_camera) behind Digest (MD5, all GStreamer 1.22 offers: rtsp.allow_md5=1
# here), one behind Basic auth over TLS with an audio track, one over TLS;
# ingestd pulls over TCP (interleaved), UDP and RTSPS (the camera's
# certificate checked against rtsp.pull_ca_file and the URL's host). Each
# recording verifies and starts on keyframes, and keeps the SDP. A camera
# that asks for Basic over plain RTSP gets no password; a redirect is
# followed to the same host and not to another. The camera is killed and
# started again: the recordings of the first connection are sealed and a
# second recording begins after the reconnect. Wrong credentials are refused
# and retried with back-off; revoking a device stops its pull.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

used_ports=" "
new_port() { # a free port none of ours has
    local p
    p=$(it_free_port)
    while [[ "$used_ports" == *" $p "* ]]; do p=$(it_free_port); done
    used_ports+="$p "
    echo "$p"
}
cam_port=$(new_port)
basic_port=$(new_port)
tls_port=$(new_port)
other_port=$(new_port)
plain_basic_port=$(new_port)
same_port=$(new_port)
away_port=$(new_port)
# Two camera certificates, both trusted (rtsp.pull_ca_file holds both): one
# for 127.0.0.1, where its camera is, and one for 127.0.0.9, which the camera
# at 127.0.0.1 that presents it is not.
for c in cam:127.0.0.1 other:127.0.0.9; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=${c%%:*}" -addext "subjectAltName=IP:${c#*:}" -keyout "$base/${c%%:*}-key.pem" \
        -out "$base/${c%%:*}-cert.pem" 2>/dev/null || fail "cannot make a camera certificate"
done
cat "$base/cam-cert.pem" "$base/other-cert.pem" >"$base/trusted.pem"

start_camera() { # NAME PORT ARGS...
    local name=$1 port=$2 i
    shift 2
    "$CAMERA" --port "$port" "$@" >"$base/$name.log" 2>&1 &
    eval "${name}_pid=$!"
    IT_PIDS+=("$!")
    for i in $(seq 1 100); do
        grep -q ready "$base/$name.log" && return 0
        sleep 0.1
    done
    fail "camera $name did not start: $(cat "$base/$name.log")"
}

# Recordings of SERIAL (ids), and those sealed.
recordings() { ctl recordings | awk -v d="$1" '$2 == d {print $1}'; }
sealed() { ctl recordings | awk -v d="$1" '$2 == d && $NF == "sealed"' | wc -l; }
wait_for() { # SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
    local secs=$1 what=$2 i
    shift 2
    for i in $(seq 1 $((secs * 10))); do
        "$@" && return 0
        sleep 0.1
    done
    ctl recordings >&2
    tail -30 "$base/ingestd.log" >&2
    fail "$what (after $secs s)"
}
segments_of() { # SERIAL: segments stored for it so far
    local rec n=0
    for rec in $(recordings "$1"); do
        n=$((n + $(ctl packets --recording "$rec" --summary 2>/dev/null | wc -l)))
    done
    echo "$n"
}
has_segments() { [ "$(segments_of "$1")" -ge "$2" ]; }
has_sealed() { [ "$(sealed "$1")" -ge "$2" ]; }
has_recordings() { [ "$(recordings "$1" | wc -l)" -ge "$2" ]; }

note "provision: cameras behind Digest (TCP and UDP), Basic over TLS (with audio), wrong password"
url="rtsp://viewer:cam-secret-1@127.0.0.1:$cam_port/cam"
ctl device add --serial PULL-TCP --pull "$url" >/dev/null || fail "device add PULL-TCP"
ctl device add --serial PULL-UDP --pull "$url" --pull-udp >/dev/null || fail "device add PULL-UDP"
ctl device add --serial PULL-BASIC --pull "rtsps://basic:b-secret-2@127.0.0.1:$basic_port/cam" \
    >/dev/null || fail "device add PULL-BASIC"
# Basic over plain RTSP would put the password on the wire: never sent.
ctl device add --serial PULL-BASIC-PLAIN \
    --pull "rtsp://basic:b-secret-3@127.0.0.1:$plain_basic_port/cam" >/dev/null ||
    fail "device add PULL-BASIC-PLAIN"
# Redirected: to the same host (followed, the credentials with it) and to
# another (not followed).
ctl device add --serial PULL-REDIR-SAME --pull "rtsp://viewer:cam-secret-1@127.0.0.1:$same_port/cam" \
    >/dev/null || fail "device add PULL-REDIR-SAME"
ctl device add --serial PULL-REDIR-AWAY --pull "rtsp://viewer:cam-secret-1@127.0.0.1:$away_port/cam" \
    >/dev/null || fail "device add PULL-REDIR-AWAY"
ctl device add --serial PULL-BADPW --pull "rtsp://viewer:wrong@127.0.0.1:$cam_port/cam" \
    >/dev/null || fail "device add PULL-BADPW"
ctl device add --serial PULL-TLS --pull "rtsps://127.0.0.1:$tls_port/cam" >/dev/null ||
    fail "device add PULL-TLS"
# A trusted certificate, but for another address: refused.
ctl device add --serial PULL-TLS-NAME --pull "rtsps://127.0.0.1:$other_port/cam" >/dev/null ||
    fail "device add PULL-TLS-NAME"
ctl device list | grep -q 'PULL-TCP' || fail "device list"

start_camera camera "$cam_port" --user viewer --password cam-secret-1 --auth digest
start_camera basic "$basic_port" --user basic --password b-secret-2 --auth basic --audio \
    --tls-cert "$base/cam-cert.pem" --tls-key "$base/cam-key.pem"
start_camera plainbasic "$plain_basic_port" --user basic --password b-secret-3 --auth basic
start_camera samehost "$same_port" --redirect "rtsp://127.0.0.1:$cam_port/cam"
start_camera awayhost "$away_port" --redirect "rtsp://127.0.0.2:$cam_port/cam"
start_camera tlscam "$tls_port" --tls-cert "$base/cam-cert.pem" --tls-key "$base/cam-key.pem"
start_camera othercam "$other_port" --tls-cert "$base/other-cert.pem" --tls-key "$base/other-key.pem"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set rtsp.pull_backoff_max_s=2 --set ingest.device_poll_ms=100 --set segment.target_ms=1000 \
    --set rtsp.pull_ca_file="$base/trusted.pem" --set rtsp.allow_md5=1
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"

note "ingestd pulls: segments arrive from every camera"
wait_for 40 "PULL-TCP: 2 segments" has_segments PULL-TCP 2
wait_for 20 "PULL-UDP: 2 segments" has_segments PULL-UDP 2
wait_for 20 "PULL-BASIC: 2 segments" has_segments PULL-BASIC 2
wait_for 20 "PULL-TLS: 2 segments" has_segments PULL-TLS 2
wait_for 20 "PULL-REDIR-SAME: 2 segments" has_segments PULL-REDIR-SAME 2
[ "$(metric custos_rtsp_pull_sessions)" = 5 ] || fail "pull sessions: $(metric custos_rtsp_pull_sessions)"
grep -q "pull PULL-REDIR-SAME: redirected to rtsp://127.0.0.1:$cam_port/cam" "$base/ingestd.log" ||
    fail "PULL-REDIR-SAME: no redirect logged"
grep -q 'pull PULL-REDIR-AWAY .*redirected (302) to another host, 127.0.0.2' "$base/ingestd.log" ||
    fail "PULL-REDIR-AWAY: the redirect to another host was not refused"
grep -q 'pull PULL-BASIC-PLAIN .*offers no authentication we accept' "$base/ingestd.log" ||
    fail "PULL-BASIC-PLAIN: Basic over plain RTSP was not refused"
[ -z "$(recordings PULL-REDIR-AWAY)$(recordings PULL-BASIC-PLAIN)" ] ||
    fail "a refused pull recorded"
grep -q 'pull PULL-TLS-NAME .*TLS: .*certificate verify failed' "$base/ingestd.log" ||
    fail "PULL-TLS-NAME: no certificate failure logged"
[ -z "$(recordings PULL-TLS-NAME)" ] || fail "PULL-TLS-NAME recorded from a camera it cannot trust"
# PULL-BASIC has a video and an audio track: a recording each.
wait_for 10 "PULL-BASIC: video and audio recordings" has_recordings PULL-BASIC 2

note "wrong credentials: refused, retried with back-off, nothing recorded"
wait_for 10 "credentials refused logged" grep -q 'PULL-BADPW.*credentials refused' "$base/ingestd.log"
[ -z "$(recordings PULL-BADPW)" ] || fail "PULL-BADPW has recordings"
attempts=$(grep -c 'pull PULL-BADPW.*credentials refused' "$base/ingestd.log")
[ "$attempts" -ge 1 ] && [ "$attempts" -le 6 ] || fail "PULL-BADPW: $attempts attempts in ~10 s"

note "the camera dies: its recordings are sealed; it comes back: new recordings begin"
first_tcp=$(recordings PULL-TCP | head -1)
kill -KILL "$camera_pid"
wait_for 15 "PULL-TCP sealed after the camera died" has_sealed PULL-TCP 1
wait_for 15 "PULL-UDP sealed after the camera died" has_sealed PULL-UDP 1
sleep 1
start_camera camera "$cam_port" --user viewer --password cam-secret-1 --auth digest
wait_for 30 "PULL-TCP: a second recording" has_recordings PULL-TCP 2
wait_for 30 "PULL-UDP: a second recording" has_recordings PULL-UDP 2
before=$(segments_of PULL-TCP)
wait_for 20 "PULL-TCP: segments after the reconnect" has_segments PULL-TCP $((before + 2))
grep -q 'pull PULL-TCP from .*playing 1 track(s) over TCP' "$base/ingestd.log" || fail "no TCP play"
grep -q 'pull PULL-UDP from .*playing 1 track(s) over UDP' "$base/ingestd.log" || fail "no UDP play"

note "revoking a device stops its pull and seals its recording"
ctl device revoke PULL-UDP >/dev/null || fail "revoke"
wait_for 10 "PULL-UDP pull stopped" grep -q 'pull PULL-UDP .*stopped (device revoked)' "$base/ingestd.log"
wait_for 10 "PULL-UDP: both recordings sealed" has_sealed PULL-UDP 2

note "ingestd stops: every recording sealed and verified"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS: $(tail -20 "$base/ingestd.log")"
for s in PULL-TCP PULL-UDP PULL-BASIC PULL-TLS PULL-REDIR-SAME; do
    n=$(recordings "$s" | wc -l)
    [ "$(sealed "$s")" = "$n" ] || fail "$s: $(sealed "$s") of $n recordings sealed"
    for rec in $(recordings "$s"); do
        ctl packets --recording "$rec" --summary >"$base/$s-$rec.summary" || fail "packets $s"
        grep -q 'starts_with_keyframe no' "$base/$s-$rec.summary" &&
            ! grep -q 'codec=audio' "$data/segments/"*/"$rec"/meta 2>/dev/null &&
            fail "$s recording $rec: a segment does not start on a keyframe"
    done
done
[ "$(ctl recordings | awk '$2 == "PULL-TCP"' | head -1 | awk '{print $1}')" != "" ] || fail "no recordings"
ctl verify >"$base/verify.out" 2>&1 || fail "verify: $(cat "$base/verify.out")"

note "a pulled recording exported (whole and a middle range): H.264, every stored access unit a frame"
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")/.." && pwd)/lsan.supp"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
probe() { ffprobe -v error -of default=nw=1:nk=1 "$@"; }
ctl export --recording "$first_tcp" --out "$base/pull.mp4" >"$base/pull.json" || fail "export pull"
[ "$(probe -show_entries stream=codec_name "$base/pull.mp4")" = h264 ] || fail "pull clip: not h264"
frames=$(probe -count_frames -select_streams v -show_entries stream=nb_read_frames "$base/pull.mp4")
stored=$(ctl packets --recording "$first_tcp" | awk '$3 == "seq" {print $6}' | uniq | wc -l)
[ "$frames" = "$stored" ] || fail "pull clip: $frames frames, $stored access units stored"
errors=$(ffmpeg -v error -i "$base/pull.mp4" -f null - 2>&1)
[ -z "$errors" ] || fail "ffmpeg on the pull clip: $errors"
first=$(sed -n 's/.*"first":"\([^"]*\)".*/\1/p' "$base/pull.json")
last=$(sed -n 's/.*"last":"\([^"]*\)".*/\1/p' "$base/pull.json")
mid=$(awk -v f="$(date -u -d "$first" +%s.%N)" -v l="$(date -u -d "$last" +%s.%N)" \
    'BEGIN { printf "%.3f %.3f", f + (l - f) / 3, f + 2 * (l - f) / 3 }')
from=$(date -u -d "@${mid% *}" +%Y-%m-%dT%H:%M:%S.%3NZ) to=$(date -u -d "@${mid#* }" +%Y-%m-%dT%H:%M:%S.%3NZ)
ctl export --recording "$first_tcp" --start "$from" --end "$to" --out "$base/pull-mid.mp4" \
    >"$base/pull-mid.json" || fail "export pull range"
errors=$(ffmpeg -v error -i "$base/pull-mid.mp4" -f null - 2>&1)
[ -z "$errors" ] || fail "ffmpeg on the pull range: $errors"
# (the first line: x264's SEI comes after it as side data)
key=$(probe -select_streams v -show_frames -read_intervals '%+#1' -show_entries frame=key_frame "$base/pull-mid.mp4" | head -1)
[ "$key" = 1 ] || fail "the pull range does not start on a keyframe"
note "pull: $frames frames whole; range $from..$to: $(probe -show_entries format=duration "$base/pull-mid.mp4") s"
# PULL-BASIC's two tracks are one capture; its audio (G.711) has no place in an MP4 as it is: counted.
captures=$(for rec in $(recordings PULL-BASIC); do grep '^capture=' "$data/segments/"*/"$rec"/meta; done | sort -u | wc -l)
[ "$captures" -le "$(($(recordings PULL-BASIC | wc -l) / 2))" ] || fail "PULL-BASIC: tracks not linked by capture"
for rec in $(recordings PULL-BASIC); do
    grep -q 'codec=h264' "$data/segments/"*/"$rec"/meta || continue
    ctl export --recording "$rec" --out "$base/basic.mp4" >"$base/basic.json" || fail "export PULL-BASIC"
    grep -q '"audio_skipped":1' "$base/basic.json" || fail "PULL-BASIC: $(cat "$base/basic.json")"
    break
done

note "each recording keeps where it came from and the camera's SDP"
metas=$(find "$data/segments" -name meta -exec cat {} +)
grep -q 'source=rtsp-pull' <<<"$metas" || fail "no source=rtsp-pull in any meta"
grep -q "url=rtsp://127.0.0.1:$cam_port/cam" <<<"$metas" || fail "no url in meta"
grep -q "url=rtsps://127.0.0.1:$tls_port/cam" <<<"$metas" || fail "no rtsps url in meta"
grep -q "tls=yes" <<<"$metas" || fail "no tls=yes in meta"
grep -q 'cam-secret-1' <<<"$metas" && fail "a password is in a recording's meta"
grep -q 'sdp_b64=' <<<"$metas" || fail "no SDP in meta"
grep 'sdp_b64=' <<<"$metas" | head -1 | sed 's/^sdp_b64=//' | base64 -d | grep -q 'sprop-parameter-sets' ||
    fail "the SDP kept lacks sprop-parameter-sets"
[ -n "$first_tcp" ] || fail "no first recording"
note "ok"

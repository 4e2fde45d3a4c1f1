#!/usr/bin/env bash
# The live page in Chromium (docs/live.md): Debian's chromium, driven by
# playwright-core (tests/browser/live_page.mjs), opens /live/{serial} on
# loopback, signs in, and plays a live SRTP recorder over WHEP (frames
# decoded, counted by requestVideoFrameCallback, within 2 s) and an H.265
# recorder through the transcode; an officer out of scope gets 404 and sees
# nothing. Screenshots are kept beside the test's output (live_browser/).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp"
out="$PWD/live_browser"
rm -rf "$out" && mkdir -p "$out"
[ -d "$root/tests/browser/node_modules/playwright-core" ] || fail "playwright-core is not installed (scripts/deps)"

# A Main-profile clip: Chromium here offers H.264 up to Main (42001f, 42e01f,
# 4d001f), and its decoder takes nothing above what it offered.
gst-launch-1.0 -q videotestsrc num-buffers=300 pattern=ball \
    ! video/x-raw,width=1280,height=720,framerate=30/1 \
    ! x264enc bitrate=3000 key-int-max=30 bframes=0 speed-preset=veryfast threads=2 \
      option-string=repeat-headers=1 \
    ! video/x-h264,profile=main,stream-format=byte-stream,alignment=au \
    ! filesink location="$base/clip.h264" || fail "cannot make the clip"
clip=$base/clip.h264
user alice officer
user bob officer
ctl device add --serial CAM-A --officer alice --json >"$base/dev-a" || fail "device add"
hevc_dev=$(ctl device add --serial CAM-HEVC --officer alice --codec h265 --json) || fail "device add h265"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.idle_timeout_s=3
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert

"$RECORDERS" --devices "$base/dev-a" --seconds 60 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >"$base/sent-a.json" &
rec=$!
it_hevc_sender "$hevc_dev" 1800 "$base/gst-hevc.log" &
hevc=$!
IT_PIDS+=("$rec" "$hevc")
login alice "passphrase of alice ok"
for _ in $(seq 1 100); do
    api GET /api/v1/recordings "$TOKEN"
    grep -q CAM-A "$base/body" && grep -q CAM-HEVC "$base/body" && break
    sleep 0.1
done
grep -q CAM-HEVC "$base/body" || fail "the recorders are not live: $(cat "$base/body")"

note "the page itself: no external assets, a strict CSP"
curl -sS --cacert "$data/tls/api-cert.pem" -D "$base/headers" -o "$base/page.html" \
    "https://127.0.0.1:$API_PORT/live/CAM-A" || fail "GET /live/CAM-A"
grep -qi "^content-security-policy: default-src 'none'; script-src 'self'" "$base/headers" ||
    fail "no strict CSP: $(cat "$base/headers")"
grep -qi "frame-ancestors 'none'" "$base/headers" || fail "the page may be framed"
! grep -Eq '(src|href)="(https?:)?//' "$base/page.html" || fail "the page loads from elsewhere"

note "a first viewer starts the server's GStreamer (once in its life; slow under ASan)"
timeout 60 "$WHEP" --api "https://127.0.0.1:$API_PORT" --cacert "$data/tls/api-cert.pem" \
    --token "$TOKEN" --serial CAM-A --seconds 1 >"$base/warm.json" 2>"$base/warm.err" ||
    grep -q '"status":201' "$base/warm.json" || fail "the first viewer: $(cat "$base/warm.json" "$base/warm.err")"

note "Chromium: alice plays CAM-A and CAM-HEVC (transcoded); bob gets 404 for CAM-A"
mkdir -p "$base/chromium-profile"
API_PORT=$API_PORT OUT="$out" USER_DATA="$base/chromium-profile" \
    CASES="CAM-A:alice:passphrase+of+alice+ok:play CAM-HEVC:alice:passphrase+of+alice+ok:play CAM-A:bob:passphrase+of+bob+ok:404" \
    timeout 120 node "$root/tests/browser/live_page.mjs" 2>&1 | tee "$base/chromium.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || fail "the browser test failed (status $rc)"
ls "$out"/*.png >/dev/null || fail "no screenshots"
note "screenshots in $out"
ctl audit list --last 40 | grep -q "user:alice .*live.start" || fail "the browser's session is not audited"
ctl audit list --last 40 | grep -q "user:bob .*live.watch .*denied" || fail "bob's denial is not audited"
echo "PASS"

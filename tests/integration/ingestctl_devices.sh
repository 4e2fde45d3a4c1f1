#!/usr/bin/env bash
# ingestctl device provisioning: what `device add` prints (SRTP key, RTSP
# credentials, URLs), pull devices, refusals, and that every device secret is
# stored only wrapped and survives a KEK rotation.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" --set rtsp.public_host=rec.example.org "$@"; }
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

note "device add --json prints the SRTP key and the RTSP credentials once"
ctl user add --username alice --role officer >/dev/null || fail "user add"
a=$(ctl device add --serial BWC-1 --officer alice --json) || fail "device add: $a"
[ "$(echo "$a" | json_field rtsp_url)" = "rtsp://rec.example.org:8554/live/BWC-1" ] || fail "$a"
[ "$(echo "$a" | json_field rtsps_url)" = "rtsps://rec.example.org:8322/live/BWC-1" ] || fail "$a"
[ "$(echo "$a" | json_field rtsp_user)" = "BWC-1" ] || fail "$a"
pw=$(echo "$a" | json_field rtsp_password)
echo "$pw" | grep -Eq '^[A-Za-z0-9_-]{22}$' || fail "password '$pw'"
b=$(ctl device add --serial BWC-2 --json) || fail "device add 2"
[ "$(echo "$b" | json_field rtsp_password)" != "$pw" ] || fail "two devices, one password"
echo "$a" | grep -q '"pull"' && fail "a publishing device marked as pulled: $a"

note "text output says the password is shown once; rtsp.port=0 has no plain URL"
out=$(ctl --set rtsp.port=0 device add --serial BWC-3) || fail "device add text: $out"
echo "$out" | grep -q 'rtsp password .*(shown once)' || fail "$out"
echo "$out" | grep -q 'rtsp url *(rtsp.port is 0)' || fail "$out"

note "pull devices"
# Loopback only: ingestd below does try to pull from these (nothing listens on port 9).
c=$(ctl device add --serial CAM-1 --pull 'rtsp://admin:s3cret@127.0.0.1:9/stream1' --json) ||
    fail "device add --pull: $c"
echo "$c" | grep -q '"pull":"tcp"' || fail "$c"
echo "$c" | grep -q 's3cret' && fail "the pull URL's password was printed: $c"
d=$(ctl device add --serial CAM-2 --pull rtsps://cam2:c4m2pw@127.0.0.1:9/live --pull-udp --json) ||
    fail "device add --pull-udp: $d"
echo "$d" | grep -q '"pull":"udp"' || fail "$d"
ctl device list >"$base/list" || fail "device list"
grep -Eq '^[0-9]+ +CAM-1 .* tcp +' "$base/list" || fail "list: $(cat "$base/list")"
grep -Eq '^[0-9]+ +CAM-2 .* udp +' "$base/list" || fail "list: $(cat "$base/list")"
grep -Eq '^[0-9]+ +BWC-1 .* - +alice$' "$base/list" || fail "list: $(cat "$base/list")"
ctl device list --json | grep -q '"serial":"CAM-1"[^}]*"pull":"tcp"' || fail "list --json"

note "refusals"
for bad in 'http://x/y' 'rtsp://' 'rtsp:///path' 'rtsp://h/a b' "rtsp://h/$(head -c 1100 /dev/zero | tr '\0' a)"; do
    out=$(ctl device add --serial CAM-BAD --pull "$bad" 2>&1) && fail "accepted pull URL '$bad'"
    echo "$out" | grep -q 'pull URL' || fail "unclear refusal of '$bad': $out"
done
out=$(ctl device add --serial CAM-X --pull rtsp://h/p --count 2 2>&1) && fail "--pull with --count"
echo "$out" | grep -q 'not with --count' || fail "$out"
out=$(ctl device add --serial CAM-X --pull-udp 2>&1) && fail "--pull-udp alone"
echo "$out" | grep -q 'goes with --pull' || fail "$out"
out=$(ctl device add --serial BWC-1 2>&1) && fail "a second BWC-1"
echo "$out" | grep -q 'already exists' || fail "$out"

note "secrets are stored only wrapped (and ingestd reads them)"
port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
psql -X -q -A -t "host=$data/pg user=custos dbname=custos" \
    -c "SELECT d::text, encode(d.rtsp_wrapped, 'escape'), encode(d.pull_wrapped, 'escape') FROM devices d" \
    >"$base/rows" || fail "psql on the embedded cluster"
[ "$(grep -c BWC- "$base/rows")" -ge 3 ] || fail "rows: $(cat "$base/rows")"
grep -q -- "$pw" "$base/rows" && fail "an RTSP password is stored in the clear"
grep -q 's3cret\|c4m2pw' "$base/rows" && fail "a pull URL is stored in the clear"
grep -q 'malformed\|cannot' "$base/ingestd.log" && fail "ingestd: $(cat "$base/ingestd.log")"
grep -q 'pull CAM-1 from rtsp://127.0.0.1:9/stream1 over TCP' "$base/ingestd.log" ||
    fail "ingestd does not pull CAM-1: $(cat "$base/ingestd.log")"
kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"

note "keys rotate re-wraps every device secret: 5 SRTP keys, 5 RTSP passwords, 2 pull URLs"
out=$(ctl keys rotate) || fail "keys rotate: $out"
echo "$out" | grep -q '12 device secrets' || fail "rotate: $out"
ctl device add --serial BWC-4 --json >/dev/null || fail "device add after rotation"

echo "ingestctl_devices: ok"

#!/usr/bin/env bash
# Evidence packages (docs/package.md): a recording from bench/recorders
# packaged whole and by a middle range with ingestctl package, and over
# HTTPS (POST /api/v1/recordings/{id}/packages, then GET
# /api/v1/packages/{id}). The verifier is built from the source inside the
# package, with nothing but cc and libcrypto, and run in an empty directory
# on a copy: it passes; sha256sum -c agrees with both manifests. Then each
# attack makes it fail naming what broke: a flipped byte in any payload
# file, a segment removed from the manifest (with and without the bag's
# manifests rewritten to match), an edited custody entry, a payload changed
# with every manifest rewritten (the signed statement catches it). An
# officer who may not read the recording gets 404; a segment altered in the
# store stops the package, naming it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")/.." && pwd)/lsan.supp"
rec_of() { ctl recordings | awk -v s="$1" '$2 == s {print $1}'; }
start_of() { ctl recordings | awk -v s="$1" '$2 == s {print $4}'; }
at() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.%3NZ; }
secs() { date -u -d "$1" +%s.%N; }
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"
user alice officer
user bob officer
user gina officer # the permission group: approves shares
ctl permission-group add gina >/dev/null || fail "permission-group add"
ctl device add --serial CAM-A --officer alice --json >"$base/dev-a" || fail "device add"
port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.idle_timeout_s=2
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert
"$RECORDERS" --devices "$base/dev-a" --seconds 8 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >"$base/sent-a.json" || fail "recorders"
for i in $(seq 1 100); do
    ctl recordings | awk '$2 == "CAM-A"' | grep -q ' sealed$' && break
    sleep 0.1
done
rec=$(rec_of CAM-A)
[ -n "$rec" ] || fail "no recording: $(ctl recordings)"

note "ingestctl package: the whole recording"
ctl package --recording "$rec" --reason "court order 12/2026" --out "$base/whole.zip" \
    >"$base/whole.json" || fail "package"
note "$(cat "$base/whole.json")"
sum=$(sha256sum "$base/whole.zip" | cut -d' ' -f1)
grep -q "\"sha256\":\"$sum\"" "$base/whole.json" || fail "the report's SHA-256 is not the file's"
ctl audit list --last 5 | grep -q "recording.package .*ok .*recording:$rec package .* sha256 $sum" ||
    fail "the package is not audited with its SHA-256"

note "the verifier, from the package's own source, in an empty directory with no Custos"
mkdir -p "$base/expert" "$base/unpacked"
chmod 1777 "$base/expert" # (ingestctl, as custos, writes packages there too)
unzip -q "$base/whole.zip" -d "$base/unpacked" || fail "unzip"
bag=$(echo "$base"/unpacked/custos-package-*)
[ -f "$bag/verifier/custos-verify.c" ] && [ -f "$bag/verifier/SPEC.md" ] || fail "no verifier in the bag"
cc -O2 -Wall -o "$base/expert/custos-verify" "$bag/verifier/custos-verify.c" -lcrypto ||
    fail "the verifier does not build"
ldd "$base/expert/custos-verify" | grep -qv -e libcrypto -e libc -e linux-vdso -e ld-linux -e libz -e libzstd -e libpthread &&
    note "(links: $(ldd "$base/expert/custos-verify" | awk '{print $1}' | tr '\n' ' '))"
cp "$base/whole.zip" "$base/expert/"
verify() { (cd "$base/expert" && env -i PATH=/usr/bin:/bin ./custos-verify "$1"); }
out=$(verify whole.zip) || fail "the verifier refused a fresh package: $out"
grep -q '^verdict: VERIFIED' <<<"$out" || fail "no verdict: $out"
printf '%s\n' "$out" >"$base/verify-whole.txt"
note "$(grep -c '^ok' <<<"$out") checks held: $(tail -1 <<<"$out")"
(cd "$bag" && sha256sum --quiet -c manifest-sha256.txt && sha256sum --quiet -c tagmanifest-sha256.txt) ||
    fail "sha256sum -c disagrees"
out=$(verify "$bag") || fail "the verifier refused the unpacked bag: $out"
grep -q 'custody: .* audit entries .* the seal' <<<"$out" || fail "custody not checked: $out"
grep -q 'checkpoint: .* signed' <<<"$out" || fail "checkpoint not checked: $out"
# The key pinned to the one the installation publishes (its raw 32 bytes' SHA-256), and a wrong one.
key_sha=$(openssl pkey -pubin -in "$bag/data/installation-key.pem" -outform DER | tail -c 32 | sha256sum | cut -d' ' -f1)
out=$(cd "$base/expert" && ./custos-verify --key-sha256 "$key_sha" whole.zip) || fail "pinned key refused: $out"
grep -q "against the given key" <<<"$out" || fail "not pinned: $out"
out=$(cd "$base/expert" && ./custos-verify --key-sha256 "$(printf '0%.0s' $(seq 64))" whole.zip) &&
    fail "a wrong key passed: $out"
grep -q '^FAIL  data/installation-key.pem: not the key given' <<<"$out" || fail "wrong key: $out"
[ "$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$bag/data/derived/clip.mp4")" = h264 ] ||
    fail "the derived clip is not H.264"
grep -q '"pipeline": "appsrc' "$bag/data/derived/provenance.json" || fail "no pipeline in provenance"
# Wireshark's reader takes the packets (capinfos ships with it when present).
npk=$(jq '[.segments[] | .packets] | add' "$bag/data/segments.json")
note "packets.pcapng: $npk packets, $(stat -c %s "$bag/data/packets.pcapng") bytes"

# attack NAME WANT: copy the bag, run the change (a function of DIR), and
# expect the verifier to fail with WANT in its FAIL line (and sha256sum -c to
# fail too unless the manifests were rewritten).
attack() {
    local name=$1 want=$2 change=$3 dir="$base/attack-$1"
    rm -rf "$dir"
    cp -r "$bag" "$dir"
    "$change" "$dir"
    local got rc=0
    got=$(verify "$dir") || rc=$?
    [ "$rc" = 1 ] || fail "$name: the verifier exited $rc: $got"
    local line
    line=$(grep '^FAIL' <<<"$got")
    grep -qF -- "$want" <<<"$line" || fail "$name: expected '$want', got: $line"
    note "$name -> $line"
}
flip() { # FILE OFFSET
    local b
    b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "\\$(printf %03o $(((b + 1) % 256)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
remanifest() { # DIR: bag-info's Payload-Oxum and both manifests rewritten as a forger would
    local oxum
    oxum="$(find "$1/data" -type f -printf '%s\n' | awk '{b += $1} END {print b}').$(find "$1/data" -type f | wc -l)"
    sed -i "s/^Payload-Oxum: .*/Payload-Oxum: $oxum/" "$1/bag-info.txt"
    (cd "$1" && find data -type f | sort | xargs sha256sum >manifest-sha256.txt)
    retagmanifest "$1"
}
retagmanifest() { # DIR: the tag manifest rewritten
    (cd "$1" && sha256sum bagit.txt bag-info.txt manifest-sha256.txt statement.json statement.sig \
        verifier/custos-verify.c verifier/SPEC.md >tagmanifest-sha256.txt)
}
flip_pcap() { flip "$1/data/packets.pcapng" $(($(stat -c %s "$1/data/packets.pcapng") / 2)); }
flip_clip() { flip "$1/data/derived/clip.mp4" $(($(stat -c %s "$1/data/derived/clip.mp4") / 2)); }
flip_meta() { flip "$1/data/meta" 3; }
drop_segment() { jq 'del(.segments[2])' "$1/data/segments.json" >"$1/s" && mv "$1/s" "$1/data/segments.json"; }
drop_segment_forged() { drop_segment "$1"; remanifest "$1"; }
edit_custody() {
    jq '(.entries[0].actor) = "user:mallory"' "$1/data/custody.json" >"$1/c" &&
        mv "$1/c" "$1/data/custody.json"
    remanifest "$1"
}
drop_custody() {
    jq 'del(.entries[-1])' "$1/data/custody.json" >"$1/c" && mv "$1/c" "$1/data/custody.json"
    remanifest "$1"
}
flip_pcap_forged() { flip_pcap "$1"; remanifest "$1"; }
flip_clip_forged() { flip_clip "$1"; remanifest "$1"; }
flip_statement() { sed -i 's/court order/court 0rder/' "$1/statement.json"; remanifest "$1"; }
extra_file() { echo "planted" >"$1/data/extra.txt"; }
# (a verifier that says yes to anything, shipped in place of ours)
swap_verifier() { echo 'int main(void) { return 0; }' >>"$1/verifier/custos-verify.c"; retagmanifest "$1"; }
retag() { echo "planted" >"$1/notes.txt"; }
attack packets "data/packets.pcapng: its SHA-256 does not match" flip_pcap
attack clip "data/derived/clip.mp4: its SHA-256 does not match" flip_clip
attack meta "data/meta: its SHA-256 does not match" flip_meta
attack segment-removed "data/segments.json: its SHA-256 does not match" drop_segment
attack segment-removed-forged "segment 2: missing" drop_segment_forged
attack custody-edited "custody entry" edit_custody
attack custody-entry-removed "no recording.seal entry in the custody log" drop_custody
attack packets-forged "its packets do not hash to its SHA-256" flip_pcap_forged
attack clip-forged "manifest-sha256.txt: not the payload manifest the statement signed" flip_clip_forged
attack statement-edited "statement.json: its signature" flip_statement
attack planted "data/extra.txt: a payload file that manifest-sha256.txt does not list" extra_file
attack planted-tag "notes.txt: a file that tagmanifest-sha256.txt does not list" retag
attack verifier-swapped "verifier/custos-verify.c: not the file the statement signed" swap_verifier
(cd "$base/attack-packets" && ! sha256sum --quiet -c manifest-sha256.txt >/dev/null 2>&1) ||
    fail "sha256sum -c missed the flipped packet"

note "a middle range: its segments' packets, the chain carried to the sealed head"
t0=$(secs "$(start_of CAM-A)")
ctl package --recording "$rec" --start "$(at "$(plus "$t0" 3.1)")" --end "$(at "$(plus "$t0" 5.6)")" \
    --reason "range" --out "$base/expert/mid.zip" >"$base/mid.json" || fail "range package"
out=$(verify mid.zip) || fail "the range package does not verify: $out"
first=$(jq '.segments[0]' "$base/mid.json")
[ "$first" -gt 0 ] || fail "the range starts at segment $first"
note "range: $(cat "$base/mid.json")"

note "over HTTPS: asked for (202), built by the packager, downloaded; another officer's is 404"
login alice "passphrase of alice ok" && tok_alice=$TOKEN
login bob "passphrase of bob ok" && tok_bob=$TOKEN
api POST "/api/v1/recordings/$rec/packages" "$tok_alice" '{"reason":"disclosure to the defence"}'
expect 202
pkg=$(field id)
api POST "/api/v1/recordings/$rec/packages" "$tok_bob" '{"reason":"curious"}'
expect 404 not_found
api POST "/api/v1/recordings/$rec/packages" "$tok_alice" '{"reason":""}'
expect 400 invalid_value reason
api POST "/api/v1/recordings/$rec/packages" "$tok_alice" '{"reason":"x","start":"2001-01-01T00:00:00Z","end":"2001-01-01T00:00:01Z"}'
expect 422 empty_range
for i in $(seq 1 100); do
    api GET "/api/v1/packages/$pkg/status" "$tok_alice"
    expect 200
    state=$(field state)
    [ "$state" = ready ] || [ "$state" = failed ] && break
    sleep 0.2
done
[ "$state" = ready ] || fail "package state $state: $(cat "$base/body")"
want=$(field sha256)
api GET "/api/v1/packages/$pkg/status" "$tok_bob"
expect 404 not_found
api GET "/api/v1/packages/$pkg" "$tok_bob"
expect 404 not_found
curl -sS --cacert "$data/tls/api-cert.pem" -H "Authorization: Bearer $tok_alice" \
    -o "$base/expert/api.zip" -D "$base/api.headers" -w '%{http_code}' \
    "https://127.0.0.1:$API_PORT/api/v1/packages/$pkg" >"$base/code" || fail "download"
[ "$(cat "$base/code")" = 200 ] || fail "download: $(cat "$base/code")"
grep -qi '^content-type: application/zip' "$base/api.headers" || fail "$(cat "$base/api.headers")"
[ "$(sha256sum "$base/expert/api.zip" | cut -d' ' -f1)" = "$want" ] || fail "not the package made"
out=$(verify api.zip) || fail "the API's package does not verify: $out"
grep -q 'reason: disclosure to the defence' <<<"$out" || fail "the reason is not in the statement"
# (the custody log inside names its own request)
unzip -p "$base/expert/api.zip" "*/data/custody.json" | grep -q "package $pkg requested" ||
    fail "the request is not in the package's custody log"
ctl audit list --last 20 | grep -q "user:alice .*recording.package.download .*ok .*package $pkg .*sha256 $want" ||
    fail "the download is not audited"
ctl audit list --last 30 | grep -q "user:bob .*recording.package .*denied" || fail "bob's denial not audited"
api GET "/api/v1/recordings/$rec/packages" "$tok_alice"
expect 200
grep -q "\"id\": *\"$pkg\"" "$base/body" || fail "not listed: $(cat "$base/body")"

note "a share link delivers clips and packages of what it shares, each use audited; nothing else"
login gina "passphrase of gina ok" && tok_gina=$TOKEN
ctl device add --serial CAM-C --officer alice --json >"$base/dev-c" || fail "device add"
"$RECORDERS" --devices "$base/dev-c" --seconds 3 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >/dev/null || fail "recorders C"
for i in $(seq 1 100); do
    ctl recordings | awk '$2 == "CAM-C"' | grep -q ' sealed$' && break
    sleep 0.1
done
other=$(rec_of CAM-C) # alice's too, but not shared
tomorrow=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/shares "$tok_alice" "{\"recipient\":\"Defence counsel\",\"recordings\":[\"$rec\"],\"reason\":\"disclosure\",\"expires_at\":\"$tomorrow\"}"
expect 201
share=$(grep -o '"id":[0-9]*' "$base/body" | cut -d: -f2)
api POST "/api/v1/shares/$share/decide" "$tok_gina" '{"approve":true}'
expect 200
link=$(field link)
curl -sS --cacert "$data/tls/api-cert.pem" -o "$base/shared.mp4" -w '%{http_code}' \
    "https://127.0.0.1:$API_PORT$link/clip.mp4?recording=$rec" >"$base/code" || fail "shared clip"
[ "$(cat "$base/code")" = 200 ] || fail "shared clip: $(cat "$base/code") $(head -c 300 "$base/shared.mp4")"
[ "$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$base/shared.mp4")" = h264 ] ||
    fail "the shared clip is not H.264"
errors=$(ffmpeg -v error -i "$base/shared.mp4" -f null - 2>&1)
[ -z "$errors" ] || fail "ffmpeg on the shared clip: $errors"
sum=$(sha256sum "$base/shared.mp4" | cut -d' ' -f1)
ctl audit list --last 10 | grep -q "share:$share .*recording.export .*ok .*recording:$rec .*sha256 $sum" ||
    fail "the shared clip is not audited"
api GET "$link/clip.mp4?recording=$other"
expect 404 not_found # not shared
api GET "/api/v1/shared/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/clip.mp4?recording=$rec"
expect 404 not_found
api POST "$link/packages" "" "{\"recording\":\"$other\"}"
expect 404 not_found
api POST "$link/packages" "" "{\"recording\":\"$rec\"}"
expect 202
spkg=$(field id)
api GET "$link/package?id=$pkg"
expect 404 not_found # alice's own package: not made through the link
for i in $(seq 1 100); do
    curl -sS --cacert "$data/tls/api-cert.pem" -o "$base/expert/shared.zip" -w '%{http_code}' \
        "https://127.0.0.1:$API_PORT$link/package?id=$spkg" >"$base/code" || fail "shared package"
    [ "$(cat "$base/code")" = 409 ] || break
    sleep 0.2
done
[ "$(cat "$base/code")" = 200 ] || fail "shared package: $(cat "$base/code") $(head -c 300 "$base/expert/shared.zip")"
out=$(verify shared.zip) || fail "the shared package does not verify: $out"
grep -q "through share $share" <<<"$out" || fail "the reason does not name the share: $out"
sum=$(sha256sum "$base/expert/shared.zip" | cut -d' ' -f1)
ctl audit list --last 10 | grep -q "share:$share .*recording.package.download .*ok .*sha256 $sum" ||
    fail "the shared package download is not audited"
api POST "/api/v1/shares/$share/revoke" "$tok_alice" ''
expect 200
api GET "$link/package?id=$spkg"
expect 404 not_found # revoked: nothing reachable

note "a kept package changed on disk is never delivered"
stored="$data/packages/$pkg.zip"
[ -f "$stored" ] || fail "no stored package $stored"
flip "$stored" $(($(stat -c %s "$stored") / 3)) # (one byte changed, whatever it was)
code=$(curl -sS --cacert "$data/tls/api-cert.pem" -H "Authorization: Bearer $tok_alice" \
    -o "$base/body" -w '%{http_code}' "https://127.0.0.1:$API_PORT/api/v1/packages/$pkg")
[ "$code" = 500 ] && grep -q '"package_damaged"' "$base/body" || fail "a changed package: $code $(head -c 200 "$base/body")"
ctl audit list --last 5 | grep -q "user:alice .*recording.package.download .*failed .*package $pkg" ||
    fail "the refused download is not audited"

note "a segment altered in the store: the package stops, naming it"
seg=$(find "$data/segments" -path "*$rec/00000003.seg")
size=$(stat -c %s "$seg")
flip "$seg" $((size / 2))
out=$(ctl package --recording "$rec" --out "$base/bad.zip" 2>&1) && fail "packaged: $out"
grep -q "segment 3 .*authentication failed" <<<"$out" || fail "not named: $out"
[ ! -e "$base/bad.zip" ] && [ ! -e "$base/bad.zip.part" ] || fail "a file was left"
api POST "/api/v1/recordings/$rec/packages" "$tok_alice" '{"reason":"again"}'
expect 202
bad=$(field id)
for i in $(seq 1 100); do
    api GET "/api/v1/packages/$bad/status" "$tok_alice"
    state=$(field state)
    [ "$state" = failed ] || [ "$state" = ready ] && break
    sleep 0.2
done
[ "$state" = failed ] && grep -q 'segment 3 .*authentication failed' "$base/body" ||
    fail "the API built it: $(cat "$base/body")"
api GET "/api/v1/packages/$bad" "$tok_alice"
expect 409 conflict
ctl audit list --last 10 | grep -q "system .*recording.package .*failed .*package $bad" ||
    fail "the failure is not audited"

kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

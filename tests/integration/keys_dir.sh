#!/usr/bin/env bash
# keys.dir outside the data dir: the KEKs and the signing key are made there,
# its permissions are checked and corrected at every start, a key file that
# belongs to another account is refused, and footage written with keys there
# verifies.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
keys="$base/vault/keys"
mkdir -p "$base/vault"
ctl() { "$INGESTCTL" --data-dir "$data" --set "keys.dir=$keys" "$@"; }
mode() { stat -c %a "$1"; }

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set "keys.dir=$keys" --set rtsp.port=0 --set rtsps.port=0 --set api.port=0
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"

note "the keys live in keys.dir, private; none in the data dir"
[ "$(mode "$keys")" = 700 ] || fail "keys dir mode $(mode "$keys")"
kek=$(ls "$keys" | grep -E '^kek-[0-9a-f]{16}\.key$' | head -1)
[ -n "$kek" ] || fail "no KEK in $keys: $(ls -la "$keys")"
for f in "$kek" active signing.key; do
    [ "$(mode "$keys/$f")" = 600 ] || fail "$f mode $(mode "$keys/$f")"
done
grep -q 'BEGIN PRIVATE KEY' "$keys/signing.key" || fail "signing key"
ls "$data/keys" | grep -q 'kek-' && fail "a KEK in the data dir"
openssl pkey -in "$keys/signing.key" -noout -text 2>/dev/null | grep -q ED25519 ||
    fail "the signing key is not Ed25519"

note "looser permissions are corrected at the next start, with a warning"
chmod 0755 "$keys"
chmod 0644 "$keys/$kek"
port=$(it_free_port)
it_start_ingestd "$base/ingestd2.log" --data-dir "$data" --set http.port="$port" \
    --set "keys.dir=$keys" --set rtsp.port=0 --set rtsps.port=0 --set api.port=0
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd2.log"
kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$(mode "$keys")" = 700 ] || fail "keys dir still $(mode "$keys")"
[ "$(mode "$keys/$kek")" = 600 ] || fail "$kek still $(mode "$keys/$kek")"
grep -q "had mode 0755; corrected to 0700" "$base/ingestd2.log" || fail "no warning logged"
grep -q "had mode 0644; corrected to 0600" "$base/ingestd2.log" || fail "no warning logged"

note "a key file that belongs to another account is refused"
if [ "$(id -u)" = 0 ]; then
    owner=$(stat -c %u "$keys/$kek")
    chown nobody "$keys/$kek"
    it_expect_refusal "belongs to uid $(id -u nobody), not to the account Custos runs as" \
        "$INGESTD" --data-dir "$data" --set http.port="$(it_free_port)" --set "keys.dir=$keys" \
        --set rtsp.port=0 --set rtsps.port=0 --set api.port=0
    chown "$owner" "$keys/$kek"
else
    note "(not root: the owner check is not exercised)"
fi

note "a symbolic link in place of a key is refused"
mv "$keys/active" "$base/active"
ln -s "$base/active" "$keys/active"
it_expect_refusal "is a symbolic link" "$INGESTCTL" --data-dir "$data" --set "keys.dir=$keys" \
    keys list
rm "$keys/active"
mv "$base/active" "$keys/active"
out=$(ctl keys list) || fail "keys list: $out"
echo "$out" | grep -q "${kek:4:16}.*(active)" || fail "$out"
echo "keys_dir: ok"

#!/usr/bin/env bash
# ingestctl verify, reindex and keys on a real data dir filled by the store
# benchmark's writer, with and without a running ingestd.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"

note "fill a data dir: 3 recordings, 21 segments"
"$BENCH_STORE" --data-dir "$data" --mb 21 --segment-mb 1 --recordings 3 >"$base/bench.json" ||
    fail "bench/store failed: $(cat "$base/bench.json")"
grep -q '"segments": 21' "$base/bench.json" || fail "unexpected: $(cat "$base/bench.json")"

ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }

out=$(ctl verify) || fail "verify of a clean store failed: $out"
[ "$(echo "$out" | tail -1)" = "verified 3 recordings, 21 segments, 0 problems" ] || fail "$out"
out=$(ctl verify --quick) || fail "quick verify failed: $out"
[ "$(echo "$out" | tail -1)" = "verified 3 recordings, 21 segments, 0 problems" ] || fail "$out"

note "progress bar on a terminal"
script -qec "$INGESTCTL --data-dir $data verify" /dev/null >"$base/tty.txt" 2>&1 || fail "verify on a tty"
grep -q 'verifying \[' "$base/tty.txt" || fail "no progress bar on a tty"
ctl verify 2>&1 | grep -q 'verifying \[' && fail "progress bar when not a tty"

note "keys"
ctl keys list >"$base/keys1" || fail "keys list"
grep -Eq '^[0-9a-f]{16} +3 +0 +0 +0  \(active\)$' "$base/keys1" ||
    fail "keys list: $(cat "$base/keys1")"
old_kek=$(awk 'NR==2 {print $1}' "$base/keys1")
it_expect_refusal "is the active one: rotate first" "$INGESTCTL" --data-dir "$data" keys retire \
    "$old_kek"
out=$(ctl keys rotate) || fail "keys rotate: $out"
echo "$out" | grep -q '3 data keys re-wrapped' || fail "rotate: $out"
new_kek=$(echo "$out" | awk '{print $3}')
[ "$new_kek" != "$old_kek" ] || fail "the KEK did not change"
ctl keys list | grep -Eq "^$new_kek +3 +0 +0 +0  \(active\)$" || fail "keys not under the new KEK"
ctl keys list | grep -Eq "^$old_kek +0 +0 +0 +0$" || fail "the old KEK still wraps: $(ctl keys list)"
out=$(ctl verify) || fail "verify after rotation: $out"

note "a flipped bit is found, named, and fails the exit status"
seg=$(find "$data/segments" -name '00000002.seg' | head -1)
rec=$(basename "$(dirname "$seg")")
printf '\x00' | dd of="$seg" bs=1 seek=4000 count=1 conv=notrunc status=none
out=$(ctl verify)
rc=$?
[ "$rc" = 1 ] || fail "verify exit status $rc with a tampered segment"
echo "$out" | grep -q "^recording $rec segment 2: authentication failed (GCM tag)" ||
    fail "tamper not named: $out"
echo "$out" | tail -1 | grep -Eq '^verified 3 recordings, 21 segments, [1-9][0-9]* problems$' ||
    fail "summary: $out"
out=$(ctl verify --quick)
[ $? = 1 ] || fail "quick verify missed the tamper"
echo "$out" | grep -q "segment 2: stored bytes differ from the index (XXH3)" || fail "$out"
other=$(ls "$data/segments"/*/ | grep -v "^$rec$" | grep -E '^[0-9a-f-]{36}$' | head -1)
out=$(ctl verify --recording "$other") || fail "another recording is affected: $out"
echo "$out" | tail -1 | grep -q '^verified 1 recordings, [0-9]* segments, 0 problems$' || fail "$out"
it_expect_refusal "is not a recording id" "$INGESTCTL" --data-dir "$data" verify --recording nope
it_expect_refusal "is neither in the index nor on disk" "$INGESTCTL" --data-dir "$data" verify \
    --recording 00000000-0000-0000-0000-000000000000

note "with ingestd running: reindex rebuilds what was deleted from the index"
port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
curl -fsS "http://127.0.0.1:$port/metrics" | grep -q '^custos_store_recordings_open 0' ||
    fail "store metrics missing"
# (the application's role cannot: segment rows are evidence; the superuser,
# with triggers off, plays a database restored from an old backup)
psql -X -q "host=$data/pg user=custos dbname=custos" -c "DELETE FROM segments" 2>"$base/err" &&
    fail "the application's role deleted segment rows"
grep -q "permission denied for table segments" "$base/err" || fail "delete refused how? $(cat "$base/err")"
psql -X -q "host=$data/pg user=postgres dbname=custos" \
    -c "SET session_replication_role = replica" -c "DELETE FROM segments" ||
    fail "psql on the embedded cluster"
out=$(ctl reindex) || fail "reindex: $out"
echo "$out" | grep -q '^reindexed 3 recordings, 21 segments' || fail "reindex: $out"
out=$(ctl verify)
echo "$out" | tail -1 | grep -Eq '^verified 3 recordings, 21 segments, [1-9][0-9]* problems$' ||
    fail "attached verify: $out"
echo "$out" | grep -v "^recording $rec segment 2: " | grep -q '^recording' &&
    fail "problems beyond the tampered segment: $out"
note "a retired KEK is refused while anything still depends on it, then destroyed"
# (a data key wrapped by the old KEK again, as a restored backup would bring back)
kept=$(as_super -c "SELECT recording_id FROM recording_keys WHERE recording_id <> '$rec' LIMIT 1")
as_super -c "CREATE TABLE kept_key AS SELECT * FROM recording_keys WHERE recording_id = '$kept'" ||
    fail "save a key"
out=$(ctl keys rotate) || fail "keys rotate: $out"
third=$(echo "$out" | awk '{print $3}')
as_super -c "UPDATE recording_keys k SET kek_id = o.kek_id, wrapped = o.wrapped FROM kept_key o
             WHERE k.recording_id = o.recording_id" || fail "restore the old wrapping"
out=$(ctl verify --recording "$kept") || fail "the restored key does not unwrap: $out"
it_expect_refusal "still wraps 1 data keys, 0 pending data keys, 0 device secrets and 0 user secrets (recording $kept" \
    "$INGESTCTL" --data-dir "$data" keys retire "$new_kek"
out=$(ctl keys rotate) || fail "keys rotate: $out"
out=$(ctl keys retire "$new_kek") || fail "keys retire: $out"
echo "$out" | grep -q "key-encryption key $new_kek destroyed" || fail "$out"
out=$(ctl keys retire "$old_kek") || fail "keys retire: $out"
[ -e "$data/keys/kek-$new_kek.key" ] && fail "the retired KEK's file is still there"
ctl keys list | grep -q "^$new_kek\|^$old_kek" && fail "retired KEKs listed: $(ctl keys list)"
# What the old wrapping protected can no longer be opened by anyone holding it.
as_super -c "UPDATE recording_keys k SET kek_id = o.kek_id, wrapped = o.wrapped FROM kept_key o
             WHERE k.recording_id = o.recording_id; DROP TABLE kept_key" || fail "old wrapping"
out=$(ctl verify --recording "$kept") && fail "a key under a destroyed KEK still unwraps: $out"
echo "$out" | grep -q "key-encryption key $new_kek is missing" || fail "$out"
ctl audit list --last 20 | grep -q " keys.retire .* ok .*$old_kek" || fail "retire not audited"
kill -TERM "$pid"
it_wait_exit "$pid" 10
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "ingestctl_store: ok"

#!/usr/bin/env bash
# Signed audit checkpoints against an insider with full database access: an
# entry altered, the last entries deleted, the whole chain recomputed after
# an edit, a checkpoint forged — `ingestctl audit verify` fails each time and
# names the last checkpoint that still holds. A third party checks a
# checkpoint with openssl alone; the hook receives every line.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
hook="cat >>'$base/hook.out'"
# (ingestctl reads the settings ingestd reads: the hook runs for its checkpoints too)
ctl() { "$INGESTCTL" --data-dir "$data" --set "audit.checkpoint_command=$hook" "$@"; }
cpfile="$data/audit/checkpoints"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set rtsp.port=0 --set rtsps.port=0 --set api.port=0 --set audit.checkpoint_s=3600 \
    --set "audit.checkpoint_command=$hook"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"

note "every ingestctl change is anchored in a signed checkpoint"
for d in North South East West Harbour Airport; do
    ctl department add "$d" >/dev/null || fail "department add $d"
done
last=$(as_super -c "SELECT max(seq) FROM audit_log")
[ "$last" -ge 6 ] || fail "only $last entries"
[ -f "$cpfile" ] || fail "no checkpoint file"
lines=$(wc -l <"$cpfile")
[ "$lines" -ge 6 ] || fail "$lines checkpoints for 6 changes"
tail -1 "$cpfile" | grep -Eq "^custos-checkpoint-v1 [0-9a-f-]{36} [0-9T:.Z-]{24} $last [0-9a-f]{64} [A-Za-z0-9+/=]{88}\$" ||
    fail "last line: $(tail -1 "$cpfile")"
out=$(ctl audit verify) || fail "verify: $out"
echo "$out" | grep -q "chain intact; $lines signed checkpoints, the last that holds: the checkpoint of .* (line $lines, entry $last)" ||
    fail "$out"

note "a third party checks a checkpoint with openssl alone"
ctl keys public >"$base/pub.pem" || fail "keys public"
grep -q 'BEGIN PUBLIC KEY' "$base/pub.pem" || fail "$(cat "$base/pub.pem")"
line=$(tail -1 "$cpfile")
printf '%s' "$(echo "$line" | cut -d' ' -f1-5)" >"$base/msg"
echo "$line" | cut -d' ' -f6 | base64 -d >"$base/sig"
openssl pkeyutl -verify -pubin -inkey "$base/pub.pem" -rawin -in "$base/msg" -sigfile "$base/sig" \
    >"$base/openssl.out" 2>&1 || fail "openssl: $(cat "$base/openssl.out")"
grep -q 'Signature Verified Successfully' "$base/openssl.out" || fail "$(cat "$base/openssl.out")"
sed 's/ \([0-9]*\) \([0-9a-f]\{64\}\)$/ 1 \2/' "$base/msg" >"$base/msg2" # another seq
openssl pkeyutl -verify -pubin -inkey "$base/pub.pem" -rawin -in "$base/msg2" -sigfile "$base/sig" \
    >/dev/null 2>&1 && fail "openssl accepted an altered checkpoint"

note "the hook got every checkpoint line"
diff <(tail -n "$(wc -l <"$base/hook.out")" "$cpfile") "$base/hook.out" >/dev/null ||
    fail "hook lines differ: $(cat "$base/hook.out")"
[ "$(wc -l <"$base/hook.out")" -ge 6 ] || fail "hook ran $(wc -l <"$base/hook.out") times"

# Checkpoint lines by entry: the one at or before seq N.
cp_at_or_before() { awk -v n="$1" '$4 <= n {l = NR; s = $4} END {print l " " s}' "$cpfile"; }

note "an entry altered by the superuser: broken, last good checkpoint named"
as_super -c "ALTER TABLE audit_log DISABLE TRIGGER USER" || fail "superuser"
victim=$((last - 2))
read -r good_line good_seq < <(cp_at_or_before $((victim - 1)))
orig=$(as_super -c "SELECT object FROM audit_log WHERE seq = $victim")
as_super -c "UPDATE audit_log SET object = 'Nowhere' WHERE seq = $victim" || fail "update"
out=$(ctl audit verify) && fail "an altered entry went unnoticed: $out"
echo "$out" | grep -q "BROKEN at entry $victim: entry $victim was altered" || fail "$out"
echo "$out" | grep -q "last checkpoint that still holds: the checkpoint of .* (line $good_line, entry $good_seq)" ||
    fail "last good checkpoint not named (line $good_line, entry $good_seq): $out"
as_super -c "UPDATE audit_log SET object = '$orig' WHERE seq = $victim" || fail "restore"
ctl audit verify >/dev/null || fail "not intact after the restore: $(ctl audit verify)"

note "the last entries deleted (the chain alone cannot tell): truncation found"
as_super -c "CREATE TABLE saved AS SELECT * FROM audit_log WHERE seq > $((last - 3))" || fail "save"
as_super -c "DELETE FROM audit_log WHERE seq > $((last - 3))" || fail "delete the tail"
read -r good_line good_seq < <(cp_at_or_before $((last - 3)))
out=$(ctl audit verify) && fail "a removed tail went unnoticed: $out"
echo "$out" | grep -q "TRUNCATED: the log ends at entry $((last - 3)), but the checkpoint of .* covers entry $last: entries $((last - 2)) to $last were removed" ||
    fail "$out"
echo "$out" | grep -q "last checkpoint that still holds: the checkpoint of .* (line $good_line, entry $good_seq)" ||
    fail "last good checkpoint not named (line $good_line, entry $good_seq): $out"
as_super -c "INSERT INTO audit_log SELECT * FROM saved; DROP TABLE saved" || fail "put back"
ctl audit verify >/dev/null || fail "not intact after putting the tail back: $(ctl audit verify)"

note "an edit with the whole chain recomputed after it: rewriting found"
victim=$((last - 3))
read -r good_line good_seq < <(cp_at_or_before $((victim - 1)))
as_super -c "CREATE TABLE saved AS SELECT * FROM audit_log" || fail "save"
as_super <<SQL || fail "recompute"
UPDATE audit_log SET object = 'Atlantis' WHERE seq = $victim;
DO \$\$
DECLARE
    e record;
    prev bytea;
BEGIN
    SELECT hash INTO prev FROM audit_log WHERE seq = $victim - 1;
    FOR e IN SELECT * FROM audit_log WHERE seq >= $victim ORDER BY seq LOOP
        UPDATE audit_log SET prev_hash = prev,
            hash = sha256(prev || int8send(e.seq)
                          || int8send(floor(extract(epoch FROM e.at) * 1000)::bigint)
                          || audit_field(e.actor) || audit_field(e.action)
                          || audit_field(e.object) || audit_field(e.outcome)
                          || audit_field(e.source))
        WHERE seq = e.seq RETURNING hash INTO prev;
    END LOOP;
END
\$\$;
SQL
# The chain alone is consistent again: only the checkpoints tell.
out=$(ctl audit verify) && fail "a recomputed chain went unnoticed: $out"
echo "$out" | grep -q "BROKEN" && fail "the recomputation was not consistent (test broken): $out"
echo "$out" | grep -q "REWRITTEN: entry $victim differs from the checkpoint of .*: the log was rewritten after entry $good_seq and the chain recomputed" ||
    fail "$out"
echo "$out" | grep -q "last checkpoint that still holds: the checkpoint of .* (line $good_line, entry $good_seq)" ||
    fail "last good checkpoint not named (line $good_line, entry $good_seq): $out"
as_super -c "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM saved; DROP TABLE saved" ||
    fail "restore"
ctl audit verify >/dev/null || fail "not intact after the restore: $(ctl audit verify)"

note "a checkpoint forged without the key: its signature fails"
cp "$cpfile" "$base/checkpoints.saved"
tail -1 "$cpfile" | sed 's/ \([0-9a-f]\{64\}\) / 0000000000000000000000000000000000000000000000000000000000000000 /' >>"$cpfile"
out=$(ctl audit verify) && fail "a forged checkpoint went unnoticed: $out"
echo "$out" | grep -q "1 whose signature does not verify" || fail "$out"
cp "$base/checkpoints.saved" "$cpfile"

note "a line a crash tore is cut off before the next checkpoint, never run into it"
printf 'custos-checkpoint-v1 %s 2026' "$(cut -d' ' -f2 "$cpfile" | head -1)" >>"$cpfile"
ctl department add Annex >/dev/null || fail "department add"
tail -1 "$cpfile" | grep -q '^custos-checkpoint-v1 .* [A-Za-z0-9+/=]\{88\}$' || fail "$(tail -2 "$cpfile")"
grep -c '2026custos' "$cpfile" >/dev/null && fail "a torn line ran into the next: $(tail -2 "$cpfile")"
out=$(ctl audit verify) || fail "verify after a torn line: $out"

note "at a stop, ingestd signs the last head"
as_super -c "ALTER TABLE audit_log ENABLE TRIGGER USER" || fail "superuser"
# (an entry no ingestctl change wrote, so none of its checkpoints covers it)
as_super -c "SELECT audit_append(ARRAY['system'], ARRAY['test.append'], ARRAY[''], ARRAY['ok'], ARRAY['local'])" \
    >/dev/null || fail "append"
head=$(as_super -c "SELECT max(seq) FROM audit_log")
kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
[ "$(tail -1 "$cpfile" | cut -d' ' -f4)" = "$head" ] || fail "no checkpoint of entry $head at the stop"
out=$(ctl audit verify) || fail "verify after the stop: $out"
echo "$out" | grep -q "chain intact" || fail "$out"
echo "audit_checkpoints: ok"

#!/usr/bin/env bash
# The audit log and passwords from the command line: every ingestctl change
# leaves an entry; the chain verifies; the role Custos connects as cannot
# change entries; an entry altered, removed or inserted by hand (as the
# database superuser) is found and named. Passwords are checked against the
# policy and stored only as argon2id.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
as_custos() { psql -X -q -A -t -v ON_ERROR_STOP=1 "host=$data/pg user=custos dbname=custos" "$@"; }

note "users with and without passwords; the policy refuses weak ones"
echo 'correct horse battery staple' | ctl user add --username ada --role admin --password-stdin \
    >"$base/out" || fail "user add ada: $(cat "$base/out")"
grep -q 'with a password' "$base/out" || fail "$(cat "$base/out")"
for bad in 'short1!' 'password1234' 'PASSWORD1234' 'bob.officer0' 'aaaaaaaaaaaaaaaa'; do
    out=$(echo "$bad" | ctl user add --username bob.officer0 --role officer --password-stdin 2>&1) &&
        fail "password '$bad' accepted"
    echo "$out" | grep -q 'password:' || fail "unclear refusal of '$bad': $out"
done
head -c 1100 /dev/zero | tr '\0' x | ctl user add --username bob --role officer --password-stdin \
    2>"$base/err" && fail "a 1100-byte password accepted"
grep -q 'at most 1024' "$base/err" || fail "$(cat "$base/err")"
ctl user add --username carol --role reviewer >"$base/out" || fail "user add carol"
grep -q 'cannot log in yet' "$base/out" || fail "$(cat "$base/out")"
ctl department add Patrol >/dev/null || fail "department add"
ctl device add --serial AUD-1 >/dev/null || fail "device add"
ctl device assign AUD-1 --officer carol >/dev/null || fail "device assign"
ctl device revoke AUD-1 >/dev/null || fail "device revoke"
ctl device revoke NO-SUCH >/dev/null 2>&1 && fail "revoked a device that does not exist"

note "every change is in the log, failures too, and the chain is intact"
ctl audit list --last 100 >"$base/list" || fail "audit list"
for a in user.add department.add device.add device.assign device.revoke; do
    grep -q " $a " "$base/list" || fail "no $a entry: $(cat "$base/list")"
done
grep -q 'ingestctl:.* device.revoke .* failed .*NO-SUCH' "$base/list" ||
    fail "the failed revoke is not logged: $(cat "$base/list")"
grep -q 'user.add .* failed .*bob.officer0' "$base/list" || fail "refused user add not logged"
out=$(ctl audit verify) || fail "verify: $out"
echo "$out" | grep -q 'chain intact' || fail "$out"
entries=$(echo "$out" | sed -n 's/audit log: \([0-9]*\) entries.*/\1/p')
[ "$entries" -ge 12 ] || fail "only $entries entries: $out"

# The database through ingestd's running cluster from here on.
port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set rtsp.port=0 --set rtsps.port=0
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"

note "passwords are stored only as argon2id"
hash=$(as_custos -c "SELECT password_hash FROM users WHERE username = 'ada'")
case "$hash" in '$argon2id$v=19$m=65536,t=3,p=1$'*) ;; *) fail "stored: $hash" ;; esac
grep -rq 'horse battery' "$data" 2>/dev/null && fail "the password is in the data dir"
[ -z "$(as_custos -c "SELECT password_hash FROM users WHERE username = 'carol'")" ] ||
    fail "carol has a password"

note "the role Custos uses cannot change or remove entries"
as_custos -c "UPDATE audit_log SET outcome = 'denied' WHERE seq = 2" 2>"$base/err" &&
    fail "custos updated an audit entry"
grep -q 'permission denied\|append-only' "$base/err" || fail "$(cat "$base/err")"
as_custos -c "DELETE FROM audit_log WHERE seq = 2" 2>"$base/err" && fail "custos deleted an entry"
as_custos -c "TRUNCATE audit_log" 2>"$base/err" && fail "custos truncated the log"
as_custos -c "ALTER TABLE audit_log DISABLE TRIGGER USER" 2>/dev/null &&
    as_custos -c "UPDATE audit_log SET outcome = 'denied' WHERE seq = 2" 2>/dev/null &&
    fail "custos disabled the trigger and updated an entry"
ctl audit verify >/dev/null || fail "the log changed: $(ctl audit verify)"

note "altered by hand (as superuser): found and named"
as_super -c "ALTER TABLE audit_log DISABLE TRIGGER USER" || fail "superuser"
orig=$(as_super -c "SELECT object FROM audit_log WHERE seq = 3")
as_super -c "UPDATE audit_log SET object = 'someone-else' WHERE seq = 3" || fail "update"
out=$(ctl audit verify) && fail "an altered entry went unnoticed: $out"
echo "$out" | grep -q 'BROKEN at entry 3: entry 3 was altered' || fail "$out"
as_super -c "UPDATE audit_log SET object = '$orig' WHERE seq = 3" || fail "restore"
out=$(ctl audit verify) || fail "not intact after the restore: $out"

as_super -c "UPDATE audit_log SET at = at + interval '1 millisecond' WHERE seq = 4" || fail "update"
out=$(ctl audit verify) && fail "a moved timestamp went unnoticed: $out"
echo "$out" | grep -q 'BROKEN at entry 4' || fail "$out"
as_super -c "UPDATE audit_log SET at = at - interval '1 millisecond' WHERE seq = 4" || fail "restore"

note "removed by hand: found and named"
as_super -c "CREATE TABLE saved AS SELECT * FROM audit_log WHERE seq = 5" || fail "save"
as_super -c "DELETE FROM audit_log WHERE seq = 5" || fail "delete"
out=$(ctl audit verify) && fail "a removed entry went unnoticed: $out"
echo "$out" | grep -q 'BROKEN at entry 6: entry 6 follows entry 4: 1 entry is missing' || fail "$out"
as_super -c "INSERT INTO audit_log SELECT * FROM saved" || fail "put back"
ctl audit verify >/dev/null || fail "not intact after putting it back"

note "inserted by hand: found and named"
last=$(as_super -c "SELECT max(seq) FROM audit_log")
as_super -c "INSERT INTO audit_log SELECT seq + 1, now(), 'user:mallory', 'recording.read', 'x', 'ok', '10.0.0.1', hash, sha256(hash) FROM audit_log WHERE seq = $last" ||
    fail "insert"
out=$(ctl audit verify) && fail "an inserted entry went unnoticed: $out"
echo "$out" | grep -q "BROKEN at entry $((last + 1)): entry $((last + 1)) was altered" || fail "$out"
as_super -c "DELETE FROM audit_log WHERE seq = $((last + 1))" || fail "remove the forgery"
# Renumbering to make room in the middle breaks the chain where it starts.
as_super -c "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 7" || fail "shift"
as_super -c "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1007" || fail "shift back by one less"
as_super -c "INSERT INTO audit_log SELECT 7, now(), 'user:mallory', 'x', '', 'ok', 'local', hash, hash FROM audit_log WHERE seq = 6" ||
    fail "insert in the middle"
out=$(ctl audit verify) && fail "an entry inserted in the middle went unnoticed: $out"
echo "$out" | grep -q 'BROKEN at entry 7' || fail "$out"

kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "ingestctl_audit: ok"

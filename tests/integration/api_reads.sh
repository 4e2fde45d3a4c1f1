#!/usr/bin/env bash
# The read path (docs/control.md, "Read path") over real HTTPS: pages of
# GET /api/v1/recordings are kept per (user, page) while the read generation
# and their reader's grants say they are exact, and every change shows in
# the very next request: a new recording, a renamed department, a grant
# that starts, ends or is revoked, a logout, a locked account. Every page
# shown gets its audit entry; while entries cannot be written, reads are
# refused (503), and the entries of pages already shown are written once
# the audit log takes them again.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
count() { grep -o '"id":"' "$base/body" | wc -l; }
new_recording() { # OFFICER: as the store indexes one
    as_custos -c "INSERT INTO recordings (id, key_id, opened_at, officer_id) SELECT
        gen_random_uuid(), decode(md5(random()::text), 'hex'), now(), id FROM users
        WHERE username = '$1'" || fail "recording for $1"
}
grant() { # USER DEPARTMENT FROM UNTIL (SQL times): as the workflow leaves one
    as_custos -c "INSERT INTO grants (user_id, permission, department_id, valid_from, valid_until)
        SELECT u.id, 'reviewer', d.id, $3, $4 FROM users u, departments d
        WHERE u.username = '$1' AND d.name = '$2' RETURNING id"
}
list() { # TOKEN: GET the first page twice (the second from the kept page, if any)
    api GET /api/v1/recordings "$1"
    expect 200
    cp "$base/body" "$base/first"
    api GET /api/v1/recordings "$1"
    expect 200
    cmp -s "$base/first" "$base/body" || fail "two reads in a row differ: $(cat "$base/body")"
}
# Raw request that may answer 5xx (api() fails the test on one).
raw_code() { curl -sS --cacert "$data/tls/api-cert.pem" -o "$base/body" -w '%{http_code}' \
    -H "Authorization: Bearer $1" "https://127.0.0.1:$API_PORT/api/v1/recordings"; }
audited() { as_custos -c "SELECT count(*) FROM audit_log WHERE action = 'recording.list'"; }
wait_audited() { # N: the group commit writes within milliseconds
    local i
    for i in $(seq 1 100); do
        [ "$(audited)" -ge "$1" ] && return 0
        sleep 0.05
    done
    fail "expected $1 recording.list entries, have $(audited)"
}

ctl department add North >/dev/null
ctl department add North-East --parent North >/dev/null
user olive officer North
user ned officer North-East
user rita reviewer

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert
for u in olive ned rita; do
    login "$u" "passphrase of $u ok"
    expect 201
    eval "tok_$u=\$TOKEN"
done
shown=0

note "a new recording shows in the next page"
new_recording olive
list "$tok_olive"
[ "$(count)" = 1 ] || fail "olive sees $(count) recordings, not 1"
new_recording olive
api GET /api/v1/recordings "$tok_olive"
expect 200
[ "$(count)" = 2 ] || fail "a new recording did not show: $(count)"
grep -q '"department":"North"' "$base/body" || fail "no department: $(cat "$base/body")"
shown=$((shown + 3))

note "an open recording's acknowledged segments, bytes and duration show as they grow"
grep -q '"state":"open","segments":0,"bytes":0,"duration_ms":0' "$base/body" ||
    fail "open recording: $(cat "$base/body")"
rec=$(as_custos -c "SELECT r.id FROM recordings r JOIN users u ON u.id = r.officer_id
                    WHERE u.username = 'olive' ORDER BY r.opened_at DESC LIMIT 1")
add_segment() { # IDX: as the index writer adds an acknowledged segment
    as_custos -c "INSERT INTO segments (recording_id, idx, start_us, end_us, packets, lost, flags,
        plaintext_len, file_len, sha256, chain, xxh3) VALUES ('$rec', $1, $1 * 2000000,
        $1 * 2000000 + 1999000, 10, 0, 0, 1000, 1184, sha256('x'), sha256('y'),
        substring(sha256('z') from 1 for 16))" || fail "segment $1"
}
for i in 0 1 2; do
    add_segment "$i"
    list "$tok_olive"
    grep -q "\"id\":\"$rec\",[^}]*\"state\":\"open\",\"segments\":$((i + 1)),\"bytes\":$((1000 * (i + 1))),\"duration_ms\":$((2000 * i + 1999))" \
        "$base/body" || fail "after segment $i: $(cat "$base/body")"
    shown=$((shown + 2))
done
api GET "/api/v1/recordings/$rec" "$tok_olive"
expect 200
grep -q '"segments":3' "$base/body" && grep -q '"duration_ms":5999' "$base/body" ||
    fail "one recording: $(cat "$base/body")"

note "a renamed department shows in the next page"
as_custos -c "UPDATE departments SET name = 'North-West' WHERE name = 'North'" || fail "rename"
api GET /api/v1/recordings "$tok_olive"
expect 200
grep -q '"department":"North-West"' "$base/body" || fail "rename not shown: $(cat "$base/body")"
as_custos -c "UPDATE departments SET name = 'North' WHERE name = 'North-West'" || fail "rename"
shown=$((shown + 1))

note "a grant that ends: its pages stop at its end, with no change in the database"
new_recording ned
list "$tok_rita"
[ "$(count)" = 0 ] || fail "rita sees $(count) recordings without a grant"
grant rita North "now() - interval '1 minute'" "now() + interval '3 seconds'" >/dev/null || fail grant
list "$tok_rita"
[ "$(count)" = 3 ] || fail "rita sees $(count) recordings with a North grant, not 3"
sleep 3.2
api GET /api/v1/recordings "$tok_rita"
expect 200
[ "$(count)" = 0 ] || fail "rita still sees $(count) recordings after her grant ended"
shown=$((shown + 5))

note "a grant that starts later: its pages begin at its start"
grant rita North-East "now() + interval '2 seconds'" "now() + interval '1 hour'" >/dev/null ||
    fail grant
list "$tok_rita"
[ "$(count)" = 0 ] || fail "rita sees $(count) recordings before her grant starts"
sleep 2.2
api GET /api/v1/recordings "$tok_rita"
expect 200
[ "$(count)" = 1 ] || fail "rita sees $(count) recordings once her North-East grant started, not 1"
shown=$((shown + 3))

note "a revoked grant stops at once"
gid=$(grant rita North "now() - interval '1 minute'" "now() + interval '1 hour'") || fail grant
list "$tok_rita"
[ "$(count)" = 3 ] || fail "rita sees $(count) recordings, not 3"
as_custos -c "UPDATE grants SET revoked_at = now() WHERE id = $gid" || fail revoke
api GET /api/v1/recordings "$tok_rita"
expect 200
[ "$(count)" = 1 ] || fail "rita sees $(count) recordings after the revocation, not 1"
shown=$((shown + 3))

note "a logout and a locked account are refused although their page is kept"
list "$tok_ned"
api DELETE /api/v1/session "$tok_ned"
expect 204
api GET /api/v1/recordings "$tok_ned"
expect 401 session_expired
list "$tok_olive"
as_custos -c "UPDATE users SET locked_at = now() WHERE username = 'olive'" || fail lock
api GET /api/v1/recordings "$tok_olive"
expect 401 session_expired
as_custos -c "UPDATE users SET locked_at = NULL, unlocked_at = now() WHERE username = 'olive'"
shown=$((shown + 4))

note "every page shown was audited"
wait_audited "$shown"
[ "$(audited)" = "$shown" ] || fail "$(audited) recording.list entries for $shown pages shown"

note "while the audit log cannot be written, reads are refused; then the entries are written"
# (appends go only through audit_append(); taking it away makes them fail)
as_super -c "REVOKE EXECUTE ON FUNCTION audit_append(text[], text[], text[], text[], text[]) FROM custos_app" ||
    fail "revoke execute"
code=$(raw_code "$tok_rita")
[ "$code" = 200 ] || fail "the first read after the revoke answered $code"
shown=$((shown + 1))
refused=""
for _ in $(seq 1 100); do
    code=$(raw_code "$tok_rita")
    [ "$code" = 503 ] && { refused=yes; break; }
    [ "$code" = 200 ] && shown=$((shown + 1))
    sleep 0.05
done
[ -n "$refused" ] || fail "reads were not refused while the audit log failed"
grep -q '"error":"unavailable"' "$base/body" || fail "503 without its error: $(cat "$base/body")"
grep -q "read path: audit" "$base/ingestd.log" || fail "the failed append was not logged"
as_super -c "GRANT EXECUTE ON FUNCTION audit_append(text[], text[], text[], text[], text[]) TO custos_app" ||
    fail "grant execute"
for _ in $(seq 1 100); do
    code=$(raw_code "$tok_rita")
    [ "$code" = 200 ] && break
    sleep 0.05
done
[ "$code" = 200 ] || fail "reads still refused ($code) once the audit log took entries again"
shown=$((shown + 1))
wait_audited "$shown"
[ "$(audited)" = "$shown" ] || fail "$(audited) recording.list entries for $shown pages shown"
ctl audit verify >"$base/verify.out" 2>&1 || fail "audit chain: $(cat "$base/verify.out")"

note "at a stop, queued entries are written"
api GET /api/v1/recordings "$tok_rita"
expect 200
shown=$((shown + 1))
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exited with $IT_STATUS"
after=$(ctl audit list --last 1000000 | grep -c ' recording.list ')
[ "$after" = "$shown" ] || fail "$after recording.list entries after the stop for $shown pages shown"
ctl audit verify >"$base/verify.out" 2>&1 || fail "audit chain: $(cat "$base/verify.out")"
echo "PASS api_reads"

#!/usr/bin/env bash
# Every change commits with its audit entry, over real HTTPS: while the audit
# log refuses an action's entries (audit_append made to fail for them), each
# such change answers 503 and is not applied — a logout leaves the session
# working, an unlock leaves the account locked, a request, a form and a share
# are not created, a grant is not revoked — and once entries are taken again
# the same requests succeed with their entries written. Bytes that are not
# UTF-8 in a request's path are refused before they reach anything.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
# raw METHOD PATH TOKEN [BODY]: a request that may answer 503 (api() refuses 5xx).
raw() {
    local args=(-sS --cacert "$data/tls/api-cert.pem" -o "$base/body" -w '%{http_code}' -X "$1")
    [ -n "$3" ] && args+=(-H "Authorization: Bearer $3")
    [ -n "${4:-}" ] && args+=(-H 'Content-Type: application/json' --data-binary "$4")
    CODE=$(curl "${args[@]}" "https://127.0.0.1:$API_PORT$2") || CODE=curl-failed
}
entries() { as_custos -c "SELECT count(*) FROM audit_log WHERE action = '$1' AND outcome = 'ok'"; }

ctl department add North >/dev/null
user olive officer North
user rita reviewer North
user lou officer North
user ada admin
secret=$(sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' "$base/ada.out")

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert
as_custos -c "INSERT INTO recordings (id, key_id, opened_at, officer_id) SELECT gen_random_uuid(),
    decode(md5(random()::text), 'hex'), now(), id FROM users WHERE username = 'olive'" ||
    fail "recording"
rec=$(as_custos -c "SELECT id FROM recordings LIMIT 1")
gid=$(as_custos -c "INSERT INTO grants (user_id, permission, department_id, valid_from, valid_until)
    SELECT u.id, 'reviewer', d.id, now(), now() + interval '1 day' FROM users u, departments d
    WHERE u.username = 'rita' AND d.name = 'North' RETURNING id" | head -1)
for u in olive rita; do
    login "$u" "passphrase of $u ok"
    expect 201
    eval "tok_$u=\$TOKEN"
done
login ada "passphrase of ada ok" "$(oathtool --totp -b "$secret")"
expect 201
tok_ada=$TOKEN
as_custos -c "UPDATE users SET locked_at = now() WHERE username = 'lou'" || fail "lock lou"

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
later=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
request_body="{\"permission\":\"reviewer\",\"department\":\"North\",\"reason\":\"case 9\",\"valid_from\":\"$now\",\"valid_until\":\"$later\"}"
form_body='{"case_number":"2026/9","location":"Quay 1","occurred_at":"2026-11-30T10:00:00Z","parties":[],"summary":"stop"}'
share_body="{\"recipient\":\"court\",\"reason\":\"case 9\",\"expires_at\":\"$later\",\"recordings\":[\"$rec\"]}"
revoke_body='{"reason":"no longer needed"}'

note "the audit log refuses these actions' entries (a trigger the superuser adds)"
as_super <<'SQL' || fail "trigger"
CREATE FUNCTION refuse_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit log refuses % for the test', NEW.action; END $$;
CREATE TRIGGER refuse_entry BEFORE INSERT ON audit_log FOR EACH ROW
    WHEN (NEW.action IN ('session.logout', 'user.unlock', 'permission.request', 'form.edit',
                         'share.request', 'grant.revoke'))
    EXECUTE FUNCTION refuse_entry();
SQL

raw DELETE /api/v1/session "$tok_olive"
[ "$CODE" = 503 ] || fail "logout answered $CODE: $(cat "$base/body")"
grep -q 'nothing was changed' "$base/body" || fail "$(cat "$base/body")"
api GET /api/v1/session "$tok_olive"
expect 200 # the session still works: the logout was not applied

raw POST /api/v1/users/lou/unlock "$tok_ada"
[ "$CODE" = 503 ] || fail "unlock answered $CODE"
[ -n "$(as_custos -c "SELECT locked_at FROM users WHERE username = 'lou'")" ] ||
    fail "lou was unlocked without an audit entry"

raw POST /api/v1/permission-requests "$tok_rita" "$request_body"
[ "$CODE" = 503 ] || fail "permission request answered $CODE"
[ "$(as_custos -c "SELECT count(*) FROM permission_requests")" = 0 ] || fail "request created"

raw PUT "/api/v1/recordings/$rec/form" "$tok_olive" "$form_body"
[ "$CODE" = 503 ] || fail "form answered $CODE"
[ "$(as_custos -c "SELECT count(*) FROM record_forms")" = 0 ] || fail "form written"

raw POST /api/v1/shares "$tok_olive" "$share_body"
[ "$CODE" = 503 ] || fail "share answered $CODE"
[ "$(as_custos -c "SELECT count(*) FROM shares")" = 0 ] || fail "share created"

raw POST "/api/v1/grants/$gid/revoke" "$tok_ada" "$revoke_body"
[ "$CODE" = 503 ] || fail "revoke answered $CODE"
[ -z "$(as_custos -c "SELECT revoked_at FROM grants WHERE id = $gid")" ] || fail "grant revoked"
[ "$(as_custos -c "SELECT count(*) FROM notices")" = 0 ] || fail "a notice of a revoke that did not happen"

grep -q "audit entry not written, change rolled back" "$base/ingestd.log" || fail "not logged"
for a in session.logout user.unlock permission.request form.edit share.request grant.revoke; do
    [ "$(entries "$a")" = 0 ] || fail "an entry for $a"
done

note "once the log takes them again, the same changes are made, each with its entry"
as_super -c "DROP TRIGGER refuse_entry ON audit_log" || fail "drop trigger"
api POST /api/v1/users/lou/unlock "$tok_ada"
expect 200
api POST /api/v1/permission-requests "$tok_rita" "$request_body"
expect 201
api PUT "/api/v1/recordings/$rec/form" "$tok_olive" "$form_body"
expect 200
api POST /api/v1/shares "$tok_olive" "$share_body"
expect 201
api POST "/api/v1/grants/$gid/revoke" "$tok_ada" "$revoke_body"
expect 200
api DELETE /api/v1/session "$tok_olive"
expect 204
api GET /api/v1/session "$tok_olive"
expect 401
for a in session.logout user.unlock permission.request form.edit share.request grant.revoke; do
    [ "$(entries "$a")" = 1 ] || fail "$(entries "$a") entries for $a"
done
out=$(ctl audit verify) || fail "audit verify: $out"

note "a path that is not UTF-8 is refused before anything reads it"
# (curl would percent-encode the byte: the request is written by hand, over TLS)
printf 'POST /api/v1/users/l\xffu/unlock HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' \
    "$tok_ada" | timeout 10 openssl s_client -quiet -connect "127.0.0.1:$API_PORT" \
    >"$base/body" 2>/dev/null
head -1 "$base/body" | grep -q '^HTTP/1.1 400' || fail "a non-UTF-8 path answered: $(cat "$base/body")"
grep -q '"error":"invalid_path"' "$base/body" || fail "$(cat "$base/body")"
grep -q '"error":"invalid_path"' "$base/body" || fail "$(cat "$base/body")"

kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "api_changes: ok"

#!/usr/bin/env bash
# Two levels means two people, over real HTTPS: a department head who is also
# in the permission group decides the first level of a request, never the
# second; a share is approved by someone other than its requester, only while
# the requester may still read every recording it holds, and its link stops
# working as soon as the requester loses access.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
id_of() { grep -o '"id":[0-9]*' "$base/body" | head -1 | cut -d: -f2; }

ctl department add North >/dev/null
ctl department add South >/dev/null
user hank officer North # head of North, and in the permission group
user gina officer       # in the permission group
user rita reviewer South
user olive officer North
ctl department head North hank >/dev/null || fail "department head"
ctl permission-group add hank >/dev/null || fail "permission-group add"
ctl permission-group add gina >/dev/null || fail "permission-group add"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert
for u in hank gina rita olive; do
    login "$u" "passphrase of $u ok"
    expect 201
    eval "tok_$u=\$TOKEN"
done
as_custos -c "INSERT INTO recordings (id, key_id, opened_at, officer_id) SELECT gen_random_uuid(),
    decode(md5(random()::text), 'hex'), now(), id FROM users WHERE username = 'olive'" ||
    fail "recording"
rec=$(as_custos -c "SELECT id FROM recordings LIMIT 1")

note "the head who approved first cannot approve finally, even in the permission group"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
later=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/permission-requests "$tok_rita" \
    "{\"permission\":\"reviewer\",\"department\":\"North\",\"reason\":\"case 4\",\"valid_from\":\"$now\",\"valid_until\":\"$later\"}"
expect 201
req=$(id_of)
api POST "/api/v1/permission-requests/$req/preliminary" "$tok_hank" '{"approve":true}'
expect 200
api POST "/api/v1/permission-requests/$req/final" "$tok_hank" '{"approve":true}'
expect 403 forbidden
grep -q "not the preliminary decider's" "$base/body" || fail "$(cat "$base/body")"
[ "$(as_custos -c "SELECT state FROM permission_requests WHERE id = $req")" = preliminary_approved ] ||
    fail "the request moved"
api POST "/api/v1/permission-requests/$req/final" "$tok_gina" '{"approve":true}'
expect 200
[ "$(field state)" = granted ] || fail "$(cat "$base/body")"
[ "$(as_custos -c "SELECT count(*) FROM audit_log WHERE actor = 'user:hank'
                   AND action = 'permission.final' AND outcome = 'denied'")" = 1 ] ||
    fail "the refused final decision is not audited"

note "a share is approved by someone else, only while its requester may read it all"
tomorrow=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/shares "$tok_rita" \
    "{\"recipient\":\"court\",\"reason\":\"case 4\",\"expires_at\":\"$tomorrow\",\"recordings\":[\"$rec\"]}"
expect 201
share=$(id_of)
api POST "/api/v1/shares/$share/decide" "$tok_rita" '{"approve":true}'
expect 403 forbidden
gid=$(as_custos -c "SELECT id FROM grants WHERE user_id = (SELECT id FROM users WHERE username = 'rita')")
as_custos -c "UPDATE grants SET revoked_at = now(), revoke_reason = 'test' WHERE id = $gid" ||
    fail "revoke"
api POST "/api/v1/shares/$share/decide" "$tok_gina" '{"approve":true}'
expect 409 conflict
grep -q 'may no longer read every shared recording' "$base/body" || fail "$(cat "$base/body")"
[ "$(as_custos -c "SELECT state FROM shares WHERE id = $share")" = requested ] || fail "share moved"

note "an approved link stops working when its requester loses access"
as_custos -c "INSERT INTO grants (user_id, permission, department_id, valid_from, valid_until)
    SELECT u.id, 'reviewer', d.id, now(), now() + interval '1 day' FROM users u, departments d
    WHERE u.username = 'rita' AND d.name = 'North'" >/dev/null || fail "grant"
api POST "/api/v1/shares/$share/decide" "$tok_gina" '{"approve":true}'
expect 200
link=$(field link)
[ -n "$link" ] || fail "no link: $(cat "$base/body")"
api GET "$link"
expect 200
grep -q "\"id\":\"$rec\"" "$base/body" || fail "$(cat "$base/body")"
as_custos -c "UPDATE grants SET revoked_at = now(), revoke_reason = 'test' WHERE revoked_at IS NULL
              AND user_id = (SELECT id FROM users WHERE username = 'rita')" || fail "revoke"
api GET "$link"
expect 404 not_found

kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "api_two_people: ok"

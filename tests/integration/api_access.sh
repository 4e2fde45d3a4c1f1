#!/usr/bin/env bash
# Rules 1 and 4 over real HTTPS: a permission request goes to the department
# head, then to the permission group, and becomes a grant valid only inside
# its window; illegal transitions are 409 with the current state; a revoked
# grant leaves its holder a notice first. Who sees which recordings: an
# officer their own, a reviewer by grant the recordings of their scope's
# departments (below included), an admin all; anything else is 404. The
# grant's window is checked at its exact boundary.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
json_ids() { grep -o '"id":"[0-9a-f-]*"' "$base/body" | sed 's/"id":"\(.*\)"/\1/' | sort; }

ctl department add North >/dev/null
ctl department add North-East --parent North >/dev/null
ctl department add South >/dev/null
user hank officer North       # head of North
user sue officer South        # head of South
user gina officer             # permission group
user rita reviewer South      # asks to review North
user olive officer North
user ned officer North-East
user oscar officer South
user ada admin
ctl department head North hank >/dev/null || fail "department head"
ctl department head South sue >/dev/null || fail "department head"
ctl permission-group add gina >/dev/null || fail "permission-group add"
ctl permission-group add nobody >/dev/null 2>&1 && fail "added an unknown user to the group"
secret=$(sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' "$base/ada.out")

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert

# Recordings as the store indexes them: one per officer.
for o in olive ned oscar rita; do
    as_custos -c "INSERT INTO recordings (id, key_id, opened_at, officer_id) SELECT
        gen_random_uuid(), decode(md5(random()::text), 'hex'), now(), id FROM users
        WHERE username = '$o'" || fail "recording for $o"
done
rec_of() { as_custos -c "SELECT r.id FROM recordings r JOIN users u ON u.id = r.officer_id WHERE u.username = '$1'"; }

for u in hank sue gina rita olive ned oscar; do
    login "$u" "passphrase of $u ok"
    expect 201
    eval "tok_$u=\$TOKEN"
done
login ada "passphrase of ada ok" "$(oathtool --totp -b "$secret")"
expect 201
tok_ada=$TOKEN

note "an officer sees only their own recordings; others' are 404"
api GET /api/v1/recordings "$tok_olive"
expect 200
[ "$(json_ids)" = "$(rec_of olive)" ] || fail "olive sees: $(cat "$base/body")"
api GET "/api/v1/recordings/$(rec_of oscar)" "$tok_olive"
expect 404 not_found
api GET "/api/v1/recordings/$(rec_of olive)" "$tok_olive"
expect 200
api GET /api/v1/recordings/00000000-0000-0000-0000-000000000000 "$tok_olive"
expect 404 not_found
api GET /api/v1/recordings/not-a-uuid "$tok_olive"
expect 404 not_found
api GET "/api/v1/recordings?page=0" "$tok_olive"
expect 400 invalid_value page

note "a reviewer without a grant sees only their own"
api GET /api/v1/recordings "$tok_rita"
expect 200
[ "$(json_ids)" = "$(rec_of rita)" ] || fail "rita sees: $(cat "$base/body")"

note "request -> head's preliminary approval -> group's final approval -> grant"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
later=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/permission-requests "$tok_rita" \
    "{\"permission\":\"reviewer\",\"department\":\"North\",\"reason\":\"case 17 review\",\"valid_from\":\"$now\",\"valid_until\":\"$later\"}"
expect 201
req=$(grep -o '"id":[0-9]*' "$base/body" | cut -d: -f2)
[ "$(field state)" = submitted ] || fail "$(cat "$base/body")"
for bad in '"permission":"god"|permission' '"department":"Nowhere"|department' \
    '"valid_from":"2026-02-30T00:00:00Z"|valid_from' '"valid_until":"2020-01-01T00:00:00Z"|valid_until' \
    '"reason":""|reason'; do
    body="{\"permission\":\"reviewer\",\"department\":\"North\",\"reason\":\"r\",\"valid_from\":\"$now\",\"valid_until\":\"$later\"}"
    key=${bad%%:*}
    body=$(sed "s/$key:\"[^\"]*\"/${bad%|*}/" <<<"$body")
    api POST /api/v1/permission-requests "$tok_rita" "$body"
    expect 400 "" "${bad#*|}"
done
api POST /api/v1/permission-requests "$tok_rita" '{"permission":"reviewer","extra":1}'
expect 400 unknown_field extra

api POST "/api/v1/permission-requests/$req/final" "$tok_gina" '{"approve":true}'
expect 409 conflict
[ "$(field state)" = submitted ] || fail "409 without the state: $(cat "$base/body")"
api POST "/api/v1/permission-requests/$req/preliminary" "$tok_sue" '{"approve":true}'
expect 404 not_found # not North's head: not hers to see
api POST "/api/v1/permission-requests/$req/preliminary" "$tok_rita" '{"approve":true}'
expect 403 forbidden # not on your own request
api POST "/api/v1/permission-requests/$req/preliminary" "$tok_hank" '{"approve":"yes"}'
expect 400 invalid_type approve
api POST "/api/v1/permission-requests/$req/preliminary" "$tok_hank" '{"approve":true,"note":"ok"}'
expect 200
[ "$(field state)" = preliminary_approved ] || fail "$(cat "$base/body")"
api POST "/api/v1/permission-requests/$req/preliminary" "$tok_hank" '{"approve":false}'
expect 409 conflict
[ "$(field state)" = preliminary_approved ] || fail "$(cat "$base/body")"
api POST "/api/v1/permission-requests/$req/final" "$tok_hank" '{"approve":true}'
expect 403 forbidden # not in the permission group
api GET /api/v1/recordings "$tok_rita"
[ "$(json_ids)" = "$(rec_of rita)" ] || fail "access before the final approval"
api POST "/api/v1/permission-requests/$req/final" "$tok_gina" '{"approve":true}'
expect 200
[ "$(field state)" = granted ] || fail "$(cat "$base/body")"
api POST "/api/v1/permission-requests/$req/final" "$tok_gina" '{"approve":true}'
expect 409 conflict
api POST /api/v1/permission-requests/999999/final "$tok_gina" '{"approve":true}'
expect 404 not_found

note "the reviewer now sees North and the department below it, not South"
api GET /api/v1/recordings "$tok_rita"
expect 200
[ "$(json_ids)" = "$(printf '%s\n' "$(rec_of rita)" "$(rec_of olive)" "$(rec_of ned)" | sort)" ] ||
    fail "rita sees: $(cat "$base/body")"
api GET "/api/v1/recordings/$(rec_of ned)" "$tok_rita"
expect 200
api GET "/api/v1/recordings/$(rec_of oscar)" "$tok_rita"
expect 404 not_found
api GET /api/v1/notices "$tok_rita"
grep -q 'granted' "$base/body" || fail "no notice of the decision: $(cat "$base/body")"

note "an admin sees everything"
api GET /api/v1/recordings "$tok_ada"
[ "$(grep -o '"id":"' "$base/body" | wc -l)" = 4 ] || fail "ada sees: $(cat "$base/body")"

note "enforcement record forms: validated field by field, every edit a new version"
form="/api/v1/recordings/$(rec_of olive)/form"
good='{"case_number":"2026/0117","location":"Market St 4","occurred_at":"2026-11-28T09:15:00Z","parties":["A. Jones","B. \"Bo\" Smith"],"summary":"traffic stop"}'
api PUT "$form" "$tok_olive" "$good"
expect 200
grep -q '"version":1' "$base/body" || fail "$(cat "$base/body")"
api PUT "$form" "$tok_olive" "${good/traffic stop/traffic stop, warning given}"
expect 200
grep -q '"version":2' "$base/body" || fail "$(cat "$base/body")"
api GET "$form" "$tok_rita"
expect 200
grep -q '"version":2' "$base/body" && grep -q 'warning given' "$base/body" &&
    grep -q '"versions":2' "$base/body" && grep -qF 'B. \"Bo\" Smith' "$base/body" ||
    fail "$(cat "$base/body")"
api GET "$form?version=1" "$tok_rita"
expect 200
grep -q '"summary":"traffic stop"' "$base/body" || fail "$(cat "$base/body")"
api GET "$form?version=3" "$tok_rita"
expect 404 not_found
api PUT "$form" "$tok_rita" "$good"
expect 403 forbidden # reviewers read forms; the officer and admins edit them
api GET "$form" "$tok_oscar"
expect 404 not_found
api PUT "$form" "$tok_oscar" "$good"
expect 404 not_found
api PUT "$form" "$tok_olive" "${good/2026\/0117/no spaces allowed}"
expect 400 invalid_value case_number
api PUT "$form" "$tok_olive" "${good/\"B. \\\"Bo\\\" Smith\"/7}"
expect 400 invalid_type "parties[1]"
api PUT "$form" "$tok_olive" "${good/2026-11-28T09:15:00Z/yesterday}"
expect 400 invalid_value occurred_at
api PUT "$form" "$tok_olive" '{"case_number":"1","location":"x","occurred_at":"2026-11-28T09:15:00Z","summary":"s"}'
expect 400 missing_field parties
api PUT "$form" "$tok_olive" '{"case_number":"1","location":"x","occurred_at":"2026-11-28T09:15:00Z","summary":"s","parties":[],"mood":"ok"}'
expect 400 unknown_field mood
api PUT "$form" "$tok_ada" "$good"
expect 200
grep -q '"version":3' "$base/body" || fail "$(cat "$base/body")"

note "the window, at its exact boundary (checked at use, in the database)"
grant=$(as_custos -c "SELECT id FROM grants WHERE request_id = $req")
until_ts=$(as_custos -c "SELECT valid_until FROM grants WHERE id = $grant")
from_ts=$(as_custos -c "SELECT valid_from FROM grants WHERE id = $grant")
may() { as_custos -c "SELECT may_read_recording((SELECT id FROM users WHERE username = 'rita'), '$(rec_of olive)', $1)"; }
[ "$(may "'$until_ts'::timestamptz - interval '1 microsecond'")" = t ] || fail "not valid just before its end"
[ "$(may "'$until_ts'::timestamptz")" = f ] || fail "still valid at its end"
[ "$(may "'$from_ts'::timestamptz")" = t ] || fail "not valid at its start"
[ "$(may "'$from_ts'::timestamptz - interval '1 microsecond'")" = f ] || fail "valid before its start"
# And over HTTPS: a grant whose window has passed stops working, with no job run.
as_custos -c "UPDATE grants SET valid_until = now() - interval '1 second' WHERE id = $grant"
api GET "/api/v1/recordings/$(rec_of olive)" "$tok_rita"
expect 404 not_found
as_custos -c "UPDATE grants SET valid_until = now() + interval '1 hour' WHERE id = $grant"
api GET "/api/v1/recordings/$(rec_of olive)" "$tok_rita"
expect 200

note "external sharing: request, approval by an admin or the group, a link without an account"
tomorrow=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
share_body() { # RECORDING... -> a share request for them
    local ids="" r
    for r in "$@"; do ids+="${ids:+,}\"$r\""; done
    echo "{\"recipient\":\"Prosecutor's Office\",\"recordings\":[$ids],\"reason\":\"case 17\",\"expires_at\":\"$tomorrow\"}"
}
api POST /api/v1/shares "$tok_rita" "$(share_body "$(rec_of olive)" "$(rec_of oscar)")"
expect 404 not_found "recordings[1]" # not one rita may read
api POST /api/v1/shares "$tok_rita" "$(share_body "$(rec_of olive)" not-a-uuid)"
expect 400 invalid_value "recordings[1]"
api POST /api/v1/shares "$tok_rita" "$(share_body "$(rec_of olive)" | sed "s/$tomorrow/2020-01-01T00:00:00Z/")"
expect 400 invalid_value expires_at
api POST /api/v1/shares "$tok_rita" "$(share_body "$(rec_of olive)" | sed "s/$tomorrow/$(date -u -d '+200 days' +%Y-%m-%dT%H:%M:%SZ)/")"
expect 400 invalid_value expires_at
api POST /api/v1/shares "$tok_rita" "$(share_body "$(rec_of olive)" "$(rec_of ned)")"
expect 201
share=$(grep -o '"id":[0-9]*' "$base/body" | cut -d: -f2)
api POST "/api/v1/shares/$share/decide" "$tok_rita" '{"approve":true}'
expect 403 forbidden # not your own
api POST "/api/v1/shares/$share/decide" "$tok_hank" '{"approve":true}'
expect 404 not_found # neither admin nor permission group: not his to see
api POST "/api/v1/shares/$share/decide" "$tok_gina" '{"approve":true}'
expect 200
link=$(field link)
[ -n "$link" ] || fail "no link: $(cat "$base/body")"
api POST "/api/v1/shares/$share/decide" "$tok_gina" '{"approve":false}'
expect 409 conflict
[ "$(field state)" = approved ] || fail "$(cat "$base/body")"
api GET "$link" # no account
expect 200
[ "$(json_ids)" = "$(printf '%s\n' "$(rec_of olive)" "$(rec_of ned)" | sort)" ] ||
    fail "the link shows: $(cat "$base/body")"
api GET "/api/v1/shared/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
expect 404 not_found
api POST "/api/v1/shares/$share/revoke" "$tok_olive" ''
expect 404 not_found # another's share
api POST "/api/v1/shares/$share/revoke" "$tok_rita" ''
expect 200
api GET "$link"
expect 404 not_found
# An approved share stops working when it expires, with no job run.
api POST /api/v1/shares "$tok_rita" "$(share_body "$(rec_of ned)")"
share2=$(grep -o '"id":[0-9]*' "$base/body" | cut -d: -f2)
api POST "/api/v1/shares/$share2/decide" "$tok_ada" '{"approve":true}'
expect 200
link2=$(field link)
api GET "$link2"
expect 200
as_custos -c "UPDATE shares SET expires_at = now() - interval '1 second' WHERE id = $share2"
api GET "$link2"
expect 404 not_found
api GET /api/v1/shares "$tok_rita"
grep -q '"state":"expired"' "$base/body" && grep -q '"state":"revoked"' "$base/body" ||
    fail "$(cat "$base/body")"

note "an admin revokes directly; the holder's notice comes first"
api POST "/api/v1/grants/$grant/revoke" "$tok_hank" '{"reason":"x"}'
expect 403 forbidden
api POST "/api/v1/grants/$grant/revoke" "$tok_ada" '{"reason":"case closed"}'
expect 200
api POST "/api/v1/grants/$grant/revoke" "$tok_ada" '{"reason":"again"}'
expect 409 conflict
[ "$(as_custos -c "SELECT n.at <= g.revoked_at FROM notices n JOIN grants g ON g.id = n.grant_id WHERE g.id = $grant")" = t ] ||
    fail "the notice did not come first"
api GET /api/v1/notices "$tok_rita"
grep -q 'case closed' "$base/body" || fail "no revocation notice: $(cat "$base/body")"
api GET "/api/v1/recordings/$(rec_of olive)" "$tok_rita"
expect 404 not_found
api GET /api/v1/grants "$tok_rita"
grep -q '"status":"revoked"' "$base/body" || fail "$(cat "$base/body")"

note "reads and denials are audited; the chain is intact"
ctl audit list --last 500 >"$base/audit"
grep -q "user:rita .*recording.read .*denied .*$(rec_of oscar)" "$base/audit" || fail "no denied read"
grep -q "user:rita .*recording.read .*ok" "$base/audit" || fail "no read"
grep -q "user:gina .*permission.final .*ok" "$base/audit" || fail "no final decision"
grep -q "user:sue .*permission.preliminary .*denied" "$base/audit" || fail "no denied decision"
grep -q "user:ada .*grant.revoke .*ok" "$base/audit" || fail "no revocation"
grep -q "user:olive .*form.edit .*ok .*version 2" "$base/audit" || fail "no form edit"
grep -q "user:rita .*form.edit .*denied" "$base/audit" || fail "no denied form edit"
grep -q "share:$share .*share.use .*ok" "$base/audit" || fail "no share use"
grep -q "anonymous .*share.use .*denied" "$base/audit" || fail "no refused share use"
grep -q "user:gina .*share.decide .*ok" "$base/audit" || fail "no share approval"
grep -q "user:hank .*share.decide .*denied" "$base/audit" || fail "no denied share approval"
ctl audit verify >/dev/null || fail "$(ctl audit verify)"

note "deep pages by cursor: 20 page numbers, then next; ties on opened_at broken by id"
# 1100 more for olive, 5 per second of opened_at (ties), beside oscar's.
as_custos -c "INSERT INTO recordings (id, key_id, opened_at, officer_id) SELECT gen_random_uuid(),
    decode(md5(random()::text), 'hex'), now() - (g / 5) * interval '1 second', u.id
    FROM users u, generate_series(1, 1100) g WHERE u.username = 'olive'" ||
    fail "recordings for olive"
api GET "/api/v1/recordings?page=21" "$tok_olive"
expect 400 invalid_value page
api GET "/api/v1/recordings?page=2&after=1.00000000000000000000000000000000" "$tok_olive"
expect 400 invalid_value after
for bad in x 1. .00000000000000000000000000000000 1.0000 "1.$(printf 'g%.0s' {1..32})" \
    "$(printf '9%.0s' {1..19}).00000000000000000000000000000000" "$(printf 'a%.0s' {1..80})"; do
    api GET "/api/v1/recordings?after=$bad" "$tok_olive"
    expect 400 invalid_value after
done
api GET "/api/v1/recordings?page=2" "$tok_olive"
expect 200
by_number=$(json_ids)
api GET /api/v1/recordings "$tok_olive"
expect 200
: >"$base/walked"
pages=0
while :; do
    grep -o '"id":"[0-9a-f-]*"' "$base/body" | sed 's/"id":"\(.*\)"/\1/' >>"$base/walked"
    pages=$((pages + 1))
    next=$(field next)
    if [ "$pages" = 1 ]; then
        api GET "/api/v1/recordings?after=$next" "$tok_olive"
        expect 200
        [ "$(json_ids)" = "$by_number" ] || fail "page 2 by cursor is not page 2 by number"
        grep -q "\"after\":\"$next\"" "$base/body" || fail "no after: $(head -c 300 "$base/body")"
    fi
    grep -q '"has_more":true' "$base/body" || break
    [ -n "$next" ] || fail "has_more without next: $(tail -c 300 "$base/body")"
    [ "$pages" -lt 40 ] || fail "the walk does not end"
    api GET "/api/v1/recordings?after=$next" "$tok_olive"
    expect 200
done
grep -q '"next"' "$base/body" && fail "a next on the last page"
expected=$(as_custos -c "SELECT r.id FROM recordings r JOIN users u ON u.id = r.officer_id
    WHERE u.username = 'olive' ORDER BY r.opened_at DESC, r.id DESC")
[ "$(cat "$base/walked")" = "$expected" ] ||
    fail "the walk ($(wc -l <"$base/walked") rows, $(sort "$base/walked" | uniq -d | wc -l) twice) is not olive's $(wc -l <<<"$expected"), in order"
note "walked $(wc -l <"$base/walked") recordings in $pages pages, each once, in order"
ctl audit list --last 50 | grep -q "user:olive .*recording.list .*after [0-9]*\.[0-9a-f]\{32\}" ||
    fail "pages by cursor not audited"

kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
echo "api_access: ok"

#!/usr/bin/env bash
# The route table walked, every route of it (ingestd --print-routes), which
# must be exactly docs/api.yaml's: each answered for an anonymous caller, an
# officer, a reviewer whose scope holds nothing here, and an admin, over
# real HTTPS. Objects a caller may not see are 404 — permission requests and
# shares included — and a route not in the table is unreachable (404, or
# 405 for a method it does not list). New ids are not sequential.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"
# The clip and live routes load GStreamer in ingestd: GLib's own leak at load is
# suppressed (tests/lsan.supp), which needs full stacks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")/.." && pwd)/lsan.supp"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }

note "the table is the documented API, route for route"
"$INGESTD" --print-routes >"$base/routes" || fail "--print-routes"
awk '{print $1, $2}' "$base/routes" | sort >"$base/table"
doc="$(dirname "$0")/../../docs/api.yaml"
awk '/^paths:/ {p = 1; next} p && /^  \// {sub(":$", "", $1); path = $1; next}
     p && /^    (get|post|put|delete|patch):/ {m = toupper($1); sub(":$", "", m); print m, path}' \
    "$doc" | sort >"$base/documented"
diff "$base/table" "$base/documented" >"$base/diff" ||
    fail "the route table and docs/api.yaml differ (< table, > api.yaml): $(cat "$base/diff")"
note "$(wc -l <"$base/table") routes"

ctl department add North >/dev/null
ctl department add South >/dev/null
user hank officer North # head of North
user gina officer       # permission group
user olive officer North
user rex reviewer South # a reviewer whose scope holds nothing here
user rita reviewer South
user spare officer North
user ada admin
ctl department head North hank >/dev/null || fail "department head"
ctl permission-group add gina >/dev/null || fail "permission-group add"
secret=$(sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' "$base/ada.out")

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert

as_custos -c "INSERT INTO recordings (id, key_id, opened_at, officer_id) SELECT gen_random_uuid(),
    decode(md5(random()::text), 'hex'), now(), id FROM users WHERE username = 'olive'" ||
    fail "recording"
rec=$(as_custos -c "SELECT r.id FROM recordings r JOIN users u ON u.id = r.officer_id WHERE u.username = 'olive'")
for u in olive rex rita; do
    login "$u" "passphrase of $u ok"
    expect 201
    eval "tok_$u=\$TOKEN"
done
login ada "passphrase of ada ok" "$(oathtool --totp -b "$secret")"
expect 201
tok_ada=$TOKEN
# A second session of olive's, to be ended; spare sessions to log out.
login olive "passphrase of olive ok" "" --interface 127.0.0.2
other_session=$TOKEN

note "objects: a permission request, a grant, a form, two shares"
later=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
until=$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/permission-requests "$tok_rita" \
    "{\"permission\":\"reviewer\",\"department\":\"North\",\"reason\":\"audit\",\"valid_from\":\"$later\",\"valid_until\":\"$until\"}"
expect 201
req=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' "$base/body")
api POST /api/v1/permission-requests "$tok_rita" \
    "{\"permission\":\"reviewer\",\"department\":\"North\",\"reason\":\"audit two\",\"valid_from\":\"$later\",\"valid_until\":\"$until\"}"
expect 201
req2=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' "$base/body")
grant=$(as_custos -c "INSERT INTO grants (user_id, permission, department_id, valid_from, valid_until)
    SELECT u.id, 'reviewer', d.id, now(), now() + interval '1 day' FROM users u, departments d
    WHERE u.username = 'rita' AND d.name = 'South' RETURNING id") || fail "grant"
api PUT "/api/v1/recordings/$rec/form" "$tok_olive" \
    '{"case_number":"C-1","location":"Main St","occurred_at":"2026-11-30T10:00:00Z","parties":["A"],"summary":"s"}'
expect 200
share_body="{\"recordings\":[\"$rec\"],\"recipient\":\"court\",\"reason\":\"hearing\",\"expires_at\":\"$later\"}"
api POST /api/v1/shares "$tok_olive" "$share_body"
expect 201
share=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' "$base/body")
sid=$(as_custos -c "SELECT public_id FROM sessions WHERE token_hash = sha256('$other_session'::bytea)")
alert=$(as_custos -c "SELECT alert_raise('srtp_replay', 'CAM-X', 'test', 'a test alert')")
[ -n "$req" ] && [ -n "$req2" ] && [ -n "$grant" ] && [ -n "$share" ] && [ -n "$sid" ] && [ -n "$alert" ] ||
    fail "objects: request $req/$req2 grant $grant share $share session $sid"

note "new ids are not sequential"
[ $((req2 - req)) != 1 ] && [ $((req2 - req)) != -1 ] || fail "request ids $req then $req2"
[ "$req" -gt 1000000 ] || fail "a small request id: $req"

# check METHOD PATTERN PATH BODY ANON OFFICER OUTSIDER ADMIN: the expected status
# for each caller, called in the order outsider, officer, admin (the officer's
# call may change what the admin's meets).
check() {
    local method=$1 pattern=$2 path=$3 body=$4 who want
    shift 4
    for who in anonymous rex olive ada; do
        case $who in
        anonymous) want=$1 ;; olive) want=$2 ;; rex) want=$3 ;; ada) want=$4 ;;
        esac
        local token=""
        [ "$who" != anonymous ] && eval "token=\$tok_$who"
        api "$method" "$path" "$token" "$body"
        [ "$CODE" = "$want" ] ||
            fail "$method $path as $who: expected $want, got $CODE: $(cat "$base/body")"
        if [ "$CODE" = 404 ]; then
            grep -q '"not_found"' "$base/body" || fail "404 body: $(cat "$base/body")"
        fi
    done
    echo "$method $pattern" >>"$base/walked"
}
t43=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
P=/api/v1
note "every route: anonymous, officer, reviewer out of scope, admin"
#     method pattern                              path                            body anon off out adm
check POST   $P/session                            $P/session                      '{}' 400 400 400 400
check GET    $P/session                            $P/session                      ''   401 200 200 200
check POST   $P/session/password                   $P/session/password             '{}' 401 400 400 400
check GET    $P/sessions                           $P/sessions                     ''   401 200 200 200
check DELETE $P/sessions/{id}                      $P/sessions/$sid                ''   401 204 404 404
check POST   $P/users/{username}/unlock            $P/users/olive/unlock           ''   401 403 403 200
check POST   $P/users/{username}/disable           $P/users/spare/disable          ''   401 403 403 200
check POST   $P/users/{username}/enable            $P/users/spare/enable           ''   401 403 403 200
check GET    $P/alerts                             $P/alerts                       ''   401 403 403 200
check POST   $P/alerts/{id}/acknowledge            $P/alerts/$alert/acknowledge    ''   401 403 403 200
check POST   $P/alerts/{id}/close                  $P/alerts/$alert/close          ''   401 403 403 200
check POST   $P/permission-requests                $P/permission-requests          '{}' 401 400 400 400
check GET    $P/permission-requests                $P/permission-requests          ''   401 200 200 200
check POST   $P/permission-requests/{id}/preliminary $P/permission-requests/$req/preliminary '{}' 401 404 404 403
check POST   $P/permission-requests/{id}/final     $P/permission-requests/$req/final '{}' 401 404 404 403
check GET    $P/grants                             $P/grants                       ''   401 200 200 200
check POST   $P/grants/{id}/revoke                 $P/grants/$grant/revoke         '{}' 401 403 403 400
check GET    $P/notices                            $P/notices                      ''   401 200 200 200
check GET    $P/recordings                         $P/recordings                   ''   401 200 200 200
check GET    $P/recordings/{id}                    $P/recordings/$rec              ''   401 200 404 200
check GET    $P/recordings/{id}/clip.mp4           $P/recordings/$rec/clip.mp4     ''   401 422 404 422
check POST   $P/recordings/{id}/packages           $P/recordings/$rec/packages     '{}' 401 400 404 400
check GET    $P/recordings/{id}/packages           $P/recordings/$rec/packages     ''   401 200 404 200
check GET    $P/packages/{id}                      $P/packages/$(cat /proc/sys/kernel/random/uuid) ''   401 404 404 404
check GET    $P/packages/{id}/status               $P/packages/$(cat /proc/sys/kernel/random/uuid)/status ''   401 404 404 404
check GET    $P/recordings/{id}/form               $P/recordings/$rec/form         ''   401 200 404 200
check PUT    $P/recordings/{id}/form               $P/recordings/$rec/form         '{}' 401 400 404 400
check POST   $P/shares                             $P/shares                       '{}' 401 400 400 400
check GET    $P/shares                             $P/shares                       ''   401 200 200 200
check POST   $P/shares/{id}/decide                 $P/shares/$share/decide         '{}' 401 403 404 400
check POST   $P/shares/{id}/revoke                 $P/shares/$share/revoke         ''   401 200 404 409
check GET    $P/shared/{token}                     $P/shared/$t43                  ''   404 404 404 404
check GET    $P/shared/{token}/clip.mp4            $P/shared/$t43/clip.mp4         ''   404 404 404 404
check POST   $P/shared/{token}/packages            $P/shared/$t43/packages         '{}' 404 404 404 404
check GET    $P/shared/{token}/package             $P/shared/$t43/package          ''   404 404 404 404
check POST   $P/live/{serial}/whep                 $P/live/CAM-NONE/whep           '{}' 401 404 404 404
check DELETE $P/live/sessions/{id}                 $P/live/sessions/0123abcd       ''   401 404 404 404
check GET    /live/{serial}                        /live/CAM-NONE                  ''   200 200 200 200
check GET    /assets/{name}                        /assets/live.js                 ''   200 200 200 200
check DELETE $P/session                            $P/session                      ''   401 204 204 204
sort "$base/walked" >"$base/walked.sorted"
diff "$base/table" "$base/walked.sorted" >"$base/diff" ||
    fail "routes not walked (<) or not in the table (>): $(cat "$base/diff")"

note "what is not in the table is unreachable"
login ada "passphrase of ada ok" "$(oathtool --totp -b -N 'now + 30 seconds' "$secret")"
expect 201
tok_ada=$TOKEN
for path in /api/v1/users /api/v1/users/olive /api/v1/devices /api/v1/grants/$grant \
    /api/v1/session/extra /api/v1/recordings/$rec/segments /api/v1 /; do
    api GET "$path" "$tok_ada"
    expect 404 not_found
done
api PATCH /api/v1/session "$tok_ada"
expect 405 method_not_allowed
api POST "/api/v1/recordings/$rec" "$tok_ada" '{}'
expect 405 method_not_allowed
grep -q 'GET' "$base/body" || fail "405 does not say what is allowed: $(cat "$base/body")"

note "denials are audited"
ctl audit list --last 500 >"$base/audit"
grep -q 'user:olive .*permission.preliminary .*denied' "$base/audit" || fail "no denied decision"
grep -q 'user:rex .*share.decide .*denied' "$base/audit" || fail "no denied share decision"
ctl audit verify >/dev/null || fail "$(ctl audit verify)"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

#!/usr/bin/env bash
# The HTTPS API's sessions with real HTTPS requests (curl, the server's
# self-signed certificate verified): login, who am I, logout; idle and
# absolute expiry; lockout of an address after 5 failures (a correct password refused
# there too, not from another address) and an admin's unlock; security alerts; every bad input answered 4xx
# in JSON naming the problem; everything audited, the chain intact.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
ctl department add Patrol >/dev/null || fail "department"
echo 'admin passphrase one' | ctl user add --username ada --role admin --password-stdin \
    >"$base/ada.out" || fail "user add ada"
# The admin's TOTP secret, printed once as an otpauth:// URI.
totp_secret=$(sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' "$base/ada.out")
[ -n "$totp_secret" ] || fail "no TOTP URI for an admin: $(cat "$base/ada.out")"
code() { oathtool --totp -b -N "now ${1:-+ 0} seconds" "$totp_secret"; }
echo 'officer passphrase two' | ctl user add --username otto --role officer --department Patrol \
    --password-stdin >/dev/null
echo 'officer passphrase three' | ctl user add --username olga --role officer --password-stdin \
    >/dev/null
ctl user add --username carol --role reviewer >/dev/null

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert

note "TLS: the certificate verifies for 127.0.0.1; TLS 1.1 is refused"
curl -sS --cacert "$data/tls/api-cert.pem" --tls-max 1.1 "https://127.0.0.1:$API_PORT/" \
    -o /dev/null 2>/dev/null && fail "a TLS 1.1 connection was accepted"

note "admins need a TOTP code: missing, wrong and replayed codes are refused like a wrong password"
login ada 'admin passphrase one'
expect 401 invalid_credentials
cp "$base/body" "$base/no-totp.body"
login ada 'admin passphrase one' 000000
expect 401 invalid_credentials
login ada 'admin passphrase one' 12345x
expect 400 invalid_value totp
login ada 'wrong passphrase' "$(code)"
expect 401 invalid_credentials
cmp -s "$base/body" "$base/no-totp.body" ||
    fail "a right password without its TOTP code answers otherwise than a wrong one"

note "login, who am I, logout"
first_code=$(code)
login ada 'admin passphrase one' "$first_code"
expect 201
admin=$TOKEN
[ ${#admin} = 43 ] || fail "token: $admin"
[ "$(field token_type)" = Bearer ] || fail "$(cat "$base/body")"
as_custos -c "SELECT count(*) FROM sessions WHERE token_hash = sha256('$admin'::bytea)" |
    grep -qx 1 || fail "the session is not stored by its token's hash"
grep -rqs -- "$admin" "$data/pg" && fail "the token is stored in the clear"
login ada 'admin passphrase one' "$first_code"
expect 401 invalid_credentials # the same code twice
api GET /api/v1/session "$admin"
expect 200
grep -q '"username":"ada"' "$base/body" && grep -q '"role":"admin"' "$base/body" ||
    fail "$(cat "$base/body")"
login otto 'officer passphrase two'
expect 201
otto=$TOKEN
api GET /api/v1/session "$otto"
expect 200
grep -q '"department":"Patrol"' "$base/body" || fail "$(cat "$base/body")"
api DELETE /api/v1/session "$otto"
expect 204
api GET /api/v1/session "$otto"
expect 401 session_expired

note "bad input: 4xx in JSON naming the problem, never 5xx"
api POST /api/v1/session "" '{"username":"ada",'
expect 400 malformed_json
api POST /api/v1/session "" '["ada"]'
expect 400 invalid_type
api POST /api/v1/session "" '{"username":"ada","password":"x","otp":1}'
expect 400 unknown_field otp
api POST /api/v1/session "" '{"username":"ada","password":12}'
expect 400 invalid_type password
api POST /api/v1/session "" '{"username":"ada"}'
expect 400 missing_field password
api POST /api/v1/session "" '{"username":"ada","username":"ada","password":"p"}'
expect 400 malformed_json
api POST /api/v1/session "" "{\"username\":\"$(head -c 100 /dev/zero | tr '\0' a)\",\"password\":\"p\"}"
expect 400 invalid_value username
api POST /api/v1/session "" "{\"username\":\"ada\",\"password\":\"$(head -c 70000 /dev/zero | tr '\0' a)\"}"
expect 413 body_too_large
api GET /api/v1/session
expect 401 unauthenticated
api GET /api/v1/session "not-a-token"
expect 401 invalid_token
api GET /api/v1/session "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
expect 401 invalid_token
api PUT /api/v1/session "$admin"
expect 405 method_not_allowed
api GET /api/v1/nothing-here "$admin"
expect 404 not_found
login nobody 'whatever password'
expect 401 invalid_credentials
login carol 'reviewer has no password yet'
expect 401 invalid_credentials

note "5 failures from one address lock it out of the account (the right password refused there too), not other addresses"
for i in 1 2 3 4 5; do
    login otto "wrong password $i"
    expect 401 invalid_credentials
done
login otto 'officer passphrase two'
expect 401 invalid_credentials
login otto 'officer passphrase two' "" --interface 127.0.0.3
expect 201

note "only an admin unlocks; the officer's attempt is denied and audited"
login olga 'officer passphrase three'
expect 201
olga=$TOKEN
api POST /api/v1/users/otto/unlock "$olga"
expect 403 forbidden
api GET /api/v1/alerts "$olga"
expect 403 forbidden
api POST /api/v1/users/nobody/unlock "$admin"
expect 404 not_found
api POST /api/v1/users/otto/unlock "$admin"
expect 200
login otto 'officer passphrase two'
expect 201
# One more failure after the unlock does not lock again (the count restarted).
login otto 'wrong again'
expect 401
login otto 'officer passphrase two'
expect 201

note "abnormal logins raise alerts: a burst, a locked account, an admin from a new address"
login ada 'admin passphrase one' "$(code '+ 30')" --interface 127.0.0.2
expect 201
api GET /api/v1/alerts "$admin"
expect 200
for kind in failure_burst locked_account_attempt privileged_new_source; do
    grep -q "\"kind\":\"$kind\"" "$base/body" || fail "no $kind alert: $(cat "$base/body")"
done
grep -q '"source":"127.0.0.2"' "$base/body" || fail "$(cat "$base/body")"

note "idle (30 min) and absolute (12 h) expiry, decided at use"
login olga 'officer passphrase three'
idle=$TOKEN
as_custos -c "UPDATE sessions SET last_seen_at = now() - interval '31 minutes' WHERE token_hash = sha256('$idle'::bytea)"
api GET /api/v1/session "$idle"
expect 401 session_expired
grep -q 'idle' "$base/body" || fail "$(cat "$base/body")"
login olga 'officer passphrase three'
old=$TOKEN
as_custos -c "UPDATE sessions SET created_at = now() - interval '12 hours 1 minute' WHERE token_hash = sha256('$old'::bytea)"
api GET /api/v1/session "$old"
expect 401 session_expired
grep -q '12 hours' "$base/body" || fail "$(cat "$base/body")"
login olga 'officer passphrase three'
fresh=$TOKEN
as_custos -c "UPDATE sessions SET last_seen_at = now() - interval '29 minutes', created_at = now() - interval '11 hours 59 minutes' WHERE token_hash = sha256('$fresh'::bytea)"
api GET /api/v1/session "$fresh"
expect 200

note "every login, denial and change is in the audit log; the chain is intact"
ctl audit list --last 200 >"$base/audit"
grep -q 'user:ada .*session.login .*ok' "$base/audit" || fail "no admin login"
grep -q 'anonymous .*session.login .*failed .*otto' "$base/audit" || fail "no failed login"
grep -q 'anonymous .*session.login .*denied .*otto' "$base/audit" || fail "no locked attempt"
grep -q 'system .*user.lock .*otto' "$base/audit" || fail "no lock"
grep -q 'user:olga .*user.unlock .*denied' "$base/audit" || fail "no denied unlock"
grep -q 'user:ada .*user.unlock .*ok .*otto' "$base/audit" || fail "no unlock"
grep -q 'user:otto .*session.logout .*ok' "$base/audit" || fail "no logout"
grep -q '127.0.0.2' "$base/audit" || fail "sources not recorded"
ctl audit verify >/dev/null || fail "$(ctl audit verify)"

kill -TERM "$pid"
it_wait_exit "$pid" 15
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS: $(tail -5 "$base/ingestd.log")"
echo "api_session: ok"

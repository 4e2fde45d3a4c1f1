#!/usr/bin/env bash
# Logins that cannot be turned against us, with real HTTPS clients (curl):
# a flood of logins from one address (300, 24 at a time) is throttled
# (429, no password checked) while another officer and an admin from an
# address it used before still log in; 5 failures from one address lock it
# out of the account, not other addresses; failures from 25 addresses lock an account to new addresses
# while its known address still gets in; counters in /metrics. A user lists
# and ends their own sessions (another's is 404), changes their password
# (the current one again first; every other session ends); an admin
# disables an account (its sessions end at once) and enables it. TLS: 1.3
# by default, 1.2 only with AEAD suites; HSTS on every answer.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo 'admin passphrase one' | ctl user add --username ada --role admin --password-stdin \
    >"$base/ada.out" || fail "user add ada"
totp_secret=$(sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' "$base/ada.out")
code() { oathtool --totp -b -N "now ${1:-+ 0} seconds" "$totp_secret"; }
for u in victim wide olga pat; do user "$u" officer; done
pw() { echo "passphrase of $1 ok"; }

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert

# A login that may meet a busy server (503 busy: retried, as Retry-After says).
login_retry() { # USER PASSWORD TOTP SOURCE
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        login "$1" "$2" "$3" --interface "$4" 2>/dev/null || true
        [ "$CODE" = 503 ] || return 0
        sleep 0.3
    done
}
# (the api helper fails on a 5xx; busy is expected here)
api() {
    local method=$1 path=$2 token=${3:-} body=${4:-}
    shift 4 2>/dev/null || shift $#
    local args=(-sS --cacert "$data/tls/api-cert.pem" -o "$base/body" -w '%{http_code}' -X "$method")
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    CODE=$(curl "${args[@]}" "$@" "https://127.0.0.1:$API_PORT$path") || CODE="curl-failed"
    case "$CODE" in 503) grep -q '"busy"' "$base/body" || fail "$method $path: $(cat "$base/body"; grep -v ' info ' "$base/ingestd.log" | tail -5)" ;;
    5*) fail "$method $path answered $CODE: $(cat "$base/body"; tail -5 "$base/ingestd.log")" ;; esac
}

note "TLS 1.3 by default; TLS 1.2 only with AEAD suites; HSTS on every answer"
proto=$(openssl s_client -connect "127.0.0.1:$API_PORT" -brief </dev/null 2>&1 |
    sed -n 's/^Protocol version: //p')
[ "$proto" = TLSv1.3 ] || fail "negotiated $proto"
curl -sS --cacert "$data/tls/api-cert.pem" --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256 \
    -o /dev/null "https://127.0.0.1:$API_PORT/api/v1/session" || fail "TLS 1.2 with AES-GCM refused"
curl -sS --cacert "$data/tls/api-cert.pem" --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA \
    -o /dev/null "https://127.0.0.1:$API_PORT/api/v1/session" 2>/dev/null &&
    fail "TLS 1.2 with a CBC suite was accepted"
curl -sS --cacert "$data/tls/api-cert.pem" -D "$base/headers" -o /dev/null \
    "https://127.0.0.1:$API_PORT/api/v1/nothing"
grep -qi '^strict-transport-security: max-age=31536000' "$base/headers" ||
    fail "no HSTS: $(cat "$base/headers")"

note "the admin logs in from 127.0.0.2 (known from then on)"
login ada 'admin passphrase one' "$(code)" --interface 127.0.0.2
expect 201
login wide "$(pw wide)" "" --interface 127.0.0.9
expect 201

note "a flood from 127.0.0.4: 300 logins, 24 at a time, most at the victim"
flood() {
    local i
    for i in $(seq 1 300); do
        local u=victim
        [ $((i % 3)) = 0 ] && u="nobody$i"
        [ "$i" = 1 ] || echo 'next'
        echo "url = \"https://127.0.0.1:$API_PORT/api/v1/session\""
        echo "data = \"{\\\"username\\\":\\\"$u\\\",\\\"password\\\":\\\"guess number $i\\\"}\""
        echo 'header = "Content-Type: application/json"'
        echo "cacert = \"$data/tls/api-cert.pem\""
        echo 'interface = "127.0.0.4"'
        echo 'silent'
        echo 'show-error'
        echo "output = \"/dev/null\""
        echo 'write-out = "%{http_code}\n"'
    done
}
flood >"$base/flood.conf"
curl -Z --parallel-max 24 -K "$base/flood.conf" >"$base/flood.codes" 2>"$base/flood.err" &
flooder=$!
IT_PIDS+=("$flooder")
sleep 0.5
note "during the flood: another officer, and the admin from its known address, log in"
login_retry olga "$(pw olga)" "" 127.0.0.5
expect 201
login_retry ada 'admin passphrase one' "$(code '+ 30')" 127.0.0.2
expect 201
admin=$TOKEN
wait "$flooder" || fail "the flood's curl: $(cat "$base/flood.err")"
total=$(wc -l <"$base/flood.codes")
throttled=$(grep -c '^429$' "$base/flood.codes")
refused=$(grep -c '^401$' "$base/flood.codes")
busy=$(grep -c '^503$' "$base/flood.codes")
note "flood: $total answers: $throttled throttled (429), $refused refused (401), $busy busy (503)"
[ "$total" = 300 ] || fail "$total answers"
[ $((throttled + refused + busy)) = 300 ] || fail "other answers: $(sort "$base/flood.codes" | uniq -c)"
[ "$refused" -le 20 ] || fail "$refused passwords checked for one address in a minute"
[ "$throttled" -ge 200 ] || fail "only $throttled throttled"
[ "$(metric 'custos_api_logins_total{outcome="throttled"}')" = "$throttled" ] ||
    fail "throttled not counted: $(metric 'custos_api_logins_total{outcome="throttled"}')"
[ "$(metric custos_api_login_throttles_total)" -ge 1 ] || fail "no throttle counted"
login_retry victim "$(pw victim)" "" 127.0.0.6
expect 201

note "5 failures from 127.0.0.3 lock that address out of the victim's account, no other"
for i in 1 2 3 4 5; do
    login_retry victim "wrong $i" "" 127.0.0.3
    expect 401 invalid_credentials
done
login_retry victim "$(pw victim)" "" 127.0.0.3
expect 401 invalid_credentials
[ "$(metric 'custos_api_login_locks_total{scope="address"}')" = 1 ] || fail "address lock not counted"
login_retry victim "$(pw victim)" "" 127.0.0.6
expect 201

note "failures from 25 addresses lock an account to new addresses; its known address gets in"
for i in $(seq 10 34); do
    login_retry wide "wrong $i" "" "127.0.0.$i"
    expect 401 invalid_credentials
done
[ "$(metric 'custos_api_login_locks_total{scope="account"}')" = 1 ] || fail "account lock not counted"
login_retry wide "$(pw wide)" "" 127.0.0.40
expect 401 invalid_credentials
login_retry wide "$(pw wide)" "" 127.0.0.9
expect 201
api GET /api/v1/alerts "$admin"
expect 200
for kind in login_throttled failure_burst account_locked locked_account_attempt; do
    grep -q "\"kind\":\"$kind\"" "$base/body" || fail "no $kind alert: $(cat "$base/body")"
done
api POST /api/v1/users/wide/unlock "$admin"
expect 200
login_retry wide "$(pw wide)" "" 127.0.0.40
expect 201

note "a user lists and ends their own sessions; another's is not found"
login_retry pat "$(pw pat)" "" 127.0.0.7
pat1=$TOKEN
login_retry pat "$(pw pat)" "" 127.0.0.8
pat2=$TOKEN
api GET /api/v1/sessions "$pat1"
expect 200
[ "$(grep -o '"id":"[^"]*"' "$base/body" | wc -l)" = 2 ] || fail "sessions: $(cat "$base/body")"
grep -q '"source":"127.0.0.8"' "$base/body" || fail "$(cat "$base/body")"
other=$(grep -o '{[^}]*"current":false[^}]*}' "$base/body" | sed 's/.*"id":"\([^"]*\)".*/\1/')
[ -n "$other" ] || fail "no other session: $(cat "$base/body")"
api DELETE "/api/v1/sessions/$other" "$admin"
expect 404 not_found
api DELETE "/api/v1/sessions/$other" "$pat1"
expect 204
api GET /api/v1/session "$pat2"
expect 401 session_expired

note "a password change asks for the current one, and ends every other session"
login_retry pat "$(pw pat)" "" 127.0.0.8
pat2=$TOKEN
api POST /api/v1/session/password "$pat1" '{"current_password":"not it","new_password":"a brand new passphrase"}'
expect 403 invalid_credentials current_password
api POST /api/v1/session/password "$pat1" "{\"current_password\":\"$(pw pat)\",\"new_password\":\"short\"}"
expect 400 invalid_value new_password
api POST /api/v1/session/password "$pat1" "{\"current_password\":\"$(pw pat)\",\"new_password\":\"a brand new passphrase\"}"
expect 204
api GET /api/v1/session "$pat1"
expect 200
api GET /api/v1/session "$pat2"
expect 401 session_expired
login_retry pat "$(pw pat)" "" 127.0.0.8
expect 401 invalid_credentials
login_retry pat 'a brand new passphrase' "" 127.0.0.8
expect 201

note "an admin disables an account: its sessions end at once; enabled again, it logs in"
api POST /api/v1/users/pat/disable "$pat1"
expect 403 forbidden
api POST /api/v1/users/pat/disable "$admin"
expect 200
api GET /api/v1/session "$pat1"
expect 401 session_expired
login_retry pat 'a brand new passphrase' "" 127.0.0.8
expect 401 invalid_credentials
api POST /api/v1/users/ada/disable "$admin"
expect 409 conflict
api POST /api/v1/users/nobody/disable "$admin"
expect 404 not_found
api POST /api/v1/users/pat/enable "$admin"
expect 200
login_retry pat 'a brand new passphrase' "" 127.0.0.8
expect 201

note "all of it audited; the chain intact"
ctl audit list --last 2000 >"$base/audit"
for what in 'user:pat .*session.end' 'user:pat .*user.password .*denied' 'user:pat .*user.password .*ok' \
    'user:ada .*user.disable .*ok .*pat' 'user:ada .*user.enable .*ok .*pat' 'system .*user.lock .*victim' \
    'system .*user.lock .*wide' 'user:pat .*session.list'; do
    grep -q "$what" "$base/audit" || fail "no audit entry like: $what"
done
ctl audit verify >/dev/null || fail "$(ctl audit verify)"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

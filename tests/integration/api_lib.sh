# Helpers for the HTTPS API tests (sourced after lib.sh; uses $base, $data
# and API_PORT from it_start_ingestd). Requests go through curl with the
# server's self-signed certificate verified.

as_custos() { psql -X -q -A -t -v ON_ERROR_STOP=1 "host=$data/pg user=custos dbname=custos" "$@"; }
# user NAME ROLE [DEPARTMENT]: an account whose password is "passphrase of NAME ok" (uses ctl).
user() {
    echo "passphrase of $1 ok" | ctl user add --username "$1" --role "$2" \
        ${3:+--department "$3"} --password-stdin >"$base/$1.out" || fail "user add $1"
}
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$base/body"; }

# api METHOD PATH [TOKEN [BODY [curl args...]]]: sets CODE, the body in $base/body.
# Any 5xx fails the test: input must never cause one.
api() {
    local method=$1 path=$2 token=${3:-} body=${4:-}
    shift 4 2>/dev/null || shift $#
    local args=(-sS --cacert "$data/tls/api-cert.pem" -o "$base/body" -w '%{http_code}' -X "$method")
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    CODE=$(curl "${args[@]}" "$@" "https://127.0.0.1:$API_PORT$path") || CODE="curl-failed"
    case "$CODE" in 5*) fail "$method $path answered $CODE: $(cat "$base/body")" ;; esac
}

expect() { # CODE [ERROR [FIELD]]
    [ "$CODE" = "$1" ] || fail "expected $1, got $CODE: $(cat "$base/body")"
    [ -z "${2:-}" ] || [ "$(field error)" = "$2" ] || fail "expected error $2: $(cat "$base/body")"
    [ -z "${3:-}" ] || [ "$(field field)" = "$3" ] || fail "expected field $3: $(cat "$base/body")"
}

login() { # USER PASSWORD [TOTP [curl args...]] -> TOKEN
    local u=$1 p=$2 t=${3:-}
    shift 3 2>/dev/null || shift $#
    local extra=""
    [ -n "$t" ] && extra=",\"totp\":\"$t\""
    api POST /api/v1/session "" "{\"username\":\"$u\",\"password\":\"$p\"$extra}" "$@"
    TOKEN=$(field token)
}

api_wait_cert() {
    local i
    for i in $(seq 1 50); do
        [ -s "$data/tls/api-cert.pem" ] && return 0
        sleep 0.1
    done
    fail "no API certificate in $data/tls"
}

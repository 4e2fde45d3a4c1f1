#!/usr/bin/env bash
# Security alerts reach people (docs/alerts.md). Real attempts raise each
# kind: a login burst, a revoked device still sending SRTP and still trying
# RTSP, replayed SRTP (ingest_inject), RTSP authentication failures (a raw
# client). Each alert goes to alerts.command — a receiver that hangs past
# alerts.command_timeout_s on its first try and fails on its second — and is
# delivered on a later try, while a recorder streams into ingestd unharmed.
# Admins list alerts with their state and delivery, acknowledge and close
# them (409 out of order, 403 for an officer, 404 for no such alert); every
# alert and change of state is audited.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/api_lib.sh"
. "$(dirname "$0")/rtsp_lib.sh"
trap '' PIPE

base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
json_field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"; }

clip=$(bash "$(dirname "$0")/../../bench/make-clip" "$base/clip.h264") || fail "cannot make the clip"
user ada admin
user olga officer
secret=$(sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' "$base/ada.out")
ctl device add --serial ALRT-REV --json >"$base/rev.json" || fail "device add"
ctl device add --serial ALRT-REV2 --json >/dev/null || fail "device add"
ctl device add --serial ALRT-RTSP --json >/dev/null || fail "device add"
ctl device add --serial ALRT-OK --json >"$base/ok.json" || fail "device add"
inj_dev=$(ctl device add --serial ALRT-INJ --json) || fail "device add"

# The receiver: its first try at an alert hangs (killed at the timeout), its
# second fails, its third takes the alert.
cat >"$base/notify.sh" <<EOF
#!/bin/sh
in=\$(cat)
id=\$(printf '%s' "\$in" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
n=\$(cat "$base/tries-\$id" 2>/dev/null || echo 0)
echo \$((n + 1)) >"$base/tries-\$id"
[ "\$n" = 0 ] && exec sleep 30
[ "\$n" = 1 ] && exit 1
printf '%s\n' "\$in" >>"$base/delivered"
EOF
chmod +x "$base/notify.sh"

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set ingest.device_poll_ms=100 --set alerts.command="$base/notify.sh" \
    --set alerts.command_timeout_s=1
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
api_wait_cert
login ada "passphrase of ada ok" "$(oathtool --totp -b "$secret")"
expect 201
admin=$TOKEN
login olga "passphrase of olga ok"
expect 201
officer=$TOKEN

note "a recorder streams meanwhile (its packets must all be kept)"
"$RECORDERS" --devices "$base/ok.json" --seconds 8 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >"$base/ok-sent.json" 2>"$base/ok.err" &
rec=$!
IT_PIDS+=("$rec")

note "real attempts: a login burst, a revoked device, replayed SRTP, RTSP logins"
for i in 1 2 3 4 5; do
    login olga "wrong $i"
    expect 401
done
ctl device revoke ALRT-REV >/dev/null && ctl device revoke ALRT-REV2 >/dev/null || fail "revoke"
sleep 0.5
"$RECORDERS" --devices "$base/rev.json" --seconds 1 --target "127.0.0.1:$INGEST_PORT" \
    --clip "$clip" >/dev/null || fail "recorders (revoked)"
"$INJECT" "$inj_dev" "$INGEST_PORT" >/dev/null || fail "inject"
rtsp_open
rtsp_send "ANNOUNCE rtsp://127.0.0.1:$RTSP_PORT/live/ALRT-REV2 RTSP/1.0\r\nCSeq: 1\r\n\r\n"
rtsp_read
expect 403 "a revoked device's ANNOUNCE"
rtsp_close
for i in 1 2 3 4 5; do
    rtsp_open
    announce ALRT-RTSP "not the password $i"
    expect 401 "a wrong RTSP password"
    rtsp_close
done

kinds="failure_burst device_revoked_attempt srtp_replay rtsp_auth_failures"
has_kinds() {
    api GET /api/v1/alerts "$admin"
    local k
    for k in $kinds; do grep -q "\"kind\":\"$k\"" "$base/body" || return 1; done
}
for i in $(seq 1 100); do
    has_kinds && break
    sleep 0.1
done
has_kinds || fail "alerts missing: $(cat "$base/body"; grep -i alert "$base/ingestd.log" | tail -5)"
grep -q '"username":"ALRT-REV2"' "$base/body" || fail "no RTSP revoked alert: $(cat "$base/body")"
grep -q '"username":"ALRT-REV"' "$base/body" || fail "no SRTP revoked alert: $(cat "$base/body")"
grep -q '"state":"new"' "$base/body" || fail "$(cat "$base/body")"
raised=$(grep -o '"id":[0-9]*' "$base/body" | wc -l)
note "$raised alerts raised"

note "each reaches alerts.command on its third try (a hang killed, a failure, then taken)"
delivered() { [ -f "$base/delivered" ] && wc -l <"$base/delivered" || echo 0; }
for i in $(seq 1 300); do
    [ "$(delivered)" -ge "$raised" ] && break
    sleep 0.1
done
[ "$(delivered)" -ge "$raised" ] || fail "$(delivered) of $raised delivered: $(grep alerts "$base/ingestd.log" | tail -5)"
for k in $kinds; do
    grep -q "\"kind\":\"$k\"" "$base/delivered" || fail "$k not delivered: $(cat "$base/delivered")"
done
grep -q '"attempt":3' "$base/delivered" || fail "not the third attempt: $(cat "$base/delivered")"
[ "$(metric custos_alerts_delivered_total)" -ge "$raised" ] || fail "deliveries not counted"
[ "$(metric custos_alert_delivery_failures_total)" -ge $((2 * raised)) ] || fail "failures not counted"
grep -q 'did not finish within 1000 ms; killed' "$base/ingestd.log" || fail "the hang was not killed"
api GET /api/v1/alerts "$admin"
grep -q '"delivery":{"delivered":true,"attempts":3}' "$base/body" || fail "$(cat "$base/body")"

note "the recorder streamed unharmed"
wait "$rec" || fail "recorders: $(cat "$base/ok.err")"
sent=$(json_field "$(cat "$base/ok-sent.json")" packets_sent)
for i in $(seq 1 100); do
    [ "$(ctl recordings | awk '$2 == "ALRT-OK" && $NF == "sealed"' | wc -l)" -ge 1 ] && break
    sleep 0.1
done
okrec=$(ctl recordings | awk '$2 == "ALRT-OK" {print $1}')
kept=$(ctl packets --recording "$okrec" --summary | awk '{p += $5} END {print p + 0}')
[ "$kept" = "$sent" ] || fail "ALRT-OK: sent $sent, kept $kept"

note "admins acknowledge and close; out of order is 409, an officer 403, no such alert 404"
id=$(grep -o '"id":[0-9]*,"at":"[^"]*","kind":"srtp_replay"' "$base/body" | head -1 | sed 's/"id":\([0-9]*\).*/\1/')
[ -n "$id" ] || fail "no srtp_replay alert id: $(cat "$base/body")"
api POST "/api/v1/alerts/$id/acknowledge" "$officer" '{}'
expect 403 forbidden
api POST /api/v1/alerts/12345/acknowledge "$admin" '{}'
expect 404 not_found
api POST "/api/v1/alerts/$id/close" "$admin" '{"note":7}'
expect 400 invalid_type note
api POST "/api/v1/alerts/$id/acknowledge" "$admin" '{"note":"looking into it"}'
expect 200
api POST "/api/v1/alerts/$id/acknowledge" "$admin"
expect 409 conflict
[ "$(field state)" = acknowledged ] || fail "$(cat "$base/body")"
api GET "/api/v1/alerts?state=acknowledged" "$admin"
expect 200
[ "$(grep -o '"id":[0-9]*' "$base/body" | wc -l)" = 1 ] || fail "$(cat "$base/body")"
grep -q '"by":"ada","note":"looking into it"' "$base/body" || fail "$(cat "$base/body")"
api POST "/api/v1/alerts/$id/close" "$admin" '{"note":"a test capture"}'
expect 200
api POST "/api/v1/alerts/$id/close" "$admin"
expect 409 conflict
[ "$(field state)" = closed ] || fail "$(cat "$base/body")"
api GET "/api/v1/alerts?state=closed" "$admin"
grep -q "\"id\":$id," "$base/body" || fail "$(cat "$base/body")"
api GET "/api/v1/alerts?state=new" "$admin"
grep -q "\"id\":$id," "$base/body" && fail "a closed alert listed as new"
api GET "/api/v1/alerts?state=open" "$admin"
expect 400 invalid_value state
out=$(as_custos -c "DELETE FROM alert_states" 2>&1) && fail "a state change was deleted"
grep -q 'permission denied' <<<"$out" || fail "$out"

note "every alert and state change is audited; the chain is intact"
ctl audit list --last 500 >"$base/audit"
grep -q 'system .*alert.raise .*srtp_replay' "$base/audit" || fail "no alert.raise entry"
grep -q 'user:ada .*alert.acknowledge .*ok' "$base/audit" || fail "no acknowledge entry"
grep -q 'user:ada .*alert.close .*ok' "$base/audit" || fail "no close entry"
grep -q 'user:olga .*alert.acknowledge .*denied' "$base/audit" || fail "no denied entry"
ctl audit verify >/dev/null || fail "$(ctl audit verify)"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"
note "ok"

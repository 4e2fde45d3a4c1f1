#!/usr/bin/env bash
# ingestd with its embedded PostgreSQL: healthy, metrics, log reopen on
# SIGHUP, graceful stop on SIGTERM within 5 s with no postgres left, clean
# restart, and recovery after ingestd itself is killed.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
port=$(it_free_port)
log="$base/ingestd.log"

note "first start: creates the data dir and the cluster"
it_start_ingestd "$base/stderr.1" --data-dir "$data" --set http.port="$port" --set log.file="$log"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$log"

code=$(curl -s -o "$base/health.json" -w '%{http_code}' "http://127.0.0.1:$port/healthz")
[ "$code" = 200 ] || fail "/healthz returned $code"
grep -q '"status":"ok"' "$base/health.json" || fail "healthz body: $(cat "$base/health.json")"
grep -q '"db":"up"' "$base/health.json" || fail "database not up: $(cat "$base/health.json")"
instance=$(sed -n 's/.*"instance":"\([0-9a-f-]*\)".*/\1/p' "$base/health.json")
[ ${#instance} -eq 36 ] || fail "no installation id in $(cat "$base/health.json")"
[ "$(cat "$data/instance")" = "$instance" ] || fail "data dir not bound to $instance"

curl -fsS "http://127.0.0.1:$port/metrics" >"$base/metrics.txt" || fail "/metrics"
for m in 'custos_up 1' 'custos_db_up 1' 'custos_http_requests_total{path="/healthz"} ' \
    '# TYPE process_cpu_seconds_total counter' 'process_open_fds ' \
    "custos_build_info{version=\""; do
    grep -qF "$m" "$base/metrics.txt" || fail "/metrics lacks '$m'"
done
head -c 200 "$base/metrics.txt" | grep -q '^# HELP ' || fail "metrics not in Prometheus text format"
curl -sI "http://127.0.0.1:$port/metrics" | grep -qi '^content-type: text/plain; version=0.0.4' ||
    fail "metrics content type"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nothing")
[ "$code" = 404 ] || fail "unknown path gave $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/healthz")
[ "$code" = 405 ] || fail "POST /healthz gave $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH "http://127.0.0.1:$port/healthz")
[ "$code" = 405 ] || fail "PATCH /healthz gave $code"

pgdata="$data/pg/data"
stat -c '%a %U' "$data/pg" | grep -q '^700 ' || fail "cluster dir mode: $(stat -c '%a %U' "$data/pg")"
if [ "$(id -u)" = 0 ]; then
    [ "$(stat -c %U "$pgdata")" = custos ] || fail "cluster not run as custos"
fi
ss_out=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk 'NR>1 && $4=="0A" {print $2}' | grep -ci ':1538$' || true)
[ "$ss_out" = 0 ] || fail "something listens on TCP 5432: the embedded cluster must not"

note "SIGHUP reopens the log file"
mv "$log" "$log.1"
kill -HUP "$pid"
for i in $(seq 1 50); do [ -s "$log" ] && break; sleep 0.1; done
grep -q 'SIGHUP: log reopened' "$log" || fail "log not reopened after SIGHUP"

note "SIGTERM: exit 0 within 5 s, no postgres left"
pm_pid=$(head -1 "$pgdata/postmaster.pid")
kill -0 "$pm_pid" || fail "postmaster $pm_pid not running"
start=$(date +%s%N)
kill -TERM "$pid"
it_wait_exit "$pid" 5
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ "$IT_STATUS" = 0 ] || fail "ingestd exit status after SIGTERM: $IT_STATUS"
note "stopped in ${elapsed_ms} ms"
! kill -0 "$pm_pid" 2>/dev/null || fail "postmaster $pm_pid still running"
it_wait_no_postgres "$data" 1 || fail "postgres processes left: $(pgrep -af postgres)"
[ ! -e "$pgdata/postmaster.pid" ] || fail "postmaster.pid left: not a clean shutdown"
grep -q 'stopped cleanly' "$log" || fail "no 'stopped cleanly' in log"

note "restart on the same data dir, then SIGINT"
it_start_ingestd "$base/stderr.2" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/stderr.2"
curl -fsS "http://127.0.0.1:$port/healthz" | grep -q "\"instance\":\"$instance\"" ||
    fail "installation id changed across restart"
kill -INT "$pid"
it_wait_exit "$pid" 5
[ "$IT_STATUS" = 0 ] || fail "exit status after SIGINT: $IT_STATUS"
it_wait_no_postgres "$data" 1 || fail "postgres left after SIGINT"

note "ingestd killed outright: its postgres goes too, and the next start works"
it_start_ingestd "$base/stderr.3" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/stderr.3"
kill -KILL "$pid"
wait "$pid" 2>/dev/null
it_wait_no_postgres "$data" 15 || fail "postgres survived its ingestd"
it_start_ingestd "$base/stderr.4" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/stderr.4"
kill -TERM "$pid"
it_wait_exit "$pid" 5
[ "$IT_STATUS" = 0 ] || fail "exit status after restart: $IT_STATUS"
it_wait_no_postgres "$data" 1 || fail "postgres left at the end"
echo "ingestd_lifecycle: ok"

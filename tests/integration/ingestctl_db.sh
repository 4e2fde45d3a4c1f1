#!/usr/bin/env bash
# ingestctl on a data dir with and without a running ingestd: without, it
# runs the embedded PostgreSQL for its own run and leaves nothing running;
# with, it uses the daemon's database.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"

note "no daemon: ingestctl starts and stops the cluster itself"
"$INGESTCTL" --data-dir "$data" db status >"$base/status1" 2>"$base/err1" ||
    fail "db status failed: $(cat "$base/err1")"
cat "$base/status1"
grep -q '^database      embedded, started for this command$' "$base/status1" || fail "mode"
grep -q '^schema        version [0-9]* of [0-9]* (up to date)$' "$base/status1" || fail "schema"
instance=$(awk '/^installation/ {print $2}' "$base/status1")
[ ${#instance} -eq 36 ] || fail "installation id"
it_wait_no_postgres "$data" 2 || fail "ingestctl left postgres running"
"$INGESTCTL" --data-dir "$data" db migrate | grep -q '^schema at version' || fail "db migrate"

note "with a daemon: ingestctl uses its database"
port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
"$INGESTCTL" --data-dir "$data" db status >"$base/status2" || fail "db status with daemon"
grep -q 'run by the ingestd that holds the data dir' "$base/status2" || fail "did not attach"
grep -q "^installation  $instance\$" "$base/status2" || fail "installation differs"
curl -fsS "http://127.0.0.1:$port/healthz" | grep -q "$instance" || fail "daemon's id differs"
kill -TERM "$pid"
it_wait_exit "$pid" 5
[ "$IT_STATUS" = 0 ] || fail "exit: $IT_STATUS"

note "bad usage"
it_expect_refusal "unknown command 'db nothing'" "$INGESTCTL" --data-dir "$data" db nothing
it_expect_refusal "bad option '--bogus'" "$INGESTCTL" --bogus db status
it_expect_refusal "http.port: 0 is out of range" "$INGESTCTL" --set http.port=0 db status
it_wait_no_postgres "$data" 2 || fail "postgres left"
echo "ingestctl_db: ok"

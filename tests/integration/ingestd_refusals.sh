#!/usr/bin/env bash
# What ingestd refuses at start, each with one clear error line and a
# non-zero exit, leaving nothing that blocks the next start: a second
# daemon on the same data dir, a port in use, missing PostgreSQL binaries,
# data dirs it cannot use.
. "$(dirname "$0")/lib.sh"

base=$(it_tmpdir)
data="$base/var"
port=$(it_free_port)

note "a daemon holds the data dir and the port"
it_start_ingestd "$base/first.log" --data-dir "$data" --set http.port="$port"
first=$INGESTD_PID
it_wait_healthy "$port" "$first" "$base/first.log"

other_port=$(it_free_port)
it_expect_refusal "data dir $data is in use by another process (ingestd pid $first)" \
    "$INGESTD" --data-dir "$data" --set http.port="$other_port"
curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || fail "first daemon hurt by the second"

note "port in use: refused before any database work"
it_expect_refusal "http (http.bind, http.port): cannot listen on 127.0.0.1:$port: Address already in use" \
    "$INGESTD" --data-dir "$base/second" --set http.port="$port"
[ ! -e "$base/second/pg" ] || fail "a refused start created a cluster"
it_wait_no_postgres "$base/second" 1 || fail "a refused start left postgres running"

note "PostgreSQL binaries missing"
it_expect_refusal "PostgreSQL server binaries not found: db.pg_bindir=/nonexistent/bin" \
    "$INGESTD" --data-dir "$base/second" --set http.port="$other_port" \
    --set db.pg_bindir=/nonexistent/bin

note "after those refusals the second data dir starts normally"
it_start_ingestd "$base/second.log" --data-dir "$base/second" --set http.port="$other_port"
second=$INGESTD_PID
it_wait_healthy "$other_port" "$second" "$base/second.log"
kill -TERM "$first" "$second"
it_wait_exit "$first" 5
[ "$IT_STATUS" = 0 ] || fail "first daemon exit: $IT_STATUS"
it_wait_exit "$second" 5
[ "$IT_STATUS" = 0 ] || fail "second daemon exit: $IT_STATUS"

note "unusable data dirs"
touch "$base/a-file"
it_expect_refusal "data dir $base/a-file is not a directory" \
    "$INGESTD" --data-dir "$base/a-file" --set http.port="$other_port"
it_expect_refusal "data dir $base/a-file/var: Not a directory" \
    "$INGESTD" --data-dir "$base/a-file/var" --set http.port="$other_port"
it_expect_refusal "cannot create it" \
    "$INGESTD" --data-dir /proc/custos-cannot-exist --set http.port="$other_port"
if [ "$(id -u)" = 0 ]; then
    # Root reads everything; an unprivileged account meets the permissions.
    mkdir -m 0000 "$base/closed"
    it_expect_refusal "data dir $base/closed is not readable and writable: Permission denied" \
        setpriv --reuid=nobody --regid=nogroup --clear-groups \
        "$INGESTD" --data-dir "$base/closed" --set http.port="$other_port"
    # A data dir the postgres account cannot reach (a 0700 home, say).
    mkdir -m 0700 "$base/private"
    it_expect_refusal "(mode 0700) is not traversable by it" \
        "$INGESTD" --data-dir "$base/private/var" --set http.port="$other_port"
    # ... and nothing of it blocks a start once the path is fixed.
    chmod 0711 "$base/private"
    it_start_ingestd "$base/private.log" --data-dir "$base/private/var" --set http.port="$other_port"
    third=$INGESTD_PID
    it_wait_healthy "$other_port" "$third" "$base/private.log"
    kill -TERM "$third"
    it_wait_exit "$third" 5
    [ "$IT_STATUS" = 0 ] || fail "exit after fixing the path: $IT_STATUS"
else
    mkdir -m 0000 "$base/closed"
    it_expect_refusal "data dir $base/closed is not readable and writable: Permission denied" \
        "$INGESTD" --data-dir "$base/closed" --set http.port="$other_port"
    chmod 0700 "$base/closed"
fi
it_wait_no_postgres "$data" 1 || fail "postgres left"
it_wait_no_postgres "$base/second" 1 || fail "postgres left"
echo "ingestd_refusals: ok"

#!/usr/bin/env bash
# Least privilege, started as root (as CI runs it): ingestd becomes the
# `custos` service account (made when missing) keeping only
# CAP_NET_BIND_SERVICE and CAP_NET_ADMIN, and cannot become root again; its
# embedded PostgreSQL runs as custos too, not as the shared postgres
# account; the data dir and the keys belong to custos, also what ingestctl
# (run as root) makes there; the cluster admits peer authentication only —
# no trust — mapping the custos account (and root) to its roles; another
# local user (nobody) cannot connect.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    note "not root: nothing to drop (CI runs this as root)"
    exit 0
fi
base=$(it_tmpdir)
data="$base/var"
ctl() { "$INGESTCTL" --data-dir "$data" "$@"; }

port=$(it_free_port)
it_start_ingestd "$base/ingestd.log" --data-dir "$data" --set http.port="$port" \
    --set rtsp.bind=127.0.0.1 --set rtsp.port=554 --set rtsps.port=0
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd.log"
getent passwd custos >/dev/null || fail "no custos account"

note "ingestd runs as custos, with no capability left, and no way back to root"
[ "$(ps -o user= -p "$pid")" = custos ] || fail "ingestd runs as $(ps -o user= -p "$pid")"
u=$(id -u custos)
[ "$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" = "$u $u $u $u" ] ||
    fail "uids: $(grep -E '^(Uid|Gid):' "/proc/$pid/status")"
for set in CapEff CapPrm CapInh CapAmb; do
    caps=$(awk "/^$set:/ {print \$2}" "/proc/$pid/status")
    [ "$caps" = 0000000000000000 ] || fail "$set $caps"
done
grep -q "running as 'custos'" "$base/ingestd.log" || fail "not logged"
grep -q "no capabilities from here on" "$base/ingestd.log" || fail "capabilities not dropped"
note "$(grep -o 'no capabilities from here on.*' "$base/ingestd.log")"
for t in /proc/"$pid"/task/*; do # every thread, the store's and the API's too
    [ "$(awk '/^CapEff:/ {print $2}' "$t/status")" = 0000000000000000 ] ||
        fail "thread $(basename "$t") keeps $(awk '/^CapEff:/ {print $2}' "$t/status")"
    [ "$(awk '/^Uid:/ {print $2}' "$t/status")" = "$u" ] || fail "thread $(basename "$t") uid"
done
# (the receive buffers were sized past net.core.rmem_max with CAP_NET_ADMIN)
grep -q "receive buffer capped" "$base/ingestd.log" && fail "$(grep "receive buffer" "$base/ingestd.log")"
# (a low port bound as custos: the capability kept until then was the one it needs)
[ "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)" -gt 554 ] ||
    note "(ports from $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start) need no capability here)"
exec {probe}<>/dev/tcp/127.0.0.1/554 || fail "nothing listens on 554: $(grep -i rtsp "$base/ingestd.log" | head -3)"
exec {probe}>&-

note "its PostgreSQL runs as custos, not as postgres, with no capability"
pg=$(head -1 "$data/pg/data/postmaster.pid")
[ "$(ps -o user= -p "$pg")" = custos ] || fail "postgres runs as $(ps -o user= -p "$pg")"
[ "$(awk '/^CapPrm:/ {print $2}' "/proc/$pg/status")" = 0000000000000000 ] || fail "postgres caps"
pgrep -u postgres -f -- "$data/pg" >/dev/null && fail "a postgres process of this cluster runs as postgres"
[ "$(pgrep -u custos -f -- "-D $data/pg/data" | wc -l)" = 1 ] || fail "postmaster not found"

note "the data dir and the keys are custos's, also what ingestctl (root) makes"
[ "$(stat -c %U "$data")" = custos ] || fail "data dir owner $(stat -c %U "$data")"
ctl keys rotate >/dev/null || fail "keys rotate"
others=$(find "$data" ! -user custos | head -5)
[ -z "$others" ] || fail "not custos's: $others"

note "peer authentication only; custos and root mapped; nobody cannot connect"
rules=$(as_super -c "SELECT type || ' ' || auth_method FROM pg_hba_file_rules")
[ "$rules" = "local peer" ] || fail "pg_hba rules: $rules"
as_super -c "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'" | grep -qx 0 ||
    fail "a trust rule"
maps=$(as_super -c "SELECT DISTINCT sys_name FROM pg_ident_file_mappings ORDER BY 1" | tr '\n' ' ')
[ "$maps" = "custos root " ] || fail "mapped: $maps"
who=$(runuser -u custos -- psql -X -q -A -t "host=$data/pg user=custos dbname=custos" \
    -c "SELECT current_user" 2>&1) || fail "custos cannot connect: $who"
[ "$who" = custos ] || fail "$who"
out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups -- psql -X -q -A -t \
    "host=$data/pg user=custos dbname=custos" -c "SELECT 1" 2>&1) &&
    fail "nobody connected: $out"
grep -qi 'permission denied\|authentication failed' <<<"$out" || fail "refused how? $out"
note "nobody: $(head -1 <<<"$out")"
# Second layer: with the socket opened to everyone, peer authentication
# still refuses an account that is not mapped.
mode_data=$(stat -c %a "$data") mode_pg=$(stat -c %a "$data/pg")
chmod 0711 "$data" "$data/pg" && chmod 0777 "$data/pg/.s.PGSQL.5432"
out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups -- psql -X -q -A -t \
    "host=$data/pg user=custos dbname=custos" -c "SELECT 1" 2>&1) &&
    fail "nobody connected through an open socket: $out"
chmod "$mode_data" "$data" && chmod "$mode_pg" "$data/pg" && chmod 0700 "$data/pg/.s.PGSQL.5432"
grep -q 'Peer authentication failed' <<<"$out" || fail "refused how? $out"
note "nobody, socket open: $(head -1 <<<"$out" | sed 's/.*FATAL: *//')"

kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS"

note "root hands over only what is its own to give"
# A directory that holds someone else's files is not taken over.
mkdir -m 0755 "$base/foreign" && echo private >"$base/foreign/notes"
it_expect_refusal "holds files that are not Custos's" \
    "$INGESTD" --data-dir "$base/foreign" --set http.port="$(it_free_port)"
[ "$(stat -c %U "$base/foreign" "$base/foreign/notes" | sort -u)" = root ] ||
    fail "foreign files changed hands"
# The service account plants a link where root would look (its keys dir) to
# a directory of root's: root does not follow it.
mkdir -m 0755 "$base/victim"
mv "$data/keys" "$base/keys.saved"
runuser -u custos -- ln -s "$base/victim" "$data/keys" || fail "ln"
it_expect_refusal "a directory above it is not root's alone" \
    "$INGESTD" --data-dir "$data" --set http.port="$(it_free_port)"
ctl keys list >/dev/null 2>&1 && fail "ingestctl took the planted keys dir"
[ "$(stat -c %U "$base/victim")" = root ] || fail "the link was followed"
rm "$data/keys" && mv "$base/keys.saved" "$data/keys"
# ... and what is the account's already starts as before.
it_start_ingestd "$base/ingestd2.log" --data-dir "$data" --set http.port="$port"
pid=$INGESTD_PID
it_wait_healthy "$port" "$pid" "$base/ingestd2.log"
kill -TERM "$pid"
it_wait_exit "$pid" 30
[ "$IT_STATUS" = 0 ] || fail "ingestd exit $IT_STATUS after the refusals"
note "ok"

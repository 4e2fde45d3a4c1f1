#!/usr/bin/env bash
# ingestd's command line and configuration: every bad-config case gets one
# clear line and a non-zero exit; good ones pass --check-config; the output
# of --print-config is itself a valid config file.
. "$(dirname "$0")/lib.sh"

dir=$(it_tmpdir)

it_expect_refusal "unknown setting 'http.prot' (did you mean 'http.port'?)" \
    "$INGESTD" --set http.prot=1 --check-config
it_expect_refusal "http.port: 70000 is out of range (allowed 1..65535)" \
    "$INGESTD" --set http.port=70000 --check-config
it_expect_refusal "http.port: 'eighty' is not an integer (allowed 1..65535)" \
    "$INGESTD" --set http.port=eighty --check-config
it_expect_refusal "log.level: 'verbose' is not one of: error, warn, info, debug" \
    "$INGESTD" --set log.level=verbose --check-config
it_expect_refusal "http.bind: 'example.com' is not an IPv4 or IPv6 address" \
    "$INGESTD" --set http.bind=example.com --check-config
it_expect_refusal "is not of the form KEY=VALUE" "$INGESTD" --set http.port --check-config
it_expect_refusal "unexpected argument 'extra'" "$INGESTD" --check-config extra

printf '[http]\nport = 8081\n\n[ingest]\nudp_prot = 5004\n' >"$dir/unknown.ini"
it_expect_refusal "$dir/unknown.ini:5: unknown setting 'ingest.udp_prot'" \
    "$INGESTD" --config "$dir/unknown.ini" --check-config
printf '[db]\nstart_timeout_s = 0\n' >"$dir/range.ini"
it_expect_refusal "$dir/range.ini:2: db.start_timeout_s: 0 is out of range (allowed 1..600)" \
    "$INGESTD" --config "$dir/range.ini" --check-config
printf '[http]\nport = 1\nport = 2\n' >"$dir/twice.ini"
it_expect_refusal "twice.ini:3: http.port is already set on line 2" \
    "$INGESTD" --config "$dir/twice.ini" --check-config
printf 'garbage\n' >"$dir/syntax.ini"
it_expect_refusal "syntax.ini:1: syntax error" "$INGESTD" --config "$dir/syntax.ini" --check-config
it_expect_refusal "cannot read config file $dir/missing.ini: No such file or directory" \
    "$INGESTD" --config "$dir/missing.ini" --check-config

# A good file, then the command line overriding it.
printf '[http]\nport = 8181\nbind = 127.0.0.1\n[log]\nlevel = debug\n' >"$dir/good.ini"
out=$("$INGESTD" --config "$dir/good.ini" --check-config) || fail "good config refused"
[ "$out" = "ingestd: configuration OK" ] || fail "unexpected: $out"
"$INGESTD" --config "$dir/good.ini" --set http.port=9191 --data-dir /srv/x --print-config \
    >"$dir/printed.ini" || fail "--print-config failed"
grep -qx 'port = 9191' "$dir/printed.ini" || fail "--set did not override the file"
grep -qx 'level = debug' "$dir/printed.ini" || fail "file value missing"
grep -qx 'dir = /srv/x' "$dir/printed.ini" || fail "--data-dir missing"
# Defaults are printed too, with their docs.
grep -qx 'timeout_s = 30' "$dir/printed.ini" || fail "default missing"
grep -q '^; default 8080, allowed 1..65535$' "$dir/printed.ini" || fail "bounds missing"
# ... and the printout reads back unchanged.
"$INGESTD" --config "$dir/printed.ini" --print-config >"$dir/printed2.ini" || fail "reread failed"
cmp -s "$dir/printed.ini" "$dir/printed2.ini" || fail "--print-config does not round-trip"

"$INGESTD" --version | grep -q '^ingestd (Custos) ' || fail "--version"
"$INGESTD" --help | grep -q -- '--print-config' || fail "--help"
echo "ingestd_config: ok"

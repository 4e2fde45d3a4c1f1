# Shared helpers for the integration tests: throwaway data dirs under /tmp
# (traversable by the postgres account), free loopback ports, starting and
# stopping ingestd, and cleanup that runs however the test ends.
set -u

fail() {
    echo "FAIL: $*" >&2
    IT_FAILED=1
    exit 1
}
note() { echo "-- $*"; }

IT_PIDS=()
# The directories a test made: it_tmpdir runs in a command substitution
# (base=$(it_tmpdir)), a subshell, so they are listed in a file the cleanup
# reads, not in a variable.
IT_REGISTRY=$(mktemp /tmp/custos-it-registry-XXXXXX) || { echo "FAIL: mktemp" >&2; exit 1; }


it_cleanup() {
    local pid dir log rc=$?
    local IT_DIRS=()
    mapfile -t IT_DIRS <"$IT_REGISTRY"
    # A failure says what it was (fail); anything else that ends the test
    # early says its status and what the daemons logged last.
    if [ "$rc" -ne 0 ] && [ -z "${IT_FAILED:-}" ]; then
        echo "test ended with status $rc (no FAIL line: a signal or an unchecked error)" >&2
        for dir in "${IT_DIRS[@]}"; do
            for log in "$dir"/*.log; do
                [ -f "$log" ] || continue
                echo "--- last lines of $log" >&2
                tail -15 "$log" >&2
            done
        done
    fi
    for pid in "${IT_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
    for pid in "${IT_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    # A sanitizer report in any daemon's output fails the test.
    for dir in "${IT_DIRS[@]}"; do
        if grep -rl 'Sanitizer' "$dir" --include='*.log' --include='stderr*' 2>/dev/null; then
            grep -rh -A20 'Sanitizer' "$dir" --include='*.log' --include='stderr*' >&2
            echo "FAIL: sanitizer report in the output above" >&2
            rc=1
        fi
    done
    for dir in "${IT_DIRS[@]}"; do
        # A server left by a killed ingestd dies with it; wait for it.
        it_wait_no_postgres "$dir" 10 || pkill -KILL -f -- "-D $dir/pg/data" 2>/dev/null
        rm -rf "$dir"
    done
    rm -f "$IT_REGISTRY"
    exit "$rc"
}
trap it_cleanup EXIT

# The embedded cluster of the test's data dir ($data), as the database
# superuser: for tests that play an insider with full database access.
as_super() { psql -X -q -A -t -v ON_ERROR_STOP=1 "host=$data/pg user=postgres dbname=custos" "$@"; }

# A fresh data dir's parent, removed at exit.
it_tmpdir() {
    local d
    d=$(mktemp -d /tmp/custos-it-XXXXXX) || fail "mktemp"
    # (sticky and writable by all, like /tmp: ingestd runs as the service
    # account and writes its hooks' and shims' output here too)
    chmod 1777 "$d"
    echo "$d" >>"$IT_REGISTRY"
    echo "$d"
}

# Ports for the tests come from one sequence shared by every test running on
# the machine (a counter file under a lock), below the kernel's ephemeral
# range, so two tests running in parallel never pick the same port, and a
# port is skipped when something already uses it.
IT_PORT_LOCK=/tmp/custos-it-ports.lock
IT_PORT_NEXT=/tmp/custos-it-ports.next

# it_port_in_use PORT: a TCP listener, or a bound UDP socket, has it.
it_port_in_use() {
    local hex
    hex=$(printf '%04X' "$1")
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    awk 'NR > 1 {print $2}' /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null |
        grep -qi ":$hex\$"
}

# A loopback port (TCP and UDP) nothing uses, never handed to another test.
it_free_port() {
    local lock n p i
    exec {lock}>>"$IT_PORT_LOCK"
    flock "$lock"
    n=$(cat "$IT_PORT_NEXT" 2>/dev/null || echo $((RANDOM % 12000)))
    case "$n" in '' | *[!0-9]*) n=0 ;; esac
    for i in $(seq 1 500); do
        n=$(((n + 1) % 12000))
        p=$((20000 + n))
        it_port_in_use "$p" && continue
        echo "$n" >"$IT_PORT_NEXT"
        exec {lock}>&-
        echo "$p"
        return 0
    done
    exec {lock}>&-
    fail "no free port found"
}

# The same, for a UDP port.
it_free_udp_port() { it_free_port; }

# it_start_ingestd LOG ARGS... : start ingestd in the background; sets
# INGESTD_PID, INGEST_PORT (its SRTP/RTP port on 127.0.0.1, unless ARGS set
# ingest.udp_port), RTSP_PORT, RTSPS_PORT (unless ARGS set rtsp.port) and
# API_PORT (the HTTPS API on 127.0.0.1, unless ARGS set api.port).
# Does not wait for readiness.
it_start_ingestd() {
    local log=$1
    shift
    local extra=()
    case " $* " in
    *ingest.udp_port=*) ;;
    *)
        INGEST_PORT=$(it_free_udp_port)
        extra=(--set ingest.bind=127.0.0.1 --set "ingest.udp_port=$INGEST_PORT")
        ;;
    esac
    case " $* " in
    *rtsp.port=*) ;;
    *)
        RTSP_PORT=$(it_free_port)
        RTSPS_PORT=$(it_free_port)
        while [ "$RTSPS_PORT" = "$RTSP_PORT" ]; do RTSPS_PORT=$(it_free_port); done
        extra+=(--set rtsp.bind=127.0.0.1 --set "rtsp.port=$RTSP_PORT" --set "rtsps.port=$RTSPS_PORT")
        ;;
    esac
    case " $* " in
    *api.port=*) ;;
    *)
        API_PORT=$(it_free_port)
        extra+=(--set api.bind=127.0.0.1 --set "api.port=$API_PORT")
        ;;
    esac
    # (one GStreamer plugin registry for every test's ingestd, which loads
    # GStreamer at start for clips: made once, not once per data dir)
    GST_REGISTRY_1_0="/tmp/custos-test-gst-registry-ingestd-$(id -u).bin" \
        "$INGESTD" "$@" "${extra[@]}" >"$log" 2>&1 &
    INGESTD_PID=$!
    IT_PIDS+=("$INGESTD_PID")
}

# it_wait_healthy PORT PID LOG : until /healthz answers 200 (60 s).
it_wait_healthy() {
    local port=$1 pid=$2 log=$3 i
    for i in $(seq 1 600); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            fail "ingestd (pid $pid) exited before it became healthy"
        fi
        sleep 0.1
    done
    cat "$log" >&2
    fail "ingestd not healthy on port $port after 60 s"
}

# it_wait_exit PID SECONDS : wait for PID (a child of this shell) to exit;
# sets IT_STATUS to its exit status, or to "timeout".
it_wait_exit() {
    local pid=$1 secs=$2 i
    IT_STATUS=timeout
    for i in $(seq 1 $((secs * 20))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            IT_STATUS=$?
            return 0
        fi
        sleep 0.05
    done
}

# it_wait_no_postgres DATADIR SECONDS : true once no postgres runs on it.
it_wait_no_postgres() {
    local dir=$1 secs=$2 i
    for i in $(seq 1 $((secs * 10))); do
        pgrep -f -- "-D $dir/pg/data" >/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# it_expect_refusal EXPECTED_TEXT CMD... : CMD must exit non-zero, and of
# what it prints exactly one line is an error (the "ingestd: ..." line
# before logging starts, or the one log line at level error), containing
# EXPECTED_TEXT. Progress lines at level info may precede it.
it_expect_refusal() {
    local expected=$1 out rc errors lines
    shift
    out=$("$@" 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -ne 0 ] || fail "expected failure from: $* (exit 0)"
    case "$out" in *Sanitizer*) fail "sanitizer report from: $*:
$out" ;; esac
    errors=$(printf '%s\n' "$out" | grep -E '^[a-z]+: |\] error ')
    lines=$(printf '%s\n' "$errors" | grep -c .)
    [ "$lines" -eq 1 ] || fail "expected one error line from: $*; got $lines:
$out"
    case "$errors" in
    *"$expected"*) note "refused (exit $rc): $errors" ;;
    *) fail "expected '$expected' from: $*; got: $out" ;;
    esac
}

# it_hevc_sender DEVICE_JSON FRAMES LOG: an H.265 recorder sending FRAMES frames
# (640x360, 30 fps) over SRTP to ingest (INGEST_PORT), its parameter sets repeated
# before every keyframe (x265 repeat-headers), as a recorder one can join
# mid-stream does. DEVICE_JSON is what `ingestctl device add --json` printed.
it_hevc_sender() {
    local ssrc key
    ssrc=$(sed -n 's/.*"ssrc":"\{0,1\}\([0-9]*\).*/\1/p' <<<"$1")
    key=$(sed -n 's/.*"key_b64":"\([^"]*\)".*/\1/p' <<<"$1" | base64 -d | od -An -tx1 | tr -d ' \n')
    timeout $(($2 / 30 + 20)) gst-launch-1.0 -q videotestsrc num-buffers="$2" is-live=true \
        ! video/x-raw,width=640,height=360,framerate=30/1 \
        ! x265enc tune=zerolatency key-int-max=30 speed-preset=ultrafast bitrate=800 \
          option-string=repeat-headers=1 \
        ! rtph265pay pt=96 ssrc="$ssrc" config-interval=-1 mtu=1200 \
        ! "application/x-rtp,payload=96,ssrc=(uint)$ssrc" \
        ! srtpenc key="$key" rtp-cipher=aes-128-icm rtp-auth=hmac-sha1-80 \
          rtcp-cipher=aes-128-icm rtcp-auth=hmac-sha1-80 \
        ! udpsink host=127.0.0.1 port="$INGEST_PORT" >"$3" 2>&1
}

# Raw RTSP for the tests that speak it themselves (source after lib.sh; the
# server's plain port in RTSP_PORT). Needs `trap '' PIPE` in the test.

# rtsp_open: a connection on fd RT. rtsp_send TEXT. rtsp_read: the response
# head into RESP (lines without CR), its status into CODE; CODE=eof when the
# server closed the connection, timeout when it said nothing for 3 s.
rtsp_open() { exec {RT}<>"/dev/tcp/127.0.0.1/${1:-$RTSP_PORT}" || fail "connect"; }
rtsp_close() { { exec {RT}>&-; } 2>/dev/null || true; } # (a redirection of exec itself would stay)
# The server may close while we write (a request over a limit): the write
# then fails instead of SIGPIPE killing this shell (which ended the test
# silently, without its cleanup, in one suite run).
rtsp_send() { (trap '' PIPE; printf '%b' "$1" >&"$RT") 2>/dev/null || true; }
rtsp_read() {
    local line="" rc
    RESP=""
    CODE=""
    while :; do
        IFS= read -r -t 3 line <&"$RT"
        rc=$?
        if [ $rc -gt 128 ]; then
            CODE=${CODE:-timeout}
            return
        elif [ $rc -ne 0 ] && [ -z "$line" ]; then
            CODE=${CODE:-eof}
            return
        fi
        line=${line%$'\r'}
        [ -z "$line" ] && [ -n "$RESP" ] && return
        [ -z "$RESP" ] && CODE=$(awk '{print $2}' <<<"$line")
        RESP+="$line"$'\n'
    done
}
expect() { # CODE WHAT
    [ "$CODE" = "$1" ] || fail "$2: expected $1, got $CODE: $RESP"
}
nonce_of() { sed -n 's/.*nonce="\([^"]*\)".*/\1/p' <<<"$RESP" | head -1; }
# RFC 2069 digest, MD5 without qop (what GStreamer 1.22 sends):
# METHOD URI USER PASSWORD NONCE. The header line, CRLF escaped.
digest_md5() {
    local ha1 ha2 r
    ha1=$(printf '%s' "$3:custos:$4" | md5sum | cut -c1-32)
    ha2=$(printf '%s' "$1:$2" | md5sum | cut -c1-32)
    r=$(printf '%s' "$ha1:$5:$ha2" | md5sum | cut -c1-32)
    printf 'Authorization: Digest username="%s", realm="custos", nonce="%s", uri="%s", response="%s"\\r\\n' \
        "$3" "$5" "$2" "$r"
}
# RFC 7616 digest, SHA-256 with qop=auth: METHOD URI USER PASSWORD NONCE NC
# (the nonce count, 8 hex digits).
digest_sha256() {
    local ha1 ha2 r
    ha1=$(printf '%s' "$3:custos:$4" | sha256sum | cut -c1-64)
    ha2=$(printf '%s' "$1:$2" | sha256sum | cut -c1-64)
    r=$(printf '%s' "$ha1:$5:$6:c0ffee:auth:$ha2" | sha256sum | cut -c1-64)
    printf 'Authorization: Digest username="%s", realm="custos", nonce="%s", uri="%s", algorithm=SHA-256, qop=auth, nc=%s, cnonce="c0ffee", response="%s"\\r\\n' \
        "$3" "$5" "$2" "$6" "$r"
}
SDP='v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n'
SDP_LEN=$(printf '%b' "$SDP" | wc -c)
# announce_with AUTH-LINE SERIAL: an ANNOUNCE of SERIAL carrying AUTH-LINE on RT.
announce_with() {
    rtsp_send "ANNOUNCE rtsp://127.0.0.1:$RTSP_PORT/live/$2 RTSP/1.0\r\nCSeq: 2\r\n$1Content-Type: application/sdp\r\nContent-Length: $SDP_LEN\r\n\r\n$SDP"
    rtsp_read
}
# announce SERIAL PASSWORD [md5]: an authenticated ANNOUNCE on connection RT
# (SHA-256, or MD5 as GStreamer does it); sets NONCE and AUTH (the header sent).
announce() {
    local url="rtsp://127.0.0.1:$RTSP_PORT/live/$1"
    rtsp_send "ANNOUNCE $url RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: $SDP_LEN\r\n\r\n$SDP"
    rtsp_read
    expect 401 "ANNOUNCE without credentials"
    NONCE=$(nonce_of)
    if [ "${3:-}" = md5 ]; then
        AUTH=$(digest_md5 ANNOUNCE "$url" "$1" "$2" "$NONCE")
    else
        AUTH=$(digest_sha256 ANNOUNCE "$url" "$1" "$2" "$NONCE" 00000001)
    fi
    announce_with "$AUTH" "$1"
}
session_of() { sed -n 's/^Session: \([0-9a-f]*\).*/\1/p' <<<"$RESP"; }

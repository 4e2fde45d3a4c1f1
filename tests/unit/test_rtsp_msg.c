/* RTSP framing: requests, responses, interleaved frames, every refusal. */
#include "ingestd/rtsp_msg.h"
#include "tests/testlib.h"

static const rtsp_limits lim = {.max_header_bytes = 16384, .max_body_bytes = 65536};

static rtsp_kind parse(const char *s, rtsp_parsed *m)
{
    return rtsp_parse((const uint8_t *)s, strlen(s), &lim, m);
}

static bool str_is(rtsp_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static void test_request(void)
{
    static rtsp_parsed m;
    const char *req = "ANNOUNCE rtsp://h:8554/live/BWC-1 RTSP/1.0\r\n"
                      "CSeq: 2\r\n"
                      "Content-Type:application/sdp\r\n"
                      "Content-Length: 5 \r\n"
                      "\r\n"
                      "v=0\r\nOPTIONS";
    CHECK_EQ_INT(parse(req, &m), RTSP_REQUEST);
    CHECK(str_is(m.method, "ANNOUNCE"));
    CHECK(str_is(m.uri, "rtsp://h:8554/live/BWC-1"));
    CHECK_EQ_INT(m.nheaders, 3);
    const rtsp_str *cseq = rtsp_header_get(&m, "cseq");
    CHECK(cseq && str_is(*cseq, "2"));
    const rtsp_str *ct = rtsp_header_get(&m, "CONTENT-TYPE");
    CHECK(ct && str_is(*ct, "application/sdp"));
    CHECK_EQ_INT(m.body_len, 5);
    CHECK(m.body && memcmp(m.body, "v=0\r\n", 5) == 0);
    CHECK_EQ_INT(m.consumed, strlen(req) - strlen("OPTIONS"));
    CHECK(rtsp_header_get(&m, "Session") == NULL);

    /* Bare LF line ends and a leading keep-alive CRLF. */
    CHECK_EQ_INT(parse("\r\nOPTIONS * RTSP/1.0\nCSeq: 1\n\n", &m), RTSP_REQUEST);
    CHECK(str_is(m.uri, "*"));
    CHECK_EQ_INT(m.consumed, strlen("\r\nOPTIONS * RTSP/1.0\nCSeq: 1\n\n"));

    /* Every prefix of a whole message needs more. */
    const char *whole = "SETUP rtsp://h/live/x/streamid=0 RTSP/1.0\r\nCSeq: 3\r\n"
                        "Content-Length: 2\r\n\r\nab";
    for (size_t n = 0; n < strlen(whole); n++)
        CHECK_EQ_INT(rtsp_parse((const uint8_t *)whole, n, &lim, &m), RTSP_NEED_MORE);
    CHECK_EQ_INT(rtsp_parse((const uint8_t *)whole, strlen(whole), &lim, &m), RTSP_REQUEST);
}

static void test_response(void)
{
    static rtsp_parsed m;
    CHECK_EQ_INT(parse("RTSP/1.0 401 Unauthorized\r\nCSeq: 4\r\n"
                       "WWW-Authenticate: Digest realm=\"x\"\r\n\r\n",
                       &m),
                 RTSP_RESPONSE);
    CHECK_EQ_INT(m.code, 401);
    CHECK(str_is(m.reason, "Unauthorized"));
    CHECK_EQ_INT(parse("RTSP/1.0 200\r\n\r\n", &m), RTSP_RESPONSE);
    CHECK_EQ_INT(m.code, 200);
    CHECK_EQ_INT(m.reason.len, 0);
    CHECK_EQ_INT(parse("RTSP/1.0 2x0 OK\r\n\r\n", &m), RTSP_BAD);
    CHECK_EQ_INT(parse("RTSP/2.0 200 OK\r\n\r\n", &m), RTSP_BAD);
    CHECK_EQ_INT(m.status, 505);
}

static void test_frames(void)
{
    static rtsp_parsed m;
    uint8_t f[8] = {'$', 1, 0, 3, 0xaa, 0xbb, 0xcc, 'R'};
    for (size_t n = 0; n < 7; n++)
        CHECK_EQ_INT(rtsp_parse(f, n, &lim, &m), RTSP_NEED_MORE);
    CHECK_EQ_INT(rtsp_parse(f, sizeof(f), &lim, &m), RTSP_FRAME);
    CHECK_EQ_INT(m.channel, 1);
    CHECK_EQ_INT(m.frame_len, 3);
    CHECK(m.frame == f + 4);
    CHECK_EQ_INT(m.consumed, 7);
    uint8_t empty[4] = {'$', 0, 0, 0};
    CHECK_EQ_INT(rtsp_parse(empty, 4, &lim, &m), RTSP_FRAME);
    CHECK_EQ_INT(m.frame_len, 0);
}

static void expect_bad(const char *s, int status, const char *why)
{
    static rtsp_parsed m;
    rtsp_kind k = parse(s, &m);
    CHECK_EQ_INT(k, RTSP_BAD);
    if (k == RTSP_BAD) {
        CHECK_EQ_INT(m.status, status);
        CHECK_STR_CONTAINS(m.why, why);
    }
}

static void test_refusals(void)
{
    expect_bad("OPTIONS\r\n\r\n", 400, "malformed request line");
    expect_bad("OPTIONS *\r\n\r\n", 400, "malformed request line");
    expect_bad("OPT IONS * RTSP/1.0\r\n\r\n", 400, "malformed protocol version");
    expect_bad("OPTIONS * HTTP/1.1\r\n\r\n", 400, "malformed protocol version");
    expect_bad("OPTIONS * RTSP/2.0\r\n\r\n", 505, "version");
    expect_bad("OPT(ONS * RTSP/1.0\r\n\r\n", 400, "malformed method");
    expect_bad(" * RTSP/1.0\r\n\r\n", 400, "malformed method");
    expect_bad("OPTIONS  RTSP/1.0\r\n\r\n", 400, "empty request URI");
    expect_bad("OPTIONS rtsp://h/\x01 RTSP/1.0\r\n\r\n", 400, "malformed request URI");
    expect_bad("OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n", 400, "malformed header");
    expect_bad("OPTIONS * RTSP/1.0\r\n: 1\r\n\r\n", 400, "malformed header");
    expect_bad("OPTIONS * RTSP/1.0\r\nC Seq: 1\r\n\r\n", 400, "malformed header name");
    expect_bad("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n continued\r\n\r\n", 400, "continuation");
    expect_bad("OPTIONS * RTSP/1.0\r\nCSeq: 1\x02\r\n\r\n", 400, "control character");
    expect_bad("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\r\n\r\n", 400, "stray CR");
    expect_bad("OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length");
    expect_bad("OPTIONS * RTSP/1.0\r\nContent-Length: 1x\r\n\r\n", 400, "Content-Length");
    expect_bad("OPTIONS * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
               "conflicting");
    expect_bad("OPTIONS * RTSP/1.0\r\nContent-Length: 65537\r\n\r\n", 413, "too large");
    expect_bad("OPTIONS * RTSP/1.0\r\nContent-Length: 99999999999999999999\r\n\r\n", 400,
               "Content-Length");

    /* 65 headers */
    char many[4096];
    size_t used = (size_t)snprintf(many, sizeof(many), "OPTIONS * RTSP/1.0\r\n");
    for (int i = 0; i < 65; i++)
        used += (size_t)snprintf(many + used, sizeof(many) - used, "X-A: b\r\n");
    snprintf(many + used, sizeof(many) - used, "\r\n");
    expect_bad(many, 400, "too many headers");

    /* A header block that never ends within the cap. */
    static char big[20000];
    size_t n = (size_t)snprintf(big, sizeof(big), "OPTIONS * RTSP/1.0\r\nX-Pad: ");
    memset(big + n, 'a', sizeof(big) - n - 1);
    static rtsp_parsed m;
    CHECK_EQ_INT(rtsp_parse((const uint8_t *)big, 16383, &lim, &m), RTSP_NEED_MORE);
    CHECK_EQ_INT(rtsp_parse((const uint8_t *)big, 16384, &lim, &m), RTSP_BAD);
    CHECK_STR_CONTAINS(m.why, "header too large");
    /* A URI over the cap. */
    static char longuri[4000];
    n = (size_t)snprintf(longuri, sizeof(longuri), "OPTIONS rtsp://h/");
    memset(longuri + n, 'u', 2100);
    snprintf(longuri + n + 2100, sizeof(longuri) - n - 2100, " RTSP/1.0\r\n\r\n");
    expect_bad(longuri, 400, "URI too long");
}

static void test_helpers(void)
{
    uint64_t v = 0;
    CHECK(rtsp_str_uint((rtsp_str){"0042", 4}, &v) && v == 42);
    CHECK(!rtsp_str_uint((rtsp_str){"", 0}, &v));
    CHECK(!rtsp_str_uint((rtsp_str){"4 2", 3}, &v));
    CHECK(rtsp_str_ieq((rtsp_str){"Session", 7}, "sESSION"));
    CHECK(!rtsp_str_ieq((rtsp_str){"Sessio", 6}, "session"));
}

int main(void)
{
    test_request();
    test_response();
    test_frames();
    test_refusals();
    test_helpers();
    return test_finish("test_rtsp_msg");
}

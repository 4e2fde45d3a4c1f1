/* RTSP digest authentication: RFC 7616 vectors, parsing, nonces, refusals. */
#include "ingestd/rtsp.h"
#include "tests/testlib.h"

#include <arpa/inet.h>

static rtsp_str S(const char *s)
{
    return (rtsp_str){s, strlen(s)};
}

/* RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256. */
static void test_rfc7616_vectors(void)
{
    rtsp_digest d;
    const char *hdr = "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", "
                      "uri=\"/dir/index.html\", algorithm=MD5, "
                      "nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, "
                      "cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, "
                      "response=\"8ca523f5e9506fed4657c9700eebdbec\", "
                      "opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    char hex[65];
    rtsp_digest_response(RTSP_DIGEST_MD5, &d, "Circle of Life", "GET", hex);
    CHECK(strcmp(hex, "8ca523f5e9506fed4657c9700eebdbec") == 0);
    rtsp_digest_response(RTSP_DIGEST_SHA256, &d, "Circle of Life", "GET", hex);
    CHECK(strcmp(hex, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1") == 0);
    /* RFC 2617 §3.5 (qop=auth, MD5): Mufasa at testrealm@host.com. */
    const char *h2 = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", "
                     "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", "
                     "qop=auth, nc=00000001, cnonce=\"0a4f113b\", "
                     "response=\"6629fae49393a05397450978507c4ef1\"";
    REQUIRE(rtsp_digest_parse(S(h2), &d));
    rtsp_digest_response(RTSP_DIGEST_MD5, &d, "Circle Of Life", "GET", hex);
    CHECK(strcmp(hex, "6629fae49393a05397450978507c4ef1") == 0);
}

static void test_parse_refusals(void)
{
    rtsp_digest d;
    CHECK(!rtsp_digest_parse(S("Basic QWxhZGRpbjpvcGVu"), &d));
    CHECK(!rtsp_digest_parse(S("Digest"), &d));
    CHECK(!rtsp_digest_parse(S("Digest username=\"a\""), &d)); /* directives missing */
    const char *ok = "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"";
    CHECK(rtsp_digest_parse(S(ok), &d));
    CHECK(!rtsp_digest_parse(S("Digest username=\"a\", username=\"b\", realm=\"r\", nonce=\"n\", "
                               "uri=\"u\", response=\"x\""),
                             &d));
    CHECK(!rtsp_digest_parse(S("Digest username=\"a\\\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", "
                               "response=\"x\""),
                             &d));
    CHECK(!rtsp_digest_parse(S("Digest username=\"a, realm=\"r\""), &d));
    CHECK(!rtsp_digest_parse(S("Digest username=, realm=\"r\""), &d));
    CHECK(!rtsp_digest_parse(S("Digest username=\"a\" realm=\"r\""), &d));
}

/* A client's header for @p method on @p uri with @p nonce, as GStreamer
 * (no qop) or a modern client (qop=auth, SHA-256) would build it. */
static void client_header(char *out, size_t cap, const char *nonce, const char *uri,
                          const char *method, const char *password, bool modern)
{
    char draft[600], hex[65];
    rtsp_digest d;
    if (modern)
        snprintf(draft, sizeof(draft),
                 "Digest username=\"BWC-1\", realm=\"custos\", nonce=\"%s\", uri=\"%s\", "
                 "algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"abcdef\", response=\"x\"",
                 nonce, uri);
    else
        snprintf(draft, sizeof(draft),
                 "Digest username=\"BWC-1\", realm=\"custos\", nonce=\"%s\", uri=\"%s\", "
                 "response=\"x\"",
                 nonce, uri);
    REQUIRE(rtsp_digest_parse(S(draft), &d));
    rtsp_digest_response(modern ? RTSP_DIGEST_SHA256 : RTSP_DIGEST_MD5, &d, password, method, hex);
    char *r = strstr(draft, "response=\"x\"");
    snprintf(r, sizeof(draft) - (size_t)(r - draft), "response=\"%s\"", hex);
    snprintf(out, cap, "%s", draft);
}

static void test_check(void)
{
    rtsp_nonces n, other;
    REQUIRE(rtsp_nonces_init(&n) && rtsp_nonces_init(&other));
    struct sockaddr_in peer = {.sin_family = AF_INET}, elsewhere = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.0.2.7", &peer.sin_addr);
    inet_pton(AF_INET, "192.0.2.8", &elsewhere.sin_addr);
    uint8_t salt[RTSP_CONN_SALT_LEN] = {1, 2, 3}, salt2[RTSP_CONN_SALT_LEN] = {1, 2, 4};
    rtsp_auth_binding b = {.peer = (const struct sockaddr *)&peer, .salt = salt, .allow_md5 = true};
    rtsp_auth_binding away = b, other_conn = b, no_md5 = b;
    away.peer = (const struct sockaddr *)&elsewhere;
    other_conn.salt = salt2;
    no_md5.allow_md5 = false;
    int64_t now = 1800000000;
    char nonce[48], hdr[700];
    rtsp_nonce_make(&n, &b, now, nonce);
    CHECK_EQ_INT(strlen(nonce), 32);
    const char *base = "rtsp://h:8554/live/BWC-1";
    rtsp_digest d;

    for (int modern = 0; modern < 2; modern++) {
        client_header(hdr, sizeof(hdr), nonce, base, "ANNOUNCE", "pw-right", modern);
        REQUIRE(rtsp_digest_parse(S(hdr), &d));
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now + 10, &d, S("ANNOUNCE"), S(base), "pw-right"),
                     RTSP_AUTH_OK);
        /* GStreamer signs the presentation URL for a track's SETUP too. */
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("ANNOUNCE"),
                                     S("rtsp://h:8554/live/BWC-1/"
                                       "streamid=0"),
                                     "pw-right"),
                     RTSP_AUTH_OK);
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("ANNOUNCE"), S("rtsp://h:8554/live/BWC-10"),
                                     "pw-right"),
                     RTSP_AUTH_BAD);
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("ANNOUNCE"), S(base), "pw-wrong"),
                     RTSP_AUTH_BAD);
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("RECORD"), S(base), "pw-right"),
                     RTSP_AUTH_BAD);
        CHECK_EQ_INT(rtsp_auth_check(&n, &away, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                     RTSP_AUTH_BAD);
        /* Captured on one connection, replayed on another: refused. */
        CHECK_EQ_INT(rtsp_auth_check(&n, &other_conn, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                     RTSP_AUTH_BAD);
        CHECK_EQ_INT(rtsp_auth_check(&other, &b, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                     RTSP_AUTH_BAD);
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now + RTSP_NONCE_LIFETIME + 1, &d, S("ANNOUNCE"),
                                     S(base), "pw-right"),
                     RTSP_AUTH_STALE);
        CHECK_EQ_INT(rtsp_auth_check(&n, &b, now + RTSP_NONCE_LIFETIME + 1, &d, S("ANNOUNCE"),
                                     S(base), "pw-wrong"),
                     RTSP_AUTH_BAD);
        /* MD5 only where it is allowed; SHA-256 always. */
        CHECK_EQ_INT(rtsp_auth_check(&n, &no_md5, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                     modern ? RTSP_AUTH_OK : RTSP_AUTH_BAD);
    }

    /* qop=auth: one nonce's count must grow on the connection; a new nonce starts again. */
    rtsp_nc_seen seen = {0};
    rtsp_auth_binding counted = b;
    counted.seen = &seen;
    client_header(hdr, sizeof(hdr), nonce, base, "ANNOUNCE", "pw-right", true);
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    CHECK_EQ_INT(rtsp_auth_check(&n, &counted, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                 RTSP_AUTH_OK);
    CHECK_EQ_INT(seen.nc, 1);
    CHECK_EQ_INT(rtsp_auth_check(&n, &counted, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                 RTSP_AUTH_BAD);
    char *nc = strstr(hdr, "nc=00000001");
    REQUIRE(nc);
    memcpy(nc, "nc=00000002", 11);
    REQUIRE(rtsp_digest_parse(S(hdr), &d)); /* the response no longer matches the count */
    CHECK_EQ_INT(rtsp_auth_check(&n, &counted, now, &d, S("ANNOUNCE"), S(base), "pw-right"),
                 RTSP_AUTH_BAD);
    char later[48];
    rtsp_nonce_make(&n, &b, now + 30, later);
    client_header(hdr, sizeof(hdr), later, base, "ANNOUNCE", "pw-right", true);
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    CHECK_EQ_INT(rtsp_auth_check(&n, &counted, now + 30, &d, S("ANNOUNCE"), S(base), "pw-right"),
                 RTSP_AUTH_OK);
    d.nc = S("0000000x");
    CHECK_EQ_INT(rtsp_auth_check(&n, &counted, now + 30, &d, S("ANNOUNCE"), S(base), "pw-right"),
                 RTSP_AUTH_MALFORMED);

    /* A nonce not of ours, a realm not ours, an algorithm we do not do. */
    client_header(hdr, sizeof(hdr), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", base, "OPTIONS", "pw",
                  true);
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("OPTIONS"), S(base), "pw"), RTSP_AUTH_BAD);
    client_header(hdr, sizeof(hdr), nonce, base, "OPTIONS", "pw", true);
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    d.realm = S("elsewhere");
    CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("OPTIONS"), S(base), "pw"), RTSP_AUTH_BAD);
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    d.algorithm = S("SHA-512-256");
    CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("OPTIONS"), S(base), "pw"),
                 RTSP_AUTH_MALFORMED);
    REQUIRE(rtsp_digest_parse(S(hdr), &d));
    d.cnonce = (rtsp_str){NULL, 0};
    CHECK_EQ_INT(rtsp_auth_check(&n, &b, now, &d, S("OPTIONS"), S(base), "pw"),
                 RTSP_AUTH_MALFORMED);

    char ch[600];
    size_t len = rtsp_auth_challenge(&n, &b, now, true, ch, sizeof(ch));
    CHECK(len > 0 && strlen(ch) == len);
    CHECK_STR_CONTAINS(ch, "algorithm=SHA-256");
    CHECK_STR_CONTAINS(ch, "algorithm=MD5");
    CHECK_STR_CONTAINS(ch, "stale=true");
    CHECK(strstr(ch, "SHA-256") < strstr(ch, "MD5"));
    CHECK_EQ_INT(rtsp_auth_challenge(&n, &b, now, false, ch, 40), 0);
    len = rtsp_auth_challenge(&n, &no_md5, now, false, ch, sizeof(ch));
    CHECK(len > 0 && strlen(ch) == len);
    CHECK_STR_CONTAINS(ch, "algorithm=SHA-256");
    CHECK(!strstr(ch, "MD5"));
}

/* What a camera's 401 offers, as the pull client reads it. */
static void test_challenge(void)
{
    rtsp_digest d;
    CHECK(rtsp_digest_parse_challenge(
        S("Digest realm=\"cam\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth,auth-int\", "
          "opaque=\"o2\", stale=true"),
        &d));
    CHECK(d.realm.len == 3 && memcmp(d.realm.p, "cam", 3) == 0);
    CHECK(d.nonce.len == 2 && memcmp(d.nonce.p, "n1", 2) == 0);
    CHECK(d.opaque.len == 2 && memcmp(d.opaque.p, "o2", 2) == 0);
    CHECK(d.qop.len == 13 && rtsp_str_ieq(d.algorithm, "SHA-256"));
    CHECK(rtsp_str_ieq(d.stale, "true"));
    CHECK(!d.username.p && !d.response.p);
    /* gst-rtsp-server's form: MD5 implied, no qop. */
    CHECK(
        rtsp_digest_parse_challenge(S("Digest realm=\"GStreamer RTSP Server\", nonce=\"x\""), &d));
    CHECK(!d.algorithm.p && !d.qop.p);
    CHECK(!rtsp_digest_parse_challenge(S("Digest nonce=\"x\""), &d)); /* no realm */
    CHECK(!rtsp_digest_parse_challenge(S("Digest realm=\"r\""), &d)); /* no nonce */
    CHECK(!rtsp_digest_parse_challenge(S("Basic realm=\"r\""), &d));
    CHECK(!rtsp_digest_parse_challenge(S("Digest realm=\"r\", realm=\"s\", nonce=n"), &d));
    /* An answer computed from a challenge checks out the way a server checks it. */
    CHECK(rtsp_digest_parse_challenge(S("Digest realm=\"testrealm@host.com\", "
                                        "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\""),
                                      &d));
    d.username = S("Mufasa");
    d.uri = S("/dir/index.html");
    char hex[65];
    rtsp_digest_response(RTSP_DIGEST_MD5, &d, "Circle Of Life", "GET", hex);
    CHECK(strcmp(hex, "670fd8c2df070c60b045671b8b24ff02") == 0); /* RFC 2069 */
}

int main(void)
{
    test_rfc7616_vectors();
    test_parse_refusals();
    test_check();
    test_challenge();
    return test_finish("test_rtsp_auth");
}

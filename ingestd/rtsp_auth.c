/*
 * HTTP Digest for RTSP (RFC 7616, and the RFC 2069 form without qop that
 * GStreamer and older devices send). Nonces are stateless:
 * base64url(time ‖ HMAC-SHA256(secret, time ‖ client address ‖ connection
 * salt)[0..16]): bound to one connection, so a captured header cannot be
 * replayed on another; a restart simply makes clients authenticate again.
 */
#include "rtsp.h"

#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#define NONCE_RAW   24 /* 8 bytes of time, 16 of MAC */
#define NONCE_CHARS 32 /* base64url of 24 bytes, no padding */

/* --------------------------------------------------------------- parsing */

static bool is_token_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static rtsp_str *directive(rtsp_digest *d, rtsp_str name)
{
    static const char *const names[] = {"username", "realm",     "nonce", "uri",
                                        "response", "algorithm", "qop",   "nc",
                                        "cnonce",   "opaque",    "stale"};
    rtsp_str *slots[] = {&d->username, &d->realm,     &d->nonce, &d->uri,
                         &d->response, &d->algorithm, &d->qop,   &d->nc,
                         &d->cnonce,   &d->opaque,    &d->stale};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (rtsp_str_ieq(name, names[i]))
            return slots[i];
    return NULL; /* userhash, domain and others: ignored */
}

/* The directives of a Digest header value, each at most once. */
static bool parse_directives(rtsp_str value, rtsp_digest *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = value.p, *end = value.p + value.len;
    if (value.len < 7 || !rtsp_str_ieq((rtsp_str){p, 6}, "Digest") || (p[6] != ' ' && p[6] != '\t'))
        return false;
    p += 7;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p == end)
            break;
        const char *name = p;
        while (p < end && is_token_char(*p))
            p++;
        rtsp_str n = {name, (size_t)(p - name)};
        if (!n.len || p == end || *p != '=')
            return false;
        p++;
        rtsp_str v;
        if (p < end && *p == '"') {
            const char *start = ++p;
            while (p < end && *p != '"') {
                if (*p == '\\' || (unsigned char)*p < 0x20)
                    return false; /* no escapes: nothing we issue or check needs them */
                p++;
            }
            if (p == end)
                return false;
            v = (rtsp_str){start, (size_t)(p - start)};
            p++;
        } else {
            const char *start = p;
            while (p < end && is_token_char(*p))
                p++;
            v = (rtsp_str){start, (size_t)(p - start)};
            if (!v.len)
                return false;
        }
        rtsp_str *slot = directive(out, n);
        if (slot) {
            if (slot->p)
                return false; /* a directive twice */
            *slot = v;
        }
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end && *p != ',')
            return false;
    }
    return true;
}

bool rtsp_digest_parse(rtsp_str value, rtsp_digest *out)
{
    return parse_directives(value, out) && out->username.p && out->realm.p && out->nonce.p &&
           out->uri.p && out->response.p;
}

bool rtsp_digest_parse_challenge(rtsp_str value, rtsp_digest *out)
{
    return parse_directives(value, out) && out->realm.p && out->nonce.p;
}

/* ------------------------------------------------------------- responses */

static void hash_hex(rtsp_digest_alg alg, const char *const *parts, const size_t *lens, int n,
                     char hex[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t out[32];
    unsigned int out_len = 0;
    hex[0] = '\0';
    if (!md)
        return;
    EVP_DigestInit_ex(md, alg == RTSP_DIGEST_SHA256 ? EVP_sha256() : EVP_md5(), NULL);
    for (int i = 0; i < n; i++) {
        if (i)
            EVP_DigestUpdate(md, ":", 1);
        EVP_DigestUpdate(md, parts[i], lens[i]);
    }
    EVP_DigestFinal_ex(md, out, &out_len);
    EVP_MD_CTX_free(md);
    cu_hex_encode(out, out_len, hex);
}

void rtsp_digest_response(rtsp_digest_alg alg, const rtsp_digest *d, const char *password,
                          const char *method, char hex[65])
{
    char ha1[65], ha2[65];
    const char *p1[] = {d->username.p, d->realm.p, password};
    size_t l1[] = {d->username.len, d->realm.len, strlen(password)};
    hash_hex(alg, p1, l1, 3, ha1);
    const char *p2[] = {method, d->uri.p};
    size_t l2[] = {strlen(method), d->uri.len};
    hash_hex(alg, p2, l2, 2, ha2);
    if (d->qop.p) {
        const char *p3[] = {ha1, d->nonce.p, d->nc.p, d->cnonce.p, d->qop.p, ha2};
        size_t l3[] = {strlen(ha1),   d->nonce.len, d->nc.len,
                       d->cnonce.len, d->qop.len,   strlen(ha2)};
        hash_hex(alg, p3, l3, 6, hex);
    } else {
        const char *p3[] = {ha1, d->nonce.p, ha2};
        size_t l3[] = {strlen(ha1), d->nonce.len, strlen(ha2)};
        hash_hex(alg, p3, l3, 3, hex);
    }
    OPENSSL_cleanse(ha1, sizeof(ha1));
}

/* ---------------------------------------------------------------- nonces */

bool rtsp_nonces_init(rtsp_nonces *n)
{
    return RAND_bytes(n->secret, sizeof(n->secret)) == 1;
}

static void nonce_mac(const rtsp_nonces *n, const rtsp_auth_binding *b, const uint8_t time8[8],
                      uint8_t mac[16])
{
    uint8_t input[8 + 16 + RTSP_CONN_SALT_LEN], full[32];
    size_t len = 8;
    unsigned int full_len = 0;
    const struct sockaddr *peer = b->peer;
    memcpy(input, time8, 8);
    if (peer && peer->sa_family == AF_INET) {
        memcpy(input + len, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        len += 4;
    } else if (peer && peer->sa_family == AF_INET6) {
        memcpy(input + len, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
        len += 16;
    }
    if (b->salt) {
        memcpy(input + len, b->salt, RTSP_CONN_SALT_LEN);
        len += RTSP_CONN_SALT_LEN;
    }
    HMAC(EVP_sha256(), n->secret, sizeof(n->secret), input, len, full, &full_len);
    memcpy(mac, full, 16);
}

static void b64url(const uint8_t *in, size_t n, char *out)
{
    char tmp[64];
    int len = EVP_EncodeBlock((unsigned char *)tmp, in, (int)n);
    int o = 0;
    for (int i = 0; i < len && tmp[i] != '='; i++)
        out[o++] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : tmp[i];
    out[o] = '\0';
}

void rtsp_nonce_make(const rtsp_nonces *n, const rtsp_auth_binding *b, int64_t now_s, char *out)
{
    uint8_t raw[NONCE_RAW];
    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)((uint64_t)now_s >> (56 - 8 * i));
    nonce_mac(n, b, raw, raw + 8);
    b64url(raw, sizeof(raw), out);
}

/* Our nonce's time, or -1 when @p s is not a nonce this server made for @p b. */
static int64_t nonce_time(const rtsp_nonces *n, const rtsp_auth_binding *b, rtsp_str s)
{
    char std[NONCE_CHARS + 1];
    uint8_t raw[NONCE_RAW + 2], mac[16];
    if (s.len != NONCE_CHARS)
        return -1;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_'))
            return -1;
        std[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    std[NONCE_CHARS] = '\0';
    if (EVP_DecodeBlock(raw, (const unsigned char *)std, NONCE_CHARS) != NONCE_RAW)
        return -1;
    nonce_mac(n, b, raw, mac);
    if (CRYPTO_memcmp(mac, raw + 8, 16) != 0)
        return -1;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t << 8 | raw[i];
    return (int64_t)t;
}

/* The request URI, or one the digest names that the request URI lies under
 * (GStreamer's client signs the presentation URL for every request). */
static bool uri_matches(rtsp_str digest_uri, rtsp_str request_uri)
{
    if (digest_uri.len == request_uri.len)
        return memcmp(digest_uri.p, request_uri.p, digest_uri.len) == 0;
    if (digest_uri.len == 0 || digest_uri.len > request_uri.len ||
        memcmp(digest_uri.p, request_uri.p, digest_uri.len) != 0)
        return false;
    return digest_uri.p[digest_uri.len - 1] == '/' || request_uri.p[digest_uri.len] == '/';
}

/* The 8 hex digits of a nonce count; false when they are not. */
static bool nc_value(rtsp_str nc, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < nc.len; i++) {
        char c = nc.p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

rtsp_auth_result rtsp_auth_check(const rtsp_nonces *n, const rtsp_auth_binding *b, int64_t now_s,
                                 const rtsp_digest *d, rtsp_str method, rtsp_str uri,
                                 const char *password)
{
    rtsp_digest_alg alg;
    if (!d->algorithm.p || rtsp_str_ieq(d->algorithm, "MD5"))
        alg = RTSP_DIGEST_MD5;
    else if (rtsp_str_ieq(d->algorithm, "SHA-256"))
        alg = RTSP_DIGEST_SHA256;
    else
        return RTSP_AUTH_MALFORMED;
    if (d->qop.p ? !rtsp_str_ieq(d->qop, "auth") || !d->nc.p || !d->cnonce.p || d->nc.len != 8
                 : d->nc.p || d->cnonce.p)
        return RTSP_AUTH_MALFORMED;
    size_t want = alg == RTSP_DIGEST_SHA256 ? 64 : 32;
    if (d->response.len != want || method.len > RTSP_MAX_METHOD)
        return RTSP_AUTH_MALFORMED;
    if (!rtsp_str_ieq(d->realm, RTSP_REALM) || !uri_matches(d->uri, uri))
        return RTSP_AUTH_BAD;
    if (alg == RTSP_DIGEST_MD5 && !b->allow_md5)
        return RTSP_AUTH_BAD; /* MD5 is off (rtsp.allow_md5): its hashes are cheap to crack */
    int64_t t = nonce_time(n, b, d->nonce);
    if (t < 0)
        return RTSP_AUTH_BAD;
    uint32_t nc = 0;
    if (d->qop.p && !nc_value(d->nc, &nc))
        return RTSP_AUTH_MALFORMED;
    if (d->qop.p && b->seen && b->seen->nonce_time == t && nc <= b->seen->nc)
        return RTSP_AUTH_BAD; /* a count that does not grow on one nonce: a replay */

    char m[RTSP_MAX_METHOD + 1], expect[65], given[65];
    memcpy(m, method.p, method.len);
    m[method.len] = '\0';
    rtsp_digest_response(alg, d, password, m, expect);
    for (size_t i = 0; i < want; i++) {
        char c = d->response.p[i];
        given[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
    }
    bool ok = CRYPTO_memcmp(expect, given, want) == 0;
    OPENSSL_cleanse(expect, sizeof(expect));
    if (!ok)
        return RTSP_AUTH_BAD;
    /* Right password on an old nonce: the client is told to retry, not refused. */
    if (now_s - t > RTSP_NONCE_LIFETIME || t - now_s > 5)
        return RTSP_AUTH_STALE;
    if (d->qop.p && b->seen) {
        b->seen->nonce_time = t;
        b->seen->nc = nc;
    }
    return RTSP_AUTH_OK;
}

size_t rtsp_auth_challenge(const rtsp_nonces *n, const rtsp_auth_binding *b, int64_t now_s,
                           bool stale, char *out, size_t cap)
{
    char nonce[48];
    rtsp_nonce_make(n, b, now_s, nonce);
    const char *st = stale ? ", stale=true" : "";
    int len = snprintf(out, cap,
                       "WWW-Authenticate: Digest realm=\"" RTSP_REALM "\", nonce=\"%s\", "
                       "algorithm=SHA-256, qop=\"auth\"%s\r\n",
                       nonce, st);
    if (len > 0 && b->allow_md5 && (size_t)len < cap)
        len += snprintf(out + len, cap - (size_t)len,
                        "WWW-Authenticate: Digest realm=\"" RTSP_REALM "\", nonce=\"%s\", "
                        "algorithm=MD5, qop=\"auth\"%s\r\n",
                        nonce, st);
    return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

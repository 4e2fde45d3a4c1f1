/*
 * RTSP/1.0 framing: see rtsp_msg.h. Lines may end in CRLF or a bare LF (as
 * lenient servers accept); header continuation lines (obs-fold) are refused.
 */
#include "rtsp_msg.h"

#include <string.h>

static bool is_tchar(uint8_t c)
{
    /* RFC 7230 token characters */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_value_char(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

bool rtsp_str_ieq(rtsp_str s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = (uint8_t)s.p[i], b = (uint8_t)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

bool rtsp_str_uint(rtsp_str s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.len == 0 || s.len > 18)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    *out = v;
    return true;
}

const rtsp_str *rtsp_header_get(const rtsp_parsed *m, const char *name)
{
    for (int i = 0; i < m->nheaders; i++)
        if (rtsp_str_ieq(m->headers[i].name, name))
            return &m->headers[i].value;
    return NULL;
}

static rtsp_kind bad(rtsp_parsed *out, int status, const char *why)
{
    out->kind = RTSP_BAD;
    out->status = status;
    out->why = why;
    return RTSP_BAD;
}

static bool is_version(const char *p, size_t len)
{
    return len == 8 && memcmp(p, "RTSP/1.0", 8) == 0;
}

static rtsp_kind start_line(const char *p, size_t len, rtsp_parsed *out)
{
    if (len >= 5 && memcmp(p, "RTSP/", 5) == 0) {
        /* A response: RTSP/1.0 SP 3DIGIT [SP reason] */
        if (len < 12 || !is_version(p, 8) || p[8] != ' ')
            return len >= 8 && !is_version(p, 8) && memchr(p, ' ', len)
                       ? bad(out, 505, "RTSP version not supported")
                       : bad(out, 400, "malformed status line");
        for (int i = 9; i < 12; i++)
            if (p[i] < '0' || p[i] > '9')
                return bad(out, 400, "malformed status code");
        if (len > 12 && p[12] != ' ')
            return bad(out, 400, "malformed status line");
        out->code = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        if (out->code < 100)
            return bad(out, 400, "malformed status code");
        out->reason = len > 13 ? (rtsp_str){p + 13, len - 13} : (rtsp_str){p + len, 0};
        return RTSP_RESPONSE;
    }
    /* A request: METHOD SP URI SP RTSP/1.0 */
    const char *sp1 = memchr(p, ' ', len);
    if (!sp1)
        return bad(out, 400, "malformed request line");
    size_t mlen = (size_t)(sp1 - p);
    if (mlen == 0 || mlen > RTSP_MAX_METHOD)
        return bad(out, 400, "malformed method");
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((uint8_t)p[i]))
            return bad(out, 400, "malformed method");
    const char *uri = sp1 + 1;
    const char *sp2 = memchr(uri, ' ', len - mlen - 1);
    if (!sp2)
        return bad(out, 400, "malformed request line");
    size_t ulen = (size_t)(sp2 - uri);
    if (ulen == 0 || ulen > RTSP_MAX_URI)
        return bad(out, 400, ulen ? "request URI too long" : "empty request URI");
    for (size_t i = 0; i < ulen; i++)
        if ((uint8_t)uri[i] <= 0x20 || (uint8_t)uri[i] >= 0x7f)
            return bad(out, 400, "malformed request URI");
    const char *ver = sp2 + 1;
    size_t vlen = len - (size_t)(ver - p);
    if (!is_version(ver, vlen))
        return vlen > 5 && memcmp(ver, "RTSP/", 5) == 0
                   ? bad(out, 505, "RTSP version not supported")
                   : bad(out, 400, "malformed protocol version");
    out->method = (rtsp_str){p, mlen};
    out->uri = (rtsp_str){uri, ulen};
    return RTSP_REQUEST;
}

static rtsp_kind header_line(const char *p, size_t len, rtsp_parsed *out)
{
    if (p[0] == ' ' || p[0] == '\t')
        return bad(out, 400, "header continuation lines are not accepted");
    const char *colon = memchr(p, ':', len);
    if (!colon || colon == p)
        return bad(out, 400, "malformed header");
    size_t nlen = (size_t)(colon - p);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((uint8_t)p[i]))
            return bad(out, 400, "malformed header name");
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *c = v; c < end; c++)
        if (!is_value_char((uint8_t)*c))
            return bad(out, 400, "control character in a header");
    if (out->nheaders == RTSP_MAX_HEADERS)
        return bad(out, 400, "too many headers");
    out->headers[out->nheaders++] = (rtsp_header){{p, nlen}, {v, (size_t)(end - v)}};
    return RTSP_REQUEST; /* "fine so far" */
}

static rtsp_kind frame(const uint8_t *buf, size_t len, rtsp_parsed *out)
{
    if (len < 4)
        return RTSP_NEED_MORE;
    size_t flen = (size_t)buf[2] << 8 | buf[3];
    if (len < 4 + flen)
        return RTSP_NEED_MORE;
    out->kind = RTSP_FRAME;
    out->channel = buf[1];
    out->frame = buf + 4;
    out->frame_len = flen;
    out->consumed = 4 + flen;
    return RTSP_FRAME;
}

rtsp_kind rtsp_parse(const uint8_t *buf, size_t len, const rtsp_limits *lim, rtsp_parsed *out)
{
    out->kind = RTSP_NEED_MORE;
    out->nheaders = 0;
    out->body = NULL;
    out->body_len = 0;
    out->consumed = 0;
    if (len == 0)
        return RTSP_NEED_MORE;
    if (buf[0] == '$')
        return frame(buf, len, out);

    const char *s = (const char *)buf;
    size_t limit = len < lim->max_header_bytes ? len : lim->max_header_bytes;
    size_t pos = 0;
    /* Empty lines before a message (a keep-alive CRLF) are skipped. */
    while (pos < limit && (s[pos] == '\r' || s[pos] == '\n'))
        pos++;
    rtsp_kind kind = RTSP_NEED_MORE;
    for (;;) {
        const char *nl = memchr(s + pos, '\n', limit - pos);
        if (!nl) {
            if (len >= lim->max_header_bytes)
                return bad(out, 400, "request header too large");
            return RTSP_NEED_MORE;
        }
        size_t line_len = (size_t)(nl - (s + pos));
        if (line_len > 0 && s[pos + line_len - 1] == '\r')
            line_len--;
        const char *line = s + pos;
        pos = (size_t)(nl - s) + 1;
        if (memchr(line, '\r', line_len) || memchr(line, '\0', line_len))
            return bad(out, 400, "stray CR or NUL in a line");
        if (kind == RTSP_NEED_MORE) {
            kind = start_line(line, line_len, out);
            if (kind == RTSP_BAD)
                return kind;
            continue;
        }
        if (line_len == 0)
            break; /* end of the header block */
        if (header_line(line, line_len, out) == RTSP_BAD)
            return RTSP_BAD;
    }

    uint64_t body_len = 0;
    bool have_length = false;
    for (int i = 0; i < out->nheaders; i++) {
        if (!rtsp_str_ieq(out->headers[i].name, "Content-Length"))
            continue;
        uint64_t v;
        if (!rtsp_str_uint(out->headers[i].value, &v))
            return bad(out, 400, "malformed Content-Length");
        if (have_length && v != body_len)
            return bad(out, 400, "conflicting Content-Length headers");
        body_len = v;
        have_length = true;
    }
    if (body_len > lim->max_body_bytes)
        return bad(out, 413, "message body too large");
    if (len - pos < body_len)
        return RTSP_NEED_MORE;
    out->body = buf + pos;
    out->body_len = (size_t)body_len;
    out->consumed = pos + (size_t)body_len;
    out->kind = kind;
    return kind;
}

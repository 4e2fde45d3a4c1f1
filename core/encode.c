/* Hex, base64, UTF-8 checks and times as text: the one copy every module uses. */
#include "core.h"

#include <string.h>
#include <time.h>

void cu_hex_encode(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool cu_hex_decode(const char *hex, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hi < 0 ? -1 : hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[2 * len] == '\0' || hex_value(hex[2 * len]) < 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void cu_base64_encode(const void *data, size_t len, char *out)
{
    const uint8_t *p = data;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

bool cu_base64_decode(const char *text, size_t text_len, uint8_t *out, size_t cap, size_t *len)
{
    size_t n = 0;
    if (text_len % 4)
        return false;
    for (size_t i = 0; i < text_len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = text[i + j];
            const char *at = c ? strchr(b64, c) : NULL;
            if (c == '=' && i + 4 == text_len && j >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (!at || pad)
                return false;
            v = v << 6 | (uint32_t)(at - b64);
        }
        size_t bytes = 3 - (size_t)pad;
        if (n + bytes > cap)
            return false;
        out[n++] = (uint8_t)(v >> 16);
        if (bytes > 1)
            out[n++] = (uint8_t)(v >> 8);
        if (bytes > 2)
            out[n++] = (uint8_t)v;
    }
    *len = n;
    return true;
}

void cu_put_le16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void cu_put_le32(uint8_t *p, uint32_t v)
{
    cu_put_le16(p, v & 0xffff);
    cu_put_le16(p + 2, v >> 16);
}

void cu_put_le64(uint8_t *p, uint64_t v)
{
    cu_put_le32(p, (uint32_t)v);
    cu_put_le32(p + 4, (uint32_t)(v >> 32));
}

size_t cu_utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

bool cu_utf8_valid(const char *s)
{
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        uint8_t c = *p;
        int more;
        uint32_t cp, min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (int i = 1; i <= more; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += more + 1;
    }
    return true;
}

void cu_time_format_ms(int64_t ms, char out[CU_TIME_TEXT_LEN])
{
    int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(out, CU_TIME_TEXT_LEN, "0000-00-00T00:00:00.000Z");
        return;
    }
    snprintf(out, CU_TIME_TEXT_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms - sec * 1000));
}

/* @p n digits at @p s as a number, or -1. */
static int digits_at(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

bool cu_time_parse_us(const char *s, int64_t *out)
{
    /* YYYY-MM-DDTHH:MM:SS */
    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return false;
    int year = digits_at(s, 4), month = digits_at(s + 5, 2), day = digits_at(s + 8, 2);
    int hour = digits_at(s + 11, 2), min = digits_at(s + 14, 2), sec = digits_at(s + 17, 2);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > mdays[month - 1] || hour > 23 ||
        min > 59 || sec > 59 || hour < 0 || min < 0 || sec < 0)
        return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (month == 2 && day == 29 && !leap)
        return false;
    const char *p = s + 19;
    int64_t frac_us = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 6)
                frac_us = frac_us * 10 + (*p - '0');
        if (n == 0)
            return false;
        for (; n < 6; n++)
            frac_us *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && p[3] == ':') {
        int oh = digits_at(p + 1, 2), om = digits_at(p + 4, 2);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return false;
        offset_s = (*p == '-' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
        p += 6;
    } else {
        return false;
    }
    if (*p)
        return false;
    /* Days from the civil date (H. Hinnant's algorithm). */
    int y = year - (month <= 2);
    int era = y / 400, yoe = y - era * 400;
    int doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    *out = ((days * 86400 + hour * 3600 + min * 60 + sec) - offset_s) * 1000000 + frac_us;
    return true;
}

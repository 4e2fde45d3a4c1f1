/*
 * The on-disk formats: segment headers, the chain, seals (see
 * docs/segment-format.md). Everything read here is untrusted: each field is
 * read explicitly, big-endian, and every length is checked.
 */
#include "store_internal.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static const uint8_t seg_magic[4] = {'C', 'S', 'E', 'G'};
static const uint8_t seal_magic[4] = {'C', 'S', 'E', 'L'};

/* ---------------------------------------------------------------- bytes */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------- ids */

/* The 8-4-4-4-12 form: the dashes come after these hex digits. */
static bool dash_after(int digits)
{
    return digits == 8 || digits == 12 || digits == 16 || digits == 20;
}

void store_id_format(const store_id *id, char out[37])
{
    char hex[33];
    cu_hex_encode(id->b, 16, hex);
    size_t o = 0;
    for (int i = 0; i < 32; i++) {
        if (dash_after(i))
            out[o++] = '-';
        out[o++] = hex[i];
    }
    out[o] = '\0';
}

bool store_id_parse(const char *text, store_id *id)
{
    char hex[33];
    size_t n = 0;
    if (strlen(text) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (dash_after((int)n) && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (text[i] != '-')
                return false;
            continue;
        }
        if (text[i] == '-')
            return false;
        hex[n++] = text[i];
    }
    hex[n] = '\0';
    return n == 32 && cu_hex_decode(hex, id->b, 16);
}

bool store_id_equal(const store_id *a, const store_id *b)
{
    return memcmp(a->b, b->b, 16) == 0;
}

/* --------------------------------------------------------------- headers */

void store_nonce_for(uint64_t index, uint8_t out[STORE_NONCE_LEN])
{
    put32(out, 1);
    put64(out + 4, index);
}

void store_header_encode(const store_header *h, uint8_t out[STORE_HEADER_LEN])
{
    memcpy(out, seg_magic, 4);
    put16(out + 4, 1);
    put16(out + 6, STORE_HEADER_LEN);
    put32(out + 8, h->flags);
    memcpy(out + 12, h->recording.b, 16);
    put64(out + 28, h->index);
    memcpy(out + 36, h->key_id.b, 16);
    memcpy(out + 52, h->nonce, STORE_NONCE_LEN);
    put32(out + 64, 0);
    put64(out + 68, (uint64_t)h->start_us);
    put64(out + 76, (uint64_t)h->end_us);
    put32(out + 84, h->packets);
    put32(out + 88, h->lost);
    put64(out + 92, h->plaintext_len);
    memcpy(out + 100, h->sha256, 32);
    memcpy(out + 132, h->chain, 32);
    put32(out + 164, 0);
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, why_len, __VA_ARGS__);                                                       \
        return CU_ERR_INVALID;                                                                     \
    } while (0)

cu_rc store_header_parse(const uint8_t *buf, size_t len, uint64_t file_len, store_header *h,
                         char *why, size_t why_len)
{
    if (len < 8)
        FAIL("file too short for a header (%zu bytes)", len);
    if (memcmp(buf, seg_magic, 4) != 0)
        FAIL("not a segment (bad magic)");
    if (get16(buf + 4) != 1)
        FAIL("unsupported segment version %u", get16(buf + 4));
    if (get16(buf + 6) != STORE_HEADER_LEN)
        FAIL("bad header length %u", get16(buf + 6));
    if (len < STORE_HEADER_LEN)
        FAIL("header truncated (%zu of %d bytes)", len, STORE_HEADER_LEN);

    h->flags = get32(buf + 8);
    memcpy(h->recording.b, buf + 12, 16);
    h->index = get64(buf + 28);
    memcpy(h->key_id.b, buf + 36, 16);
    memcpy(h->nonce, buf + 52, STORE_NONCE_LEN);
    h->start_us = (int64_t)get64(buf + 68);
    h->end_us = (int64_t)get64(buf + 76);
    h->packets = get32(buf + 84);
    h->lost = get32(buf + 88);
    h->plaintext_len = get64(buf + 92);
    memcpy(h->sha256, buf + 100, 32);
    memcpy(h->chain, buf + 132, 32);

    if (h->flags & ~(uint32_t)(STORE_SEG_LOSS | STORE_SEG_GAP_START | STORE_SEG_LAST))
        FAIL("unknown flags 0x%x", h->flags);
    if (get32(buf + 64) != 0 || get32(buf + 164) != 0)
        FAIL("reserved field is not zero");
    if (h->index > (uint64_t)INT64_MAX)
        FAIL("segment index out of range");
    uint8_t nonce[STORE_NONCE_LEN];
    store_nonce_for(h->index, nonce);
    if (memcmp(nonce, h->nonce, STORE_NONCE_LEN) != 0)
        FAIL("nonce is not the one for index %llu", (unsigned long long)h->index);
    if (h->end_us < h->start_us)
        FAIL("end time before start time");
    if (h->plaintext_len > STORE_SEGMENT_MAX)
        FAIL("plaintext length %llu exceeds %u", (unsigned long long)h->plaintext_len,
             STORE_SEGMENT_MAX);
    uint64_t expect = STORE_HEADER_LEN + h->plaintext_len + STORE_TAG_LEN;
    if (file_len && file_len != expect)
        FAIL("file is %llu bytes, header says %llu", (unsigned long long)file_len,
             (unsigned long long)expect);
    return CU_OK;
}

/* ----------------------------------------------------------------- chain */

void store_chain_genesis(const store_id *recording, const uint8_t meta_sha256[32], uint8_t out[32])
{
    static const char label[] = "custos-chain-v1";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        abort();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, label, sizeof(label) - 1);
    EVP_DigestUpdate(md, recording->b, 16);
    EVP_DigestUpdate(md, meta_sha256, 32);
    EVP_DigestFinal_ex(md, out, NULL);
    EVP_MD_CTX_free(md);
}

void store_chain_next(const uint8_t prev[32], const store_header *h, uint8_t out[32])
{
    uint8_t buf[32 + 32 + 8 + 8 + 8];
    memcpy(buf, prev, 32);
    memcpy(buf + 32, h->sha256, 32);
    put64(buf + 64, h->index);
    put64(buf + 72, (uint64_t)h->start_us);
    put64(buf + 80, (uint64_t)h->end_us);
    EVP_Digest(buf, sizeof(buf), out, NULL, EVP_sha256(), NULL);
}

/* ----------------------------------------------------------------- seals */

const char *store_seal_reason_name(int reason)
{
    switch (reason) {
    case STORE_SEAL_CLOSED: return "sealed";
    case STORE_SEAL_DAMAGED: return "damaged";
    case STORE_SEAL_INTERRUPTED: return "interrupted";
    }
    return "unknown";
}

/* HKDF-SHA256(dek, salt = recording id, info = "custos-seal-v1"). */
static void seal_key(const uint8_t dek[32], const store_id *recording, uint8_t out[32])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    static char info[] = "custos-seal-v1";
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)dek, 32),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)recording->b, 16),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof(info) - 1),
        OSSL_PARAM_construct_end(),
    };
    if (!ctx || EVP_KDF_derive(ctx, out, 32, params) != 1)
        abort(); /* OpenSSL without HKDF cannot run this program */
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
}

static void seal_body(const store_seal *s, uint8_t out[STORE_SEAL_BODY_LEN])
{
    memcpy(out, seal_magic, 4);
    put16(out + 4, 1);
    put16(out + 6, s->reason);
    memcpy(out + 8, s->recording.b, 16);
    memcpy(out + 24, s->key_id.b, 16);
    put64(out + 40, s->count);
    memcpy(out + 48, s->head, 32);
    put64(out + 80, (uint64_t)s->opened_us);
    put64(out + 88, (uint64_t)s->sealed_us);
}

static void seal_mac(const store_seal *s, const uint8_t dek[32], uint8_t mac[32])
{
    uint8_t key[32], body[STORE_SEAL_BODY_LEN];
    unsigned int len = 32;
    seal_key(dek, &s->recording, key);
    seal_body(s, body);
    HMAC(EVP_sha256(), key, 32, body, sizeof(body), mac, &len);
    OPENSSL_cleanse(key, sizeof(key));
}

void store_seal_encode(store_seal *s, const uint8_t dek[32], uint8_t out[STORE_SEAL_LEN])
{
    seal_mac(s, dek, s->mac);
    seal_body(s, out);
    memcpy(out + STORE_SEAL_BODY_LEN, s->mac, 32);
}

cu_rc store_seal_parse(const uint8_t *buf, size_t len, store_seal *s, char *why, size_t why_len)
{
    if (len != STORE_SEAL_LEN)
        FAIL("seal is %zu bytes, not %d", len, STORE_SEAL_LEN);
    if (memcmp(buf, seal_magic, 4) != 0)
        FAIL("not a seal (bad magic)");
    if (get16(buf + 4) != 1)
        FAIL("unsupported seal version %u", get16(buf + 4));
    s->reason = get16(buf + 6);
    if (s->reason < STORE_SEAL_CLOSED || s->reason > STORE_SEAL_INTERRUPTED)
        FAIL("unknown seal reason %u", s->reason);
    memcpy(s->recording.b, buf + 8, 16);
    memcpy(s->key_id.b, buf + 24, 16);
    s->count = get64(buf + 40);
    memcpy(s->head, buf + 48, 32);
    s->opened_us = (int64_t)get64(buf + 80);
    s->sealed_us = (int64_t)get64(buf + 88);
    memcpy(s->mac, buf + STORE_SEAL_BODY_LEN, 32);
    if (s->count > (uint64_t)INT64_MAX)
        FAIL("segment count out of range");
    return CU_OK;
}

bool store_seal_mac_ok(const store_seal *s, const uint8_t dek[32])
{
    uint8_t mac[32];
    seal_mac(s, dek, mac);
    return CRYPTO_memcmp(mac, s->mac, 32) == 0;
}

/* ------------------------------------------------------------------ XXH3 */

void store_xxh3(const void *data, size_t len, uint8_t out[16])
{
    XXH128_hash_t h = XXH3_128bits(data, len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, 16);
}

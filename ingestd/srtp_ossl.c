/*
 * OpenSSL implementations of libsrtp's AES counter mode, AES-GCM and
 * HMAC-SHA1, plugged in with srtp_replace_cipher_type() and
 * srtp_replace_auth_type(). libsrtp keeps the protocol (key derivation,
 * replay window, packet layout); only the primitives change.
 *
 * Why: Debian's libsrtp2 is built on NSS, whose per-call overhead costs about
 * 3.8 µs per 1200-byte packet here; OpenSSL's primitives cost about 0.9 µs.
 * libsrtp runs each type's known-answer tests (the test data below: RFC 3711
 * B.2, RFC 6188 §7, the GCM specification's test cases 4 and 16, RFC 2202)
 * when it is registered and refuses a type that fails them.
 */
#include "ingestd.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <srtp2/auth.h>
#include <srtp2/cipher.h>
#include <srtp2/srtp.h>
#include <stdlib.h>
#include <string.h>

/* HMAC with the low-level SHA1 context: its state is a plain struct, so the
 * per-packet work is two struct copies and the hashing, with no allocation
 * and no provider lookup. That API is deprecated in OpenSSL 3 but kept. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <openssl/sha.h>

#define SALT_LEN 14

/* ------------------------------------------------------------ AES-ICM */

typedef struct {
    EVP_CIPHER_CTX *ctx;
    int key_size;
    uint8_t offset[16]; /* the salt, last two octets zero */
} icm_state;

static const srtp_cipher_type_t icm_128, icm_256;

static srtp_err_status_t icm_alloc(srtp_cipher_t **c, int key_len, int tlen)
{
    (void)tlen;
    int key_size = key_len == SRTP_AES_ICM_128_KEY_LEN_WSALT   ? 16
                   : key_len == SRTP_AES_ICM_256_KEY_LEN_WSALT ? 32
                                                               : 0;
    if (!key_size)
        return srtp_err_status_bad_param;
    srtp_cipher_t *cipher = calloc(1, sizeof(*cipher));
    icm_state *st = calloc(1, sizeof(*st));
    if (!cipher || !st || !(st->ctx = EVP_CIPHER_CTX_new())) {
        free(cipher);
        if (st)
            EVP_CIPHER_CTX_free(st->ctx);
        free(st);
        return srtp_err_status_alloc_fail;
    }
    st->key_size = key_size;
    cipher->state = st;
    cipher->key_len = key_len;
    cipher->type = key_size == 16 ? &icm_128 : &icm_256;
    cipher->algorithm = key_size == 16 ? SRTP_AES_ICM_128 : SRTP_AES_ICM_256;
    *c = cipher;
    return srtp_err_status_ok;
}

static srtp_err_status_t icm_dealloc(srtp_cipher_t *c)
{
    icm_state *st = c->state;
    EVP_CIPHER_CTX_free(st->ctx);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    free(c);
    return srtp_err_status_ok;
}

/* @p key is the AES key followed by the 14-byte salt. */
static srtp_err_status_t icm_init(void *state, const uint8_t *key)
{
    icm_state *st = state;
    memset(st->offset, 0, sizeof(st->offset));
    memcpy(st->offset, key + st->key_size, SALT_LEN);
    const EVP_CIPHER *evp = st->key_size == 16 ? EVP_aes_128_ctr() : EVP_aes_256_ctr();
    if (EVP_EncryptInit_ex(st->ctx, evp, NULL, key, NULL) != 1)
        return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

/* The counter block is the iv (SSRC, packet index) XOR the salt. */
static srtp_err_status_t icm_set_iv(void *state, uint8_t *iv, srtp_cipher_direction_t dir)
{
    icm_state *st = state;
    uint8_t counter[16];
    (void)dir;
    for (int i = 0; i < 16; i++)
        counter[i] = iv[i] ^ st->offset[i];
    /* The lighter of OpenSSL 3's re-initialisations: same cipher and key. */
    if (EVP_CipherInit_ex2(st->ctx, NULL, NULL, counter, 1, NULL) != 1)
        return srtp_err_status_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t icm_crypt(void *state, uint8_t *buf, unsigned int *len)
{
    icm_state *st = state;
    int out = 0;
    if (EVP_EncryptUpdate(st->ctx, buf, &out, buf, (int)*len) != 1)
        return srtp_err_status_cipher_fail;
    *len = (unsigned int)out;
    return srtp_err_status_ok;
}

/* RFC 3711 B.2: the keystream for counter F0F1...FCFD0000 and the next. */
static const uint8_t icm_128_key[30] = {0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7,
                                        0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c, 0xf0, 0xf1, 0xf2, 0xf3,
                                        0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd};
static uint8_t zero_iv[16];
static const uint8_t zero_32[32];
static const uint8_t icm_128_keystream[32] = {
    0xe0, 0x3e, 0xad, 0x09, 0x35, 0xc9, 0x5e, 0x80, 0xe1, 0x66, 0xb1, 0x6d, 0xd9, 0x2b, 0x4e, 0xb4,
    0xd2, 0x35, 0x13, 0x16, 0x2b, 0x02, 0xd0, 0xf7, 0x2a, 0x43, 0xa2, 0xfe, 0x4a, 0x5f, 0x97, 0xab};
static const srtp_cipher_test_case_t icm_128_test = {
    30, icm_128_key, zero_iv, 32, zero_32, 32, icm_128_keystream, 0, NULL, 0, NULL};

/* RFC 6188 §7: AES-256 counter mode keystream. */
static const uint8_t icm_256_key[46] = {
    0x57, 0xf8, 0x2f, 0xe3, 0x61, 0x3f, 0xd1, 0x70, 0xa8, 0x5e, 0xc9, 0x3c, 0x40, 0xb1, 0xf0, 0x92,
    0x2e, 0xc4, 0xcb, 0x0d, 0xc0, 0x25, 0xb5, 0x82, 0x72, 0x14, 0x7c, 0xc4, 0x38, 0x94, 0x4a, 0x98,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd};
static const uint8_t icm_256_keystream[32] = {
    0x92, 0xbd, 0xd2, 0x8a, 0x93, 0xc3, 0xf5, 0x25, 0x11, 0xc6, 0x77, 0xd0, 0x8b, 0x55, 0x15, 0xa4,
    0x9d, 0xa7, 0x1b, 0x23, 0x78, 0xa8, 0x54, 0xf6, 0x70, 0x50, 0x75, 0x6d, 0xed, 0x16, 0x5b, 0xac};
static const srtp_cipher_test_case_t icm_256_test = {
    46, icm_256_key, zero_iv, 32, zero_32, 32, icm_256_keystream, 0, NULL, 0, NULL};

static const srtp_cipher_type_t icm_128 = {icm_alloc,
                                           icm_dealloc,
                                           icm_init,
                                           NULL,
                                           icm_crypt,
                                           icm_crypt,
                                           icm_set_iv,
                                           NULL,
                                           "AES-128 counter mode (OpenSSL, Custos)",
                                           &icm_128_test,
                                           SRTP_AES_ICM_128};
static const srtp_cipher_type_t icm_256 = {icm_alloc,
                                           icm_dealloc,
                                           icm_init,
                                           NULL,
                                           icm_crypt,
                                           icm_crypt,
                                           icm_set_iv,
                                           NULL,
                                           "AES-256 counter mode (OpenSSL, Custos)",
                                           &icm_256_test,
                                           SRTP_AES_ICM_256};

/* ------------------------------------------------------------ AES-GCM */

typedef struct {
    EVP_CIPHER_CTX *ctx;
    int key_size;
    int tag_len;
    bool encrypt;
} gcm_state;

static const srtp_cipher_type_t gcm_128, gcm_256;

static srtp_err_status_t gcm_alloc(srtp_cipher_t **c, int key_len, int tlen)
{
    int key_size = key_len == SRTP_AES_GCM_128_KEY_LEN_WSALT   ? 16
                   : key_len == SRTP_AES_GCM_256_KEY_LEN_WSALT ? 32
                                                               : 0;
    if (!key_size || (tlen != 16 && tlen != 8))
        return srtp_err_status_bad_param;
    srtp_cipher_t *cipher = calloc(1, sizeof(*cipher));
    gcm_state *st = calloc(1, sizeof(*st));
    if (!cipher || !st || !(st->ctx = EVP_CIPHER_CTX_new())) {
        free(cipher);
        if (st)
            EVP_CIPHER_CTX_free(st->ctx);
        free(st);
        return srtp_err_status_alloc_fail;
    }
    st->key_size = key_size;
    st->tag_len = tlen;
    cipher->state = st;
    cipher->key_len = key_len;
    cipher->type = key_size == 16 ? &gcm_128 : &gcm_256;
    cipher->algorithm = key_size == 16 ? SRTP_AES_GCM_128 : SRTP_AES_GCM_256;
    *c = cipher;
    return srtp_err_status_ok;
}

static srtp_err_status_t gcm_dealloc(srtp_cipher_t *c)
{
    gcm_state *st = c->state;
    EVP_CIPHER_CTX_free(st->ctx);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    free(c);
    return srtp_err_status_ok;
}

static srtp_err_status_t gcm_init(void *state, const uint8_t *key)
{
    gcm_state *st = state;
    const EVP_CIPHER *evp = st->key_size == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    if (EVP_CipherInit_ex(st->ctx, evp, NULL, key, NULL, 1) != 1)
        return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

/* libsrtp hands a 12-byte iv it has already combined with the salt. */
static srtp_err_status_t gcm_set_iv(void *state, uint8_t *iv, srtp_cipher_direction_t dir)
{
    gcm_state *st = state;
    if (dir != srtp_direction_encrypt && dir != srtp_direction_decrypt)
        return srtp_err_status_bad_param;
    st->encrypt = dir == srtp_direction_encrypt;
    if (EVP_CipherInit_ex(st->ctx, NULL, NULL, NULL, iv, st->encrypt ? 1 : 0) != 1)
        return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t gcm_set_aad(void *state, const uint8_t *aad, uint32_t len)
{
    gcm_state *st = state;
    int out = 0;
    if (EVP_CipherUpdate(st->ctx, NULL, &out, aad, (int)len) != 1)
        return srtp_err_status_algo_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t gcm_encrypt(void *state, uint8_t *buf, unsigned int *len)
{
    gcm_state *st = state;
    int out = 0;
    if (!st->encrypt || EVP_CipherUpdate(st->ctx, buf, &out, buf, (int)*len) != 1)
        return srtp_err_status_cipher_fail;
    return srtp_err_status_ok;
}

/* After encrypt: finish and write the tag to @p tag. */
static srtp_err_status_t gcm_get_tag(void *state, uint8_t *tag, uint32_t *len)
{
    gcm_state *st = state;
    int out = 0;
    uint8_t none[16];
    if (EVP_CipherFinal_ex(st->ctx, none, &out) != 1 ||
        EVP_CIPHER_CTX_ctrl(st->ctx, EVP_CTRL_GCM_GET_TAG, st->tag_len, tag) != 1)
        return srtp_err_status_algo_fail;
    *len = (uint32_t)st->tag_len;
    return srtp_err_status_ok;
}

/* @p buf holds ciphertext then the tag; on success *len drops the tag. */
static srtp_err_status_t gcm_decrypt(void *state, uint8_t *buf, unsigned int *len)
{
    gcm_state *st = state;
    int out = 0;
    if (st->encrypt || *len < (unsigned)st->tag_len)
        return srtp_err_status_bad_param;
    unsigned int n = *len - (unsigned)st->tag_len;
    if (EVP_CIPHER_CTX_ctrl(st->ctx, EVP_CTRL_GCM_SET_TAG, st->tag_len, buf + n) != 1 ||
        EVP_CipherUpdate(st->ctx, buf, &out, buf, (int)n) != 1)
        return srtp_err_status_cipher_fail;
    if (EVP_CipherFinal_ex(st->ctx, buf + out, &out) != 1)
        return srtp_err_status_auth_fail;
    *len = n;
    return srtp_err_status_ok;
}

/* The GCM specification's test case 4 (AES-128) and 16 (AES-256), with the
 * 20-byte AAD; keys carry a 12-byte salt that GCM ignores here. */
static const uint8_t gcm_iv[12] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce,
                                   0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88};
static const uint8_t gcm_aad[20] = {0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed,
                                    0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef, 0xab, 0xad, 0xda, 0xd2};
static const uint8_t gcm_pt[60] = {
    0xd9, 0x31, 0x32, 0x25, 0xf8, 0x84, 0x06, 0xe5, 0xa5, 0x59, 0x09, 0xc5, 0xaf, 0xf5, 0x26,
    0x9a, 0x86, 0xa7, 0xa9, 0x53, 0x15, 0x34, 0xf7, 0xda, 0x2e, 0x4c, 0x30, 0x3d, 0x8a, 0x31,
    0x8a, 0x72, 0x1c, 0x3c, 0x0c, 0x95, 0x95, 0x68, 0x09, 0x53, 0x2f, 0xcf, 0x0e, 0x24, 0x49,
    0xa6, 0xb5, 0x25, 0xb1, 0x6a, 0xed, 0xf5, 0xaa, 0x0d, 0xe6, 0x57, 0xba, 0x63, 0x7b, 0x39};
static const uint8_t gcm_128_key[28] = {0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a,
                                        0x8f, 0x94, 0x67, 0x30, 0x83, 0x08, 1,    2,    3,    4,
                                        5,    6,    7,    8,    9,    10,   11,   12};
static const uint8_t gcm_128_ct[76] = {
    0x42, 0x83, 0x1e, 0xc2, 0x21, 0x77, 0x74, 0x24, 0x4b, 0x72, 0x21, 0xb7, 0x84, 0xd0, 0xd4, 0x9c,
    0xe3, 0xaa, 0x21, 0x2f, 0x2c, 0x02, 0xa4, 0xe0, 0x35, 0xc1, 0x7e, 0x23, 0x29, 0xac, 0xa1, 0x2e,
    0x21, 0xd5, 0x14, 0xb2, 0x54, 0x66, 0x93, 0x1c, 0x7d, 0x8f, 0x6a, 0x5a, 0xac, 0x84, 0xaa, 0x05,
    0x1b, 0xa3, 0x0b, 0x39, 0x6a, 0x0a, 0xac, 0x97, 0x3d, 0x58, 0xe0, 0x91, 0x5b, 0xc9, 0x4f, 0xbc,
    0x32, 0x21, 0xa5, 0xdb, 0x94, 0xfa, 0xe9, 0x5a, 0xe7, 0x12, 0x1a, 0x47};
static const uint8_t gcm_256_key[44] = {
    0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83,
    0x08, 0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30,
    0x83, 0x08, 1,    2,    3,    4,    5,    6,    7,    8,    9,    10,   11,   12};
static const uint8_t gcm_256_ct[76] = {
    0x52, 0x2d, 0xc1, 0xf0, 0x99, 0x56, 0x7d, 0x07, 0xf4, 0x7f, 0x37, 0xa3, 0x2a, 0x84, 0x42, 0x7d,
    0x64, 0x3a, 0x8c, 0xdc, 0xbf, 0xe5, 0xc0, 0xc9, 0x75, 0x98, 0xa2, 0xbd, 0x25, 0x55, 0xd1, 0xaa,
    0x8c, 0xb0, 0x8e, 0x48, 0x59, 0x0d, 0xbb, 0x3d, 0xa7, 0xb0, 0x8b, 0x10, 0x56, 0x82, 0x88, 0x38,
    0xc5, 0xf6, 0x1e, 0x63, 0x93, 0xba, 0x7a, 0x0a, 0xbc, 0xc9, 0xf6, 0x62, 0x76, 0xfc, 0x6e, 0xce,
    0x0f, 0x4e, 0x17, 0x68, 0xcd, 0xdf, 0x88, 0x53, 0xbb, 0x2d, 0x55, 0x1b};
static uint8_t gcm_iv_mutable[12];
static const srtp_cipher_test_case_t gcm_128_test_8 = {
    28, gcm_128_key, gcm_iv_mutable, 60, gcm_pt, 68, gcm_128_ct, 20, gcm_aad, 8, NULL};
static const srtp_cipher_test_case_t gcm_128_test = {
    28, gcm_128_key, gcm_iv_mutable, 60, gcm_pt, 76, gcm_128_ct, 20, gcm_aad, 16, &gcm_128_test_8};
static const srtp_cipher_test_case_t gcm_256_test_8 = {
    44, gcm_256_key, gcm_iv_mutable, 60, gcm_pt, 68, gcm_256_ct, 20, gcm_aad, 8, NULL};
static const srtp_cipher_test_case_t gcm_256_test = {
    44, gcm_256_key, gcm_iv_mutable, 60, gcm_pt, 76, gcm_256_ct, 20, gcm_aad, 16, &gcm_256_test_8};

static const srtp_cipher_type_t gcm_128 = {
    gcm_alloc,     gcm_dealloc,     gcm_init,
    gcm_set_aad,   gcm_encrypt,     gcm_decrypt,
    gcm_set_iv,    gcm_get_tag,     "AES-128 GCM (OpenSSL, Custos)",
    &gcm_128_test, SRTP_AES_GCM_128};
static const srtp_cipher_type_t gcm_256 = {
    gcm_alloc,     gcm_dealloc,     gcm_init,
    gcm_set_aad,   gcm_encrypt,     gcm_decrypt,
    gcm_set_iv,    gcm_get_tag,     "AES-256 GCM (OpenSSL, Custos)",
    &gcm_256_test, SRTP_AES_GCM_256};

/* ---------------------------------------------------------- HMAC-SHA1 */

typedef struct {
    SHA_CTX inner0, outer0; /* after the key pads: the per-key precomputation */
    SHA_CTX inner;          /* the message being authenticated */
} hmac_state;

static const srtp_auth_type_t hmac_sha1;

static srtp_err_status_t hmac_alloc(srtp_auth_t **a, int key_len, int out_len)
{
    if (key_len < 0 || key_len > 20 || out_len < 0 || out_len > 20)
        return srtp_err_status_bad_param;
    srtp_auth_t *auth = calloc(1, sizeof(*auth));
    hmac_state *st = calloc(1, sizeof(*st));
    if (!auth || !st) {
        free(auth);
        free(st);
        return srtp_err_status_alloc_fail;
    }
    auth->state = st;
    auth->type = &hmac_sha1;
    auth->out_len = out_len;
    auth->key_len = key_len;
    auth->prefix_len = 0;
    *a = auth;
    return srtp_err_status_ok;
}

static srtp_err_status_t hmac_dealloc(srtp_auth_t *a)
{
    OPENSSL_cleanse(a->state, sizeof(hmac_state));
    free(a->state);
    free(a);
    return srtp_err_status_ok;
}

static srtp_err_status_t hmac_init(void *state, const uint8_t *key, int key_len)
{
    hmac_state *st = state;
    uint8_t ipad[64], opad[64];
    if (key_len > 64)
        return srtp_err_status_bad_param;
    memset(ipad, 0x36, sizeof(ipad));
    memset(opad, 0x5c, sizeof(opad));
    for (int i = 0; i < key_len; i++) {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    SHA1_Init(&st->inner0);
    SHA1_Update(&st->inner0, ipad, sizeof(ipad));
    SHA1_Init(&st->outer0);
    SHA1_Update(&st->outer0, opad, sizeof(opad));
    st->inner = st->inner0;
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
    return srtp_err_status_ok;
}

static srtp_err_status_t hmac_start(void *state)
{
    hmac_state *st = state;
    st->inner = st->inner0;
    return srtp_err_status_ok;
}

static srtp_err_status_t hmac_update(void *state, const uint8_t *buf, int len)
{
    hmac_state *st = state;
    SHA1_Update(&st->inner, buf, (size_t)len);
    return srtp_err_status_ok;
}

static srtp_err_status_t hmac_compute(void *state, const uint8_t *buf, int len, int tag_len,
                                      uint8_t *tag)
{
    hmac_state *st = state;
    uint8_t inner[20], full[20];
    if (tag_len > 20)
        return srtp_err_status_bad_param;
    SHA1_Update(&st->inner, buf, (size_t)len);
    SHA1_Final(inner, &st->inner);
    SHA_CTX outer = st->outer0;
    SHA1_Update(&outer, inner, sizeof(inner));
    SHA1_Final(full, &outer);
    memcpy(tag, full, (size_t)tag_len);
    return srtp_err_status_ok;
}

/* RFC 2202, test case 1. */
static const uint8_t hmac_key[20] = {0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
                                     0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b};
static const uint8_t hmac_data[8] = {'H', 'i', ' ', 'T', 'h', 'e', 'r', 'e'};
static const uint8_t hmac_tag[20] = {0xb6, 0x17, 0x31, 0x86, 0x55, 0x05, 0x72, 0x64, 0xe2, 0x8b,
                                     0xc0, 0xb6, 0xfb, 0x37, 0x8c, 0x8e, 0xf1, 0x46, 0xbe, 0x00};
static const srtp_auth_test_case_t hmac_test = {20, hmac_key, 8, hmac_data, 20, hmac_tag, NULL};

static const srtp_auth_type_t hmac_sha1 = {hmac_alloc,
                                           hmac_dealloc,
                                           hmac_init,
                                           hmac_compute,
                                           hmac_update,
                                           hmac_start,
                                           "HMAC-SHA1 (OpenSSL, Custos)",
                                           &hmac_test,
                                           SRTP_HMAC_SHA1};

#pragma GCC diagnostic pop

/* ----------------------------------------------------------- install */

static pthread_once_t srtp_once = PTHREAD_ONCE_INIT;
static srtp_err_status_t srtp_once_status;
static const char *srtp_once_what;

static void srtp_install(void)
{
    memcpy(gcm_iv_mutable, gcm_iv, sizeof(gcm_iv));
    srtp_once_what = "srtp_init";
    srtp_once_status = srtp_init();
    if (srtp_once_status)
        return;
    if (getenv("CUSTOS_SRTP_NSS"))
        return; /* for before/after comparisons (bench) */
    struct {
        const srtp_cipher_type_t *type;
        srtp_cipher_type_id_t id;
        const char *what;
    } ciphers[] = {
        {&icm_128, SRTP_AES_ICM_128, "AES-128-CM"},
        {&icm_256, SRTP_AES_ICM_256, "AES-256-CM"},
        {&gcm_128, SRTP_AES_GCM_128, "AES-128-GCM"},
        {&gcm_256, SRTP_AES_GCM_256, "AES-256-GCM"},
    };
    for (size_t i = 0; i < CU_ARRAY_LEN(ciphers); i++) {
        srtp_once_what = ciphers[i].what;
        srtp_once_status = srtp_replace_cipher_type(ciphers[i].type, ciphers[i].id);
        if (srtp_once_status)
            return;
    }
    srtp_once_what = "HMAC-SHA1";
    srtp_once_status = srtp_replace_auth_type(&hmac_sha1, SRTP_HMAC_SHA1);
}

cu_rc ingest_srtp_init(cu_err *err)
{
    pthread_once(&srtp_once, srtp_install);
    if (srtp_once_status)
        return cu_err_set(err, CU_ERR_IO,
                          "SRTP: installing %s failed (libsrtp status %d; its known-answer test "
                          "is run at installation)",
                          srtp_once_what, (int)srtp_once_status);
    return CU_OK;
}

bool ingest_srtp_is_openssl(void)
{
    return getenv("CUSTOS_SRTP_NSS") == NULL;
}

/* Private to the keys library. */
#ifndef CUSTOS_KEYS_INTERNAL_H
#define CUSTOS_KEYS_INTERNAL_H

#include "keys.h"

#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>

#define KEYS_CACHED_KEKS  64
#define KEYS_SIGNING_FILE "signing.key"

struct keys_ring {
    char dir[PATH_MAX];
    pthread_mutex_t lock; /* the cache, the signing key, files being changed */
    struct {
        char id[KEYS_KEK_ID_LEN + 1];
        uint8_t key[32];
    } keks[KEYS_CACHED_KEKS];
    int nkeks;
    EVP_PKEY *signing; /* loaded on first use */
};

CU_WUR cu_rc keys_random(void *buf, size_t len, cu_err *err);

/** Read a whole file of at most @p max bytes (no symlinks); CU_ERR_NOTFOUND if absent. */
CU_WUR cu_rc keys_read_file(const char *path, size_t max, cu_buf *out, cu_err *err);

/** Make the signing key if it is missing (called by keys_open with create). */
CU_WUR cu_rc keys_signing_ensure(keys_ring *k, cu_err *err);

#endif

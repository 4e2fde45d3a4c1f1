/*
 * Key-encryption keys in <data-dir>/keys and per-recording data keys,
 * wrapped with AES-256-GCM (docs/segment-format.md, "Keys"). Plain keys
 * live only in memory and are wiped after use.
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CACHED_KEKS 64
#define KEK_MAGIC       "custos-kek-v1\n"
#define PENDING_MAGIC   "CDEK"
#define PENDING_LEN     (4 + 1 + 16 + STORE_KEK_ID_LEN + STORE_WRAPPED_LEN)

struct store_keyring {
    char dir[PATH_MAX];
    pthread_mutex_t lock;
    struct {
        char id[STORE_KEK_ID_LEN + 1];
        uint8_t key[32];
    } keks[MAX_CACHED_KEKS];
    int nkeks;
};

static bool kek_id_valid(const char *id)
{
    return strlen(id) == STORE_KEK_ID_LEN && strspn(id, "0123456789abcdef") == STORE_KEK_ID_LEN;
}

static cu_rc random_bytes(void *buf, size_t len, cu_err *err)
{
    if (RAND_bytes(buf, (int)len) != 1)
        return cu_err_set(err, CU_ERR_IO, "the random number generator failed");
    return CU_OK;
}

static cu_rc mkdir_private(const char *path, cu_err *err)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot create %s: %s", path, strerror(e));
    }
    return CU_OK;
}

/* Read the active KEK id; CU_ERR_NOTFOUND when there is none yet. */
static cu_rc keyring_active_id(store_keyring *k, char id[STORE_KEK_ID_LEN + 1], cu_err *err)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/active", k->dir);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return cu_err_set(err, CU_ERR_NOTFOUND, "no key-encryption key in %s", k->dir);
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "%s: %s", path, strerror(e));
    }
    char line[64] = "";
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    if (!kek_id_valid(line))
        return cu_err_set(err, CU_ERR_INVALID, "%s does not name a key", path);
    memcpy(id, line, STORE_KEK_ID_LEN + 1);
    return CU_OK;
}

/* Load a KEK by id (cached). Called with k->lock held. */
static cu_rc keyring_kek(store_keyring *k, const char *id, uint8_t key[32], cu_err *err)
{
    for (int i = 0; i < k->nkeks; i++) {
        if (strcmp(k->keks[i].id, id) == 0) {
            memcpy(key, k->keks[i].key, 32);
            return CU_OK;
        }
    }
    if (!kek_id_valid(id))
        return cu_err_set(err, CU_ERR_INVALID, "bad key-encryption key id '%.20s'", id);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/kek-%s.key", k->dir, id);
    cu_buf text;
    cu_buf_init(&text, 256);
    cu_rc rc = store_read_file(path, 256, &text, err);
    if (rc) {
        if (rc == CU_ERR_NOTFOUND)
            cu_err_set(err, CU_ERR_NOTFOUND, "key-encryption key %s is missing (%s)", id, path);
        goto out;
    }
    size_t mlen = strlen(KEK_MAGIC);
    if (text.len < mlen + 64 || memcmp(text.data, KEK_MAGIC, mlen) != 0) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s is not a key-encryption key file", path);
        goto out;
    }
    for (int i = 0; i < 32; i++) {
        char hx[3] = {text.data[mlen + 2 * i], text.data[mlen + 2 * i + 1], 0};
        char *end = NULL;
        long v = strtol(hx, &end, 16);
        if (*end || !hx[0] || !hx[1]) {
            rc = cu_err_set(err, CU_ERR_INVALID, "%s: bad key text", path);
            goto out;
        }
        key[i] = (uint8_t)v;
    }
    if (k->nkeks < MAX_CACHED_KEKS) {
        cu_strlcpy(k->keks[k->nkeks].id, id, sizeof(k->keks[0].id));
        memcpy(k->keks[k->nkeks].key, key, 32);
        k->nkeks++;
    }
out:
    if (text.data)
        OPENSSL_cleanse(text.data, text.alloc);
    cu_buf_free(&text);
    return rc;
}

static cu_rc keyring_add_kek_locked(store_keyring *k, char new_id[STORE_KEK_ID_LEN + 1],
                                    cu_err *err)
{
    uint8_t raw_id[8], key[32];
    char text[128];
    cu_rc rc = random_bytes(raw_id, sizeof(raw_id), err);
    if (!rc)
        rc = random_bytes(key, sizeof(key), err);
    if (rc)
        return rc;
    for (int i = 0; i < 8; i++)
        snprintf(new_id + 2 * i, 3, "%02x", raw_id[i]);
    int n = snprintf(text, sizeof(text), "%s", KEK_MAGIC);
    for (int i = 0; i < 32; i++)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "%02x", key[i]);
    n += snprintf(text + n, sizeof(text) - (size_t)n, "\n");
    char name[64];
    snprintf(name, sizeof(name), "kek-%s.key", new_id);
    rc = cu_file_write_durably(k->dir, name, text, (size_t)n, 0600, err);
    OPENSSL_cleanse(text, sizeof(text));
    OPENSSL_cleanse(key, sizeof(key));
    if (rc)
        return rc;
    char active[STORE_KEK_ID_LEN + 2];
    snprintf(active, sizeof(active), "%s\n", new_id);
    rc = cu_file_write_durably(k->dir, "active", active, strlen(active), 0600, err);
    if (!rc)
        CU_LOG(CU_LOG_INFO, "keys", "new key-encryption key %s is active", new_id);
    return rc;
}

cu_rc store_keyring_open(const char *data_dir, bool create, store_keyring **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    store_keyring *k = cu_xcalloc(1, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    snprintf(k->dir, sizeof(k->dir), "%s/keys", data_dir);
    if (create) {
        char pending[PATH_MAX + 16];
        snprintf(pending, sizeof(pending), "%s/pending", k->dir);
        rc = mkdir_private(k->dir, err);
        if (!rc)
            rc = mkdir_private(pending, err);
        if (rc)
            goto out;
        char id[STORE_KEK_ID_LEN + 1];
        rc = keyring_active_id(k, id, err);
        if (rc == CU_ERR_NOTFOUND)
            rc = keyring_add_kek_locked(k, id, err);
        if (rc)
            goto out;
    }
    *out = k;
    k = NULL;
out:
    store_keyring_close(k);
    return rc;
}

void store_keyring_close(store_keyring *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k->keks, sizeof(k->keks));
    pthread_mutex_destroy(&k->lock);
    free(k);
}

cu_rc store_keyring_add_kek(store_keyring *k, char new_id[STORE_KEK_ID_LEN + 1], cu_err *err)
{
    pthread_mutex_lock(&k->lock);
    cu_rc rc = keyring_add_kek_locked(k, new_id, err);
    pthread_mutex_unlock(&k->lock);
    return rc;
}

/* aad = "custos-dek-v1" ‖ recording ‖ key id ‖ kek id */
static size_t wrap_aad(const store_id *recording, const store_id *key_id, const char *kek_id,
                       uint8_t aad[64])
{
    static const char label[] = "custos-dek-v1";
    size_t n = sizeof(label) - 1;
    memcpy(aad, label, n);
    memcpy(aad + n, recording->b, 16);
    memcpy(aad + n + 16, key_id->b, 16);
    memcpy(aad + n + 32, kek_id, STORE_KEK_ID_LEN);
    return n + 32 + STORE_KEK_ID_LEN;
}

static cu_rc gcm(bool encrypt, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                 size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[16])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok = c != NULL;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, encrypt ? 1 : 0) == 1;
    ok = ok && EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) == 1;
    ok = ok && EVP_CipherUpdate(c, out, &n, in, (int)len) == 1;
    if (!encrypt)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(c, out + n, &n) == 1;
    if (encrypt)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? CU_OK : CU_ERR_INVALID;
}

static cu_rc dek_wrap(store_keyring *k, const store_id *recording, store_dek *dek, cu_err *err)
{
    uint8_t kek[32], aad[64];
    char active[STORE_KEK_ID_LEN + 1];
    pthread_mutex_lock(&k->lock);
    cu_rc rc = keyring_active_id(k, active, err);
    if (!rc)
        rc = keyring_kek(k, active, kek, err);
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    memcpy(dek->kek_id, active, sizeof(active));
    uint8_t *w = dek->wrapped;
    w[0] = 1;
    rc = random_bytes(w + 1, 12, err);
    if (!rc) {
        size_t aad_len = wrap_aad(recording, &dek->key_id, dek->kek_id, aad);
        if (gcm(true, kek, w + 1, aad, aad_len, dek->key, 32, w + 13, w + 45) != CU_OK)
            rc = cu_err_set(err, CU_ERR_IO, "wrapping a data key failed");
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    return rc;
}

cu_rc store_keyring_new_dek(store_keyring *k, const store_id *recording, store_dek *out,
                            cu_err *err)
{
    memset(out, 0, sizeof(*out));
    cu_rc rc = random_bytes(out->key, 32, err);
    if (!rc)
        rc = random_bytes(out->key_id.b, 16, err);
    if (!rc)
        rc = dek_wrap(k, recording, out, err);
    if (rc)
        store_dek_wipe(out);
    return rc;
}

cu_rc store_keyring_rewrap(store_keyring *k, const store_id *recording, store_dek *dek, cu_err *err)
{
    return dek_wrap(k, recording, dek, err);
}

cu_rc store_keyring_unwrap(store_keyring *k, const store_id *recording, const store_id *key_id,
                           const char *kek_id, const uint8_t *wrapped, size_t wrapped_len,
                           uint8_t key[32], cu_err *err)
{
    uint8_t kek[32], aad[64], tag[16];
    if (wrapped_len != STORE_WRAPPED_LEN || wrapped[0] != 1)
        return cu_err_set(err, CU_ERR_INVALID, "wrapped data key has a bad length or version");
    pthread_mutex_lock(&k->lock);
    cu_rc rc = keyring_kek(k, kek_id, kek, err);
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    memcpy(tag, wrapped + 45, 16);
    size_t aad_len = wrap_aad(recording, key_id, kek_id, aad);
    if (gcm(false, kek, wrapped + 1, aad, aad_len, wrapped + 13, 32, key, tag) != CU_OK) {
        OPENSSL_cleanse(key, 32);
        rc = cu_err_set(err, CU_ERR_INVALID,
                        "the wrapped data key does not authenticate under key-encryption key %s",
                        kek_id);
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    return rc;
}

void store_dek_wipe(store_dek *dek)
{
    OPENSSL_cleanse(dek->key, sizeof(dek->key));
}

/* ------------------------------------------------------- other secrets */

/* aad = label ‖ 0 ‖ context ‖ 0 ‖ kek id */
static size_t secret_aad(const char *label, const char *context, const char *kek_id, uint8_t *aad,
                         size_t cap)
{
    size_t l = strlen(label), c = strlen(context);
    if (l + c + 2 + STORE_KEK_ID_LEN > cap)
        return 0;
    memcpy(aad, label, l);
    aad[l] = 0;
    memcpy(aad + l + 1, context, c);
    aad[l + 1 + c] = 0;
    memcpy(aad + l + c + 2, kek_id, STORE_KEK_ID_LEN);
    return l + c + 2 + STORE_KEK_ID_LEN;
}

cu_rc store_keyring_wrap_secret(store_keyring *k, const char *label, const char *context,
                                const uint8_t *secret, size_t len,
                                char kek_id[STORE_KEK_ID_LEN + 1],
                                uint8_t out[STORE_SECRET_WRAPPED_MAX], size_t *out_len, cu_err *err)
{
    uint8_t kek[32], aad[512];
    if (len == 0 || len > STORE_SECRET_MAX)
        return cu_err_set(err, CU_ERR_INVALID, "a secret of %zu bytes cannot be wrapped", len);
    pthread_mutex_lock(&k->lock);
    cu_rc rc = keyring_active_id(k, kek_id, err);
    if (!rc)
        rc = keyring_kek(k, kek_id, kek, err);
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    size_t aad_len = secret_aad(label, context, kek_id, aad, sizeof(aad));
    out[0] = 1;
    rc = aad_len ? random_bytes(out + 1, 12, err)
                 : cu_err_set(err, CU_ERR_INVALID, "wrapping label or context too long");
    if (!rc &&
        gcm(true, kek, out + 1, aad, aad_len, secret, len, out + 13, out + 13 + len) != CU_OK)
        rc = cu_err_set(err, CU_ERR_IO, "wrapping a secret failed");
    OPENSSL_cleanse(kek, sizeof(kek));
    if (!rc)
        *out_len = 1 + 12 + len + 16;
    return rc;
}

cu_rc store_keyring_unwrap_secret(store_keyring *k, const char *label, const char *context,
                                  const char *kek_id, const uint8_t *wrapped, size_t wrapped_len,
                                  uint8_t out[STORE_SECRET_MAX], size_t *len, cu_err *err)
{
    uint8_t kek[32], aad[512], tag[16];
    if (wrapped_len < 1 + 12 + 1 + 16 || wrapped_len > STORE_SECRET_WRAPPED_MAX || wrapped[0] != 1)
        return cu_err_set(err, CU_ERR_INVALID, "a wrapped secret has a bad length or version");
    pthread_mutex_lock(&k->lock);
    cu_rc rc = keyring_kek(k, kek_id, kek, err);
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    size_t n = wrapped_len - 29;
    size_t aad_len = secret_aad(label, context, kek_id, aad, sizeof(aad));
    memcpy(tag, wrapped + 13 + n, 16);
    if (!aad_len ||
        gcm(false, kek, wrapped + 1, aad, aad_len, wrapped + 13, n, out, tag) != CU_OK) {
        OPENSSL_cleanse(out, STORE_SECRET_MAX);
        rc = cu_err_set(err, CU_ERR_INVALID, "a wrapped secret (%s) does not authenticate", label);
    } else {
        *len = n;
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    return rc;
}

/* --------------------------------------------------------- pending keys */

static void pending_name(const store_id *recording, char out[64])
{
    char id[37];
    store_id_format(recording, id);
    snprintf(out, 64, "%s.dek", id);
}

cu_rc store_pending_write(const char *data_dir, const store_id *recording, const store_dek *dek,
                          cu_err *err)
{
    uint8_t buf[PENDING_LEN];
    char dir[PATH_MAX], name[64];
    memcpy(buf, PENDING_MAGIC, 4);
    buf[4] = 1;
    memcpy(buf + 5, dek->key_id.b, 16);
    memcpy(buf + 21, dek->kek_id, STORE_KEK_ID_LEN);
    memcpy(buf + 21 + STORE_KEK_ID_LEN, dek->wrapped, STORE_WRAPPED_LEN);
    snprintf(dir, sizeof(dir), "%s/keys/pending", data_dir);
    pending_name(recording, name);
    return cu_file_write_durably(dir, name, buf, sizeof(buf), 0600, err);
}

cu_rc store_pending_read(const char *data_dir, const store_id *recording, store_dek *dek,
                         cu_err *err)
{
    char path[PATH_MAX + 80], name[64];
    pending_name(recording, name);
    snprintf(path, sizeof(path), "%s/keys/pending/%s", data_dir, name);
    cu_buf b;
    cu_buf_init(&b, PENDING_LEN);
    cu_rc rc = store_read_file(path, PENDING_LEN, &b, err);
    if (rc)
        goto out;
    if (b.len != PENDING_LEN || memcmp(b.data, PENDING_MAGIC, 4) != 0 || b.data[4] != 1) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s is not a pending key file", path);
        goto out;
    }
    memset(dek, 0, sizeof(*dek));
    memcpy(dek->key_id.b, b.data + 5, 16);
    memcpy(dek->kek_id, b.data + 21, STORE_KEK_ID_LEN);
    dek->kek_id[STORE_KEK_ID_LEN] = '\0';
    memcpy(dek->wrapped, b.data + 21 + STORE_KEK_ID_LEN, STORE_WRAPPED_LEN);
    if (!kek_id_valid(dek->kek_id))
        rc = cu_err_set(err, CU_ERR_INVALID, "%s names a bad key-encryption key", path);
out:
    cu_buf_free(&b);
    return rc;
}

void store_pending_remove(const char *data_dir, const store_id *recording)
{
    char path[PATH_MAX + 80], name[64];
    pending_name(recording, name);
    snprintf(path, sizeof(path), "%s/keys/pending/%s", data_dir, name);
    if (unlink(path) != 0 && errno != ENOENT)
        CU_LOG_ERRNO(CU_LOG_WARN, "keys", errno, "cannot remove %s", path);
}

/* ------------------------------------------------------------ database */

cu_rc store_dek_load(const char *data_dir, PGconn *conn, store_keyring *k,
                     const store_id *recording, store_dek *dek, cu_err *err)
{
    cu_rc rc = CU_ERR_NOTFOUND;
    memset(dek, 0, sizeof(*dek));
    if (conn) {
        char id[37];
        store_id_format(recording, id);
        const char *tparams[1] = {id};
        /* text parameter, binary results: bytea columns arrive raw */
        PGresult *res = PQexecParams(conn,
                                     "SELECT key_id, kek_id, wrapped FROM recording_keys "
                                     "WHERE recording_id = $1",
                                     1, NULL, tparams, NULL, NULL, 1);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = cu_err_set(err, CU_ERR_DB, "reading the data key: %s", PQerrorMessage(conn));
            PQclear(res);
            return rc;
        }
        if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 16 &&
            PQgetlength(res, 0, 1) == STORE_KEK_ID_LEN &&
            PQgetlength(res, 0, 2) == STORE_WRAPPED_LEN) {
            memcpy(dek->key_id.b, PQgetvalue(res, 0, 0), 16);
            memcpy(dek->kek_id, PQgetvalue(res, 0, 1), STORE_KEK_ID_LEN);
            memcpy(dek->wrapped, PQgetvalue(res, 0, 2), STORE_WRAPPED_LEN);
            rc = CU_OK;
        } else if (PQntuples(res) == 1) {
            rc = cu_err_set(err, CU_ERR_INVALID, "the stored data key row is malformed");
        }
        PQclear(res);
    }
    if (rc == CU_ERR_NOTFOUND)
        rc = store_pending_read(data_dir, recording, dek, err);
    if (rc == CU_ERR_NOTFOUND) {
        char id[37];
        store_id_format(recording, id);
        return cu_err_set(err, CU_ERR_NOTFOUND, "recording %s has no data key", id);
    }
    if (rc)
        return rc;
    return store_keyring_unwrap(k, recording, &dek->key_id, dek->kek_id, dek->wrapped,
                                STORE_WRAPPED_LEN, dek->key, err);
}

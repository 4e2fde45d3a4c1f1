/*
 * Per-recording data keys (docs/segment-format.md, "Keys"): made fresh,
 * wrapped by the active KEK (keys/), kept in PostgreSQL and, until the index
 * holds them, in a pending file. Plain keys live only in memory and are
 * wiped after use.
 */
#include "store_internal.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PENDING_MAGIC "CDEK"
#define PENDING_LEN   (4 + 1 + 16 + STORE_KEK_ID_LEN + STORE_WRAPPED_LEN)

static bool kek_id_valid(const char *id)
{
    return strlen(id) == STORE_KEK_ID_LEN && strspn(id, "0123456789abcdef") == STORE_KEK_ID_LEN;
}

/* aad prefix = "custos-dek-v1" ‖ recording ‖ key id (keys_wrap appends the KEK id) */
static size_t dek_aad(const store_id *recording, const store_id *key_id, uint8_t aad[64])
{
    static const char label[] = "custos-dek-v1";
    size_t n = sizeof(label) - 1;
    memcpy(aad, label, n);
    memcpy(aad + n, recording->b, 16);
    memcpy(aad + n + 16, key_id->b, 16);
    return n + 32;
}

static cu_rc dek_wrap(keys_ring *k, const store_id *recording, store_dek *dek, cu_err *err)
{
    uint8_t aad[64];
    size_t aad_len = dek_aad(recording, &dek->key_id, aad);
    return keys_wrap(k, aad, aad_len, dek->key, 32, dek->kek_id, dek->wrapped, err);
}

cu_rc store_dek_new(keys_ring *k, const store_id *recording, store_dek *out, cu_err *err)
{
    memset(out, 0, sizeof(*out));
    cu_rc rc = CU_OK;
    if (RAND_bytes(out->key, 32) != 1 || RAND_bytes(out->key_id.b, 16) != 1)
        rc = cu_err_set(err, CU_ERR_IO, "the random number generator failed");
    if (!rc)
        rc = dek_wrap(k, recording, out, err);
    if (rc)
        store_dek_wipe(out);
    return rc;
}

cu_rc store_dek_rewrap(keys_ring *k, const store_id *recording, store_dek *dek, cu_err *err)
{
    return dek_wrap(k, recording, dek, err);
}

cu_rc store_dek_unwrap(keys_ring *k, const store_id *recording, const store_id *key_id,
                       const char *kek_id, const uint8_t *wrapped, size_t wrapped_len,
                       uint8_t key[32], cu_err *err)
{
    uint8_t aad[64];
    if (wrapped_len != STORE_WRAPPED_LEN)
        return cu_err_set(err, CU_ERR_INVALID, "wrapped data key has a bad length");
    size_t aad_len = dek_aad(recording, key_id, aad);
    cu_rc rc = keys_unwrap(k, kek_id, aad, aad_len, wrapped, wrapped_len, key, err);
    if (rc == CU_ERR_INVALID)
        cu_err_set(err, rc,
                   "the wrapped data key does not authenticate under key-encryption key %s",
                   kek_id);
    return rc;
}

void store_dek_wipe(store_dek *dek)
{
    OPENSSL_cleanse(dek->key, sizeof(dek->key));
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

cu_rc store_dek_load(const char *data_dir, PGconn *conn, keys_ring *k, const store_id *recording,
                     store_dek *dek, cu_err *err)
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
    return store_dek_unwrap(k, recording, &dek->key_id, dek->kek_id, dek->wrapped,
                            STORE_WRAPPED_LEN, dek->key, err);
}

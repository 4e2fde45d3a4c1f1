/*
 * Reading a recording back for export (docs/export.md): nothing leaves that
 * is not what was stored, in its place. At open, the chain is walked over
 * every segment's header from the genesis (headers only: no decryption),
 * each held against its index row; a sealed recording's last link must be
 * its sealed head. A segment read later must be that same file (its header
 * is the one walked), its GCM tag must hold and its plaintext hash to the
 * header's. Any failure names the segment.
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct store_reader {
    char dir[PATH_MAX];
    store_id id;
    store_dek dek;
    uint64_t count;
    store_header *headers; /* [count], as walked at open */
    store_segment_meta *meta;
    cu_buf meta_file; /* the recording's meta file, as hashed into the chain's genesis */
    uint8_t genesis[32];
    bool sealed;
    uint8_t sealed_head[32];
};

/* An index row: what the database says segment idx is. */
typedef struct {
    uint64_t idx;
    uint8_t sha256[32], chain[32];
} index_row;

static uint64_t be_col(PGresult *res, int row, int col)
{
    const uint8_t *p = (const uint8_t *)PQgetvalue(res, row, col);
    uint64_t v = 0;
    for (int b = 0; b < PQgetlength(res, row, col) && b < 8; b++)
        v = v << 8 | p[b];
    return v;
}

/* @p sql with the recording id as its one parameter, binary results; NULL
 * (and @p err, naming @p what) when it failed. */
static PGresult *query_recording(PGconn *conn, const char *sql, const store_id *id,
                                 const char *what, cu_err *err)
{
    char text[37];
    store_id_format(id, text);
    const char *params[1] = {text};
    PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return res;
    cu_err_set(err, CU_ERR_DB, "reading %s: %s", what, PQerrorMessage(conn));
    PQclear(res);
    return NULL;
}

/* The index rows of the recording, and its sealed head and count (when sealed). */
static cu_rc load_index(PGconn *conn, const store_id *id, index_row **rows_out, size_t *n_out,
                        bool *sealed, uint8_t head[32], uint64_t *count, cu_err *err)
{
    PGresult *res = query_recording(conn,
                                    "SELECT s.idx, s.sha256, s.chain FROM segments s "
                                    "WHERE s.recording_id = $1 ORDER BY s.idx",
                                    id, "segments", err);
    if (!res)
        return CU_ERR_DB;
    int n = PQntuples(res);
    index_row *rows = cu_xcalloc(n ? (size_t)n : 1, sizeof(*rows));
    for (int i = 0; i < n; i++) {
        rows[i].idx = be_col(res, i, 0);
        if (PQgetlength(res, i, 1) == 32)
            memcpy(rows[i].sha256, PQgetvalue(res, i, 1), 32);
        if (PQgetlength(res, i, 2) == 32)
            memcpy(rows[i].chain, PQgetvalue(res, i, 2), 32);
    }
    PQclear(res);
    res = query_recording(conn,
                          "SELECT chain_head, segment_count FROM recordings "
                          "WHERE id = $1 AND chain_head IS NOT NULL",
                          id, "the recording", err);
    if (!res) {
        free(rows);
        return CU_ERR_DB;
    }
    *sealed = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 32;
    if (*sealed) {
        memcpy(head, PQgetvalue(res, 0, 0), 32);
        *count = be_col(res, 0, 1);
    }
    PQclear(res);
    *rows_out = rows;
    *n_out = (size_t)n;
    return CU_OK;
}

/* The header of segment file @p path (not its payload). */
static cu_rc read_header(const char *path, store_header *h, cu_err *err)
{
    uint8_t buf[STORE_HEADER_LEN];
    char why[200];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cu_err_set(err, CU_ERR_INVALID, "%s: %s", path, strerror(e));
    }
    ssize_t got = pread(fd, buf, sizeof(buf), 0);
    close(fd);
    if (got != (ssize_t)sizeof(buf))
        return cu_err_set(err, CU_ERR_INVALID, "%s: shorter than a header", path);
    if (store_header_parse(buf, sizeof(buf), (uint64_t)st.st_size, h, why, sizeof(why)) != CU_OK)
        return cu_err_set(err, CU_ERR_INVALID, "%s: %s", path, why);
    return CU_OK;
}

cu_rc store_reader_open(const char *data_dir, PGconn *conn, keys_ring *keys,
                        const store_id *recording, store_reader **out, cu_err *err)
{
    store_reader *r = cu_xcalloc(1, sizeof(*r));
    index_row *rows = NULL;
    size_t nrows = 0;
    bool sealed = false;
    uint8_t sealed_head[32], chain[32];
    uint64_t sealed_count = 0;
    char path[PATH_MAX];

    r->id = *recording;
    cu_buf_init(&r->meta_file, STORE_META_MAX);
    store_recording_dir(data_dir, recording, r->dir);
    cu_rc rc = store_dek_load(data_dir, conn, keys, recording, &r->dek, err);
    if (!rc)
        rc = load_index(conn, recording, &rows, &nrows, &sealed, sealed_head, &sealed_count, err);
    if (rc)
        goto out;
    /* The genesis from the very bytes kept (what export reads of the meta
     * is what the chain holds). An absent file reads as empty. */
    snprintf(path, sizeof(path), "%s/meta", r->dir);
    rc = store_read_file(path, STORE_META_MAX, &r->meta_file, err);
    if (rc == CU_ERR_NOTFOUND)
        rc = CU_OK;
    if (rc)
        goto out;
    uint8_t meta_sha[32];
    EVP_Digest(r->meta_file.data ? r->meta_file.data : "", r->meta_file.len, meta_sha, NULL,
               EVP_sha256(), NULL);
    store_chain_genesis(recording, meta_sha, chain);
    memcpy(r->genesis, chain, 32);
    r->count = nrows;
    r->headers = cu_xcalloc(nrows ? nrows : 1, sizeof(*r->headers));
    r->meta = cu_xcalloc(nrows ? nrows : 1, sizeof(*r->meta));
    for (uint64_t i = 0; i < nrows; i++) {
        store_header *h = &r->headers[i];
        store_segment_path(r->dir, i, path);
        if (rows[i].idx != i) {
            rc = cu_err_set(err, CU_ERR_INVALID, "segment %llu: missing from the index",
                            (unsigned long long)i);
            goto out;
        }
        rc = read_header(path, h, err);
        if (rc)
            goto out;
        uint8_t next[32];
        store_chain_next(chain, h, next);
        if (!store_id_equal(&h->recording, recording) || h->index != i ||
            !store_id_equal(&h->key_id, &r->dek.key_id)) {
            rc = cu_err_set(err, CU_ERR_INVALID,
                            "segment %llu (%s): belongs to another recording or position",
                            (unsigned long long)i, path);
            goto out;
        }
        if (memcmp(next, h->chain, 32) != 0 || memcmp(next, rows[i].chain, 32) != 0 ||
            memcmp(h->sha256, rows[i].sha256, 32) != 0) {
            rc = cu_err_set(err, CU_ERR_INVALID,
                            "segment %llu (%s): out of its place in the hash chain (the file, "
                            "the index and the chain disagree)",
                            (unsigned long long)i, path);
            goto out;
        }
        memcpy(chain, next, 32);
        r->meta[i] = (store_segment_meta){.start_us = h->start_us,
                                          .end_us = h->end_us,
                                          .packets = h->packets,
                                          .lost = h->lost,
                                          .flags = h->flags};
    }
    if (sealed && (sealed_count != nrows || memcmp(chain, sealed_head, 32) != 0)) {
        rc = cu_err_set(err, CU_ERR_INVALID,
                        "the recording's segments do not end at its sealed head (%llu sealed, "
                        "%zu found)",
                        (unsigned long long)sealed_count, nrows);
        goto out;
    }
    r->sealed = sealed;
    if (sealed)
        memcpy(r->sealed_head, sealed_head, 32);
    *out = r;
    r = NULL;
out:
    free(rows);
    store_reader_close(r);
    return rc;
}

const store_id *store_reader_id(const store_reader *r)
{
    return &r->id;
}

uint64_t store_reader_count(const store_reader *r)
{
    return r->count;
}

const char *store_reader_meta_file(const store_reader *r, size_t *len)
{
    *len = r->meta_file.len;
    return r->meta_file.data ? r->meta_file.data : "";
}

const store_segment_meta *store_reader_meta(const store_reader *r, uint64_t index)
{
    return index < r->count ? &r->meta[index] : NULL;
}

bool store_reader_chain(const store_reader *r, int64_t index, uint8_t sha256[32], uint8_t chain[32])
{
    if (index < -1 || index >= (int64_t)r->count)
        return false;
    if (index == -1) {
        memset(sha256, 0, 32);
        memcpy(chain, r->genesis, 32);
        return true;
    }
    memcpy(sha256, r->headers[index].sha256, 32);
    memcpy(chain, r->headers[index].chain, 32);
    return true;
}

bool store_reader_sealed(const store_reader *r, uint8_t head[32])
{
    if (r->sealed)
        memcpy(head, r->sealed_head, 32);
    return r->sealed;
}

cu_rc store_reader_read(const store_reader *r, uint64_t index, cu_buf *plaintext, cu_err *err)
{
    char path[PATH_MAX], why[200];
    if (index >= r->count)
        return cu_err_set(err, CU_ERR_NOTFOUND, "segment %llu: no such segment",
                          (unsigned long long)index);
    store_segment_path(r->dir, index, path);
    /* The file into @p plaintext, then decrypted there (no second buffer:
     * readers on several threads share nothing but the walked headers). */
    if (plaintext->max < SEGMENT_FILE_MAX)
        return cu_err_set(err, CU_ERR_NOMEM, "segment %llu: the buffer is too small",
                          (unsigned long long)index);
    cu_err read_err;
    cu_rc rc = store_read_file(path, SEGMENT_FILE_MAX, plaintext, &read_err);
    if (rc) /* (the message names the file) */
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu: %s", (unsigned long long)index,
                          read_err.msg);
    store_header h;
    if (store_header_parse((const uint8_t *)plaintext->data, plaintext->len, plaintext->len, &h,
                           why, sizeof(why)) != CU_OK) {
        cu_buf_reset(plaintext);
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu (%s): %s", (unsigned long long)index,
                          path, why);
    }
    if (memcmp(h.chain, r->headers[index].chain, 32) != 0) {
        cu_buf_reset(plaintext);
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu (%s): changed since it was checked",
                          (unsigned long long)index, path);
    }
    if (!store_segment_decrypt_in_place(plaintext, &h, r->dek.key)) {
        cu_buf_reset(plaintext);
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu (%s): authentication failed (GCM tag)",
                          (unsigned long long)index, path);
    }
    uint8_t sha[32];
    EVP_Digest(plaintext->data, plaintext->len, sha, NULL, EVP_sha256(), NULL);
    if (memcmp(sha, h.sha256, 32) != 0) {
        cu_buf_reset(plaintext);
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu (%s): plaintext hash mismatch",
                          (unsigned long long)index, path);
    }
    return CU_OK;
}

void store_reader_close(store_reader *r)
{
    if (!r)
        return;
    store_dek_wipe(&r->dek);
    free(r->headers);
    free(r->meta);
    cu_buf_free(&r->meta_file);
    free(r);
}

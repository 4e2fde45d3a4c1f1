/*
 * Work on a data dir without the writer's threads: reading back, crash
 * recovery, rebuilding the index, key rotation, erasure.
 */
#include "store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- shared */

/* Read a segment file and parse its header; @p why says what is wrong. */
static cu_rc load_segment(const char *path, cu_buf *file, store_found_segment *seg, char *why,
                          size_t why_len)
{
    cu_err err;
    cu_rc rc = store_read_file(path, SEGMENT_FILE_MAX, file, &err);
    if (rc) {
        snprintf(why, why_len, "%s", err.msg);
        return rc;
    }
    rc = store_header_parse((const uint8_t *)file->data, file->len, file->len, &seg->h, why,
                            why_len);
    if (rc)
        return rc;
    seg->file_len = file->len;
    store_xxh3(file->data, file->len, seg->xxh3);
    return CU_OK;
}

bool store_segment_decrypt(const cu_buf *file, const store_header *h, const uint8_t key[32],
                           uint8_t *plain)
{
    const uint8_t *bytes = (const uint8_t *)file->data;
    uint8_t tag[STORE_TAG_LEN];
    int n = 0;
    bool ok;
    memcpy(tag, bytes + STORE_HEADER_LEN + h->plaintext_len, STORE_TAG_LEN);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, h->nonce) == 1 &&
         EVP_DecryptUpdate(c, NULL, &n, bytes, STORE_HEADER_LEN) == 1 &&
         EVP_DecryptUpdate(c, plain, &n, bytes + STORE_HEADER_LEN, (int)h->plaintext_len) == 1 &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, STORE_TAG_LEN, tag) == 1 &&
         EVP_DecryptFinal_ex(c, plain + n, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok;
}

bool store_segment_decrypt_in_place(cu_buf *buf, const store_header *h, const uint8_t key[32])
{
    if (buf->len != STORE_HEADER_LEN + h->plaintext_len + STORE_TAG_LEN)
        return false;
    uint8_t header[STORE_HEADER_LEN], tag[STORE_TAG_LEN];
    uint8_t *bytes = (uint8_t *)buf->data;
    memcpy(header, bytes, STORE_HEADER_LEN);
    memcpy(tag, bytes + STORE_HEADER_LEN + h->plaintext_len, STORE_TAG_LEN);
    memmove(bytes, bytes + STORE_HEADER_LEN, h->plaintext_len);
    int n = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    bool ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, h->nonce) == 1 &&
              EVP_DecryptUpdate(c, NULL, &n, header, STORE_HEADER_LEN) == 1 &&
              EVP_DecryptUpdate(c, bytes, &n, bytes, (int)h->plaintext_len) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, STORE_TAG_LEN, tag) == 1 &&
              EVP_DecryptFinal_ex(c, bytes + n, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    buf->len = ok ? h->plaintext_len : 0;
    return ok;
}

void store_remove_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
            char path[PATH_MAX + 300];
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            if (unlink(path) == 0)
                CU_LOG(CU_LOG_INFO, "store", "removed %s, left by a crash", path);
        }
    }
    closedir(d);
}

/* ----------------------------------------------------------------- read */

cu_rc store_segment_read(const char *data_dir, PGconn *conn, keys_ring *k,
                         const store_id *recording, uint64_t index, cu_buf *plaintext, cu_err *err)
{
    cu_rc rc = CU_OK;
    store_dek dek;
    cu_buf file;
    char dir[PATH_MAX], path[PATH_MAX], why[200];
    store_found_segment seg;

    memset(&dek, 0, sizeof(dek));
    cu_buf_init(&file, SEGMENT_FILE_MAX);
    rc = store_dek_load(data_dir, conn, k, recording, &dek, err);
    if (rc)
        goto out;
    store_recording_dir(data_dir, recording, dir);
    store_segment_path(dir, index, path);
    if (load_segment(path, &file, &seg, why, sizeof(why)) != CU_OK) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: %s", path, why);
        goto out;
    }
    if (!store_id_equal(&seg.h.recording, recording) || seg.h.index != index ||
        !store_id_equal(&seg.h.key_id, &dek.key_id)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s belongs to another recording or position", path);
        goto out;
    }
    cu_buf_reset(plaintext);
    if (seg.h.plaintext_len > plaintext->max) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "segment larger than the buffer allows");
        goto out;
    }
    /* Reserve by appending, then decrypt over it. */
    rc = cu_buf_append(plaintext, file.data + STORE_HEADER_LEN, seg.h.plaintext_len);
    if (rc) {
        cu_err_set(err, rc, "out of memory for a segment");
        goto out;
    }
    if (!store_segment_decrypt(&file, &seg.h, dek.key, (uint8_t *)plaintext->data)) {
        cu_buf_reset(plaintext);
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: authentication failed (GCM tag)", path);
        goto out;
    }
    uint8_t sha[32];
    EVP_Digest(plaintext->data, plaintext->len, sha, NULL, EVP_sha256(), NULL);
    if (memcmp(sha, seg.h.sha256, 32) != 0) {
        cu_buf_reset(plaintext);
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: plaintext hash mismatch", path);
    }
out:
    store_dek_wipe(&dek);
    cu_buf_free(&file);
    return rc;
}

/* ------------------------------------------------------------- recovery */

/* The longest prefix 0..k-1 of well-formed, chained segments of @p rec. */
static uint64_t complete_prefix(const char *dir, const store_id *rec, const store_id *key_id,
                                store_found_segment **found_out, uint8_t head[32],
                                store_origin *origin)
{
    uint64_t *list = NULL;
    size_t n = 0;
    cu_err err;
    cu_buf file;
    char path[PATH_MAX], why[200];
    uint64_t k = 0;
    store_found_segment *found = NULL;

    if (store_recording_genesis(dir, rec, head, origin, &err) != CU_OK ||
        store_list_segments(dir, &list, &n, &err) != CU_OK)
        goto out;
    found = cu_xcalloc(n ? n : 1, sizeof(*found));
    cu_buf_init(&file, SEGMENT_FILE_MAX);
    for (size_t i = 0; i < n && list[i] == k; i++) {
        store_found_segment seg;
        store_segment_path(dir, k, path);
        if (load_segment(path, &file, &seg, why, sizeof(why)) != CU_OK)
            break;
        uint8_t c[32];
        store_chain_next(head, &seg.h, c);
        if (!store_id_equal(&seg.h.recording, rec) || seg.h.index != k ||
            !store_id_equal(&seg.h.key_id, key_id) || memcmp(c, seg.h.chain, 32) != 0)
            break;
        memcpy(head, c, 32);
        found[k++] = seg;
    }
    cu_buf_free(&file);
    /* What follows a break was never acknowledged: keep it aside. */
    for (size_t i = 0; i < n; i++) {
        if (list[i] < k)
            continue;
        char orphan[PATH_MAX + 8];
        store_segment_path(dir, list[i], path);
        snprintf(orphan, sizeof(orphan), "%s.orphan", path);
        if (rename(path, orphan) == 0)
            CU_LOG(CU_LOG_WARN, "store", "%s follows a break in its recording; kept as %s", path,
                   orphan);
    }
out:
    free(list);
    *found_out = found;
    return k;
}

cu_rc store_recover_one(const char *data_dir, PGconn *conn, keys_ring *k, const store_id *recording,
                        const char *dir, cu_err *err)
{
    store_dek dek;
    store_found_segment *found = NULL;
    uint8_t buf[STORE_SEAL_LEN];
    char id[37];

    store_remove_temp_files(dir);
    cu_rc rc = store_dek_load(data_dir, conn, k, recording, &dek, err);
    if (rc)
        return rc;
    store_seal seal = {.reason = STORE_SEAL_INTERRUPTED,
                       .recording = *recording,
                       .key_id = dek.key_id,
                       .sealed_us = cu_time_ms() * 1000};
    store_origin origin;
    seal.count = complete_prefix(dir, recording, &dek.key_id, &found, seal.head, &origin);
    seal.opened_us = seal.count ? found[0].h.start_us : seal.sealed_us;
    store_seal_encode(&seal, dek.key, buf);
    rc = cu_file_write_durably(dir, "seal", buf, sizeof(buf), 0640, err);
    if (rc)
        goto out;
    store_id_format(recording, id);
    CU_LOG(CU_LOG_WARN, "store", "recording %s was interrupted; sealed at %llu segment(s)", id,
           (unsigned long long)seal.count);
    if (conn) {
        /* Index what the crash may have kept from the index writer, in one
         * transaction with the seal's audit entry. */
        cu_err ierr;
        cu_rc irc = db_exec(conn, "BEGIN", &ierr);
        if (!irc)
            irc = store_sql_recording_open(conn, recording, &dek.key_id, seal.opened_us, &origin,
                                           &ierr);
        if (!irc)
            irc = store_sql_key_insert(conn, recording, &dek, &ierr);
        for (uint64_t i = 0; !irc && i < seal.count; i++)
            irc = store_sql_segment_insert(conn, &found[i], &ierr);
        if (!irc)
            irc = store_sql_recording_seal(conn, &seal, seal.opened_us, &origin, &ierr);
        if (!irc)
            irc = db_exec(conn, "COMMIT", &ierr);
        if (irc) {
            cu_err ignore;
            CU_LOG(CU_LOG_WARN, "store", "indexing recovered %s: %s", id, ierr.msg);
            if (db_exec(conn, "ROLLBACK", &ignore) != CU_OK)
                CU_LOG(CU_LOG_WARN, "store", "rollback failed: %s", ignore.msg);
        } else {
            store_pending_remove(data_dir, recording);
        }
    }
out:
    store_dek_wipe(&dek);
    free(found);
    return rc;
}

/* -------------------------------------------------------------- reindex */

typedef struct {
    const char *data_dir;
    PGconn *conn;
    store_reindex_report *rep;
    cu_rc rc;
    cu_err *err;
    /* recordings seen on disk, to find index rows without a directory */
    store_id *seen;
    size_t nseen, capseen;
    /* continuations and what they continue, linked once both are indexed */
    store_id (*links)[2];
    size_t nlinks, caplinks;
} reindex_ctx;

static cu_rc index_rows_without_file(PGconn *conn, const store_id *rec, const uint64_t *disk,
                                     size_t ndisk, uint64_t *count, cu_err *err)
{
    char id[37];
    store_id_format(rec, id);
    const char *params[1] = {id};
    PGresult *res =
        PQexecParams(conn, "SELECT idx FROM segments WHERE recording_id = $1 ORDER BY idx", 1, NULL,
                     params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_rc rc = cu_err_set(err, CU_ERR_DB, "reading segments: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    size_t j = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        uint64_t idx = strtoull(PQgetvalue(res, i, 0), NULL, 10);
        while (j < ndisk && disk[j] < idx)
            j++;
        if (j >= ndisk || disk[j] != idx)
            (*count)++;
    }
    PQclear(res);
    return CU_OK;
}

static cu_rc reindex_one(reindex_ctx *c, const store_id *rec, const char *dir)
{
    cu_rc rc;
    cu_err *err = c->err;
    uint64_t *list = NULL;
    size_t n = 0;
    cu_buf file;
    store_found_segment *segs = NULL;
    size_t nsegs = 0;
    store_seal seal;
    bool has_seal = false;
    store_dek pending;
    bool has_pending = false;
    char path[PATH_MAX + 8], why[200];
    struct stat st;

    cu_buf_init(&file, SEGMENT_FILE_MAX);
    /* An erased recording's leftovers are never indexed again. */
    char idtext[37];
    store_id_format(rec, idtext);
    const char *params[1] = {idtext};
    PGresult *res = PQexecParams(c->conn, "SELECT state FROM recordings WHERE id = $1", 1, NULL,
                                 params, NULL, NULL, 0);
    bool erased = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                  strcmp(PQgetvalue(res, 0, 0), "erased") == 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc =
            cu_err_set(err, CU_ERR_DB, "reading recording %s: %s", idtext, PQerrorMessage(c->conn));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    if (erased) {
        rc = CU_OK;
        goto out;
    }
    snprintf(path, sizeof(path), "%s/seal", dir);
    if (store_read_file(path, STORE_SEAL_LEN, &file, err) == CU_OK &&
        store_seal_parse((const uint8_t *)file.data, file.len, &seal, why, sizeof(why)) == CU_OK &&
        store_id_equal(&seal.recording, rec))
        has_seal = true;
    cu_err ignore;
    has_pending = store_pending_read(c->data_dir, rec, &pending, &ignore) == CU_OK;

    rc = store_list_segments(dir, &list, &n, err);
    if (rc)
        goto out;
    segs = cu_xcalloc(n ? n : 1, sizeof(*segs));
    for (size_t i = 0; i < n; i++) {
        store_segment_path(dir, list[i], path);
        if (load_segment(path, &file, &segs[nsegs], why, sizeof(why)) != CU_OK)
            continue; /* verify reports it */
        if (!store_id_equal(&segs[nsegs].h.recording, rec) || segs[nsegs].h.index != list[i])
            continue;
        nsegs++;
    }

    store_id key_id;
    int64_t opened_us;
    uint8_t genesis[32];
    store_origin origin;
    cu_err ignore_meta;
    if (store_recording_genesis(dir, rec, genesis, &origin, &ignore_meta) != CU_OK)
        memset(&origin, 0, sizeof(origin)); /* verify reports an unreadable meta file */
    if (has_seal) {
        key_id = seal.key_id;
        opened_us = seal.opened_us;
    } else if (nsegs) {
        key_id = segs[0].h.key_id;
        opened_us = segs[0].h.start_us;
    } else if (has_pending) {
        key_id = pending.key_id;
        opened_us = stat(dir, &st) == 0 ? (int64_t)st.st_mtime * 1000000 : 0;
    } else {
        goto out; /* an empty directory: nothing to index */
    }

    rc = db_exec(c->conn, "BEGIN", err);
    if (!rc)
        rc = store_sql_recording_open(c->conn, rec, &key_id, opened_us, &origin, err);
    if (!rc && has_pending)
        rc = store_sql_key_insert(c->conn, rec, &pending, err);
    if (!rc && has_seal)
        rc = store_sql_recording_seal(c->conn, &seal, opened_us, &origin, err);
    /* Only what a seal covers is indexed: a segment past it, or of a
     * recording not sealed yet, may never have been acknowledged (the
     * writer, or the recovery that seals it, indexes those). */
    for (size_t i = 0; !rc && has_seal && i < nsegs; i++)
        if (segs[i].h.index < seal.count)
            rc = store_sql_segment_insert(c->conn, &segs[i], err);
    if (!rc)
        rc = store_sql_recording_recount(c->conn, rec, err);
    if (!rc)
        rc = index_rows_without_file(c->conn, rec, list, n, &c->rep->rows_without_file, err);
    if (!rc)
        rc = db_exec(c->conn, "COMMIT", err);
    if (rc) {
        cu_err e2;
        if (db_exec(c->conn, "ROLLBACK", &e2) != CU_OK)
            CU_LOG(CU_LOG_WARN, "store", "rollback failed: %s", e2.msg);
        goto out;
    }
    if (origin.has_continues) {
        /* What it continues may be indexed later in this scan: linked then. */
        cu_err ignore_link;
        if (store_sql_recording_link(c->conn, rec, &origin.continues, &ignore_link) != CU_OK)
            CU_LOG(CU_LOG_WARN, "store", "linking %s: %s", idtext, ignore_link.msg);
        if (c->nlinks == c->caplinks) {
            c->caplinks = c->caplinks ? c->caplinks * 2 : 16;
            void *bigger = realloc(c->links, c->caplinks * sizeof(*c->links));
            if (!bigger)
                abort();
            c->links = bigger;
        }
        c->links[c->nlinks][0] = *rec;
        c->links[c->nlinks][1] = origin.continues;
        c->nlinks++;
    }
    if (has_pending) {
        /* The pending file marks a recording whose index may lag; once the
         * seal is indexed, the database has everything. */
        if (has_seal)
            store_pending_remove(c->data_dir, rec);
        c->rep->keys_imported++;
    }
    c->rep->recordings++;
    c->rep->segments += nsegs;
out:
    free(list);
    free(segs);
    cu_buf_free(&file);
    return rc;
}

static bool reindex_dir(void *arg, const store_id *rec, const char *dir)
{
    reindex_ctx *c = arg;
    if (c->nseen == c->capseen) {
        c->capseen = c->capseen ? c->capseen * 2 : 256;
        store_id *bigger = realloc(c->seen, c->capseen * sizeof(*bigger));
        if (!bigger)
            abort();
        c->seen = bigger;
    }
    c->seen[c->nseen++] = *rec;
    /* One recording that cannot be indexed does not stop the others; the
     * first failure is what the rebuild reports. */
    cu_err one;
    cu_err *caller = c->err;
    c->err = &one;
    cu_rc rc = reindex_one(c, rec, dir);
    c->err = caller;
    if (rc) {
        char id[37];
        store_id_format(rec, id);
        CU_LOG(CU_LOG_WARN, "store", "reindex: recording %s: %s", id, one.msg);
        if (!c->rc) {
            c->rc = rc;
            cu_err_set(c->err, rc, "recording %s: %s", id, one.msg);
        }
    }
    return PQstatus(c->conn) == CONNECTION_OK;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

cu_rc store_reindex(const char *data_dir, PGconn *conn, store_reindex_report *report, cu_err *err)
{
    memset(report, 0, sizeof(*report));
    reindex_ctx c = {.data_dir = data_dir, .conn = conn, .rep = report, .err = err};
    cu_rc rc = store_scan_recordings(data_dir, reindex_dir, &c, err);
    for (size_t i = 0; !rc && i < c.nlinks; i++) {
        cu_err ignore;
        if (store_sql_recording_link(conn, &c.links[i][0], &c.links[i][1], &ignore) != CU_OK)
            CU_LOG(CU_LOG_WARN, "store", "reindex: linking a continuation: %s", ignore.msg);
    }
    if (!rc)
        rc = c.rc;
    if (rc)
        goto out;
    /* Index rows of recordings with no directory at all. */
    if (c.nseen)
        qsort(c.seen, c.nseen, sizeof(store_id), cmp_id);
    PGresult *res = PQexec(conn, "SELECT r.id, count(s.idx) FROM recordings r "
                                 "LEFT JOIN segments s ON s.recording_id = r.id "
                                 "WHERE r.state <> 'erased' GROUP BY r.id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "reading recordings: %s", PQerrorMessage(conn));
        PQclear(res);
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        store_id id;
        if (!store_id_parse(PQgetvalue(res, i, 0), &id))
            continue;
        if (!c.nseen || !bsearch(&id, c.seen, c.nseen, sizeof(store_id), cmp_id))
            report->rows_without_file += strtoull(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
out:
    free(c.seen);
    free(c.links);
    return rc;
}

/* ------------------------------------------------------------ catch-up */

cu_rc store_pending_list(const char *data_dir, store_id **out, size_t *n, cu_err *err)
{
    char dir[PATH_MAX];
    size_t cap = 16, count = 0;
    snprintf(dir, sizeof(dir), "%s/keys/pending", data_dir);
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return CU_OK;
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "%s: %s", dir, strerror(e));
    }
    store_id *list = cu_xmalloc(cap * sizeof(*list));
    struct dirent *de;
    while ((de = readdir(d))) {
        char idtext[40];
        size_t len = strlen(de->d_name);
        if (len != 40 || strcmp(de->d_name + 36, ".dek") != 0)
            continue;
        memcpy(idtext, de->d_name, 36);
        idtext[36] = '\0';
        if (count == cap) {
            cap *= 2;
            store_id *bigger = realloc(list, cap * sizeof(*list));
            if (!bigger)
                abort();
            list = bigger;
        }
        if (store_id_parse(idtext, &list[count]))
            count++;
    }
    closedir(d);
    *out = list;
    *n = count;
    return CU_OK;
}

cu_rc store_catch_up(const char *data_dir, PGconn *conn, keys_ring *k, store_is_open_fn is_open,
                     void *ctx, store_catch_up_report *rep, cu_err *err)
{
    store_id *list = NULL;
    size_t n = 0;
    memset(rep, 0, sizeof(*rep));
    cu_rc rc = store_pending_list(data_dir, &list, &n, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        char dir[PATH_MAX], seal[PATH_MAX + 8], id[37];
        if (is_open && is_open(ctx, &list[i]))
            continue;
        store_recording_dir(data_dir, &list[i], dir);
        snprintf(seal, sizeof(seal), "%s/seal", dir);
        store_id_format(&list[i], id);
        if (access(dir, F_OK) != 0) {
            /* Killed between the key and the directory: no footage exists
             * under this key, so nothing is lost with it. */
            CU_LOG(CU_LOG_INFO, "store", "recording %s never started; dropping its key", id);
            store_pending_remove(data_dir, &list[i]);
            continue;
        }
        if (access(seal, F_OK) == 0) {
            store_reindex_report sub;
            memset(&sub, 0, sizeof(sub));
            reindex_ctx c = {.data_dir = data_dir, .conn = conn, .rep = &sub, .err = err};
            rc = reindex_one(&c, &list[i], dir);
            free(c.links);
            if (!rc)
                rep->reindexed++;
            continue;
        }
        cu_err one;
        cu_rc r = store_recover_one(data_dir, conn, k, &list[i], dir, &one);
        if (r == CU_OK)
            rep->sealed++;
        else if (r == CU_ERR_NOTFOUND)
            rep->waiting++;
        else
            rc = cu_err_set(err, r, "recovering %s: %s", id, one.msg);
    }
    free(list);
    return rc;
}

cu_rc store_recover(const char *data_dir, PGconn *conn, keys_ring *k, int *sealed, cu_err *err)
{
    store_catch_up_report rep;
    cu_rc rc = store_catch_up(data_dir, conn, k, NULL, NULL, &rep, err);
    if (sealed)
        *sealed = rep.sealed;
    return rc;
}

/* ------------------------------------------------------------- rotation */

/* A kind of device secret: its label and the columns holding it. */
typedef struct {
    const char *label;
    const char *select; /* id, serial, KEK id, wrapped: rows that hold one */
    const char *update; /* $1 id, $2 KEK id, $3 wrapped */
} device_secret_kind;

static const device_secret_kind device_secrets[] = {
    {KEYS_LABEL_DEVICE_SRTP,
     "SELECT id::text, serial, key_kek_id, key_wrapped FROM devices ORDER BY id FOR UPDATE",
     "UPDATE devices SET key_kek_id = $2, key_wrapped = $3 WHERE id = $1"},
    {KEYS_LABEL_DEVICE_RTSP,
     "SELECT id::text, serial, rtsp_kek_id, rtsp_wrapped FROM devices "
     "WHERE rtsp_wrapped IS NOT NULL ORDER BY id FOR UPDATE",
     "UPDATE devices SET rtsp_kek_id = $2, rtsp_wrapped = $3 WHERE id = $1"},
    {KEYS_LABEL_DEVICE_PULL,
     "SELECT id::text, serial, pull_kek_id, pull_wrapped FROM devices "
     "WHERE pull_wrapped IS NOT NULL ORDER BY id FOR UPDATE",
     "UPDATE devices SET pull_kek_id = $2, pull_wrapped = $3 WHERE id = $1"},
    {KEYS_LABEL_USER_TOTP,
     "SELECT id::text, username, totp_kek_id, totp_wrapped FROM users "
     "WHERE totp_wrapped IS NOT NULL ORDER BY id FOR UPDATE",
     "UPDATE users SET totp_kek_id = $2, totp_wrapped = $3 WHERE id = $1"},
};

/* Re-wrap one kind of device secret, inside the rotation's transaction. */
static cu_rc rotate_device_secrets(PGconn *conn, keys_ring *k, const device_secret_kind *kind,
                                   uint64_t *rewrapped, cu_err *err)
{
    cu_rc rc = CU_OK;
    PGresult *res = PQexecParams(conn, kind->select, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "reading device secrets: %s", PQerrorMessage(conn));
        goto out;
    }
    for (int i = 0; i < PQntuples(res) && !rc; i++) {
        char id[24], serial[80], kek[STORE_KEK_ID_LEN + 1], new_kek[STORE_KEK_ID_LEN + 1];
        uint8_t secret[KEYS_SECRET_MAX], wrapped[KEYS_SECRET_WRAPPED_MAX];
        size_t len = 0, wlen = 0;
        if (PQgetlength(res, i, 0) >= (int)sizeof(id) ||
            PQgetlength(res, i, 1) >= (int)sizeof(serial) ||
            PQgetlength(res, i, 2) != STORE_KEK_ID_LEN) {
            rc = cu_err_set(err, CU_ERR_INVALID, "a devices row is malformed");
            break;
        }
        snprintf(id, sizeof(id), "%.*s", PQgetlength(res, i, 0), PQgetvalue(res, i, 0));
        snprintf(serial, sizeof(serial), "%.*s", PQgetlength(res, i, 1), PQgetvalue(res, i, 1));
        snprintf(kek, sizeof(kek), "%.*s", PQgetlength(res, i, 2), PQgetvalue(res, i, 2));
        rc = keys_unwrap_secret(k, kind->label, serial, kek, (const uint8_t *)PQgetvalue(res, i, 3),
                                (size_t)PQgetlength(res, i, 3), secret, &len, err);
        if (!rc)
            rc =
                keys_wrap_secret(k, kind->label, serial, secret, len, new_kek, wrapped, &wlen, err);
        OPENSSL_cleanse(secret, sizeof(secret));
        if (rc)
            break;
        const char *params[3] = {id, new_kek, (const char *)wrapped};
        int lengths[3] = {0, 0, (int)wlen}, formats[3] = {0, 0, 1};
        PGresult *u = PQexecParams(conn, kind->update, 3, NULL, params, lengths, formats, 0);
        if (PQresultStatus(u) != PGRES_COMMAND_OK)
            rc =
                cu_err_set(err, CU_ERR_DB, "re-wrapping a device secret: %s", PQerrorMessage(conn));
        PQclear(u);
        if (!rc)
            (*rewrapped)++;
    }
out:
    PQclear(res);
    return rc;
}

/* Every device and user secret (SRTP keys, RTSP passwords, pull URLs, TOTP secrets). */
static cu_rc rotate_device_keys(PGconn *conn, keys_ring *k, store_rotate_report *report,
                                cu_err *err)
{
    for (size_t i = 0; i < sizeof(device_secrets) / sizeof(device_secrets[0]); i++) {
        cu_rc rc =
            rotate_device_secrets(conn, k, &device_secrets[i], &report->devices_rewrapped, err);
        if (rc)
            return rc;
    }
    return CU_OK;
}

cu_rc store_keys_rotate(const char *data_dir, PGconn *conn, keys_ring *k,
                        store_rotate_report *report, cu_err *err)
{
    PGresult *res = NULL;
    cu_rc rc;
    memset(report, 0, sizeof(*report));

    rc = keys_kek_add(k, report->new_kek, err);
    if (rc)
        goto out;
    rc = db_exec(conn, "BEGIN", err);
    if (rc)
        goto out;
    res = PQexecParams(conn,
                       "SELECT recording_id::text, key_id, kek_id, wrapped FROM recording_keys "
                       "ORDER BY recording_id FOR UPDATE",
                       0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "reading data keys: %s", PQerrorMessage(conn));
        goto rollback;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        char idtext[40];
        store_id rec;
        store_dek dek;
        memset(&dek, 0, sizeof(dek));
        int idlen = PQgetlength(res, i, 0);
        if (idlen >= (int)sizeof(idtext) || PQgetlength(res, i, 1) != 16 ||
            PQgetlength(res, i, 2) != STORE_KEK_ID_LEN ||
            PQgetlength(res, i, 3) != STORE_WRAPPED_LEN) {
            rc = cu_err_set(err, CU_ERR_INVALID, "a recording_keys row is malformed");
            goto rollback;
        }
        memcpy(idtext, PQgetvalue(res, i, 0), (size_t)idlen);
        idtext[idlen] = '\0';
        if (!store_id_parse(idtext, &rec)) {
            rc = cu_err_set(err, CU_ERR_INVALID, "a recording_keys row has a bad id");
            goto rollback;
        }
        memcpy(dek.key_id.b, PQgetvalue(res, i, 1), 16);
        memcpy(dek.kek_id, PQgetvalue(res, i, 2), STORE_KEK_ID_LEN);
        memcpy(dek.wrapped, PQgetvalue(res, i, 3), STORE_WRAPPED_LEN);
        rc = store_dek_unwrap(k, &rec, &dek.key_id, dek.kek_id, dek.wrapped, STORE_WRAPPED_LEN,
                              dek.key, err);
        if (!rc)
            rc = store_dek_rewrap(k, &rec, &dek, err);
        store_dek_wipe(&dek);
        if (rc)
            goto rollback;
        const char *params[3] = {idtext, dek.kek_id, (const char *)dek.wrapped};
        int lengths[3] = {0, 0, STORE_WRAPPED_LEN}, formats[3] = {0, 0, 1};
        PGresult *u = PQexecParams(conn,
                                   "UPDATE recording_keys SET kek_id = $2, wrapped = $3, "
                                   "rewrapped_at = now() WHERE recording_id = $1",
                                   3, NULL, params, lengths, formats, 0);
        bool ok = PQresultStatus(u) == PGRES_COMMAND_OK;
        PQclear(u);
        if (!ok) {
            rc = cu_err_set(err, CU_ERR_DB, "re-wrapping: %s", PQerrorMessage(conn));
            goto rollback;
        }
        report->rewrapped++;
    }
    rc = rotate_device_keys(conn, k, report, err);
    if (rc)
        goto rollback;
    rc = db_exec(conn, "COMMIT", err);
    if (rc)
        goto out;

    /* Keys not yet in the database. */
    store_id *pending = NULL;
    size_t npending = 0;
    rc = store_pending_list(data_dir, &pending, &npending, err);
    for (size_t i = 0; !rc && i < npending; i++) {
        store_dek dek;
        if (store_pending_read(data_dir, &pending[i], &dek, err) != CU_OK)
            continue; /* gone meanwhile: indexed by the writer */
        rc = store_dek_unwrap(k, &pending[i], &dek.key_id, dek.kek_id, dek.wrapped,
                              STORE_WRAPPED_LEN, dek.key, err);
        if (!rc)
            rc = store_dek_rewrap(k, &pending[i], &dek, err);
        if (!rc)
            rc = store_pending_write(data_dir, &pending[i], &dek, err);
        store_dek_wipe(&dek);
        if (!rc)
            report->pending_rewrapped++;
    }
    free(pending);
    goto out;
rollback:;
    cu_err ignore;
    if (db_exec(conn, "ROLLBACK", &ignore) != CU_OK)
        CU_LOG(CU_LOG_WARN, "keys", "rollback failed: %s", ignore.msg);
out:
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------------ retirement */

cu_rc store_kek_usage_get(const char *data_dir, PGconn *conn, const char *kek_id,
                          store_kek_usage *out, cu_err *err)
{
    memset(out, 0, sizeof(*out));
    const char *params[1] = {kek_id};
    PGresult *res = PQexecParams(
        conn,
        "SELECT (SELECT count(*) FROM recording_keys WHERE kek_id = $1), "
        "(SELECT count(*) FROM devices WHERE key_kek_id = $1) + "
        "(SELECT count(*) FROM devices WHERE rtsp_kek_id = $1) + "
        "(SELECT count(*) FROM devices WHERE pull_kek_id = $1), "
        "(SELECT count(*) FROM users WHERE totp_kek_id = $1), "
        "coalesce((SELECT 'recording ' || recording_id FROM recording_keys WHERE kek_id = $1 "
        "LIMIT 1), (SELECT 'device ' || serial FROM devices WHERE $1 IN (key_kek_id, "
        "rtsp_kek_id, pull_kek_id) LIMIT 1), (SELECT 'user ' || username FROM users WHERE "
        "totp_kek_id = $1 LIMIT 1), '')",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        cu_rc rc = cu_err_set(err, CU_ERR_DB, "reading key use: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    out->data_keys = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    out->device_secrets = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    out->user_secrets = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
    cu_strlcpy(out->example, PQgetvalue(res, 0, 3), sizeof(out->example));
    PQclear(res);
    store_id *pending = NULL;
    size_t n = 0;
    cu_rc rc = store_pending_list(data_dir, &pending, &n, err);
    for (size_t i = 0; !rc && i < n; i++) {
        store_dek dek;
        cu_err ignore;
        if (store_pending_read(data_dir, &pending[i], &dek, &ignore) != CU_OK ||
            strcmp(dek.kek_id, kek_id) != 0)
            continue;
        out->pending_keys++;
        if (!out->example[0]) {
            char id[37];
            store_id_format(&pending[i], id);
            snprintf(out->example, sizeof(out->example), "recording %s (pending key)", id);
        }
    }
    free(pending);
    return rc;
}

cu_rc store_kek_retire(const char *data_dir, PGconn *conn, keys_ring *keys, const char *kek_id,
                       cu_err *err)
{
    store_kek_usage u;
    char active[KEYS_KEK_ID_LEN + 1];
    cu_rc rc = keys_active(keys, active, err);
    if (!rc && strcmp(active, kek_id) == 0)
        return cu_err_set(err, CU_ERR_BUSY,
                          "key-encryption key %s is the active one: rotate first (ingestctl keys "
                          "rotate)",
                          kek_id);
    if (!rc)
        rc = store_kek_usage_get(data_dir, conn, kek_id, &u, err);
    if (rc)
        return rc;
    uint64_t total = u.data_keys + u.pending_keys + u.device_secrets + u.user_secrets;
    if (total)
        return cu_err_set(err, CU_ERR_BUSY,
                          "key-encryption key %s still wraps %llu data keys, %llu pending data "
                          "keys, %llu device secrets and %llu user secrets (%s, ...): run "
                          "ingestctl keys rotate first",
                          kek_id, (unsigned long long)u.data_keys,
                          (unsigned long long)u.pending_keys, (unsigned long long)u.device_secrets,
                          (unsigned long long)u.user_secrets, u.example);
    return keys_kek_destroy(keys, kek_id, err);
}

/* -------------------------------------------------------------- erasure */

/*
 * Erasure (docs/integrity.md, "Erasure"), in this order:
 *   0. a marker segments/.erasing/<id>, durable: an erasure is under way;
 *   1. a pending key file's key is put into the database if it is not there,
 *      and the file removed (durably): the key now exists in one place;
 *   2. one transaction, recording_erase(): the key row deleted, the row
 *      marked erased, the deletion record appended to the audit chain;
 *   3. the files removed (segments, meta, seal), the directory, the marker.
 * A crash before 2 commits leaves the recording intact and not erased; from
 * 2 on it is erased and no key for it exists; files left by a crash in 3 are
 * removed by store_erasures_finish() at the next start (verify notes them).
 */
#define ERASING_DIR "segments/.erasing"

static void erasing_marker(const char *data_dir, const store_id *recording, char *out, size_t len)
{
    char id[37];
    store_id_format(recording, id);
    snprintf(out, len, "%s/" ERASING_DIR "/%s", data_dir, id);
}

/* Remove every file of @p dir and the directory itself, then fsync its parent. */
static cu_rc remove_recording_files(const char *dir, store_erasure *record, cu_err *err)
{
    cu_rc rc = CU_OK;
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return e == ENOENT ? CU_OK
                           : cu_err_set(err, CU_ERR_IO, "cannot open %s: %s", dir, strerror(e));
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[PATH_MAX + 300];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (record && lstat(path, &st) == 0)
            record->bytes += (uint64_t)st.st_size;
        size_t len = strlen(de->d_name);
        if (record && len > 4 && strcmp(de->d_name + len - 4, ".seg") == 0)
            record->segments++;
        if (unlink(path) != 0 && errno != ENOENT && !rc) {
            int e = errno;
            rc = cu_err_set(err, CU_ERR_IO, "cannot remove %s: %s", path, strerror(e));
        }
    }
    closedir(d);
    if (!rc && rmdir(dir) != 0 && errno != ENOENT) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot remove %s: %s", dir, strerror(e));
    }
    char fan[PATH_MAX];
    cu_strlcpy(fan, dir, sizeof(fan));
    *strrchr(fan, '/') = '\0';
    if (!rc && cu_fsync_dir(fan) != 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot fsync %s: %s", fan, strerror(e));
    }
    return rc;
}

static cu_rc marker_remove(const char *data_dir, const char *marker, cu_err *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/" ERASING_DIR, data_dir);
    if ((unlink(marker) != 0 && errno != ENOENT) || cu_fsync_dir(dir) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot remove %s: %s", marker, strerror(e));
    }
    return CU_OK;
}

/* Step 1: the key in the database only. */
static cu_rc erase_pending_key(const char *data_dir, PGconn *conn, const store_id *recording,
                               cu_err *err)
{
    store_dek pending;
    cu_err ignore;
    char dir[PATH_MAX];
    if (store_pending_read(data_dir, recording, &pending, &ignore) != CU_OK)
        return CU_OK;
    cu_rc rc = store_sql_key_insert(conn, recording, &pending, err);
    if (rc)
        return rc;
    store_pending_remove(data_dir, recording);
    if (store_pending_read(data_dir, recording, &pending, &ignore) != CU_ERR_NOTFOUND)
        return cu_err_set(err, CU_ERR_IO,
                          "the pending key file of this recording cannot be removed; not erased");
    snprintf(dir, sizeof(dir), "%s/keys/pending", data_dir);
    if (cu_fsync_dir(dir) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot fsync %s: %s", dir, strerror(e));
    }
    return CU_OK;
}

cu_rc store_recording_erase(const char *data_dir, PGconn *conn, const store_id *recording,
                            const store_erase_request *why, store_erasure *record, cu_err *err)
{
    char id[37], dir[PATH_MAX], marker[PATH_MAX], markers[PATH_MAX];
    PGresult *res = NULL;
    cu_rc rc;

    memset(record, 0, sizeof(*record));
    record->recording = *recording;
    store_id_format(recording, id);
    store_recording_dir(data_dir, recording, dir);
    erasing_marker(data_dir, recording, marker, sizeof(marker));
    snprintf(markers, sizeof(markers), "%s/" ERASING_DIR, data_dir);

    const char *params[1] = {id};
    res = PQexecParams(conn,
                       "SELECT state, key_id, chain_head, segment_count FROM recordings "
                       "WHERE id = $1",
                       1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "reading recording %s: %s", id, PQerrorMessage(conn));
        goto out;
    }
    if (PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "recording %s is not in the index", id);
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "open") == 0) {
        rc = cu_err_set(err, CU_ERR_BUSY, "recording %s is still open", id);
        goto out;
    }
    bool already = strcmp(PQgetvalue(res, 0, 0), "erased") == 0;
    if (PQgetlength(res, 0, 1) == 16)
        memcpy(record->key_id.b, PQgetvalue(res, 0, 1), 16);
    if (PQgetlength(res, 0, 2) == 32) {
        memcpy(record->chain_head, PQgetvalue(res, 0, 2), 32);
        record->sealed = true;
    }
    PQclear(res);
    res = NULL;

    if (!already) {
        /* 0: the marker, so a crash from here on is finished at the next
         * start; its directory's entry made durable too. */
        rc = cu_mkdir_durable(markers, 0700, err);
        if (!rc)
            rc = cu_file_write_durably(markers, id, "", 0, 0600, err);
        if (!rc)
            rc = erase_pending_key(data_dir, conn, recording, err);
        if (rc)
            goto out;
        /* 2: from this commit on, no copy of the key exists. */
        const char *eparams[4] = {id, why->actor, why->reason, why->source};
        res = PQexecParams(conn, "SELECT recording_erase($1, $2, $3, $4)", 4, NULL, eparams, NULL,
                           NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = cu_err_set(err, CU_ERR_DB, "erasing %s: %s", id, PQerrorMessage(conn));
            goto out;
        }
        record->audit_seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        res = NULL;
    }
    record->erased_us = cu_time_ms() * 1000;
    /* 3: the files, then the marker. */
    rc = remove_recording_files(dir, record, err);
    if (!rc)
        rc = marker_remove(data_dir, marker, err);
    if (!rc)
        CU_LOG(CU_LOG_INFO, "store",
               "recording %s erased: key destroyed, %llu segment files removed", id,
               (unsigned long long)record->segments);
out:
    PQclear(res);
    return rc;
}

cu_rc store_erasures_finish(const char *data_dir, PGconn *conn, int *finished, cu_err *err)
{
    char markers[PATH_MAX];
    cu_rc rc = CU_OK;
    *finished = 0;
    snprintf(markers, sizeof(markers), "%s/" ERASING_DIR, data_dir);
    DIR *d = opendir(markers);
    if (!d)
        return CU_OK;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        store_id rec;
        char marker[PATH_MAX + 64], dir[PATH_MAX];
        if (strlen(de->d_name) != 36 || !store_id_parse(de->d_name, &rec))
            continue;
        snprintf(marker, sizeof(marker), "%s/%s", markers, de->d_name);
        const char *params[1] = {de->d_name};
        PGresult *res = PQexecParams(conn, "SELECT state FROM recordings WHERE id = $1", 1, NULL,
                                     params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = cu_err_set(err, CU_ERR_DB, "reading recording %s: %s", de->d_name,
                            PQerrorMessage(conn));
            PQclear(res);
            break;
        }
        bool erased = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "erased") == 0;
        PQclear(res);
        /* Not erased: the crash came before the commit, nothing was removed
         * that the database still needs; the erasure can simply be asked again. */
        if (erased) {
            store_recording_dir(data_dir, &rec, dir);
            rc = remove_recording_files(dir, NULL, err);
            if (!rc)
                CU_LOG(CU_LOG_INFO, "store", "finished the interrupted erasure of %s", de->d_name);
            (*finished)++;
        }
        if (!rc)
            rc = marker_remove(data_dir, marker, err);
    }
    closedir(d);
    return rc;
}

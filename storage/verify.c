/*
 * ingestctl verify: every segment's tag, hash, place in the chain and nonce,
 * every seal, and the agreement of index and files. One line per problem.
 */
#include "store_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uint64_t idx;
    int64_t start_us, end_us;
    uint64_t file_len;
    uint8_t sha256[32], chain[32], xxh3[16];
} index_seg;

typedef struct {
    store_id id;
    bool in_index;
    bool on_disk;
    char state[16];
    bool index_sealed_fields; /* segment_count and chain_head present */
    uint64_t index_count;
    uint8_t index_head[32];
    store_id index_key_id;
    char dir[PATH_MAX];
} rec_entry;

typedef struct {
    const char *data_dir;
    PGconn *conn;
    const store_verify_opts *o;
    store_verify_report *rep;
    keys_ring *keys;
    rec_entry *recs;
    size_t nrecs, cap;
    uint64_t total_segments; /* for the progress bar */
    uint64_t done_segments;
    int64_t last_draw_ns;
    bool bar_drawn;
    cu_buf file, plain;
} verify_ctx;

static void progress(verify_ctx *v, bool final)
{
    if (!v->o->progress)
        return;
    int64_t now = cu_mono_ns();
    if (!final && now - v->last_draw_ns < 100 * 1000000)
        return;
    v->last_draw_ns = now;
    if (final) {
        if (v->bar_drawn)
            fprintf(stderr, "\r%*s\r", 70, "");
        return;
    }
    uint64_t total = v->total_segments ? v->total_segments : 1;
    int pct = (int)(v->done_segments * 100 / total);
    if (pct > 100)
        pct = 100;
    char bar[31];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\rverifying [%s] %3d%% %llu/%llu segments", bar, pct,
            (unsigned long long)v->done_segments, (unsigned long long)v->total_segments);
    v->bar_drawn = true;
}

static void problem(verify_ctx *v, const rec_entry *r, long long seg, const char *fmt, ...)
    CU_PRINTF(4, 5);

static void problem(verify_ctx *v, const rec_entry *r, long long seg, const char *fmt, ...)
{
    char id[37], msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    store_id_format(&r->id, id);
    if (v->bar_drawn) {
        fprintf(stderr, "\r%*s\r", 70, "");
        v->bar_drawn = false;
    }
    if (seg >= 0)
        fprintf(v->o->out, "recording %s segment %lld: %s\n", id, seg, msg);
    else
        fprintf(v->o->out, "recording %s: %s\n", id, msg);
    v->rep->problems++;
}

static rec_entry *rec_add(verify_ctx *v, const store_id *id)
{
    if (v->nrecs == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        rec_entry *bigger = realloc(v->recs, v->cap * sizeof(*bigger));
        if (!bigger)
            abort();
        v->recs = bigger;
    }
    rec_entry *r = &v->recs[v->nrecs++];
    memset(r, 0, sizeof(*r));
    r->id = *id;
    store_recording_dir(v->data_dir, id, r->dir);
    return r;
}

static int cmp_rec(const void *a, const void *b)
{
    return memcmp(((const rec_entry *)a)->id.b, ((const rec_entry *)b)->id.b, 16);
}

static bool collect_dir(void *arg, const store_id *rec, const char *dir)
{
    verify_ctx *v = arg;
    if (v->o->recording && !store_id_equal(v->o->recording, rec))
        return true;
    rec_entry *r = rec_add(v, rec); /* directories are unique */
    r->on_disk = true;
    uint64_t *list = NULL;
    size_t n = 0;
    cu_err err;
    if (store_list_segments(dir, &list, &n, &err) == CU_OK)
        v->total_segments += n;
    free(list);
    return true;
}

static cu_rc collect_index(verify_ctx *v, cu_err *err)
{
    char filter[37];
    const char *params[1] = {filter};
    int nparams = 0;
    const char *sql = "SELECT id::text, state, segment_count, chain_head, key_id FROM recordings";
    if (v->o->recording) {
        store_id_format(v->o->recording, filter);
        sql = "SELECT id::text, state, segment_count, chain_head, key_id FROM recordings "
              "WHERE id = $1";
        nparams = 1;
    }
    PGresult *res = PQexecParams(v->conn, sql, nparams, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_rc rc = cu_err_set(err, CU_ERR_DB, "reading recordings: %s", PQerrorMessage(v->conn));
        PQclear(res);
        return rc;
    }
    /* The directories found so far, sorted, are searched; index-only
     * recordings are appended after them. */
    size_t ndisk = v->nrecs;
    if (ndisk) /* qsort on NULL is undefined, even for zero elements */
        qsort(v->recs, ndisk, sizeof(rec_entry), cmp_rec);
    for (int i = 0; i < PQntuples(res); i++) {
        char idtext[40];
        store_id id;
        int len = PQgetlength(res, i, 0);
        if (len >= (int)sizeof(idtext))
            continue;
        memcpy(idtext, PQgetvalue(res, i, 0), (size_t)len);
        idtext[len] = '\0';
        if (!store_id_parse(idtext, &id))
            continue;
        rec_entry key = {.id = id};
        rec_entry *r = ndisk ? bsearch(&key, v->recs, ndisk, sizeof(rec_entry), cmp_rec) : NULL;
        if (!r)
            r = rec_add(v, &id);
        r->in_index = true;
        len = PQgetlength(res, i, 1);
        snprintf(r->state, sizeof(r->state), "%.*s", len, PQgetvalue(res, i, 1));
        if (!PQgetisnull(res, i, 2) && PQgetlength(res, i, 2) == 8 &&
            PQgetlength(res, i, 3) == 32) {
            const uint8_t *p = (const uint8_t *)PQgetvalue(res, i, 2);
            uint64_t c = 0;
            for (int b = 0; b < 8; b++)
                c = c << 8 | p[b];
            r->index_count = c;
            memcpy(r->index_head, PQgetvalue(res, i, 3), 32);
            r->index_sealed_fields = true;
        }
        if (PQgetlength(res, i, 4) == 16)
            memcpy(r->index_key_id.b, PQgetvalue(res, i, 4), 16);
    }
    PQclear(res);
    return CU_OK;
}

static index_seg *load_index_segments(verify_ctx *v, const rec_entry *r, size_t *n, cu_err *err)
{
    char id[37];
    store_id_format(&r->id, id);
    const char *params[1] = {id};
    PGresult *res = PQexecParams(v->conn,
                                 "SELECT idx, start_us, end_us, file_len, sha256, chain, xxh3 "
                                 "FROM segments WHERE recording_id = $1 ORDER BY idx",
                                 1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_err_set(err, CU_ERR_DB, "reading segments: %s", PQerrorMessage(v->conn));
        PQclear(res);
        return NULL;
    }
    int rows = PQntuples(res);
    index_seg *segs = cu_xcalloc(rows ? (size_t)rows : 1, sizeof(*segs));
    for (int i = 0; i < rows; i++) {
        uint64_t vals[4];
        for (int c = 0; c < 4; c++) {
            const uint8_t *p = (const uint8_t *)PQgetvalue(res, i, c);
            vals[c] = 0;
            for (int b = 0; b < PQgetlength(res, i, c) && b < 8; b++)
                vals[c] = vals[c] << 8 | p[b];
        }
        segs[i].idx = vals[0];
        segs[i].start_us = (int64_t)vals[1];
        segs[i].end_us = (int64_t)vals[2];
        segs[i].file_len = vals[3];
        if (PQgetlength(res, i, 4) == 32)
            memcpy(segs[i].sha256, PQgetvalue(res, i, 4), 32);
        if (PQgetlength(res, i, 5) == 32)
            memcpy(segs[i].chain, PQgetvalue(res, i, 5), 32);
        if (PQgetlength(res, i, 6) == 16)
            memcpy(segs[i].xxh3, PQgetvalue(res, i, 6), 16);
    }
    PQclear(res);
    *n = (size_t)rows;
    return segs;
}

/* Check one segment file against its expected place and its index row. */
static void verify_segment(verify_ctx *v, const rec_entry *r, uint64_t i, const index_seg *row,
                           const store_dek *dek, bool have_key, uint8_t prev[32], bool *chain_ok)
{
    char path[PATH_MAX], why[200];
    cu_err err;
    store_header h;
    store_segment_path(r->dir, i, path);
    v->rep->segments++;
    v->done_segments++;
    progress(v, false);

    if (store_read_file(path, SEGMENT_FILE_MAX, &v->file, &err) != CU_OK) {
        problem(v, r, (long long)i, "unreadable: %s", err.msg);
        *chain_ok = false;
        return;
    }
    /* The stored bytes against the index first: that needs no parsing. */
    uint8_t xxh[16];
    store_xxh3(v->file.data, v->file.len, xxh);
    if (row && memcmp(xxh, row->xxh3, 16) != 0)
        problem(v, r, (long long)i, "stored bytes differ from the index (XXH3)");
    if (store_header_parse((const uint8_t *)v->file.data, v->file.len, v->file.len, &h, why,
                           sizeof(why)) != CU_OK) {
        problem(v, r, (long long)i, "%s", why);
        *chain_ok = false;
        return;
    }
    if (!store_id_equal(&h.recording, &r->id)) {
        char other[37];
        store_id_format(&h.recording, other);
        problem(v, r, (long long)i, "file belongs to recording %s", other);
        *chain_ok = false;
        return;
    }
    if (h.index != i) {
        problem(v, r, (long long)i, "file holds segment %llu (moved or swapped)",
                (unsigned long long)h.index);
        *chain_ok = false;
        return;
    }
    if (have_key && !store_id_equal(&h.key_id, &dek->key_id))
        problem(v, r, (long long)i, "encrypted under another key than the recording's");

    if (row) {
        if (!v->o->quick) {
            if (memcmp(row->sha256, h.sha256, 32) != 0 || memcmp(row->chain, h.chain, 32) != 0 ||
                row->file_len != v->file.len || row->start_us != h.start_us ||
                row->end_us != h.end_us)
                problem(v, r, (long long)i, "index row differs from the file");
        }
    }

    if (!v->o->quick && have_key) {
        const uint8_t *bytes = (const uint8_t *)v->file.data;
        uint8_t tag[STORE_TAG_LEN], sha[32];
        int n = 0;
        cu_buf_reset(&v->plain);
        if (cu_buf_append(&v->plain, bytes + STORE_HEADER_LEN, h.plaintext_len) != CU_OK) {
            problem(v, r, (long long)i, "out of memory");
            return;
        }
        memcpy(tag, bytes + STORE_HEADER_LEN + h.plaintext_len, STORE_TAG_LEN);
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        uint8_t *out = (uint8_t *)v->plain.data;
        bool ok =
            c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, dek->key, h.nonce) == 1 &&
            EVP_DecryptUpdate(c, NULL, &n, bytes, STORE_HEADER_LEN) == 1 &&
            EVP_DecryptUpdate(c, out, &n, bytes + STORE_HEADER_LEN, (int)h.plaintext_len) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, STORE_TAG_LEN, tag) == 1 &&
            EVP_DecryptFinal_ex(c, out + n, &n) == 1;
        EVP_CIPHER_CTX_free(c);
        if (!ok) {
            problem(v, r, (long long)i,
                    "authentication failed (GCM tag): header or ciphertext "
                    "altered");
        } else {
            EVP_Digest(out, h.plaintext_len, sha, NULL, EVP_sha256(), NULL);
            if (memcmp(sha, h.sha256, 32) != 0)
                problem(v, r, (long long)i, "plaintext SHA-256 does not match the header");
        }
    }

    uint8_t c[32];
    store_chain_next(prev, &h, c);
    if (*chain_ok && memcmp(c, h.chain, 32) != 0)
        problem(v, r, (long long)i, "hash chain broken: does not follow segment %lld",
                (long long)i - 1);
    /* Continue from the file's own value, so each break is named once. */
    memcpy(prev, h.chain, 32);
    *chain_ok = true;
}

/* An erased recording: no copy of its key may be left; files an
 * interrupted erasure left are noted (the next start removes them). */
static void verify_erased(verify_ctx *v, const rec_entry *r)
{
    char id[37];
    store_dek dek;
    cu_err err;
    store_id_format(&r->id, id);
    if (store_pending_read(v->data_dir, &r->id, &dek, &err) == CU_OK)
        problem(v, r, -1, "erased, but a pending key file still holds its data key");
    if (r->on_disk)
        fprintf(v->o->out,
                "note: recording %s is erased; its erasure was interrupted before every file "
                "was removed (the next start of ingestd removes them)\n",
                id);
    v->rep->erased++;
}

/* The seal against its anchor in the audit chain (recording.seal), which
 * signed checkpoints protect (ingestctl audit verify). */
static void verify_anchor(verify_ctx *v, const rec_entry *r, const store_seal *seal)
{
    char id[37], pattern[64], want[160], head[65];
    store_id_format(&r->id, id);
    snprintf(pattern, sizeof(pattern), "recording:%s %%", id);
    cu_hex_encode(seal->head, 32, head);
    snprintf(want, sizeof(want), "recording:%s state=%s segments=%llu head=%s", id,
             store_seal_reason_name(seal->reason), (unsigned long long)seal->count, head);
    const char *params[1] = {pattern};
    PGresult *res = PQexecParams(v->conn,
                                 "SELECT object FROM audit_log WHERE action = 'recording.seal' "
                                 "AND object LIKE $1 ORDER BY seq",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        problem(v, r, -1, "cannot read its seal's audit entry: %s", PQerrorMessage(v->conn));
    } else if (PQntuples(res) == 0) {
        problem(v, r, -1, "its seal is not anchored in the audit log (no recording.seal entry)");
    } else {
        for (int i = 0; i < PQntuples(res); i++)
            if (strcmp(PQgetvalue(res, i, 0), want) != 0) {
                problem(v, r, -1, "its seal differs from its audit entry (%.120s)",
                        PQgetvalue(res, i, 0));
                break;
            }
    }
    PQclear(res);
}

static void verify_recording(verify_ctx *v, rec_entry *r)
{
    cu_err err;
    store_dek dek;
    bool have_key = false;
    uint64_t *files = NULL;
    size_t nfiles = 0, nrows = 0;
    index_seg *rows = NULL;
    store_seal seal;
    bool has_seal = false;
    char path[PATH_MAX + 8], why[200];

    memset(&dek, 0, sizeof(dek));
    v->rep->recordings++;
    if (strcmp(r->state, "erased") == 0) {
        verify_erased(v, r);
        return;
    }
    if (!r->on_disk) {
        problem(v, r, -1, "in the index, but its directory is missing");
        return;
    }
    if (store_list_segments(r->dir, &files, &nfiles, &err) != CU_OK) {
        problem(v, r, -1, "%s", err.msg);
        return;
    }
    if (r->in_index) {
        rows = load_index_segments(v, r, &nrows, &err);
        if (!rows) {
            problem(v, r, -1, "%s", err.msg);
            goto out;
        }
    } else if (nfiles) {
        problem(v, r, -1, "on disk but not in the index (%zu segments)", nfiles);
    }
    if (!v->o->quick) {
        if (store_dek_load(v->data_dir, v->conn, v->keys, &r->id, &dek, &err) == CU_OK)
            have_key = true;
        else
            problem(v, r, -1, "data key unavailable: %s", err.msg);
    }

    snprintf(path, sizeof(path), "%s/seal", r->dir);
    if (store_read_file(path, STORE_SEAL_LEN + 1, &v->file, &err) == CU_OK) {
        if (store_seal_parse((const uint8_t *)v->file.data, v->file.len, &seal, why, sizeof(why)) !=
            CU_OK)
            problem(v, r, -1, "seal unreadable: %s", why);
        else if (!store_id_equal(&seal.recording, &r->id))
            problem(v, r, -1, "seal belongs to another recording");
        else
            has_seal = true;
    }

    /* Walk 0..max over the union of files and index rows. */
    uint64_t max_files = nfiles ? files[nfiles - 1] + 1 : 0;
    uint64_t max_rows = nrows ? rows[nrows - 1].idx + 1 : 0;
    uint64_t end = max_files > max_rows ? max_files : max_rows;
    bool live = !has_seal && v->o->writer_running;
    uint8_t prev[32];
    bool chain_ok = true;
    size_t fi = 0, ri = 0;
    store_origin origin;
    if (store_recording_genesis(r->dir, &r->id, prev, &origin, &err) != CU_OK) {
        problem(v, r, -1, "meta file unreadable: %s", err.msg);
        chain_ok = false;
    }
    for (uint64_t i = 0; i < end; i++) {
        while (fi < nfiles && files[fi] < i)
            fi++;
        while (ri < nrows && rows[ri].idx < i)
            ri++;
        bool file = fi < nfiles && files[fi] == i;
        const index_seg *row = ri < nrows && rows[ri].idx == i ? &rows[ri] : NULL;
        if (!file) {
            problem(v, r, (long long)i,
                    row ? "missing: in the index, no file" : "missing: a gap in the sequence");
            chain_ok = false;
            continue;
        }
        if (!row && r->in_index && !live)
            problem(v, r, (long long)i, "not in the index");
        verify_segment(v, r, i, row, &dek, have_key, prev, &chain_ok);
    }

    if (has_seal) {
        if (seal.count != end)
            problem(v, r, -1, "seal says %llu segments, %llu found", (unsigned long long)seal.count,
                    (unsigned long long)end);
        else if (memcmp(seal.head, prev, 32) != 0)
            problem(v, r, -1, "sealed head does not match the chain");
        if (have_key && !store_seal_mac_ok(&seal, dek.key))
            problem(v, r, -1, "seal MAC invalid: the seal was altered");
        if (have_key && !store_id_equal(&seal.key_id, &dek.key_id))
            problem(v, r, -1, "seal names another data key");
        if (r->in_index && r->index_sealed_fields &&
            (r->index_count != seal.count || memcmp(r->index_head, seal.head, 32) != 0))
            problem(v, r, -1, "index seal (count or chain head) differs from the seal file");
        if (r->in_index && strcmp(r->state, "open") == 0 && !v->o->writer_running)
            problem(v, r, -1, "sealed on disk, but the index still says open");
        if (r->in_index && strcmp(r->state, "open") != 0)
            verify_anchor(v, r, &seal);
    } else if (r->in_index && strcmp(r->state, "open") != 0) {
        problem(v, r, -1, "seal file missing (index says %s)", r->state);
    } else if (!v->o->writer_running) {
        char id[37];
        store_id_format(&r->id, id);
        fprintf(v->o->out,
                "note: recording %s is not sealed (interrupted; ingestd seals it at "
                "its next start)\n",
                id);
    }
out:
    store_dek_wipe(&dek);
    free(files);
    free(rows);
}

cu_rc store_verify(const char *data_dir, PGconn *conn, const store_verify_opts *o,
                   store_verify_report *report, cu_err *err)
{
    cu_rc rc;
    verify_ctx v = {.data_dir = data_dir, .conn = conn, .o = o, .rep = report};
    memset(report, 0, sizeof(*report));
    cu_buf_init(&v.file, SEGMENT_FILE_MAX);
    cu_buf_init(&v.plain, STORE_SEGMENT_MAX);

    v.keys = o->keys;
    if (!o->quick && !v.keys) {
        rc = cu_err_set(err, CU_ERR_INVALID, "verify: no keys given for a full check");
        goto out;
    }
    rc = store_scan_recordings(data_dir, collect_dir, &v, err);
    if (rc)
        goto out;
    rc = collect_index(&v, err);
    if (rc)
        goto out;
    if (o->recording && v.nrecs == 0) {
        char id[37];
        store_id_format(o->recording, id);
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "recording %s is neither in the index nor on disk",
                        id);
        goto out;
    }
    if (v.nrecs)
        qsort(v.recs, v.nrecs, sizeof(rec_entry), cmp_rec);
    for (size_t i = 0; i < v.nrecs; i++)
        verify_recording(&v, &v.recs[i]);
    progress(&v, true);
out:
    free(v.recs);
    if (v.plain.data)
        OPENSSL_cleanse(v.plain.data, v.plain.alloc);
    cu_buf_free(&v.file);
    cu_buf_free(&v.plain);
    return rc;
}

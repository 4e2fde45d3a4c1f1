/*
 * The index rows. Every statement is idempotent (a row already present is
 * left, or updated to what the files say), so the index writer can replay a
 * batch and reindex can run over a complete index.
 */
#include "store_internal.h"

#include <string.h>

/* Parameters: text unless a length is given (then binary, for bytea). */
typedef struct {
    const char *values[16];
    int lengths[16];
    int formats[16];
    char text[16][40];
    int n;
} sql_params;

static void p_text(sql_params *p, const char *s)
{
    p->values[p->n] = s;
    p->lengths[p->n] = 0;
    p->formats[p->n] = 0;
    p->n++;
}
static void p_id(sql_params *p, const store_id *id)
{
    store_id_format(id, p->text[p->n]);
    p_text(p, p->text[p->n]);
}
static void p_i64(sql_params *p, int64_t v)
{
    snprintf(p->text[p->n], sizeof(p->text[0]), "%lld", (long long)v);
    p_text(p, p->text[p->n]);
}
static void p_bytes(sql_params *p, const void *data, int len)
{
    p->values[p->n] = data;
    p->lengths[p->n] = len;
    p->formats[p->n] = 1;
    p->n++;
}
static cu_rc sql_run(PGconn *conn, const char *sql, const sql_params *p, const char *what,
                     cu_err *err)
{
    PGresult *res = PQexecParams(conn, sql, p->n, NULL, p->values, p->lengths, p->formats, 0);
    ExecStatusType st = PQresultStatus(res);
    cu_rc rc = CU_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[300];
        cu_strlcpy(msg, PQerrorMessage(conn), sizeof(msg));
        msg[strcspn(msg, "\n")] = '\0';
        rc = cu_err_set(err, CU_ERR_DB, "%s: %s", what, msg);
    }
    PQclear(res);
    return rc;
}

#define US_TO_TS(n) "(timestamptz 'epoch' + $" #n "::bigint * interval '1 microsecond')"

/* The officer the device was assigned to at $3 (NULL without a device). */
#define OFFICER_AT_OPEN                                                                            \
    "(SELECT a.user_id FROM device_assignments a WHERE a.device_id = NULLIF($4::bigint, 0) "       \
    "AND a.assigned_from <= " US_TO_TS(3) " AND (a.assigned_until IS NULL OR a.assigned_until "    \
                                          "> " US_TO_TS(                                           \
                                              3) ") ORDER BY a.assigned_from DESC LIMIT 1)"

static void p_origin(sql_params *p, const store_origin *origin)
{
    p_i64(p, origin ? origin->device_id : 0);
    if (origin && origin->has_continues)
        p_id(p, &origin->continues);
    else
        p_text(p, NULL);
}

cu_rc store_sql_recording_open(PGconn *conn, const store_id *recording, const store_id *key_id,
                               int64_t opened_us, const store_origin *origin, cu_err *err)
{
    sql_params p = {.n = 0};
    p_id(&p, recording);
    p_bytes(&p, key_id->b, 16);
    p_i64(&p, opened_us);
    p_origin(&p, origin);
    if (origin && origin->has_capture)
        p_id(&p, &origin->capture);
    else
        p_text(&p, NULL);
    return sql_run(conn,
                   "INSERT INTO recordings (id, key_id, opened_at, device_id, officer_id, "
                   "continues, capture_id) VALUES ($1, $2, " US_TO_TS(
                       3) ", NULLIF($4::bigint, 0), " OFFICER_AT_OPEN
                          ", (SELECT c.id FROM recordings c WHERE c.id = $5::uuid), $6::uuid) "
                          "ON CONFLICT (id) DO UPDATE SET "
                          "device_id = coalesce(recordings.device_id, EXCLUDED.device_id), "
                          "officer_id = coalesce(recordings.officer_id, EXCLUDED.officer_id), "
                          "continues = coalesce(recordings.continues, EXCLUDED.continues), "
                          "capture_id = coalesce(recordings.capture_id, EXCLUDED.capture_id) "
                          "WHERE recordings.state = 'open'",
                   &p, "recording row", err);
}

cu_rc store_sql_recording_seal(PGconn *conn, const store_seal *seal, int64_t opened_us,
                               const store_origin *origin, cu_err *err)
{
    sql_params p = {.n = 0};
    p_id(&p, &seal->recording);
    p_bytes(&p, seal->key_id.b, 16);
    p_i64(&p, opened_us);
    p_i64(&p, origin ? origin->device_id : 0);
    p_text(&p, store_seal_reason_name(seal->reason));
    p_i64(&p, seal->sealed_us);
    p_i64(&p, (int64_t)seal->count);
    p_bytes(&p, seal->head, 32);
    if (origin && origin->has_continues)
        p_id(&p, &origin->continues);
    else
        p_text(&p, NULL);
    return sql_run(conn,
                   "SELECT recording_seal($1, $2, $3, NULLIF($4::bigint, 0), $5, $6, $7, $8, $9)",
                   &p, "seal row", err);
}

cu_rc store_sql_segment_insert(PGconn *conn, const store_found_segment *seg, cu_err *err)
{
    const store_header *h = &seg->h;
    sql_params p = {.n = 0};
    p_id(&p, &h->recording);
    p_i64(&p, (int64_t)h->index);
    p_i64(&p, h->start_us);
    p_i64(&p, h->end_us);
    p_i64(&p, h->packets);
    p_i64(&p, h->lost);
    p_i64(&p, h->flags);
    p_i64(&p, (int64_t)h->plaintext_len);
    p_i64(&p, (int64_t)seg->file_len);
    p_bytes(&p, h->sha256, 32);
    p_bytes(&p, h->chain, 32);
    p_bytes(&p, seg->xxh3, 16);
    return sql_run(conn,
                   "INSERT INTO segments (recording_id, idx, start_us, end_us, packets, lost, "
                   "flags, plaintext_len, file_len, sha256, chain, xxh3) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
                   "ON CONFLICT (recording_id, idx) DO NOTHING",
                   &p, "segment row", err);
}

cu_rc store_sql_key_insert(PGconn *conn, const store_id *recording, const store_dek *dek,
                           cu_err *err)
{
    sql_params p = {.n = 0};
    p_id(&p, recording);
    p_bytes(&p, dek->key_id.b, 16);
    p_text(&p, dek->kek_id);
    p_bytes(&p, dek->wrapped, STORE_WRAPPED_LEN);
    return sql_run(conn,
                   "INSERT INTO recording_keys (recording_id, key_id, kek_id, wrapped) "
                   "VALUES ($1, $2, $3, $4) ON CONFLICT (recording_id) DO NOTHING",
                   &p, "key row", err);
}

cu_rc store_sql_recording_recount(PGconn *conn, const store_id *recording, cu_err *err)
{
    sql_params p = {.n = 0};
    p_id(&p, recording);
    return sql_run(conn,
                   "UPDATE recordings r SET acked_segments = coalesce(s.segments, 0), "
                   "acked_bytes = coalesce(s.bytes, 0), first_start_us = s.first_start_us, "
                   "last_end_us = s.last_end_us FROM (SELECT $1::uuid AS id) one "
                   "LEFT JOIN recording_stats s ON s.recording_id = one.id "
                   "WHERE r.id = one.id AND r.state <> 'erased' AND "
                   "(r.acked_segments, r.acked_bytes) IS DISTINCT FROM "
                   "(coalesce(s.segments, 0), coalesce(s.bytes, 0))",
                   &p, "recount", err);
}

cu_rc store_sql_recording_link(PGconn *conn, const store_id *recording, const store_id *continues,
                               cu_err *err)
{
    sql_params p = {.n = 0};
    p_id(&p, recording);
    p_id(&p, continues);
    return sql_run(conn,
                   "UPDATE recordings SET continues = $2::uuid WHERE id = $1 AND continues IS NULL "
                   "AND EXISTS (SELECT 1 FROM recordings c WHERE c.id = $2::uuid)",
                   &p, "continuation link", err);
}

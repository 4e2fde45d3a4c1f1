/*
 * The read path (docs/control.md, "Read path"): GET /api/v1/recordings is
 * answered by the I/O thread itself, without a handler thread, over
 * non-blocking PostgreSQL connections in pipeline mode.
 *
 * A request is one read-only statement on one of READ_PIPES connections (in
 * turn): the session checked (session_row) and the page of what its user
 * may read (recordings_page, rule 4's one function). A page that is shown
 * leaves with its audit entry queued here; the audit connection appends
 * every queued entry in one audit_append() call and one commit (group
 * commit), one call at a time, so that under load many reads share one
 * write. Entries stay queued until their append has committed (a failed
 * append is retried); while an append is failing, or too many entries
 * wait, new reads are refused (503): nothing is shown that cannot be
 * logged. What a stop of the process can lose is the queue, a few
 * milliseconds of reads (docs/control.md). Results come back in binary and
 * are written as JSON here.
 *
 * Everything here runs on the I/O thread.
 */
#include "api_internal.h"

#include <event2/event.h>
#include <event2/http.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_SIZE        50
#define PAGE_MAX         20      /* deeper pages by cursor (next): OFFSET reads every row before */
#define CURSOR_MAX       64      /* <opened_at, Unix microseconds>.<id, 32 hex digits> */
#define INFLIGHT_MAX     256     /* sent and not answered; beyond, 503 at once */
#define JSON_MAX         1048576 /* a page is ~9 KiB */
#define PG_EPOCH_US      946684800000000LL /* 2000-01-01 in Unix microseconds */
#define READ_PIPES       2                 /* connections that read pages, used in turn */
#define SESSION_SQL_NAME "read_session"
#define PAGE_SQL_NAME    "read_page"
#define BACKLOG_MAX      4096       /* audit entries waiting; beyond, reads are refused */
#define RETRY_MS         200        /* after a failed append */
#define GATHER_MS        5          /* entries wait this long to share an append... */
#define GATHER_MAX       32         /* ...unless this many are queued */
#define CACHE_SLOTS      1024       /* pages kept, by (user, page number) */
#define CACHE_TTL_US     60000000LL /* a kept page is recomputed at least this often */

/* $1 token hash. The session's verdict (refused, why), its user and the
 * read generation; last_seen_at is written at most once a minute. */
static const char session_sql[] =
    "WITH s AS MATERIALIZED (SELECT * FROM session_row($1::bytea)), "
    "touched AS (UPDATE sessions SET last_seen_at = now() "
    "            WHERE id = (SELECT session_id FROM s WHERE s.refused IS NULL AND s.stale) "
    "            RETURNING id) "
    "SELECT s.refused, s.refused_why, s.username, s.user_id, g.gen "
    "FROM s, read_generation g WHERE (SELECT count(*) FROM touched) >= 0";

enum { S_REFUSED, S_WHY, S_USERNAME, S_USER, S_GEN };

/* $1 user, $2 offset, $3 limit, $4 and $5 the cursor (NULL: from the newest):
 * what comes after (opened_at in Unix microseconds, id). The page (one row
 * without an id when empty), each row with the generation it was computed
 * at and when its reader's scope next changes by the clock (NULL: not by
 * the clock). */
static const char page_sql[] =
    "SELECT g.gen, g.until, p.id, p.device, p.officer, p.department, p.opened_at, p.sealed_at, "
    "       p.state, p.segments, p.bytes, p.duration_ms "
    "FROM (SELECT gen, reader_scope_changes_at($1::bigint, now()) AS until "
    "      FROM read_generation OFFSET 0) g "
    "LEFT JOIN LATERAL recordings_page($1::bigint, now(), $2::integer, $3::integer, "
    "    coalesce(timestamptz 'epoch' + $4::bigint * interval '1 microsecond', 'infinity'), "
    "    coalesce($5::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')) p ON true "
    "ORDER BY p.opened_at DESC, p.id DESC";

enum {
    C_GEN,
    C_UNTIL,
    C_ID,
    C_DEVICE,
    C_OFFICER,
    C_DEPARTMENT,
    C_OPENED,
    C_SEALED,
    C_STATE,
    C_SEGMENTS,
    C_BYTES,
    C_DURATION,
    C_COLUMNS
};

/* One request, from its statement to its reply. */
typedef struct read_job {
    request *r;
    long page;               /* 0: by cursor */
    char after_us[24];       /* the cursor: the last row shown, its opened_at... */
    char after_id[37];       /* ...and its id */
    char cursor[CURSOR_MAX]; /* as given */
    bool paging;             /* its page statement is out, after its session's */
    int64_t user_id;         /* from the session */
    int64_t gen;             /* the read generation the session saw */
    char actor[80];          /* user:<name> */
} read_job;

/* A page as it was sent, for the next request of the same user and page. */
typedef struct cached_page {
    int64_t user_id;
    long page;
    int64_t gen;      /* the read generation it was computed at */
    int64_t until_us; /* wall clock: its reader's scope may change then */
    char *json;       /* NULL: an empty slot */
} cached_page;

/* A shown page's audit entry, queued until its append has committed. */
typedef struct audit_item {
    char actor[80]; /* user:<name> */
    char object[CURSOR_MAX + 8];
    char source[INET6_ADDRSTRLEN + 1];
    struct audit_item *next;
} audit_item;

/* One statement sent down a pipeline; its results arrive in this order: its
 * own, a NULL, then the Sync's (the commit). */
typedef struct sent {
    read_job *job;      /* a page */
    audit_item *append; /* or an append: its batch */
    enum { WANT_RESULT, WANT_END, WANT_SYNC } stage;
    PGresult *res;
    struct sent *next;
} sent;

typedef struct pipeline {
    api_reads *rd;
    bool reads_pages; /* else the audit connection */
    PGconn *conn;     /* NULL while down: reconnected when next used */
    struct event *readable;
    struct event *writable; /* armed while libpq has unsent bytes */
    sent *head, **tail;     /* oldest first */
    int inflight;
} pipeline;

struct api_reads {
    struct event_base *base;
    char *dsn;
    pipeline pages[READ_PIPES];
    unsigned next_page;
    pipeline audit;
    audit_item *queued, **queued_tail; /* not sent yet, oldest first */
    size_t backlog;                    /* queued + in flight */
    bool appending;                    /* an append is in flight */
    bool failing;                      /* the last append failed: reads are refused */
    struct event *timer;               /* the next append: gathered, or retried */
    cached_page cache[CACHE_SLOTS];    /* direct-mapped by (user, page) */
};

static void drop_connection(pipeline *p);
static void append_queued(api_reads *rd);
static void schedule_append(api_reads *rd);
static void sent_push(pipeline *p, sent *st);

/* ------------------------------------------------------------------ JSON */

/* A reply being written; full once an append did not fit (JSON_MAX). */
typedef struct {
    cu_buf b;
    bool full;
} json_out;

static void put(json_out *o, const char *s, size_t n)
{
    if (!o->full && cu_buf_append(&o->b, s, n) != CU_OK)
        o->full = true;
}

static void put_str(json_out *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            put(b, esc, 6);
        } else {
            put(b, esc, 2);
        }
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return (int64_t)v;
}

static char *digits(char *p, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + width;
}

/* A binary timestamptz as RFC 3339 UTC with milliseconds, truncated as
 * to_char's .MS does. The civil date from the day number: H. Hinnant's
 * days-to-civil algorithm, proleptic Gregorian. */
static void put_time(json_out *b, const char *v)
{
    int64_t ms = (be64(v) + PG_EPOCH_US) / 1000;
    if (ms < 0 || ms > 253402300799999LL) { /* before 1970 or after 9999: not ours */
        put(b, "null", 4);
        return;
    }
    int64_t days = ms / 86400000, in_day = ms % 86400000;
    int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    char text[32], *p = text;
    *p++ = '"';
    p = digits(p, year, 4);
    *p++ = '-';
    p = digits(p, month, 2);
    *p++ = '-';
    p = digits(p, day, 2);
    *p++ = 'T';
    p = digits(p, in_day / 3600000, 2);
    *p++ = ':';
    p = digits(p, in_day / 60000 % 60, 2);
    *p++ = ':';
    p = digits(p, in_day / 1000 % 60, 2);
    *p++ = '.';
    p = digits(p, in_day % 1000, 3);
    *p++ = 'Z';
    *p++ = '"';
    put(b, text, (size_t)(p - text));
}

static void put_uuid(json_out *b, const char *v)
{
    static const char hex[] = "0123456789abcdef";
    char text[38];
    size_t n = 0;
    text[n++] = '"';
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            text[n++] = '-';
        text[n++] = hex[(unsigned char)v[i] >> 4];
        text[n++] = hex[(unsigned char)v[i] & 15];
    }
    text[n++] = '"';
    put(b, text, n);
}

/* A bigint column (binary) as a number, 0 for NULL. */
static long long int8_col(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0LL : (long long)be64(PQgetvalue(res, row, col));
}

/* A text column as a JSON string ("" for NULL). */
static void put_text_col(json_out *b, PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        put(b, "\"\"", 2);
    else
        put_str(b, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
}

/* The reply to @p job from its page's (binary) rows; true when it is a page
 * to show (200). */
static bool answer(read_job *job, PGresult *res)
{
    request *r = job->r;
    int rows = res ? PQntuples(res) : 0;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != C_COLUMNS || rows < 1) {
        api_reply_unavailable(r);
        return false;
    }
    json_out b = {.full = false};
    cu_buf_init(&b.b, JSON_MAX);
    put(&b, "{\"recordings\":[", 15);
    int listed = 0;
    for (int i = 0; i < rows && listed < PAGE_SIZE; i++) {
        if (PQgetisnull(res, i, C_ID))
            continue; /* the row of an empty page */
        if (PQgetlength(res, i, C_ID) != 16 || PQgetlength(res, i, C_OPENED) != 8 ||
            PQgetlength(res, i, C_SEGMENTS) > 8 || PQgetlength(res, i, C_BYTES) > 8 ||
            PQgetlength(res, i, C_DURATION) > 8)
            continue; /* cannot happen with this statement's types */
        if (listed++)
            put(&b, ",", 1);
        put(&b, "{\"id\":", 6);
        put_uuid(&b, PQgetvalue(res, i, C_ID));
        put(&b, ",\"device\":", 10);
        put_text_col(&b, res, i, C_DEVICE);
        put(&b, ",\"officer\":", 11);
        put_text_col(&b, res, i, C_OFFICER);
        put(&b, ",\"department\":", 14);
        put_text_col(&b, res, i, C_DEPARTMENT);
        put(&b, ",\"opened_at\":", 13);
        put_time(&b, PQgetvalue(res, i, C_OPENED));
        if (!PQgetisnull(res, i, C_SEALED) && PQgetlength(res, i, C_SEALED) == 8) {
            put(&b, ",\"sealed_at\":", 13);
            put_time(&b, PQgetvalue(res, i, C_SEALED));
        }
        put(&b, ",\"state\":", 9);
        put_text_col(&b, res, i, C_STATE);
        char num[128];
        int n = snprintf(
            num, sizeof(num), ",\"segments\":%lld,\"bytes\":%lld,\"duration_ms\":%lld}",
            int8_col(res, i, C_SEGMENTS), int8_col(res, i, C_BYTES), int8_col(res, i, C_DURATION));
        put(&b, num, (size_t)n);
    }
    int more = 0, last = -1;
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, C_ID))
            continue;
        if (more++ < PAGE_SIZE)
            last = i;
    }
    char tail[192];
    int n = job->page ? snprintf(tail, sizeof(tail), "],\"page\":%ld", job->page)
                      : snprintf(tail, sizeof(tail), "],\"after\":\"%s\"", job->cursor);
    n += snprintf(tail + n, sizeof(tail) - (size_t)n, ",\"per_page\":%d,\"has_more\":%s", PAGE_SIZE,
                  more > PAGE_SIZE ? "true" : "false");
    if (more > PAGE_SIZE && last >= 0) {
        /* (rows are checked above: a 16-byte id, an 8-byte opened_at) */
        char id[33];
        cu_hex_encode(PQgetvalue(res, last, C_ID), 16, id);
        n += snprintf(tail + n, sizeof(tail) - (size_t)n, ",\"next\":\"%lld.%s\"",
                      (long long)(be64(PQgetvalue(res, last, C_OPENED)) + PG_EPOCH_US), id);
    }
    put(&b, tail, (size_t)n);
    put(&b, "}", 1);
    if (b.full) {
        cu_buf_free(&b.b);
        api_reply_error(r, 500, "internal", "the page is too large to send", NULL);
        return false;
    }
    r->status = 200;
    r->reply = b.b.data; /* the request owns it now */
    return true;
}

/* ------------------------------------------------------------- pipeline */

/* Queue the audit entry of @p job's page (shown: its reply is 200). */
static void queue_entry(api_reads *rd, read_job *job)
{
    audit_item *it = cu_xcalloc(1, sizeof(*it));
    cu_strlcpy(it->actor, job->actor, sizeof(it->actor));
    if (job->page)
        snprintf(it->object, sizeof(it->object), "page %ld", job->page);
    else
        snprintf(it->object, sizeof(it->object), "after %s", job->cursor);
    cu_strlcpy(it->source, job->r->source, sizeof(it->source));
    *rd->queued_tail = it;
    rd->queued_tail = &it->next;
    rd->backlog++;
}

/* Entries wait up to GATHER_MS for others to share their append, unless
 * GATHER_MAX are queued; one append runs at a time. */
static void schedule_append(api_reads *rd)
{
    if (!rd->queued || rd->appending || rd->failing)
        return; /* a failure's retry is already timed */
    if (rd->backlog >= GATHER_MAX) {
        event_del(rd->timer);
        append_queued(rd);
    } else if (!evtimer_pending(rd->timer, NULL)) {
        struct timeval tv = {0, GATHER_MS * 1000};
        evtimer_add(rd->timer, &tv);
    }
}

/* An append has finished: its entries are kept (committed) or go back to
 * the front of the queue, and reads are refused until one succeeds. */
static void append_done(api_reads *rd, audit_item *batch, bool ok)
{
    rd->appending = false;
    rd->failing = !ok;
    if (ok) {
        while (batch) {
            audit_item *next = batch->next;
            free(batch);
            rd->backlog--;
            batch = next;
        }
        schedule_append(rd);
        return;
    }
    audit_item **end = &batch;
    while (*end)
        end = &(*end)->next;
    *end = rd->queued;
    if (!rd->queued)
        rd->queued_tail = end;
    rd->queued = batch;
    struct timeval tv = {0, RETRY_MS * 1000};
    evtimer_add(rd->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    append_queued(arg);
}

/* ---------------------------------------------------------------- cache */

static cached_page *cache_slot(api_reads *rd, int64_t user_id, long page)
{
    uint64_t h = (uint64_t)user_id * 0x9E3779B97F4A7C15ULL ^ (uint64_t)page * 0xC2B2AE3D27D4EB4FULL;
    return &rd->cache[(h >> 32) % CACHE_SLOTS];
}

/* A copy of the kept page for @p job when it is still exact: the same
 * user, page and read generation, and before its reader's scope may change. */
static char *cache_get(api_reads *rd, const read_job *job)
{
    if (!job->page)
        return NULL; /* (by cursor: not kept) */
    cached_page *c = cache_slot(rd, job->user_id, job->page);
    if (!c->json || c->user_id != job->user_id || c->page != job->page || c->gen != job->gen ||
        cu_time_us() >= c->until_us)
        return NULL;
    return cu_xstrdup(c->json);
}

static void cache_put(api_reads *rd, const read_job *job, PGresult *res, const char *json)
{
    if (!job->page)
        return;
    int64_t now = cu_time_us(), until = now + CACHE_TTL_US;
    if (!PQgetisnull(res, 0, C_UNTIL) && PQgetlength(res, 0, C_UNTIL) == 8) {
        int64_t changes = be64(PQgetvalue(res, 0, C_UNTIL)) + PG_EPOCH_US;
        until = changes < until ? changes : until;
    }
    cached_page *c = cache_slot(rd, job->user_id, job->page);
    free(c->json);
    *c = (cached_page){.user_id = job->user_id,
                       .page = job->page,
                       .gen = be64(PQgetvalue(res, 0, C_GEN)),
                       .until_us = until,
                       .json = cu_xstrdup(json)};
}

/* ------------------------------------------------------------- requests */

static void reply_and_free(read_job *job)
{
    api_send_reply(job->r);
    free(job);
}

/* A shown page: its audit entry is queued, then it leaves. */
static void shown(api_reads *rd, read_job *job)
{
    queue_entry(rd, job);
    schedule_append(rd);
    reply_and_free(job);
}

/* The session's statement: refused (401), a kept page, or the page's
 * statement sent on the same connection. */
static void session_done(pipeline *p, read_job *job, PGresult *res)
{
    request *r = job->r;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
        PQnfields(res) != S_GEN + 1) {
        api_reply_unavailable(r);
        reply_and_free(job);
        return;
    }
    if (!PQgetisnull(res, 0, S_REFUSED)) {
        char code[64], why[200];
        snprintf(code, sizeof(code), "%.*s", PQgetlength(res, 0, S_REFUSED),
                 PQgetvalue(res, 0, S_REFUSED));
        snprintf(why, sizeof(why), "%.*s", PQgetlength(res, 0, S_WHY), PQgetvalue(res, 0, S_WHY));
        api_reply_error(r, 401, code, why, NULL);
        reply_and_free(job);
        return;
    }
    job->user_id = be64(PQgetvalue(res, 0, S_USER));
    job->gen = be64(PQgetvalue(res, 0, S_GEN));
    snprintf(job->actor, sizeof(job->actor), "user:%.*s", PQgetlength(res, 0, S_USERNAME),
             PQgetvalue(res, 0, S_USERNAME));
    char *kept = cache_get(p->rd, job);
    if (kept) {
        r->status = 200;
        r->reply = kept;
        shown(p->rd, job);
        return;
    }
    char user[24], offset[24], limit[24];
    snprintf(user, sizeof(user), "%lld", (long long)job->user_id);
    snprintf(offset, sizeof(offset), "%ld", job->page ? (job->page - 1) * PAGE_SIZE : 0);
    snprintf(limit, sizeof(limit), "%d", PAGE_SIZE + 1);
    const char *params[5] = {user, offset, limit, job->page ? NULL : job->after_us,
                             job->page ? NULL : job->after_id};
    if (!p->conn || !PQsendQueryPrepared(p->conn, PAGE_SQL_NAME, 5, params, NULL, NULL, 1) ||
        !PQpipelineSync(p->conn)) {
        api_reply_unavailable(r);
        reply_and_free(job);
        return; /* a broken connection is noticed by its next read */
    }
    job->paging = true;
    sent *st = cu_xcalloc(1, sizeof(*st));
    st->job = job;
    sent_push(p, st);
}

static void page_done(pipeline *p, read_job *job, PGresult *res)
{
    if (!answer(job, res)) {
        reply_and_free(job);
        return;
    }
    cache_put(p->rd, job, res, job->r->reply);
    shown(p->rd, job);
}

static void statement_done(pipeline *p, sent *st, PGresult *res)
{
    p->head = st->next;
    if (!p->head)
        p->tail = &p->head;
    p->inflight--;
    if (st->append) {
        bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
        if (res && !ok)
            CU_LOG(CU_LOG_ERROR, "api", "read path: audit: %s", PQresultErrorMessage(res));
        append_done(p->rd, st->append, ok);
    } else if (st->job->paging) {
        page_done(p, st->job, res);
    } else {
        session_done(p, st->job, res);
    }
    PQclear(res);
    free(st);
}

/* Results that have arrived, in order; false when the connection broke. */
static bool collect(pipeline *p)
{
    while (p->head && !PQisBusy(p->conn)) {
        sent *st = p->head;
        PGresult *res = PQgetResult(p->conn);
        switch (st->stage) {
        case WANT_RESULT:
            if (!res)
                return false; /* out of step with the pipeline */
            st->res = res;
            st->stage = WANT_END;
            if (PQresultStatus(res) != PGRES_TUPLES_OK)
                CU_LOG(CU_LOG_ERROR, "api", "read path: %s", PQresultErrorMessage(res));
            break;
        case WANT_END:
            if (res) {
                PQclear(res);
                return false;
            }
            st->stage = WANT_SYNC;
            break;
        case WANT_SYNC: {
            bool synced = res && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
            PQclear(res);
            if (!synced)
                return false;
            res = st->res;
            st->res = NULL;
            statement_done(p, st, res); /* committed */
            break;
        }
        }
    }
    return true;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pipeline *p = arg;
    if (!PQconsumeInput(p->conn) || !collect(p)) {
        CU_LOG(CU_LOG_ERROR, "api", "read path: the database connection failed: %s",
               PQerrorMessage(p->conn));
        drop_connection(p);
    }
}

static void flush(pipeline *p)
{
    int rc = PQflush(p->conn);
    if (rc < 0)
        drop_connection(p);
    else if (rc == 1)
        event_add(p->writable, NULL); /* the rest when the socket takes it */
    else
        event_del(p->writable);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

/* Fail everything in flight (503) and forget the connection. */
static void drop_connection(pipeline *p)
{
    while (p->head) {
        sent *st = p->head;
        PGresult *res = st->res;
        st->res = NULL;
        PQclear(res);
        statement_done(p, st, NULL);
    }
    if (p->readable)
        event_free(p->readable);
    if (p->writable)
        event_free(p->writable);
    p->readable = p->writable = NULL;
    PQfinish(p->conn);
    p->conn = NULL;
}

/* Connect (blocking: a local socket, at start and after a failure), prepare,
 * enter pipeline mode. */
static cu_rc connect_pipeline(pipeline *p, cu_err *err)
{
    api_reads *rd = p->rd;
    cu_rc rc = db_connect(rd->dsn, "custos-api-reads", &p->conn, err);
    if (rc)
        return rc;
    /* The statements' plans do not depend on their parameters (a page walks
     * an index whoever asks): planned once, not at each request. */
    rc = db_exec(p->conn, "SET plan_cache_mode = force_generic_plan", err);
    if (rc)
        goto fail;
    for (int i = 0; p->reads_pages && i < 2; i++) {
        PGresult *res = PQprepare(p->conn, i ? PAGE_SQL_NAME : SESSION_SQL_NAME,
                                  i ? page_sql : session_sql, 0, NULL);
        bool prepared = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!prepared) {
            rc = cu_err_set(err, CU_ERR_DB, "read path: %s", PQerrorMessage(p->conn));
            goto fail;
        }
    }
    if (PQsetnonblocking(p->conn, 1) != 0 || PQenterPipelineMode(p->conn) != 1) {
        rc = cu_err_set(err, CU_ERR_DB, "read path: no pipeline mode: %s", PQerrorMessage(p->conn));
        goto fail;
    }
    p->readable = event_new(rd->base, PQsocket(p->conn), EV_READ | EV_PERSIST, on_readable, p);
    p->writable = event_new(rd->base, PQsocket(p->conn), EV_WRITE, on_writable, p);
    if (!p->readable || !p->writable || event_add(p->readable, NULL) != 0) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "read path: cannot watch the database connection");
        goto fail;
    }
    return CU_OK;
fail:
    drop_connection(p);
    return rc;
}

/* Queue statement @p st on @p p after its parameters were sent. */
static void sent_push(pipeline *p, sent *st)
{
    *p->tail = st;
    p->tail = &st->next;
    p->inflight++;
    flush(p);
}

/* Send every queued entry (up to a batch) in one append, unless one is in
 * flight (they then go with the next). */
static void append_queued(api_reads *rd)
{
    if (rd->appending || !rd->queued)
        return;
    const ctl_audit_entry *entries[CTL_AUDIT_BATCH_MAX];
    ctl_audit_entry e[CTL_AUDIT_BATCH_MAX];
    audit_item *batch = rd->queued, **end = &rd->queued;
    size_t n = 0;
    for (audit_item *it = batch; it && n < CTL_AUDIT_BATCH_MAX; it = it->next, n++) {
        e[n] = (ctl_audit_entry){.actor = it->actor,
                                 .action = "recording.list",
                                 .object = it->object,
                                 .outcome = "ok",
                                 .source = it->source,
                                 .relaxed = true}; /* a read (docs/control.md) */
        entries[n] = &e[n];
        end = &it->next;
    }
    rd->queued = *end;
    *end = NULL;
    if (!rd->queued)
        rd->queued_tail = &rd->queued;
    rd->appending = true;
    pipeline *p = &rd->audit;
    cu_err err;
    ctl_audit_batch b;
    cu_rc rc = ctl_audit_batch_build(&b, entries, n, &err);
    bool built = rc == CU_OK;
    if (!rc && !p->conn)
        rc = connect_pipeline(p, &err);
    if (!rc && (!PQsendQueryParams(p->conn, ctl_audit_append_sql, CTL_AUDIT_FIELDS + 1, NULL,
                                   b.params, NULL, NULL, 0) ||
                !PQpipelineSync(p->conn))) {
        rc = cu_err_set(&err, CU_ERR_DB, "%s", PQerrorMessage(p->conn));
        drop_connection(p);
    }
    if (built)
        ctl_audit_batch_free(&b);
    if (rc) {
        CU_LOG(CU_LOG_ERROR, "api", "read path: audit: %s", err.msg);
        append_done(rd, batch, false);
        return;
    }
    sent *st = cu_xcalloc(1, sizeof(*st));
    st->append = batch;
    sent_push(p, st);
}

/* At a stop: wait for the append in flight, then write what is queued,
 * blocking, so that no entry of a page already shown is left behind. */
static void drain_audit(api_reads *rd)
{
    pipeline *p = &rd->audit;
    for (int attempt = 0; attempt < 3 && rd->backlog; attempt++) {
        event_del(rd->timer);
        append_queued(rd); /* (re)connects; sends unless one is in flight */
        while (p->conn && p->head) {
            struct pollfd pfd = {.fd = PQsocket(p->conn), .events = POLLIN};
            if (PQflush(p->conn) < 0 || poll(&pfd, 1, 5000) != 1 || !PQconsumeInput(p->conn) ||
                !collect(p))
                drop_connection(p); /* its batch goes back to the queue */
        }
    }
    if (rd->backlog)
        CU_LOG(CU_LOG_ERROR, "api", "read path: %zu audit entries of reads could not be written",
               rd->backlog);
}

/* ------------------------------------------------------------ interface */

cu_rc api_reads_new(struct event_base *base, const char *dsn, api_reads **out, cu_err *err)
{
    api_reads *rd = cu_xcalloc(1, sizeof(*rd));
    rd->base = base;
    rd->dsn = cu_xstrdup(dsn);
    rd->queued_tail = &rd->queued;
    rd->timer = evtimer_new(base, on_timer, rd);
    cu_rc rc = rd->timer ? CU_OK : cu_err_set(err, CU_ERR_NOMEM, "read path: no timer");
    for (int i = 0; i < READ_PIPES + 1; i++) {
        pipeline *p = i < READ_PIPES ? &rd->pages[i] : &rd->audit;
        p->rd = rd;
        p->tail = &p->head;
        p->reads_pages = i < READ_PIPES;
        if (!rc)
            rc = connect_pipeline(p, err);
    }
    if (rc) {
        api_reads_free(rd);
        return rc;
    }
    *out = rd;
    return CU_OK;
}

void api_reads_free(api_reads *rd)
{
    if (!rd)
        return;
    for (int i = 0; i < READ_PIPES; i++)
        drop_connection(&rd->pages[i]); /* in flight: 503 */
    drain_audit(rd);
    rd->appending = true; /* nothing more is sent */
    drop_connection(&rd->audit);
    while (rd->queued) {
        audit_item *next = rd->queued->next;
        free(rd->queued);
        rd->queued = next;
    }
    if (rd->timer)
        event_free(rd->timer);
    for (int i = 0; i < CACHE_SLOTS; i++)
        free(rd->cache[i].json);
    free(rd->dsn);
    free(rd);
}

/* ?after=<Unix microseconds>.<32 hex digits> (a reply's next) into @p job;
 * false after a 400. */
static bool parse_cursor(request *r, const char *cursor, read_job *job)
{
    const char *dot = strchr(cursor, '.');
    size_t digits = dot ? (size_t)(dot - cursor) : 0;
    uint8_t id[16];
    bool ok = digits >= 1 && digits <= 18 && strspn(cursor, "0123456789") == digits &&
              strlen(dot + 1) == 32 && cu_hex_decode(dot + 1, id, 16);
    if (!ok) {
        api_reply_error(r, 400, "invalid_value", "a cursor as given in next", "after");
        return false;
    }
    memcpy(job->after_us, cursor, digits);
    job->after_us[digits] = '\0';
    char hex[33];
    cu_hex_encode(id, 16, hex);
    snprintf(job->after_id, sizeof(job->after_id), "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8,
             hex + 12, hex + 16, hex + 20);
    cu_strlcpy(job->cursor, cursor, sizeof(job->cursor));
    return true;
}

/* Pages 1..PAGE_MAX by number, deeper ones after a cursor; false after a 400. */
static bool page_wanted(request *r, read_job *job)
{
    char cursor[CURSOR_MAX];
    long page = 0;
    if (!api_query_number(r, "page", LONG_MAX, &page) ||
        !api_query_text(r, "after", cursor, sizeof(cursor)))
        return false;
    if (page && cursor[0]) {
        api_reply_error(r, 400, "invalid_value", "either a page number or a cursor", "after");
        return false;
    }
    if (page > PAGE_MAX) {
        api_reply_error(r, 400, "invalid_value",
                        "page numbers stop at 20: deeper pages follow next (?after=)", "page");
        return false;
    }
    if (cursor[0])
        return parse_cursor(r, cursor, job);
    job->page = page ? page : 1;
    return true;
}

void api_reads_list(api_reads *rd, request *r)
{
    read_job want = {.r = r};
    char thex[67];
    if (!page_wanted(r, &want) || !api_bearer_hash(r, thex)) {
        api_send_reply(r);
        return;
    }
    if (rd->failing || rd->backlog >= BACKLOG_MAX) {
        /* nothing is shown that cannot be logged */
        api_reply_error(r, 503, "unavailable", "the audit log cannot be written; try again", NULL);
        api_send_reply(r);
        return;
    }
    pipeline *p = &rd->pages[rd->next_page++ % READ_PIPES];
    if (p->inflight >= INFLIGHT_MAX) {
        api_reply_error(r, 503, "busy", "too many requests are waiting; try again", NULL);
        api_send_reply(r);
        return;
    }
    cu_err err;
    if (!p->conn && connect_pipeline(p, &err) != CU_OK) {
        CU_LOG(CU_LOG_ERROR, "api", "read path: %s", err.msg);
        api_reply_unavailable(r);
        api_send_reply(r);
        return;
    }
    const char *params[1] = {thex};
    if (!PQsendQueryPrepared(p->conn, SESSION_SQL_NAME, 1, params, NULL, NULL, 1) ||
        !PQpipelineSync(p->conn)) {
        CU_LOG(CU_LOG_ERROR, "api", "read path: %s", PQerrorMessage(p->conn));
        api_reply_unavailable(r);
        api_send_reply(r);
        drop_connection(p);
        return;
    }
    read_job *job = cu_xcalloc(1, sizeof(*job));
    *job = want;
    sent *st = cu_xcalloc(1, sizeof(*st));
    st->job = job;
    sent_push(p, st);
}

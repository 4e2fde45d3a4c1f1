/*
 * Security alerts reach people (docs/alerts.md): every alert of the last
 * day not yet delivered is handed to alerts.command (/bin/sh -c, the alert
 * as one JSON object on its standard input), one at a time, on a thread of
 * its own with its own database connection, so a slow or failing command
 * holds up nothing else. A command that fails, times out
 * (alerts.command_timeout_s) or cannot be run is tried again after 1, 2,
 * 4 ... 300 s; each delivery's attempts are kept in alert_deliveries.
 */
#include "control.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_MS     1000
#define BACKOFF_MAX 300

CU_METRIC_DEFINE(alerts_delivered_metric, CU_METRIC_COUNTER, "custos_alerts_delivered_total", "",
                 "Security alerts alerts.command accepted (exit status 0).")
CU_METRIC_DEFINE(alerts_failed_metric, CU_METRIC_COUNTER, "custos_alert_delivery_failures_total",
                 "", "Runs of alerts.command that failed or timed out (each is tried again).")

struct ctl_alerts {
    const cu_config *cfg;
    char *dsn;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
};

/* Record one attempt at alert @p id: delivered, or when to try again. */
static bool note_attempt(PGconn *conn, const char *id, long attempts, bool ok, const char *why)
{
    long backoff = 1;
    for (long i = 1; i < attempts && backoff < BACKOFF_MAX; i++)
        backoff *= 2;
    if (backoff > BACKOFF_MAX)
        backoff = BACKOFF_MAX;
    char att[24], wait[24];
    snprintf(att, sizeof(att), "%ld", attempts);
    snprintf(wait, sizeof(wait), "%ld", backoff);
    const char *p[5] = {id, att, wait, ok ? "t" : "f", ok ? NULL : why};
    PGresult *res = PQexecParams(
        conn,
        "INSERT INTO alert_deliveries (alert_id, attempts, next_attempt_at, delivered_at, "
        "last_error) VALUES ($1, $2, now() + $3::integer * interval '1 second', "
        "CASE WHEN $4::boolean THEN now() END, left($5, 500)) ON CONFLICT (alert_id) DO UPDATE "
        "SET attempts = EXCLUDED.attempts, next_attempt_at = EXCLUDED.next_attempt_at, "
        "delivered_at = EXCLUDED.delivered_at, last_error = EXCLUDED.last_error",
        5, NULL, p, NULL, NULL, 0);
    bool done = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return done;
}

/* Deliver what is due. False when the database failed (the caller reconnects). */
static bool deliver_due(ctl_alerts *a, PGconn *conn)
{
    PGresult *res = PQexec(
        conn, "SELECT s.id, to_char(s.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
              "s.kind, s.username, s.source, s.detail, coalesce(d.attempts, 0) "
              "FROM security_alerts s LEFT JOIN alert_deliveries d ON d.alert_id = s.id "
              "WHERE d.delivered_at IS NULL AND coalesce(d.next_attempt_at, '-infinity') <= now() "
              "AND s.at > now() - interval '1 day' ORDER BY s.at, s.id LIMIT 20");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        CU_LOG(CU_LOG_WARN, "alerts", "reading alerts: %s", PQerrorMessage(conn));
        PQclear(res);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < PQntuples(res) && ok; i++) {
        pthread_mutex_lock(&a->mu);
        bool stopping = a->stopping;
        pthread_mutex_unlock(&a->mu);
        if (stopping)
            break;
        long attempts = strtol(PQgetvalue(res, i, 6), NULL, 10) + 1;
        json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I}", "id",
                              (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "at",
                              PQgetvalue(res, i, 1), "kind", PQgetvalue(res, i, 2), "subject",
                              PQgetvalue(res, i, 3), "source", PQgetvalue(res, i, 4), "detail",
                              PQgetvalue(res, i, 5), "attempt", (json_int_t)attempts);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        char why[200] = "the alert could not be written as JSON";
        bool sent = false;
        if (text) {
            size_t len = strlen(text);
            text[len] = '\n'; /* (the NUL's place: one line) */
            sent = cu_command_run(a->cfg->alerts_command, text, len + 1,
                                  (int)a->cfg->alerts_command_timeout_s * 1000, why, sizeof(why));
            free(text);
        }
        if (sent) {
            cu_metric_inc(&alerts_delivered_metric);
        } else {
            cu_metric_inc(&alerts_failed_metric);
            CU_LOG(CU_LOG_WARN, "alerts", "alert %s (%s), attempt %ld: alerts.command %s",
                   PQgetvalue(res, i, 0), PQgetvalue(res, i, 2), attempts, why);
        }
        ok = note_attempt(conn, PQgetvalue(res, i, 0), attempts, sent, why);
    }
    PQclear(res);
    return ok;
}

static void *alerts_main(void *arg)
{
    ctl_alerts *a = arg;
    pthread_setname_np(pthread_self(), "alerts");
    PGconn *conn = NULL;
    int errors = 0;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        pthread_mutex_unlock(&a->mu);
        cu_err err;
        if (!conn && db_connect(a->dsn, "custos-alerts", &conn, &err) != CU_OK) {
            conn = NULL;
            if (errors++ % 30 == 0)
                CU_LOG(CU_LOG_WARN, "alerts", "database: %s (alerts wait)", err.msg);
        } else if (conn && !deliver_due(a, conn)) {
            PQfinish(conn);
            conn = NULL;
        } else {
            errors = 0;
        }
        pthread_mutex_lock(&a->mu);
        if (a->stopping)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += POLL_MS / 1000;
        pthread_cond_timedwait(&a->cond, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
    PQfinish(conn);
    return NULL;
}

cu_rc ctl_alerts_start(const cu_config *cfg, const char *dsn, ctl_alerts **out, cu_err *err)
{
    *out = NULL;
    if (!cfg->alerts_command || !cfg->alerts_command[0])
        return CU_OK;
    ctl_alerts *a = cu_xcalloc(1, sizeof(*a));
    a->cfg = cfg;
    a->dsn = cu_xstrdup(dsn);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cond, NULL);
    if (pthread_create(&a->thread, NULL, alerts_main, a) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cond);
        free(a->dsn);
        free(a);
        return cu_err_set(err, CU_ERR_IO, "cannot start the alerts thread");
    }
    CU_LOG(CU_LOG_INFO, "alerts", "security alerts go to alerts.command");
    *out = a;
    return CU_OK;
}

void ctl_alerts_stop(ctl_alerts *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
    free(a->dsn);
    free(a);
}

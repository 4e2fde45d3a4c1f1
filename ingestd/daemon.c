/*
 * The daemon's lifecycle. Start order is chosen so that whatever fails,
 * fails before anything expensive runs and leaves nothing behind:
 * data dir lock → listening sockets → database → serve.
 * Stop order is the reverse.
 */
#include "ingestd_internal.h"

#include <event2/thread.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

CU_METRIC_DEFINE(ingest_up_metric, CU_METRIC_GAUGE, "custos_up", "",
                 "1 while ingestd runs and serves.")

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    ingest_daemon *d = arg;
    (void)what;
    if (d->stop_signal) {
        CU_LOG(CU_LOG_WARN, "ingestd", "second %s while stopping; still stopping",
               strsignal((int)sig));
        return;
    }
    d->stop_signal = (int)sig;
    CU_LOG(CU_LOG_INFO, "ingestd", "%s: stopping", strsignal((int)sig));
    event_base_loopexit(d->base, NULL);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    cu_err err;
    (void)sig;
    (void)what;
    (void)arg;
    if (cu_log_reopen(&err) != CU_OK)
        CU_LOG(CU_LOG_ERROR, "ingestd", "SIGHUP: %s", err.msg);
    else
        CU_LOG(CU_LOG_INFO, "ingestd", "SIGHUP: log reopened");
}

/* A child exited: if it was the embedded PostgreSQL, say so at once. */
static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    ingest_daemon *d = arg;
    cu_err why;
    (void)sig;
    (void)what;
    db_cluster *c = d->db ? db_service_cluster(d->db) : NULL;
    if (c && db_cluster_pid(c) > 0 && !db_service_healthy(d->db, &why))
        CU_LOG(CU_LOG_ERROR, "db", "%s", why.msg);
}

static cu_rc daemon_add_signals(ingest_daemon *d, cu_err *err)
{
    struct {
        int sig;
        event_callback_fn fn;
    } table[] = {
        {SIGTERM, on_stop_signal},
        {SIGINT, on_stop_signal},
        {SIGHUP, on_sighup},
        {SIGCHLD, on_sigchld},
    };
    for (size_t i = 0; i < CU_ARRAY_LEN(table); i++) {
        d->signals[i] = evsignal_new(d->base, table[i].sig, table[i].fn, d);
        if (!d->signals[i] || evsignal_add(d->signals[i], NULL) != 0)
            return cu_err_set(err, CU_ERR_IO, "cannot watch signal %s", strsignal(table[i].sig));
    }
    return CU_OK;
}

/* The live service's hooks (live.h): taps go to the ingest workers, the end
 * of a session to the API's audit. Viewers exist only once both are up. */
static void daemon_live_attach(void *ctx, const live_handle *h, pipe_tap *tap, bool attach)
{
    ingest_daemon *d = ctx;
    if (d->ingest)
        ingest_live_attach(d->ingest, h->worker, h->stream_id, h->epoch, tap, attach);
    else if (attach)
        pipe_tap_unref(tap);
}

static void daemon_live_ended(void *ctx, const live_ended *e)
{
    ingest_daemon *d = ctx;
    ctl_api_live_ended(d->api, e);
}

cu_rc ingest_daemon_run(const cu_config *cfg, cu_err *err)
{
    cu_rc rc = CU_OK;
    ingest_daemon d = {.cfg = cfg, .ops_fd = -1, .started_ms = cu_time_ms()};

    signal(SIGPIPE, SIG_IGN);
    cu_log_route_libevent();
    /* Ingest workers are woken from other threads (event_active). */
    if (evthread_use_pthreads() != 0)
        return cu_err_set(err, CU_ERR_IO, "libevent without thread support");

    /* Started as root: from here on the service account, with only the
     * capabilities to bind low ports and size receive buffers, until every
     * socket is open. */
    char keys_dir[PATH_MAX];
    cu_config_keys_dir(cfg, cfg->data_dir, keys_dir, sizeof(keys_dir));
    const char *own[2] = {cfg->data_dir, keys_dir};
    rc = cu_account_become(cfg->db_pg_user, own, 2, true, err);
    if (rc)
        goto out;
    rc = cu_datadir_open(cfg->data_dir, "ingestd", &d.datadir, err);
    if (rc)
        goto out;
    d.base = event_base_new();
    if (!d.base) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "cannot create the event loop");
        goto out;
    }
    rc = ingest_listen_tcp(cfg->http_bind, (int)cfg->http_port, "http (http.bind, http.port)",
                           &d.ops_fd, err);
    if (rc)
        goto out;
    /* Signals are watched before the database starts, so a SIGTERM during
     * a slow start is not lost; it is acted on once the loop runs. */
    rc = daemon_add_signals(&d, err);
    if (rc)
        goto out;

    CU_LOG(CU_LOG_INFO, "ingestd", "Custos %s starting; data dir %s", CUSTOS_VERSION,
           cu_datadir_path(d.datadir));
    rc = db_service_start(cfg, cu_datadir_path(d.datadir), DB_OWN, "custos-ingestd", &d.db, err);
    if (rc)
        goto out;
    char keys_path[PATH_MAX];
    cu_config_keys_dir(cfg, cu_datadir_path(d.datadir), keys_path, sizeof(keys_path));
    rc = keys_open(keys_path, true, &d.keys, err);
    if (rc)
        goto out;
    store_opts so = {
        .data_dir = cu_datadir_path(d.datadir),
        .dsn = db_service_dsn(d.db),
        .keys = d.keys,
        .workers = (int)cfg->store_workers,
        .syncers = (int)cfg->store_syncers,
        .queue_segments = (int)cfg->store_queue_segments,
    };
    rc = store_open(&so, &d.store, err);
    if (rc)
        goto out;
    live_hooks hooks = {.attach = daemon_live_attach, .attach_ctx = &d,
                        .ended = daemon_live_ended, .ended_ctx = &d};
    rc = live_service_start(cfg, cu_datadir_path(d.datadir), &hooks, &d.live, err);
    if (rc)
        goto out;
    rc = ingest_service_start(cfg, cu_datadir_path(d.datadir), db_service_dsn(d.db), d.store,
                              d.keys, d.live, &d.ingest, err);
    if (rc)
        goto out;
    rc = ctl_api_start(cfg, cu_datadir_path(d.datadir), db_service_dsn(d.db), d.keys, d.live,
                       &d.api, err);
    if (rc)
        goto out;
    rc = ctl_checkpointer_start(cfg, cu_datadir_path(d.datadir), db_service_dsn(d.db), d.keys,
                                &d.checkpointer, err);
    if (rc)
        goto out;
    rc = ctl_alerts_start(cfg, db_service_dsn(d.db), &d.alerts, err);
    if (rc)
        goto out;
    rc = ingest_ops_http_start(&d, err);
    if (rc)
        goto out;
    /* Every listening socket is open: the capabilities kept for them go. */
    rc = cu_caps_drop_all(err);
    if (rc)
        goto out;

    cu_metric_set(&ingest_up_metric, 1);
    CU_LOG(CU_LOG_INFO, "ingestd",
           "ready: http://%s%s%s:%lld/healthz and /metrics; database %s; "
           "installation %s",
           strchr(cfg->http_bind, ':') ? "[" : "", cfg->http_bind,
           strchr(cfg->http_bind, ':') ? "]" : "", (long long)cfg->http_port,
           db_service_cluster(d.db) ? "embedded" : "external (db.dsn)",
           db_service_instance_id(d.db));

    if (event_base_dispatch(d.base) < 0) {
        rc = cu_err_set(err, CU_ERR_IO, "the event loop failed");
        goto out;
    }
    CU_LOG(CU_LOG_INFO, "ingestd", "stopped serving; shutting down");
out:
    cu_metric_set(&ingest_up_metric, 0);
    ingest_ops_http_stop(&d);
    ctl_alerts_stop(d.alerts);
    /* Live sessions end (audited by the API's auditor) before the API stops. */
    live_service_stop(d.live);
    ctl_api_stop(d.api);
    /* Receivers first: their last segments reach the store, their
     * recordings are sealed; then every segment settles in the store. */
    ingest_service_stop(d.ingest);
    live_service_free(d.live);
    /* Every segment handed to the store is settled before the database goes. */
    store_close(d.store, (int)cfg->store_index_wait_s * 1000);
    /* Everything that appends to the audit log has stopped: its last head is signed. */
    ctl_checkpointer_stop(d.checkpointer);
    keys_close(d.keys);
    db_service_stop(d.db);
    for (size_t i = 0; i < CU_ARRAY_LEN(d.signals); i++)
        if (d.signals[i])
            event_free(d.signals[i]);
    if (d.base)
        event_base_free(d.base);
    cu_datadir_close(d.datadir);
    if (rc == CU_OK)
        CU_LOG(CU_LOG_INFO, "ingestd", "stopped cleanly");
    return rc;
}

/* Private to the ingestd library. */
#ifndef CUSTOS_INGESTD_INTERNAL_H
#define CUSTOS_INGESTD_INTERNAL_H

#include "control/control.h"
#include "ingestd.h"
#include "storage/store.h"

#include <event2/event.h>
#include <event2/http.h>

typedef struct ingest_daemon {
    const cu_config *cfg; /* borrowed */
    struct event_base *base;
    cu_datadir *datadir;
    db_service *db;
    keys_ring *keys;
    store *store;
    ingest_service *ingest;
    live_service *live;
    ctl_api *api; /* NULL when api.port is 0 */
    ctl_checkpointer *checkpointer;
    ctl_alerts *alerts; /* NULL without alerts.command */
    struct evhttp *ops_http;
    int ops_fd; /* listening socket, owned until handed to evhttp */
    struct event *signals[4];
    int64_t started_ms;
    int stop_signal; /* the signal that asked us to stop, or 0 */
} ingest_daemon;

/** Serve /healthz and /metrics on the bound socket @p d->ops_fd. */
CU_WUR cu_rc ingest_ops_http_start(ingest_daemon *d, cu_err *err);

/** Stop serving and close every connection. */
void ingest_ops_http_stop(ingest_daemon *d);

#endif

/*
 * The operations listener: /healthz for probes, /metrics for Prometheus.
 * Plain HTTP, loopback by default; the control API (HTTPS) is separate.
 */
#include "ingestd_internal.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <string.h>
#include <unistd.h>

#define OPS_MAX_HEADERS (8 * 1024)
#define OPS_MAX_BODY    1024
#define OPS_METRICS_MAX (4 * 1024 * 1024)

CU_METRIC_DEFINE(ops_req_healthz, CU_METRIC_COUNTER, "custos_http_requests_total",
                 "path=\"/healthz\"", "Requests to the operations listener, by path.")
CU_METRIC_DEFINE(ops_req_metrics, CU_METRIC_COUNTER, "custos_http_requests_total",
                 "path=\"/metrics\"", "Requests to the operations listener, by path.")
CU_METRIC_DEFINE(ops_req_other, CU_METRIC_COUNTER, "custos_http_requests_total", "path=\"other\"",
                 "Requests to the operations listener, by path.")

static void reply_text(struct evhttp_request *req, int code, const char *reason,
                       const char *content_type, const char *body, size_t len)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", content_type);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    struct evbuffer *out = evbuffer_new();
    if (out && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(out, body, len);
    evhttp_send_reply(req, code, reason, out);
    if (out)
        evbuffer_free(out);
}

static void ops_healthz(ingest_daemon *d, struct evhttp_request *req)
{
    cu_err why = {""};
    bool db_ok = d->db && db_service_healthy(d->db, &why);
    if (!db_ok && why.msg[0])
        CU_LOG(CU_LOG_DEBUG, "http", "healthz: database: %s", why.msg);
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%lld,\"db\":\"%s\","
                     "\"instance\":\"%s\"}\n",
                     CUSTOS_VERSION, (long long)((cu_time_ms() - d->started_ms) / 1000),
                     db_ok ? "up" : "down", d->db ? db_service_instance_id(d->db) : "");
    reply_text(req, HTTP_OK, "OK", "application/json", body, (size_t)n);
}

static void ops_metrics(ingest_daemon *d, struct evhttp_request *req)
{
    cu_buf text;
    cu_buf_init(&text, OPS_METRICS_MAX);
    if (d->db)
        (void)db_service_healthy(d->db, NULL); /* refresh custos_db_up */
    if (cu_metrics_render(&text) != CU_OK) {
        static const char msg[] = "metrics exceed the response limit\n";
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "text/plain", msg, sizeof(msg) - 1);
    } else {
        reply_text(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8", text.data,
                   text.len);
    }
    cu_buf_free(&text);
}

static void ops_dispatch(struct evhttp_request *req, void *arg)
{
    ingest_daemon *d = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    if (!path)
        path = "";
    if (strcmp(path, "/healthz") == 0) {
        cu_metric_inc(&ops_req_healthz);
    } else if (strcmp(path, "/metrics") == 0) {
        cu_metric_inc(&ops_req_metrics);
    } else {
        static const char msg[] =
            "{\"error\":\"not_found\",\"message\":\"try /healthz or /metrics\"}\n";
        cu_metric_inc(&ops_req_other);
        reply_text(req, HTTP_NOTFOUND, "Not Found", "application/json", msg, sizeof(msg) - 1);
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        static const char msg[] = "{\"error\":\"method_not_allowed\",\"message\":\"use GET\"}\n";
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "application/json", msg, sizeof(msg) - 1);
        return;
    }
    if (path[1] == 'h')
        ops_healthz(d, req);
    else
        ops_metrics(d, req);
}

cu_rc ingest_ops_http_start(ingest_daemon *d, cu_err *err)
{
    d->ops_http = evhttp_new(d->base);
    if (!d->ops_http)
        return cu_err_set(err, CU_ERR_NOMEM, "http: cannot create the listener");
    evhttp_set_max_headers_size(d->ops_http, OPS_MAX_HEADERS);
    evhttp_set_max_body_size(d->ops_http, OPS_MAX_BODY);
    evhttp_set_timeout(d->ops_http, (int)d->cfg->http_timeout_s);
    /* Methods outside this set get 501 from libevent; these reach
     * ops_dispatch, which answers 405 for all but GET and HEAD. */
    evhttp_set_allowed_methods(d->ops_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(d->ops_http, ops_dispatch, d);
    if (!evhttp_accept_socket_with_handle(d->ops_http, d->ops_fd))
        return cu_err_set(err, CU_ERR_IO, "http: cannot accept on the listening socket");
    d->ops_fd = -1; /* evhttp owns it now */
    return CU_OK;
}

void ingest_ops_http_stop(ingest_daemon *d)
{
    if (d->ops_http) {
        evhttp_free(d->ops_http);
        d->ops_http = NULL;
    }
    if (d->ops_fd >= 0) {
        close(d->ops_fd);
        d->ops_fd = -1;
    }
}

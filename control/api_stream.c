/*
 * Streamed replies (api_internal.h): a handler writes, the I/O thread
 * sends the body chunked. Shared between the two under the stream's lock:
 * the bytes not yet handed to evhttp, how many handed bytes are not yet
 * written to the socket, and whether the client went away. The I/O thread
 * is woken by an event the handler activates (libevent is thread-aware:
 * evthread_use_pthreads at start). Everything evhttp is touched on the I/O
 * thread only.
 */
#include "api_internal.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct api_stream {
    request *r;
    struct event *wake;
    pthread_mutex_t mu;
    pthread_cond_t drained;
    int status;
    char content_type[64];
    char disposition[160];
    struct evbuffer *pending; /* written by the handler, not yet handed to evhttp */
    size_t handed;            /* handed to evhttp, not yet written to the socket */
    bool started;             /* the I/O thread sent the headers */
    bool ended, complete;     /* the handler is done (and whether the body is whole) */
    bool finish_on_written;   /* ended with bytes in flight: end once evhttp wrote them */
    bool gone;                /* the client closed the connection */
};

static void stream_free(api_stream *s)
{
    event_free(s->wake);
    evbuffer_free(s->pending);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->drained);
    api_request_free(s->r);
    free(s);
}

static void finish(api_stream *s, bool complete);

/*
 * evhttp's "written" callback (I/O thread). libevent runs it deferred, so it
 * can come after more was handed: only an empty output buffer means all was
 * written. The reply is ended here, not from on_wake, when bytes were in
 * flight at the end: ended elsewhere, a write callback still pending would
 * run evhttp's end-of-request early and the tail would never be sent (seen
 * as bodies cut at a chunk boundary).
 */
static void on_written(struct evhttp_connection *conn, void *arg)
{
    api_stream *s = arg;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return; /* (a callback of an earlier drain) */
    pthread_mutex_lock(&s->mu);
    s->handed = 0;
    pthread_cond_signal(&s->drained);
    bool end = s->finish_on_written, complete = s->complete;
    pthread_mutex_unlock(&s->mu);
    if (end)
        finish(s, complete);
}

/* The client closed the connection (I/O thread): evhttp frees the request. */
static void on_close(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    api_stream *s = arg;
    pthread_mutex_lock(&s->mu);
    s->gone = true;
    pthread_cond_signal(&s->drained);
    pthread_mutex_unlock(&s->mu);
    event_active(s->wake, 0, 0); /* (only on_wake frees it) */
}

/* Headers, then what is pending, then the end (I/O thread). */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    api_stream *s = arg;
    struct evhttp_request *req = s->r->req;
    pthread_mutex_lock(&s->mu);
    if (s->gone) {
        bool ended = s->ended;
        pthread_mutex_unlock(&s->mu);
        if (ended)
            stream_free(s);
        return;
    }
    if (!s->started) {
        s->started = true;
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", s->content_type);
        evhttp_add_header(h, "Cache-Control", "no-store");
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
        if (s->disposition[0])
            evhttp_add_header(h, "Content-Disposition", s->disposition);
        evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_close, s);
        evhttp_send_reply_start(req, s->status, NULL);
    }
    size_t n = evbuffer_get_length(s->pending);
    struct evbuffer *chunk = NULL;
    if (n) {
        chunk = s->pending;
        s->pending = evbuffer_new();
        s->handed += n;
    }
    bool ended = s->ended && !evbuffer_get_length(s->pending), complete = s->complete;
    bool in_flight = s->handed > 0;
    if (ended && in_flight)
        s->finish_on_written = true;
    pthread_mutex_unlock(&s->mu);
    if (chunk) {
        evhttp_send_reply_chunk_with_cb(req, chunk, on_written, s);
        evbuffer_free(chunk);
    }
    if (ended && !in_flight)
        finish(s, complete);
}

/* The end of the reply (I/O thread), once nothing handed is in flight. */
static void finish(api_stream *s, bool complete)
{
    struct evhttp_request *req = s->r->req;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(conn, NULL, NULL);
    if (complete)
        evhttp_send_reply_end(req);
    else
        evhttp_connection_free(conn); /* cut: the client sees the body is incomplete */
    stream_free(s);
}

api_stream *api_stream_start(request *r, int status, const char *content_type,
                             const char *disposition)
{
    api_stream *s = cu_xcalloc(1, sizeof(*s));
    s->r = r;
    s->status = status;
    cu_strlcpy(s->content_type, content_type, sizeof(s->content_type));
    if (disposition)
        cu_strlcpy(s->disposition, disposition, sizeof(s->disposition));
    s->pending = evbuffer_new();
    s->wake = event_new(api_io_base(r->a), -1, 0, on_wake, s);
    if (!s->pending || !s->wake)
        abort(); /* (allocation: as cu_xcalloc) */
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->drained, NULL);
    r->a->streamed = true; /* (the handler's thread: r may be freed once it ends) */
    r->status = status;
    event_active(s->wake, 0, 0);
    return s;
}

bool api_stream_write(api_stream *s, const void *data, size_t len)
{
    pthread_mutex_lock(&s->mu);
    while (!s->gone && s->handed + evbuffer_get_length(s->pending) > API_STREAM_QUEUE_MAX)
        pthread_cond_wait(&s->drained, &s->mu);
    bool ok = !s->gone && evbuffer_add(s->pending, data, len) == 0;
    pthread_mutex_unlock(&s->mu);
    if (ok)
        event_active(s->wake, 0, 0);
    return ok;
}

void api_stream_end(api_stream *s, bool complete)
{
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    s->complete = complete;
    pthread_mutex_unlock(&s->mu);
    event_active(s->wake, 0, 0); /* (the I/O thread frees it) */
}

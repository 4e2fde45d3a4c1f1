/*
 * ingestd — the daemon: its lifecycle (data dir, database, signals), the
 * operations HTTP listener (/healthz, /metrics) and, as the platform grows,
 * the ingest listeners. main() stays thin; tests link this library.
 */
#ifndef CUSTOS_INGESTD_H
#define CUSTOS_INGESTD_H

#include "core/core.h"

/**
 * Run the daemon described by @p cfg (borrowed for the whole run) until
 * SIGTERM or SIGINT, then stop gracefully: listeners closed, the database
 * disconnected, the embedded PostgreSQL stopped, the data dir unlocked.
 * Returns CU_OK after a graceful stop; otherwise @p err holds one line
 * saying why it could not start, and nothing it started is left running.
 */
CU_WUR cu_rc ingest_daemon_run(const cu_config *cfg, cu_err *err);

/**
 * Open a listening TCP socket on @p addr (an IP literal) and @p port,
 * non-blocking and close-on-exec. @p what names the listener in errors
 * ("http", with its setting). On success *@p fd_out is the caller's.
 */
CU_WUR cu_rc ingest_listen_tcp(const char *addr, int port, const char *what, int *fd_out,
                               cu_err *err);

/**
 * Fail (CU_ERR_BUSY, naming @p what) when anyone holds UDP @p port on
 * @p addr, another process's SO_REUSEPORT socket included.
 */
CU_WUR cu_rc ingest_udp_port_free(const char *addr, int port, const char *what, cu_err *err);

/* ----------------------------------------------------------------- ingest */

/** The SRTP/RTP receivers and what they feed (ingestd/ingest.c). */
typedef struct ingest_service ingest_service;
struct store;
struct keys_ring;

/**
 * Bind ingest.udp_port (refused if anyone holds it), load the devices and
 * start the workers. Segments go to @p st; devices' secrets are unwrapped
 * with @p keys (both borrowed; they must outlive the service). The process must have called
 * evthread_use_pthreads().
 */
struct live_service;
struct pipe_tap;
CU_WUR cu_rc ingest_service_start(const cu_config *cfg, const char *data_dir, const char *dsn,
                                  struct store *st, struct keys_ring *keys,
                                  struct live_service *live, ingest_service **out, cu_err *err);

/**
 * The live service's attach hook (live.h, live_attach_fn) with @p s as its
 * context: the tap goes to its stream's worker, which starts (or stops)
 * copying the stream's packets into it. Any thread.
 */
void ingest_live_attach(ingest_service *s, int worker, uint64_t stream_id, uint64_t epoch,
                        struct pipe_tap *tap, bool attach);

/**
 * Stop receiving, end every stream (its last segment is stored and its
 * recording sealed) and free. NULL is a no-op.
 */
void ingest_service_stop(ingest_service *s);

/**
 * Initialise libsrtp once per process and plug in the OpenSSL primitives
 * (ingestd/srtp_ossl.c); libsrtp runs their known-answer tests on the way in.
 * With CUSTOS_SRTP_NSS set in the environment, libsrtp's own (NSS) remain,
 * for before/after comparisons. Thread-safe; later calls return the result
 * of the first.
 */
CU_WUR cu_rc ingest_srtp_init(cu_err *err);

/** True when the OpenSSL primitives are in use. */
bool ingest_srtp_is_openssl(void);

#endif /* CUSTOS_INGESTD_H */

/*
 * core — what every Custos module shares: the result enum, error text buffers,
 * logging, the configuration table, metrics and a few bounded string helpers.
 *
 * Nothing here knows about media, storage or the database.
 */
#ifndef CUSTOS_CORE_H
#define CUSTOS_CORE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define CUSTOS_VERSION "0.1.0"

#define CU_WUR               __attribute__((warn_unused_result))
#define CU_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define CU_ARRAY_LEN(a)      (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- results */

/** The project's one result type. CU_OK is zero; every failure has a name. */
typedef enum {
    CU_OK = 0,
    CU_ERR_NOMEM,    /* an allocation sized by a peer or a file failed */
    CU_ERR_IO,       /* a system call on a file, socket or process failed */
    CU_ERR_CONFIG,   /* a setting is unknown, mistyped or out of range */
    CU_ERR_INVALID,  /* malformed input or a bad argument */
    CU_ERR_BUSY,     /* held by someone else (data dir lock, port) */
    CU_ERR_NOTFOUND, /* a file, binary, user or row does not exist */
    CU_ERR_EXISTS,   /* already there */
    CU_ERR_DB,       /* PostgreSQL refused or is unreachable */
    CU_ERR_VERSION,  /* data written by a newer Custos than this build */
    CU_ERR_PERM,     /* the OS or a rule denied it */
    CU_ERR_TIMEOUT,  /* did not happen within its deadline */
} cu_rc;

/** Static text naming @p rc ("ok", "i/o error", ...). Never NULL. */
const char *cu_rc_str(cu_rc rc);

/**
 * A caller-owned buffer for a one-line, human-readable error message.
 * Functions that can fail for reasons an operator must fix fill it in and
 * return a cu_rc; the top level prints the line and exits non-zero.
 */
typedef struct {
    char msg[512];
} cu_err;

/** Set @p err (may be NULL) to a formatted message. Returns @p rc. */
cu_rc cu_err_set(cu_err *err, cu_rc rc, const char *fmt, ...) CU_PRINTF(3, 4);

/* ---------------------------------------------------------------- logging */

typedef enum {
    CU_LOG_ERROR = 0,
    CU_LOG_WARN = 1,
    CU_LOG_INFO = 2,
    CU_LOG_DEBUG = 3,
} cu_log_level;

/* The active level; read by CU_LOG before any formatting is done. */
extern _Atomic int cu_log_threshold;

/**
 * Log one line at @p lvl with a context (module, stream, peer ...):
 *   CU_LOG(CU_LOG_WARN, "http", "peer %s sent %zu bytes", peer, n);
 * The level is checked before the arguments are formatted or evaluated.
 */
#define CU_LOG(lvl, ctx, ...)                                                                      \
    do {                                                                                           \
        if ((int)(lvl) <= atomic_load_explicit(&cu_log_threshold, memory_order_relaxed))           \
            cu_log_write((lvl), (ctx), 0, __VA_ARGS__);                                            \
    } while (0)

/** As CU_LOG, appending ": strerror(err)"; pass errno captured at the failure. */
#define CU_LOG_ERRNO(lvl, ctx, err, ...)                                                           \
    do {                                                                                           \
        if ((int)(lvl) <= atomic_load_explicit(&cu_log_threshold, memory_order_relaxed))           \
            cu_log_write((lvl), (ctx), (err), __VA_ARGS__);                                        \
    } while (0)

/** Format and write one line; use CU_LOG instead. @p err 0 means none. */
void cu_log_write(cu_log_level lvl, const char *ctx, int err, const char *fmt, ...) CU_PRINTF(4, 5);

/**
 * Send log lines to @p path (appending, created 0640), or to stderr when
 * @p path is NULL or empty. @p program prefixes every line. Safe to call again.
 */
CU_WUR cu_rc cu_log_open(const char *program, const char *path, cu_err *err);

/** Reopen the log file at the same path (after rotation; SIGHUP). */
CU_WUR cu_rc cu_log_reopen(cu_err *err);

/** The log file (when one is open) to @p uid:@p gid, so that they can reopen it. */
void cu_log_give_to(uid_t uid, gid_t gid);

/** Close the log file; later lines go to stderr. */
void cu_log_close(void);

/** Parse "error", "warn", "info" or "debug". Returns -1 for anything else. */
int cu_log_level_parse(const char *name);

/** Lower-case name of @p lvl. */
const char *cu_log_level_name(cu_log_level lvl);

/** Route libevent's internal warnings and fatal errors into the log. */
void cu_log_route_libevent(void);

/* ---------------------------------------------------------- configuration */

/*
 * Every setting is one row of a static table (core/config.c): name, type,
 * bounds, default and a one-line doc. Values are applied in this order:
 * defaults, then the INI file (--config), then --data-dir, then each --set.
 * Strings are owned by the cu_config and freed by cu_config_free().
 */
typedef struct {
    char *data_dir;                       /* data.dir */
    int log_level;                        /* log.level (a cu_log_level) */
    char *log_file;                       /* log.file ("" = stderr) */
    char *http_bind;                      /* http.bind */
    int64_t http_port;                    /* http.port */
    int64_t http_timeout_s;               /* http.timeout_s */
    char *db_dsn;                         /* db.dsn ("" = embedded cluster) */
    char *db_owner_dsn;                   /* db.owner_dsn ("" = no migrations, external only) */
    char *keys_dir;                       /* keys.dir ("" = <data.dir>/keys) */
    int64_t audit_checkpoint_s;           /* audit.checkpoint_s */
    char *alerts_command;                 /* alerts.command ("" = none) */
    int64_t alerts_command_timeout_s;     /* alerts.command_timeout_s */
    char *audit_checkpoint_command;       /* audit.checkpoint_command ("" = none) */
    char *db_pg_bindir;                   /* db.pg_bindir ("" = discover) */
    char *db_pg_user;                     /* db.pg_user: runs the embedded cluster when root */
    int64_t db_start_timeout_s;           /* db.start_timeout_s */
    int64_t db_stop_timeout_s;            /* db.stop_timeout_s */
    int64_t store_workers;                /* store.workers (0 = 4 per CPU) */
    int64_t store_syncers;                /* store.syncers */
    int64_t store_queue_segments;         /* store.queue_segments */
    int64_t store_index_wait_s;           /* store.index_wait_s */
    char *ingest_bind;                    /* ingest.bind */
    int64_t ingest_udp_port;              /* ingest.udp_port */
    int64_t ingest_workers;               /* ingest.workers (0 = one per CPU) */
    int64_t ingest_rcvbuf_bytes;          /* ingest.rcvbuf_bytes */
    int64_t ingest_reorder_packets;       /* ingest.reorder_packets */
    int64_t ingest_reorder_ms;            /* ingest.reorder_ms */
    int64_t ingest_idle_timeout_s;        /* ingest.idle_timeout_s */
    int64_t ingest_replay_save_ms;        /* ingest.replay_save_ms */
    int64_t ingest_device_poll_ms;        /* ingest.device_poll_ms */
    int64_t ingest_coalesce_us;           /* ingest.coalesce_us */
    char *rtsp_bind;                      /* rtsp.bind */
    int64_t rtsp_port;                    /* rtsp.port (0 = no plain RTSP) */
    int64_t rtsps_port;                   /* rtsps.port (0 = no RTSPS) */
    char *rtsp_public_host;               /* rtsp.public_host ("" = the host name) */
    char *rtsps_cert_file;                /* rtsps.cert_file ("" = self-signed in the data dir) */
    char *rtsps_key_file;                 /* rtsps.key_file */
    int64_t rtsp_max_header_bytes;        /* rtsp.max_header_bytes */
    int64_t rtsp_max_body_bytes;          /* rtsp.max_body_bytes */
    int64_t rtsp_max_output_bytes;        /* rtsp.max_output_bytes */
    int64_t rtsp_request_timeout_s;       /* rtsp.request_timeout_s */
    int64_t rtsp_session_timeout_s;       /* rtsp.session_timeout_s */
    int64_t rtsp_max_sessions_per_device; /* rtsp.max_sessions_per_device */
    int64_t rtsp_max_connections_per_address; /* rtsp.max_connections_per_address */
    int64_t rtsp_max_connections;             /* rtsp.max_connections */
    int64_t rtsp_udp_port_min;                /* rtsp.udp_port_min */
    int64_t rtsp_udp_port_max;                /* rtsp.udp_port_max */
    int64_t rtsp_pull_backoff_max_s;          /* rtsp.pull_backoff_max_s */
    int64_t rtsp_allow_md5;                   /* rtsp.allow_md5 (0/1) */
    int64_t rtsp_pull_redirect_any_host;      /* rtsp.pull_redirect_any_host (0/1) */
    char *rtsp_pull_ca_file;                  /* rtsp.pull_ca_file ("" = system trust) */
    char *api_bind;                           /* api.bind */
    int64_t api_port;                         /* api.port (0 = no API) */
    char *api_cert_file;                      /* api.cert_file ("" = self-signed) */
    char *api_key_file;                       /* api.key_file */
    int64_t api_login_failures_per_source;    /* api.login_failures_per_source */
    int64_t api_login_concurrency;            /* api.login_concurrency */
    int64_t api_queue_max_bytes;              /* api.queue_max_bytes */
    int64_t api_max_body_bytes;               /* api.max_body_bytes */
    int64_t api_workers;                      /* api.workers (0 = one per CPU) */
    int64_t export_max_concurrent;            /* export.max_concurrent */
    int64_t export_package_keep_h;            /* export.package_keep_h */
    int64_t live_max_viewers;                 /* live.max_viewers */
    int64_t live_max_viewers_per_stream;      /* live.max_viewers_per_stream */
    int64_t live_max_viewers_per_user;        /* live.max_viewers_per_user */
    int64_t live_max_transcodes;              /* live.max_transcodes */
    int64_t live_viewer_timeout_s;            /* live.viewer_timeout_s */
    char *live_ice_addresses;                 /* live.ice_addresses ("" = api.bind) */
    int64_t segment_target_ms;                /* segment.target_ms */
    int64_t segment_max_ms;                   /* segment.max_ms */
} cu_config;

/** Fill @p cfg with every setting's default. Free with cu_config_free(). */
void cu_config_init(cu_config *cfg);

/** Free the strings @p cfg owns. @p cfg itself is the caller's. NULL is a no-op. */
void cu_config_free(cu_config *cfg);

/**
 * Apply an INI file: "[section]" then "name = value" gives setting
 * "section.name". At most 1 MiB and 4096 bytes per line. On error @p err
 * names the file, the line, the setting and the rule broken.
 */
CU_WUR cu_rc cu_config_load_file(cu_config *cfg, const char *path, cu_err *err);

/** Where the keys live: keys.dir, else <@p data_dir>/keys. Writes at most @p len bytes. */
void cu_config_keys_dir(const cu_config *cfg, const char *data_dir, char *out, size_t len);

/** Apply "key=value" (the --set form). */
CU_WUR cu_rc cu_config_set_assignment(cu_config *cfg, const char *assignment, cu_err *err);

/**
 * The whole load, as both programs do it: defaults, then @p file (may be
 * NULL), then @p data_dir (may be NULL), then each "key=value" of @p sets.
 */
CU_WUR cu_rc cu_config_load(cu_config *cfg, const char *file, const char *data_dir,
                            char *const *sets, size_t nsets, cu_err *err);

/** Apply one setting by name. */
CU_WUR cu_rc cu_config_set(cu_config *cfg, const char *key, const char *value, cu_err *err);

/**
 * Write every setting with its effective value to @p out as an INI file that
 * cu_config_load_file() reads back, each preceded by its doc, default and
 * bounds. A password inside db.dsn is masked.
 */
void cu_config_print(const cu_config *cfg, FILE *out);

/* ------------------------------------------------------------ data buffer */

/**
 * A growable byte buffer with a hard cap (curl's dynbuf): appends beyond
 * @c max fail with CU_ERR_NOMEM and leave the contents as they were.
 * The data is always NUL-terminated for convenience.
 */
typedef struct {
    char *data;
    size_t len;
    size_t alloc;
    size_t max;
} cu_buf;

/** Start empty, never holding more than @p max bytes. */
void cu_buf_init(cu_buf *b, size_t max);
/** Free the storage; the buffer may be reused after cu_buf_init(). */
void cu_buf_free(cu_buf *b);
/** Forget the contents, keep the allocation. */
void cu_buf_reset(cu_buf *b);
CU_WUR cu_rc cu_buf_append(cu_buf *b, const void *data, size_t len);
CU_WUR cu_rc cu_buf_printf(cu_buf *b, const char *fmt, ...) CU_PRINTF(2, 3);

/* ---------------------------------------------------------------- metrics */

typedef enum { CU_METRIC_COUNTER, CU_METRIC_GAUGE } cu_metric_type;

/**
 * One Prometheus time series. Define them with CU_METRIC_DEFINE at file
 * scope; they register themselves before main(). Updating one is a relaxed
 * atomic add: safe on the hot path.
 */
typedef struct cu_metric {
    const char *name;   /* family name, e.g. "custos_http_requests_total" */
    const char *labels; /* e.g. "path=\"/healthz\"" or "" */
    const char *help;
    cu_metric_type type;
    _Atomic int64_t value;
    struct cu_metric *next;
} cu_metric;

#define CU_METRIC_DEFINE(var, type_, name_, labels_, help_)                                        \
    cu_metric var = {.name = (name_), .labels = (labels_), .help = (help_), .type = (type_)};      \
    __attribute__((constructor)) static void var##_register(void)                                  \
    {                                                                                              \
        cu_metric_register(&var);                                                                  \
    }

/** Add @p m to the registry (done by CU_METRIC_DEFINE). */
void cu_metric_register(cu_metric *m);

static inline void cu_metric_add(cu_metric *m, int64_t n)
{
    atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}
static inline void cu_metric_inc(cu_metric *m)
{
    cu_metric_add(m, 1);
}
static inline void cu_metric_set(cu_metric *m, int64_t v)
{
    atomic_store_explicit(&m->value, v, memory_order_relaxed);
}
static inline int64_t cu_metric_get(cu_metric *m)
{
    return atomic_load_explicit(&m->value, memory_order_relaxed);
}

/**
 * Append every registered metric to @p out in the Prometheus text
 * exposition format (version 0.0.4), followed by the process_* metrics
 * (CPU seconds, resident memory, open fds, start time).
 */
CU_WUR cu_rc cu_metrics_render(cu_buf *out);

/* --------------------------------------------------------------- data dir */

/**
 * The daemon's data directory, locked for exclusive use by one process.
 * The lock is an flock() on <dir>/lock, held by a close-on-exec descriptor,
 * so it disappears with the process however it ends: a crash never leaves
 * a lock that blocks the next start.
 */
typedef struct cu_datadir cu_datadir;

/**
 * Create @p path if missing (mode 0711: other users, such as the postgres
 * account, may traverse but not list it), resolve it to an absolute path and
 * take its lock. @p holder names the program in the lock file ("ingestd").
 * CU_ERR_BUSY: another process holds it; @p err names its pid and program.
 * On success *@p out is the caller's; release with cu_datadir_close().
 */
CU_WUR cu_rc cu_datadir_open(const char *path, const char *holder, cu_datadir **out, cu_err *err);

/** Absolute path of the directory, borrowed for the handle's lifetime. */
const char *cu_datadir_path(const cu_datadir *dd);

/** Release the lock and free the handle. NULL is a no-op. */
void cu_datadir_close(cu_datadir *dd);

/* ----------------------------------------------------------------- chunks */

#define CU_CHUNK_SIZE (64 * 1024 - 32)

/**
 * A piece of a segment. Segments are chains of chunks: a stream holds
 * about what it has received, never a buffer sized for its largest segment.
 * Chunks are pooled (thread-safe); a chain is handed from owner to owner
 * (pipeline → store) and returned with cu_chunk_put().
 */
typedef struct cu_chunk {
    struct cu_chunk *next;
    size_t len; /* bytes used in data */
    uint8_t data[CU_CHUNK_SIZE];
} cu_chunk;

/** An empty chunk, or NULL when memory is short. */
cu_chunk *cu_chunk_get(void);

/** Give back a whole chain. NULL is a no-op. */
void cu_chunk_put(cu_chunk *chain);

/**
 * Append @p len bytes to the chain (*@p head, *@p tail), taking chunks as
 * needed. False when memory is short (what fitted stays appended).
 */
CU_WUR bool cu_chunk_append(cu_chunk **head, cu_chunk **tail, const void *data, size_t len);

/** Copy @p len bytes starting at offset @p off of the chain to @p out. */
void cu_chunk_copy_out(const cu_chunk *chain, size_t off, void *out, size_t len);

/* ------------------------------------------------------------------ files */

/** fsync a directory by path (so that the names in it are durable). -1 + errno on failure. */
CU_WUR int cu_fsync_dir(const char *path);

/** Write all @p len bytes to @p fd (retrying short writes and EINTR); false with errno. */
CU_WUR bool cu_write_all(int fd, const void *data, size_t len);

/** mkdir -p: parents 0755, the leaf with @p leaf_mode (exactly, whatever the
 * umask), its name made durable; -1 with errno (EEXIST: the leaf exists). */
CU_WUR int cu_mkdir_parents(const char *path, mode_t leaf_mode);

/**
 * Make directory @p path (mode @p mode) so that it survives a power cut: when
 * it is new, its parent is fsynced too. An existing directory is fine.
 */
CU_WUR cu_rc cu_mkdir_durable(const char *path, mode_t mode, cu_err *err);

/**
 * Write @p dir/@p name durably: a temp file beside it, fsync, rename over the
 * name, fsync the directory. A crash leaves the old file or the new one,
 * never a mix. @p mode applies to a new file.
 */
CU_WUR cu_rc cu_file_write_durably(const char *dir, const char *name, const void *data, size_t len,
                                   mode_t mode, cu_err *err);

/* ---------------------------------------------------------------- account */

#define CU_SERVICE_ACCOUNT "custos" /* db.pg_user's default: made when missing */

/** The account @p name exists (CU_SERVICE_ACCOUNT is created as a system account if not). */
CU_WUR cu_rc cu_account_ensure(const char *name, cu_err *err);

/**
 * Run as root: become account @p name (ensured first), after handing it each
 * of @p dirs (made if missing; chowned with their contents unless already its
 * own). With @p keep_net only CAP_NET_BIND_SERVICE and CAP_NET_ADMIN are
 * kept. Not root: nothing.
 */
CU_WUR cu_rc cu_account_become(const char *name, const char *const *dirs, size_t ndirs,
                               bool keep_net, cu_err *err);

/* ----------------------------------------------------------- capabilities */

#define CU_CAP_NET ((1ULL << 10) | (1ULL << 12)) /* CAP_NET_BIND_SERVICE, CAP_NET_ADMIN */

/** The calling thread's permitted capabilities (bit n: capability n). */
uint64_t cu_caps_permitted(void);

/** The calling thread keeps those of @p wanted it holds (*@p kept), no others. */
CU_WUR bool cu_caps_keep(uint64_t wanted, uint64_t *kept);

/**
 * Every thread of the process gives up every capability (once the sockets
 * that needed them are open); checked for each thread in /proc. Holding
 * none already: nothing.
 */
CU_WUR cu_rc cu_caps_drop_all(cu_err *err);

/* --------------------------------------------------------------- commands */

/**
 * Run /bin/sh -c @p command with @p len bytes of @p input on its standard
 * input (small: what a pipe takes at once), killed after @p timeout_ms.
 * True when it exited 0; otherwise why, in @p why.
 */
bool cu_command_run(const char *command, const char *input, size_t len, int timeout_ms, char *why,
                    size_t why_cap);

/* ---------------------------------------------------------------- helpers */

/** malloc/calloc/strdup that abort on failure: for small internal sizes only. */
void *cu_xmalloc(size_t n);
void *cu_xcalloc(size_t n, size_t size);
void *cu_xrealloc(void *p, size_t n);
char *cu_xstrdup(const char *s);
/** printf into a fresh allocation (aborts on failure). Caller frees. */
char *cu_xasprintf(const char *fmt, ...) CU_PRINTF(1, 2);

/** Copy at most @p size-1 bytes and terminate. Returns false when truncated. */
bool cu_strlcpy(char *dst, const char *src, size_t size);

/** Parse a whole decimal integer; rejects empty strings, junk and overflow. */
CU_WUR bool cu_parse_int64(const char *s, int64_t *out);

/** Little-endian integers into @p p (2, 4, 8 bytes): file formats (ZIP, pcapng). */
void cu_put_le16(uint8_t *p, uint32_t v);
void cu_put_le32(uint8_t *p, uint32_t v);
void cu_put_le64(uint8_t *p, uint64_t v);

/** Lower-case hex of @p len bytes into @p out (2 * len + 1 bytes, NUL-terminated). */
void cu_hex_encode(const void *data, size_t len, char *out);
/** Exactly 2 * @p len hex digits (either case) from @p hex into @p out; false on anything else. */
CU_WUR bool cu_hex_decode(const char *hex, uint8_t *out, size_t len);
/** Standard base64 (RFC 4648, padded) of @p len bytes: @p out holds 4 * ceil(len / 3) + 1. */
void cu_base64_encode(const void *data, size_t len, char *out);
/**
 * Decode standard padded base64 of @p text_len characters into @p out (room for
 * @p cap bytes); *@p len gets the byte count. False on bad characters, padding or room.
 */
CU_WUR bool cu_base64_decode(const char *text, size_t text_len, uint8_t *out, size_t cap,
                             size_t *len);
/** True when @p s (NUL-terminated) is well-formed UTF-8: no overlongs, surrogates or > U+10FFFF. */
bool cu_utf8_valid(const char *s);
/** Characters (code points) of UTF-8 @p s: its bytes that do not continue a character. */
size_t cu_utf8_chars(const char *s);

#define CU_TIME_TEXT_LEN 25 /* "2026-12-01T10:30:30.123Z" and NUL */
/** @p ms since the epoch as RFC 3339 UTC with milliseconds ("…T10:30:30.123Z"). */
void cu_time_format_ms(int64_t ms, char out[CU_TIME_TEXT_LEN]);

/** RFC 3339 ("2026-12-01T10:30:30.123456Z", or with an offset "+02:00") into
 * microseconds since the epoch; false when @p s is not one, or before 1970. */
CU_WUR bool cu_time_parse_us(const char *s, int64_t *out);

/** Wall clock in milliseconds since the epoch. */
int64_t cu_time_ms(void);
/** Wall clock in microseconds since the epoch. */
int64_t cu_time_us(void);
/** Monotonic clock in nanoseconds. */
int64_t cu_mono_ns(void);

#endif /* CUSTOS_CORE_H */

/*
 * control — the control plane: identity (departments, users), devices and
 * their SRTP keys, and, as the platform grows, the HTTPS API, permissions,
 * access rules, sharing, review, retention and the audit log.
 * See docs/devices.md. Prefix ctl_.
 */
#ifndef CUSTOS_CONTROL_H
#define CUSTOS_CONTROL_H

#include "live/live.h"
#include "storage/store.h"

/* ---------------------------------------------------------------- identity */

/** Add a department, under @p parent (a name, or NULL for a top one). */
CU_WUR cu_rc ctl_department_add(PGconn *conn, const char *name, const char *parent, int64_t *id,
                                cu_err *err);

typedef struct {
    const char *username;     /* [a-z0-9][a-z0-9._-]{1,63} */
    const char *role;         /* officer, reviewer or admin */
    const char *department;   /* a department's name, or NULL */
    const char *display_name; /* or NULL */
    const char *password;     /* checked by ctl_password_check and stored hashed; NULL: none */
} ctl_user_spec;

/** Add a user; without a password the account cannot log in until one is set. */
CU_WUR cu_rc ctl_user_add(PGconn *conn, const ctl_user_spec *spec, int64_t *id, cu_err *err);

/* --------------------------------------------------------------- passwords */

#define CTL_PASSWORD_MIN      12
#define CTL_PASSWORD_MAX      1024
#define CTL_PASSWORD_HASH_MAX 160 /* the encoded argon2id string, NUL included */

/** The policy of docs/control.md: length, no control characters, not the username, not banned. */
CU_WUR cu_rc ctl_password_check(const char *username, const char *password, cu_err *err);

/** argon2id of @p password (fresh salt) in its encoded form into @p out. */
CU_WUR cu_rc ctl_password_hash(const char *password, char out[CTL_PASSWORD_HASH_MAX], cu_err *err);

/** True when @p password matches @p encoded (an argon2id string; NULL never matches). */
bool ctl_password_verify(const char *encoded, const char *password);

/* -------------------------------------------------------------------- TOTP */

#define CTL_TOTP_URI_MAX 256

/**
 * A fresh TOTP secret for @p username, stored wrapped by the active KEK;
 * @p uri gets the otpauth:// URI to load into an authenticator (shown once).
 */
CU_WUR cu_rc ctl_totp_enroll(PGconn *conn, keys_ring *keys, const char *username,
                             char uri[CTL_TOTP_URI_MAX], cu_err *err);

typedef enum {
    CTL_TOTP_OK,
    CTL_TOTP_NOT_ENROLLED,
    CTL_TOTP_WRONG,
    CTL_TOTP_REPLAYED, /* right, but its time step was already used */
    CTL_TOTP_ERROR,    /* database or key trouble: @p err says */
} ctl_totp_result;

/** Check @p code (6 digits) for @p username; a code's time step is used once. */
ctl_totp_result ctl_totp_check(PGconn *conn, keys_ring *keys, const char *username,
                               const char *code, cu_err *err);

/* ------------------------------------------------------------------- audit */

/** One audit entry's fields (borrowed strings; see docs/control.md). */
typedef struct {
    const char *actor;   /* user:<name>, ingestctl:<os user>, anonymous, system */
    const char *action;  /* user.add, session.login, recording.read ... */
    const char *object;  /* what it acted on ("" when nothing) */
    const char *outcome; /* ok, denied, failed */
    const char *source;  /* client address, or "local" */
    /* A read: committed without waiting for the WAL flush (durable within
     * PostgreSQL's wal_writer_delay; a crash can lose the last fraction of
     * a second of such entries, never break the chain). Logins, denials and
     * changes always wait. */
    bool relaxed;
} ctl_audit_entry;

/** True when @p e is what the audit log accepts: fields bounded and valid UTF-8. */
bool ctl_audit_entry_valid(const ctl_audit_entry *e);

/** The chain hash of entry @p seq at @p at_ms after @p prev (docs/control.md). */
void ctl_audit_hash(const uint8_t prev[32], int64_t seq, int64_t at_ms, const ctl_audit_entry *e,
                    uint8_t out[32]);

/**
 * Append @p e: in its own transaction, or, inside an open one, as part of
 * it (a change and its entry commit together). *@p seq_out (may be NULL)
 * gets its number. CU_ERR_INVALID, before anything is sent, for an entry
 * ctl_audit_entry_valid() refuses.
 */
CU_WUR cu_rc ctl_audit_append(PGconn *conn, const ctl_audit_entry *e, int64_t *seq_out,
                              cu_err *err);

#define CTL_AUDIT_BATCH_MAX 64 /* entries one statement appends at most */
#define CTL_AUDIT_FIELDS    5  /* actor, action, object, outcome, source */

/**
 * The parameters of ctl_audit_append_sql for a batch, for callers that send
 * the statement themselves (a pipelined connection): five text arrays and
 * the commit's synchronous_commit ("off" only when every entry is relaxed).
 * The statement is its own transaction; entries are appended in order.
 */
typedef struct {
    cu_buf arrays[CTL_AUDIT_FIELDS];
    const char *params[CTL_AUDIT_FIELDS + 1];
} ctl_audit_batch;

extern const char ctl_audit_append_sql[]; /* 6 text parameters; one row: the first seq */

/** Check and encode @p e[0..n) (1..CTL_AUDIT_BATCH_MAX); free with ctl_audit_batch_free. */
CU_WUR cu_rc ctl_audit_batch_build(ctl_audit_batch *b, const ctl_audit_entry *const *e, size_t n,
                                   cu_err *err);
void ctl_audit_batch_free(ctl_audit_batch *b);

/**
 * Group commit for the threads of one process (the API's): a thread that
 * appends while another is writing waits, and the next writer takes every
 * waiting entry into one statement and one commit. Thread-safe; each thread
 * passes its own connection.
 */
typedef struct ctl_audit_group ctl_audit_group;

ctl_audit_group *ctl_audit_group_new(void);
void ctl_audit_group_free(ctl_audit_group *g); /* no thread may be appending */

/** Append @p e (borrowed until return) through @p g; returns once it is
 * committed (relaxed entries: without waiting for the flush) or failed. */
CU_WUR cu_rc ctl_audit_group_append(ctl_audit_group *g, PGconn *conn, const ctl_audit_entry *e,
                                    cu_err *err);

/* ------------------------------------------------------------ checkpoints */

#define CTL_CHECKPOINT_FILE     "audit/checkpoints" /* under the data dir */
#define CTL_CHECKPOINT_LINE_MAX 256

/** One signed checkpoint of the audit chain (docs/integrity.md, "Checkpoints"). */
typedef struct {
    char instance[37];         /* the installation id */
    char at[CU_TIME_TEXT_LEN]; /* when it was written, RFC 3339 UTC */
    int64_t seq;               /* the audit entry it anchors */
    uint8_t head[32];          /* that entry's hash */
    uint8_t sig[KEYS_SIG_LEN]; /* Ed25519 over the line's first five fields */
    size_t line;               /* its line in the file, from 1 (when loaded) */
} ctl_checkpoint;

/** <@p data_dir>/audit/checkpoints. */
void ctl_checkpoint_path(const char *data_dir, char *out, size_t len);

/**
 * Sign the audit log's head and append it to the checkpoint file (fsynced)
 * unless the newest line already holds that head (or @p force). Then run
 * @p hook (audit.checkpoint_command; NULL or "" for none) with the line on
 * its stdin, bounded to 30 s; its failure is logged and counted, not
 * returned. *@p out (may be NULL) gets the checkpoint written (seq 0: none).
 */
CU_WUR cu_rc ctl_checkpoint_write(PGconn *conn, keys_ring *keys, const char *data_dir,
                                  const char *hook, bool force, ctl_checkpoint *out, cu_err *err);

/** The newest checkpoint's line (no newline) into @p line ("" when there is none). */
CU_WUR cu_rc ctl_checkpoint_latest(const char *data_dir, char *line, size_t len, cu_err *err);

/** Parse one line (no newline); false when it is not a well-formed checkpoint. */
bool ctl_checkpoint_parse(const char *line, ctl_checkpoint *c);

/** True when @p c's signature verifies under @p pub. */
bool ctl_checkpoint_signature_ok(const ctl_checkpoint *c, const uint8_t pub[KEYS_PUBLIC_LEN]);

/**
 * Every well-formed line of the checkpoint file, in file order (caller
 * frees *@p out); *@p unreadable counts whole lines that are not (a torn
 * last line, which a crash can leave, is skipped). No file: none.
 */
CU_WUR cu_rc ctl_checkpoints_load(const char *data_dir, ctl_checkpoint **out, size_t *n,
                                  size_t *unreadable, cu_err *err);

/**
 * ingestd's checkpoints: one at start, one every audit.checkpoint_s while
 * the log moves, one at stop; on its own thread and connection (to @p dsn),
 * signed with @p keys (borrowed; must outlive it).
 */
/* ------------------------------------------------------------------ alerts */

/**
 * Security alerts delivered to alerts.command (control/alerts.c,
 * docs/alerts.md): a thread of its own; *@p out is NULL (and nothing runs)
 * when no command is set.
 */
typedef struct ctl_alerts ctl_alerts;
CU_WUR cu_rc ctl_alerts_start(const cu_config *cfg, const char *dsn, ctl_alerts **out, cu_err *err);
void ctl_alerts_stop(ctl_alerts *a); /* NULL: nothing */

typedef struct ctl_checkpointer ctl_checkpointer;
CU_WUR cu_rc ctl_checkpointer_start(const cu_config *cfg, const char *data_dir, const char *dsn,
                                    keys_ring *keys, ctl_checkpointer **out, cu_err *err);
/** Write the last checkpoint and stop. Call after everything that appends has stopped. */
void ctl_checkpointer_stop(ctl_checkpointer *c);

typedef struct {
    int64_t entries;   /* entries that check out, from the first */
    int64_t last_seq;  /* the log's last entry (0: empty) */
    int64_t first_bad; /* 0 when the chain itself checks out */
    char why[300];     /* what is wrong with first_bad */
    /* Against the signed checkpoints: */
    size_t checkpoints;          /* whose signature verifies, of this installation */
    size_t checkpoints_bad;      /* whose signature does not, or of another installation */
    bool rewritten;              /* a signed head differs from the chain's hash there */
    bool truncated;              /* a checkpoint covers entries the log no longer holds */
    const ctl_checkpoint *holds; /* the newest checkpoint that still holds, or NULL */
    const ctl_checkpoint *fails; /* the first one that does not, or NULL */
    char checkpoint_why[400];    /* what is wrong, when rewritten or truncated */
} ctl_audit_report;

/**
 * Recompute the whole chain in C, independently of the SQL that wrote it,
 * and hold it against @p cps[0..n) (verified with @p pub; NULL/0: none):
 * CU_OK with first_bad = 0, !rewritten and !truncated when intact. The
 * report's pointers point into @p cps.
 */
CU_WUR cu_rc ctl_audit_verify(PGconn *conn, const ctl_checkpoint *cps, size_t n,
                              const uint8_t pub[KEYS_PUBLIC_LEN], ctl_audit_report *r, cu_err *err);

/* --------------------------------------------------------------------- TLS */

typedef struct ssl_ctx_st SSL_CTX;

/** Where a TLS server's certificate comes from. Strings borrowed. */
typedef struct {
    const char *what;                       /* "RTSPS", "HTTPS API": for messages */
    const char *cert_file, *key_file;       /* the operator's PEM files, or "" for self-signed */
    const char *cert_setting, *key_setting; /* their settings' names, for messages */
    const char *host;                       /* the name to certify ("" = this host's name) */
    const char *data_dir;                   /* self-signed files go in <data_dir>/tls/ */
    const char *stem;                       /* ... named <stem>-cert.pem, <stem>-key.pem */
} ctl_tls_spec;

/** A server context (TLS ≥ 1.2) per @p t. Free with SSL_CTX_free. */
CU_WUR cu_rc ctl_tls_server_context(const ctl_tls_spec *t, SSL_CTX **out, cu_err *err);

/* --------------------------------------------------------------------- API */

/** The HTTPS JSON API (docs/control.md): its own thread, loop and database connection. */
typedef struct ctl_api ctl_api;

/**
 * Listen on api.bind:api.port (nothing when api.port is 0: *@p out stays
 * NULL) and serve /api/v1/ against the database at @p dsn. @p keys (borrowed,
 * must outlive the API) unwraps TOTP secrets.
 */
/** Every route of the API, one "METHOD PATH anonymous|session" line each (api_routes.c). */
void ctl_api_print_routes(FILE *out);

CU_WUR cu_rc ctl_api_start(const cu_config *cfg, const char *data_dir, const char *dsn,
                           keys_ring *keys, live_service *live, ctl_api **out, cu_err *err);

/** The live service's ended hook (live.h) with the API as context: the session's
 * end is audited (on the API's live auditor thread). Any thread. */
void ctl_api_live_ended(ctl_api *api, const live_ended *e);

/** Stop serving and free. NULL is a no-op. */
void ctl_api_stop(ctl_api *a);

/* ----------------------------------------------------------------- devices */

#define CTL_SRTP_KEY_MAX      44   /* AEAD_AES_256_GCM: 32-byte key + 12-byte salt */
#define CTL_RTSP_PASSWORD_LEN 22   /* 128 random bits in base64url */
#define CTL_PULL_URL_MAX      1024 /* rtsp:// or rtsps:// URL, credentials included */

/**
 * A device's SRTP replay mark (docs/srtp-replay.md): the highest packet
 * indexes ingest accepted from it, and how far they moved in the interval
 * before they were saved (the margin after a crash is sized from it).
 */
typedef struct {
    int64_t device_id;
    bool known;          /* false: none saved yet */
    uint64_t rtp_index;  /* ROC << 16 | SEQ, 48 bits */
    uint64_t rtp_step;   /* how far rtp_index moved since the save before */
    uint32_t rtcp_index; /* SRTCP index, 31 bits */
    uint32_t rtcp_step;
    bool clean; /* saved at a clean stop: exact, nothing was accepted after it */
} ctl_replay_mark;

/**
 * Save @p n marks (each only raises what is stored: the table refuses a
 * lower one). One statement; no audit entry (a mark is no one's decision).
 */
CU_WUR cu_rc ctl_replay_marks_save(PGconn *conn, const ctl_replay_mark *marks, size_t n,
                                   cu_err *err);

/**
 * A device as ingest needs it: identity, stream format and its secrets (SRTP
 * master key, RTSP password, pull URL), all in the clear here: wipe with
 * ctl_device_wipe() once used.
 */
typedef struct {
    int64_t id;
    char serial[65];
    uint32_t ssrc;
    char suite[32]; /* aes_cm_128_hmac_sha1_80 or aead_aes_256_gcm */
    char codec[8];  /* h264, h265, audio */
    int payload_type;
    int clock_rate;
    bool active; /* false once revoked */
    int64_t version;
    uint8_t key[CTL_SRTP_KEY_MAX]; /* master key ‖ master salt (key_len bytes) */
    size_t key_len;
    char rtsp_password[CTL_RTSP_PASSWORD_LEN + 1]; /* "" when it has none */
    char pull_url[CTL_PULL_URL_MAX + 1];           /* "" unless ingestd pulls from it */
    bool pull_udp;                                 /* pull over UDP rather than TCP */
    ctl_replay_mark replay;                        /* as saved (replay.known false: none) */
} ctl_device;

typedef struct {
    const char *serial;   /* [A-Za-z0-9._-]{1,64} */
    const char *officer;  /* username to assign it to, or NULL */
    const char *suite;    /* NULL: aes_cm_128_hmac_sha1_80 */
    const char *codec;    /* NULL: h264 */
    int payload_type;     /* 0: 96 for video, 97 for audio */
    const char *pull_url; /* rtsp[s]://[user:pass@]host[:port]/path to pull from, or NULL */
    bool pull_udp;        /* pull with RTP over UDP (default: interleaved in the TCP session) */
} ctl_device_spec;

/**
 * Provision a device: a unique random SSRC, a fresh SRTP master key and RTSP
 * password, and the URL to pull from if any, stored only wrapped by the
 * active KEK. *@p out holds them in the clear, to be shown once; wipe it
 * with ctl_device_wipe(). Runs in the caller's transaction when one is
 * open (and leaves it open, or failed, for the caller to end).
 */
CU_WUR cu_rc ctl_device_add(PGconn *conn, keys_ring *keys, const ctl_device_spec *spec,
                            ctl_device *out, cu_err *err);

/** Revoke a device (by id or serial): ingest refuses its packets from now on. */
CU_WUR cu_rc ctl_device_revoke(PGconn *conn, const char *device, cu_err *err);

/** Assign a device (by id or serial) to @p username from now on, ending any assignment. */
CU_WUR cu_rc ctl_device_assign(PGconn *conn, const char *device, const char *username, cu_err *err);

/** Called once per device by ctl_devices_changed(); @p d is borrowed. */
typedef void (*ctl_device_fn)(void *ctx, const ctl_device *d);

/**
 * Every device whose version is above @p since (0: all), with its key
 * unwrapped, in version order; *@p max_version receives the highest seen.
 */
CU_WUR cu_rc ctl_devices_changed(PGconn *conn, keys_ring *keys, int64_t since, ctl_device_fn fn,
                                 void *ctx, int64_t *max_version, cu_err *err);

/** SDES name of a suite ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"), or NULL. */
const char *ctl_suite_sdes_name(const char *suite);

/** Bytes of master key ‖ salt for a suite (30 or 44), or 0 when unknown. */
size_t ctl_suite_key_len(const char *suite);

/** Overwrite the secrets in @p d. */
void ctl_device_wipe(ctl_device *d);

#endif /* CUSTOS_CONTROL_H */

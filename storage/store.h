/*
 * storage — the evidence store. Segments are hashed, chained, encrypted
 * under a per-recording data key and written durably; an index thread
 * mirrors them into PostgreSQL; verify, reindex, key rotation and erasure
 * work on a data dir with or without a running writer.
 * Formats and guarantees: docs/segment-format.md. Prefix store_.
 */
#ifndef CUSTOS_STORE_H
#define CUSTOS_STORE_H

#include "db/db.h"
#include "keys/keys.h"

/* ------------------------------------------------------------ identifiers */

/** A recording id or a key id: 16 random bytes, shown as a UUID. */
typedef struct {
    uint8_t b[16];
} store_id;

/** Write @p id as 36 characters plus NUL. */
void store_id_format(const store_id *id, char out[37]);
/** Parse the 8-4-4-4-12 hex form. */
CU_WUR bool store_id_parse(const char *text, store_id *id);
bool store_id_equal(const store_id *a, const store_id *b);

/* ----------------------------------------------------------------- writer */

/** The writing side: worker threads, group commit, the index thread. */
typedef struct store store;
/** One open recording of a store. */
typedef struct store_recording store_recording;

/**
 * Called from a store thread for every segment once its fate is known:
 * @p ok true when it is durable and acknowledged, false when it was not
 * stored (the recording is then damaged). Must not block.
 */
typedef void (*store_ack_fn)(void *ctx, const store_id *recording, uint64_t index, bool ok);

typedef struct {
    const char *data_dir; /* absolute; must be locked by the caller (borrowed) */
    const char *dsn;      /* index database (borrowed; copied) */
    keys_ring *keys;      /* the KEKs (borrowed; must outlive the store) */
    int workers;          /* hash+encrypt threads; 0 = four per CPU */
    int syncers;          /* threads issuing fsync; 0 = 4 */
    int queue_segments;   /* per-worker queue of submitted segments; 0 = 64 */
    store_ack_fn on_ack;  /* may be NULL */
    void *ack_ctx;
} store_opts;

/**
 * Open the store on a locked data dir: create keys/ and segments/ on first
 * use, remove *.tmp files left by a crash, start the threads. Recordings left
 * open by a crash are sealed as "interrupted" once the index database is
 * reachable (their keys may be there). On success *@p out is the caller's.
 */
CU_WUR cu_rc store_open(const store_opts *opts, store **out, cu_err *err);

/**
 * Stop: every submitted segment is settled (acknowledged or failed), open
 * recordings are sealed, and the index thread flushes what it can within
 * @p index_wait_ms (what it cannot is rebuilt by the next rescan). NULL is a
 * no-op.
 */
void store_close(store *s, int index_wait_ms);

/** Largest recording meta file (the SDP of an RTSP publish included). */
#define STORE_META_MAX 65536

/** Where a recording comes from. */
typedef struct {
    int64_t device_id; /* 0: none (an upload, a test) */
    /* "key=value" lines describing the source: device, codec, payload type,
     * SDP ... at most STORE_META_MAX bytes. Kept in the recording's "meta"
     * file; its hash starts the hash chain, so it cannot change unseen.
     * A "device_id=N" line is what reindex reads back. NULL: none. */
    const char *meta;
    /* The recording this one goes on from after a failed write (its stream
     * continues here), or NULL. Written as the meta file's first line. */
    const store_id *continues;
} store_recording_attrs;

/**
 * Start a recording: a fresh id and data key; the wrapped key and the
 * recording's meta file are durable before this returns. The index gives the
 * recording to the officer the device is assigned to at this moment.
 * *@p out belongs to the caller until store_recording_close(). @p attrs and
 * @p id_out may be NULL. This does disk I/O (fsyncs): not for a thread that
 * must never block.
 */
CU_WUR cu_rc store_recording_open(store *s, const store_recording_attrs *attrs,
                                  store_recording **out, store_id *id_out, cu_err *err);

/** Capture facts about one segment, as the pipeline knows them. */
typedef struct {
    int64_t start_us; /* capture time of the first packet */
    int64_t end_us;   /* capture time of the last packet (>= start) */
    uint32_t packets;
    uint32_t lost;  /* packets known lost inside the segment */
    uint32_t flags; /* STORE_SEG_* */
} store_segment_meta;

#define STORE_SEG_LOSS      0x1 /* packets were lost inside the segment */
#define STORE_SEG_GAP_START 0x2 /* a gap precedes its first packet */
#define STORE_SEG_LAST      0x4 /* the recording's last segment */
#define STORE_SEGMENT_MAX   (64u * 1024 * 1024)

/**
 * Hand one segment to the store. Takes ownership of @p data, a chain of
 * chunks holding @p len bytes (at most STORE_SEGMENT_MAX), in every case; the
 * chunks go back to the pool once encrypted. Never blocks when
 * @p wait is false: CU_ERR_BUSY means the recording's worker queue is full
 * and the segment was dropped (the caller counts the shortfall). With
 * @p wait true it waits for room. CU_ERR_INVALID: a damaged or closing
 * recording, or bad meta. The segment index is assigned here, in call
 * order, from 0; @p index_out (may be NULL) receives it.
 */
CU_WUR cu_rc store_segment_submit(store_recording *r, cu_chunk *data, size_t len,
                                  const store_segment_meta *meta, bool wait, uint64_t *index_out);

/** True once a segment of @p r failed to be stored. */
bool store_recording_damaged(const store_recording *r);

/**
 * Close @p r: the seal is written after every submitted segment has
 * settled. The handle is freed by the store; do not use it afterwards.
 */
void store_recording_close(store_recording *r);

/** Block until every submitted segment has settled and every close is sealed. */
void store_flush(store *s);

/** Block until the index holds everything settled so far, or @p timeout_ms. */
CU_WUR bool store_index_wait(store *s, int timeout_ms);

/** Figures for benchmarks and tests. */
typedef struct {
    uint64_t segments_acked;
    uint64_t segments_failed;
    uint64_t bytes_acked; /* plaintext bytes */
    uint64_t queue_full;  /* submissions refused */
    uint64_t fsyncs;
    double fsync_ms_p50, fsync_ms_p99;
    uint64_t index_rows;    /* committed to PostgreSQL */
    uint64_t index_pending; /* queued, not yet committed */
    bool index_connected;
} store_stats;

void store_stats_get(store *s, store_stats *out);

/* ------------------------------------------------------------ maintenance */
/* These work on a data dir and a connection, with or without a writer. */

/** Read back and decrypt one segment, checking its tag and hash. */
CU_WUR cu_rc store_segment_read(const char *data_dir, PGconn *conn, keys_ring *keys,
                                const store_id *recording, uint64_t index, cu_buf *plaintext,
                                cu_err *err);

/*
 * A recording read back for export: at open its chain is walked over every
 * segment header from the genesis, each held against its index row, and a
 * sealed recording must end at its sealed head; each segment read must be
 * the file walked, its GCM tag and SHA-256 holding. Errors name the
 * segment. The reader owns the recording's data key until closed.
 */
typedef struct store_reader store_reader;

CU_WUR cu_rc store_reader_open(const char *data_dir, PGconn *conn, keys_ring *keys,
                               const store_id *recording, store_reader **out, cu_err *err);
const store_id *store_reader_id(const store_reader *r);
uint64_t store_reader_count(const store_reader *r);
/** The recording's meta file ("key=value" lines: source, codec, SDP...), the
 * bytes its chain starts from; not NUL-terminated, borrowed from @p r. */
const char *store_reader_meta_file(const store_reader *r, size_t *len);
/** Segment @p index's times and counts, from its checked header (NULL past the end). */
const store_segment_meta *store_reader_meta(const store_reader *r, uint64_t index);
/** Segment @p index's plaintext hash and chain value, as walked (index -1:
 * the genesis c_-1, hash zero); false past the end. */
bool store_reader_chain(const store_reader *r, int64_t index, uint8_t sha256[32],
                        uint8_t chain[32]);
/** True when the recording is sealed; @p head gets its sealed head (the walk ended there). */
bool store_reader_sealed(const store_reader *r, uint8_t head[32]);
/** Segment @p index's plaintext into @p plaintext, whose max must be at least
 * STORE_READ_BUF_MAX (the file is read into it and decrypted in place).
 * Safe to call from several threads at once, each with its own buffer. */
#define STORE_READ_BUF_MAX (STORE_SEGMENT_MAX + 184)
CU_WUR cu_rc store_reader_read(const store_reader *r, uint64_t index, cu_buf *plaintext,
                               cu_err *err);
void store_reader_close(store_reader *r);

typedef struct {
    const store_id *recording; /* only this one, or NULL for all */
    bool quick;                /* XXH3 + headers + chain, no keys */
    keys_ring *keys;           /* borrowed; NULL only with quick */
    bool progress;             /* draw a progress bar on stderr */
    bool writer_running;       /* a writer holds the data dir: open recordings are live */
    FILE *out;                 /* one line per problem */
} store_verify_opts;

typedef struct {
    uint64_t recordings;
    uint64_t segments;
    uint64_t erased; /* recordings that were crypto-erased */
    uint64_t problems;
} store_verify_report;

/**
 * Check every segment (GCM tag, SHA-256, chain, nonce, seal) and that the
 * index and the files agree, writing one line per problem to opts->out.
 * Returns CU_OK when it could look at everything (problems or not).
 */
CU_WUR cu_rc store_verify(const char *data_dir, PGconn *conn, const store_verify_opts *opts,
                          store_verify_report *report, cu_err *err);

typedef struct {
    uint64_t recordings;
    uint64_t segments;
    uint64_t keys_imported;     /* pending key files moved into the database */
    uint64_t rows_without_file; /* index rows whose file is gone (verify names them) */
} store_reindex_report;

/**
 * Rebuild `recordings` and `segments` from segment headers and seals alone
 * (and import pending key files). Rows whose files are gone are kept and
 * counted, never deleted: that is for verify to report.
 */
CU_WUR cu_rc store_reindex(const char *data_dir, PGconn *conn, store_reindex_report *report,
                           cu_err *err);

/**
 * What the next start of a writer does after a crash, for a data dir no
 * writer holds: seal recordings a crash left open ("interrupted") at their
 * last complete segment, and bring into the index whatever it lagged on.
 * @p sealed (may be NULL) receives how many were sealed.
 */
CU_WUR cu_rc store_recover(const char *data_dir, PGconn *conn, keys_ring *keys, int *sealed,
                           cu_err *err);

typedef struct {
    char new_kek[17];
    uint64_t rewrapped;
    uint64_t pending_rewrapped;
    uint64_t devices_rewrapped; /* device secrets: SRTP keys, RTSP passwords, pull URLs */
} store_rotate_report;

/**
 * Add a KEK, make it active and re-wrap every data key under it (one
 * transaction, plus pending key files). Segment files are not touched.
 */
CU_WUR cu_rc store_keys_rotate(const char *data_dir, PGconn *conn, keys_ring *keys,
                               store_rotate_report *report, cu_err *err);

/** What a KEK still wraps. */
typedef struct {
    uint64_t data_keys;      /* recordings' data keys in the database */
    uint64_t pending_keys;   /* data keys in pending key files */
    uint64_t device_secrets; /* devices' SRTP keys, RTSP passwords, pull URLs */
    uint64_t user_secrets;   /* users' TOTP secrets */
    char example[80];        /* one of them, to name it ("recording <id>", "device <serial>") */
} store_kek_usage;

/** Count what KEK @p kek_id wraps (database rows and pending key files). */
CU_WUR cu_rc store_kek_usage_get(const char *data_dir, PGconn *conn, const char *kek_id,
                                 store_kek_usage *out, cu_err *err);

/**
 * Destroy KEK @p kek_id once nothing is wrapped by it (CU_ERR_BUSY naming
 * what still is; the active KEK is refused too): erasures are then complete
 * against backups of the database taken while it wrapped their keys.
 */
CU_WUR cu_rc store_kek_retire(const char *data_dir, PGconn *conn, keys_ring *keys,
                              const char *kek_id, cu_err *err);

/** Who erases, and why: the deletion record's fields (borrowed strings). */
typedef struct {
    const char *actor;  /* "user:<name>", "ingestctl:<os user>", "system" */
    const char *reason; /* "retention_expired" or a special reason in words */
    const char *source; /* client address, or "local" */
} store_erase_request;

/** What an erasure destroyed. */
typedef struct {
    store_id recording;
    store_id key_id;
    uint64_t segments; /* segment files removed */
    uint64_t bytes;    /* bytes of files removed */
    uint8_t chain_head[32];
    bool sealed;       /* chain_head is the sealed head */
    int64_t audit_seq; /* the deletion record in the audit chain (0: erased before) */
    int64_t erased_us;
} store_erasure;

/**
 * Cryptographic erasure of a closed recording (docs/integrity.md,
 * "Erasure"): the wrapped data key is destroyed and the deletion record
 * written in one transaction (recording_erase() in SQL), then the files are
 * removed. The index row stays, marked 'erased'. A crash at any point leaves
 * either the intact recording or an erased one; an erasure interrupted after
 * its commit is finished by store_erasures_finish(). Erasing an erased
 * recording removes what is left of its files. CU_ERR_BUSY: still open.
 * (Who may erase is decided by the caller's workflow, never here.)
 */
CU_WUR cu_rc store_recording_erase(const char *data_dir, PGconn *conn, const store_id *recording,
                                   const store_erase_request *why, store_erasure *record,
                                   cu_err *err);

/**
 * Finish erasures a crash interrupted (their markers in segments/.erasing):
 * the files of recordings the database says are erased are removed; a
 * marker whose erasure never committed is dropped. Run at every start.
 */
CU_WUR cu_rc store_erasures_finish(const char *data_dir, PGconn *conn, int *finished, cu_err *err);

#endif /* CUSTOS_STORE_H */

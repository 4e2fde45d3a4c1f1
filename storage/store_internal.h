/* Private to the storage library: formats, keys, paths. */
#ifndef CUSTOS_STORE_INTERNAL_H
#define CUSTOS_STORE_INTERNAL_H

#include "store.h"

#include <limits.h>

/* ------------------------------------------------------------------ format */

#define STORE_HEADER_LEN    168
#define STORE_TAG_LEN       16
#define STORE_NONCE_LEN     12
#define STORE_SEAL_LEN      128
#define STORE_SEAL_BODY_LEN 96
/* A whole segment file: header, payload, tag (what a read buffer holds). */
#define SEGMENT_FILE_MAX (STORE_HEADER_LEN + STORE_SEGMENT_MAX + STORE_TAG_LEN)
_Static_assert(SEGMENT_FILE_MAX == STORE_READ_BUF_MAX, "store.h's read buffer holds a file");

typedef struct {
    uint32_t flags;
    store_id recording;
    uint64_t index;
    store_id key_id;
    uint8_t nonce[STORE_NONCE_LEN];
    int64_t start_us, end_us;
    uint32_t packets, lost;
    uint64_t plaintext_len;
    uint8_t sha256[32];
    uint8_t chain[32];
} store_header;

/** The nonce of segment @p index: 00 00 00 01 ‖ index. */
void store_nonce_for(uint64_t index, uint8_t out[STORE_NONCE_LEN]);

/** Decrypt segment file @p file (header @p h, parsed from it) into @p plain
 * (h->plaintext_len bytes); false when the GCM tag does not hold. */
bool store_segment_decrypt(const cu_buf *file, const store_header *h, const uint8_t key[32],
                           uint8_t *plain);

/** Decrypt the segment file held in @p buf (header @p h, parsed from it) in
 * place: afterwards @p buf holds the plaintext alone; false when the tag
 * does not hold. */
bool store_segment_decrypt_in_place(cu_buf *buf, const store_header *h, const uint8_t key[32]);

/** Serialize @p h (big-endian) into exactly STORE_HEADER_LEN bytes. */
void store_header_encode(const store_header *h, uint8_t out[STORE_HEADER_LEN]);

/**
 * Parse and check a header from untrusted bytes. @p len is how many bytes
 * are in @p buf; @p file_len the whole file's size (or 0 to skip that
 * check). On failure returns CU_ERR_INVALID with the reason in @p why.
 */
CU_WUR cu_rc store_header_parse(const uint8_t *buf, size_t len, uint64_t file_len, store_header *h,
                                char *why, size_t why_len);

/** c_-1 for @p recording, whose meta file hashes to @p meta_sha256. */
void store_chain_genesis(const store_id *recording, const uint8_t meta_sha256[32], uint8_t out[32]);

/** Where a recording comes from, as its meta file says. */
typedef struct {
    int64_t device_id;  /* "device_id=N"; 0 when none */
    store_id continues; /* "continues=<uuid>": the recording it goes on from */
    bool has_continues;
    store_id capture; /* "capture=<uuid>": the capture whose track it is (RTSP) */
    bool has_capture;
} store_origin;

/** The origin fields of meta text @p meta (@p len bytes) into @p origin (left
 * alone when absent). */
void store_origin_parse(const char *meta, size_t len, store_origin *origin);

/**
 * Read <dir>/meta (absent reads as empty) and give the recording's chain
 * genesis and its origin. CU_ERR_INVALID when the file is larger than
 * STORE_META_MAX.
 */
CU_WUR cu_rc store_recording_genesis(const char *dir, const store_id *recording, uint8_t out[32],
                                     store_origin *origin, cu_err *err);
/** c_i from c_{i-1} and segment i's header fields. */
void store_chain_next(const uint8_t prev[32], const store_header *h, uint8_t out[32]);

typedef enum {
    STORE_SEAL_CLOSED = 1,
    STORE_SEAL_DAMAGED = 2,
    STORE_SEAL_INTERRUPTED = 3,
} store_seal_reason;

typedef struct {
    uint16_t reason;
    store_id recording;
    store_id key_id;
    uint64_t count;
    uint8_t head[32];
    int64_t opened_us, sealed_us;
    uint8_t mac[32];
} store_seal;

const char *store_seal_reason_name(int reason);

/** Serialize and MAC @p s with the recording's data key. */
void store_seal_encode(store_seal *s, const uint8_t dek[32], uint8_t out[STORE_SEAL_LEN]);

/** Parse a seal from untrusted bytes (no MAC check). */
CU_WUR cu_rc store_seal_parse(const uint8_t *buf, size_t len, store_seal *s, char *why,
                              size_t why_len);

/** True when @p s's MAC is right for @p dek. */
bool store_seal_mac_ok(const store_seal *s, const uint8_t dek[32]);

/* -------------------------------------------------------------------- keys */

#define STORE_KEK_ID_LEN  KEYS_KEK_ID_LEN
#define STORE_WRAPPED_LEN (32 + KEYS_WRAP_EXTRA) /* version ‖ nonce 12 ‖ ciphertext 32 ‖ tag 16 */

/** A recording's data key, in memory only while in use. */
typedef struct {
    uint8_t key[32];
    store_id key_id;
    char kek_id[STORE_KEK_ID_LEN + 1];
    uint8_t wrapped[STORE_WRAPPED_LEN];
} store_dek;

/** A fresh data key for @p recording, wrapped by the active KEK. */
CU_WUR cu_rc store_dek_new(keys_ring *k, const store_id *recording, store_dek *out, cu_err *err);

/** Unwrap a data key. CU_ERR_INVALID when it does not authenticate. */
CU_WUR cu_rc store_dek_unwrap(keys_ring *k, const store_id *recording, const store_id *key_id,
                              const char *kek_id, const uint8_t *wrapped, size_t wrapped_len,
                              uint8_t key[32], cu_err *err);

/** Wrap @p dek->key again under the active KEK (updates kek_id, wrapped). */
CU_WUR cu_rc store_dek_rewrap(keys_ring *k, const store_id *recording, store_dek *dek, cu_err *err);

/** Durably write keys/pending/<recording>.dek. */
CU_WUR cu_rc store_pending_write(const char *data_dir, const store_id *recording,
                                 const store_dek *dek, cu_err *err);
/** Read it back (CU_ERR_NOTFOUND when absent). dek->key is left zero. */
CU_WUR cu_rc store_pending_read(const char *data_dir, const store_id *recording, store_dek *dek,
                                cu_err *err);
/** Remove it (absent is fine). */
void store_pending_remove(const char *data_dir, const store_id *recording);

/**
 * The data key of @p recording: from the database, else from a pending
 * file. CU_ERR_NOTFOUND when neither has it (erased, or never made).
 */
CU_WUR cu_rc store_dek_load(const char *data_dir, PGconn *conn, keys_ring *k,
                            const store_id *recording, store_dek *dek, cu_err *err);

/** Overwrite a data key in memory. */
void store_dek_wipe(store_dek *dek);

/* ------------------------------------------------------------------- paths */

/** <data_dir>/segments/<xx>/<id> */
void store_recording_dir(const char *data_dir, const store_id *recording, char out[PATH_MAX]);
/** <recording dir>/<index, 8 digits>.seg */
void store_segment_path(const char *rec_dir, uint64_t index, char out[PATH_MAX]);

/** Read a whole file of at most @p max bytes into @p out. */
CU_WUR cu_rc store_read_file(const char *path, size_t max, cu_buf *out, cu_err *err);

/** XXH3-128 of @p data, canonical (big-endian) bytes. */
void store_xxh3(const void *data, size_t len, uint8_t out[16]);

/* ---------------------------------------------------------- one recording */

/** A segment file as found on disk: header and whole-file facts. */
typedef struct {
    store_header h;
    uint64_t file_len;
    uint8_t xxh3[16];
} store_found_segment;

/**
 * List the recording directories under <data_dir>/segments, calling @p fn
 * with each recording id and directory. Stops early when @p fn returns false.
 */
typedef bool (*store_dir_fn)(void *ctx, const store_id *recording, const char *dir);
CU_WUR cu_rc store_scan_recordings(const char *data_dir, store_dir_fn fn, void *ctx, cu_err *err);

/** Sorted segment indices present as *.seg in @p dir. Caller frees *@p out. */
CU_WUR cu_rc store_list_segments(const char *dir, uint64_t **out, size_t *n, cu_err *err);

/* ----------------------------------------------------------- index (SQL) */

/**
 * The recording row when it opens: inserted with its origin (device, the
 * officer that device was assigned to at @p opened_us, what it continues),
 * or left as it is.
 */
CU_WUR cu_rc store_sql_recording_open(PGconn *conn, const store_id *recording,
                                      const store_id *key_id, int64_t opened_us,
                                      const store_origin *origin, cu_err *err);
/**
 * The row closed by @p seal (recording_seal() in SQL: once, with its audit
 * entry and, for a damaged one, an alert); a row already closed is left.
 */
CU_WUR cu_rc store_sql_recording_seal(PGconn *conn, const store_seal *seal, int64_t opened_us,
                                      const store_origin *origin, cu_err *err);
/**
 * Link a continuation to the recording it continues, once that is indexed
 * (the link is set once; before, it is left NULL).
 */
CU_WUR cu_rc store_sql_recording_link(PGconn *conn, const store_id *recording,
                                      const store_id *continues, cu_err *err);
/** Set a recording's acknowledged counts from its segment rows (after reindex). */
CU_WUR cu_rc store_sql_recording_recount(PGconn *conn, const store_id *recording, cu_err *err);
/** Insert a segment row (existing rows are left as they are). */
CU_WUR cu_rc store_sql_segment_insert(PGconn *conn, const store_found_segment *seg, cu_err *err);
/** Insert a wrapped key row (an existing row is left as it is). */
CU_WUR cu_rc store_sql_key_insert(PGconn *conn, const store_id *recording, const store_dek *dek,
                                  cu_err *err);

#endif /* CUSTOS_STORE_INTERNAL_H */

/* ------------------------------------------------------------ index thread */

/**
 * The index writer: one thread, one connection, rows queued in memory
 * (bounded) and committed in batches. Never blocks its callers.
 */
typedef struct store_index store_index;

/** Is @p recording open in this process (so recovery must leave it)? */
typedef bool (*store_is_open_fn)(void *ctx, const store_id *recording);

CU_WUR cu_rc store_index_start(const char *data_dir, const char *dsn, keys_ring *keys,
                               store_is_open_fn is_open, void *ctx, store_index **out, cu_err *err);
/** Flush for up to @p wait_ms, then stop and free. NULL is a no-op. */
void store_index_stop(store_index *ix, int wait_ms);

void store_index_push_open(store_index *ix, const store_id *recording, const store_id *key_id,
                           int64_t opened_us, const store_origin *origin, const store_dek *dek);
void store_index_push_segment(store_index *ix, const store_found_segment *seg);
void store_index_push_seal(store_index *ix, const store_seal *seal, int64_t opened_us,
                           const store_origin *origin);

/** Until nothing is queued or being committed, or @p timeout_ms. */
bool store_index_wait_idle(store_index *ix, int timeout_ms);

void store_index_stats(store_index *ix, uint64_t *rows, uint64_t *pending, bool *connected);

/* ------------------------------------------------------------- maintenance */

/**
 * Seal one interrupted recording in @p dir at its longest complete prefix,
 * renaming what follows a break to *.orphan, and index what it sealed.
 * CU_ERR_NOTFOUND: its data key is not reachable now (try again later).
 */
CU_WUR cu_rc store_recover_one(const char *data_dir, PGconn *conn, keys_ring *k,
                               const store_id *recording, const char *dir, cu_err *err);

/** Recording ids with a pending key file (not yet fully indexed). */
CU_WUR cu_rc store_pending_list(const char *data_dir, store_id **out, size_t *n, cu_err *err);

typedef struct {
    int sealed;    /* interrupted recordings sealed */
    int reindexed; /* sealed recordings whose index lagged */
    int waiting;   /* data key not reachable yet */
} store_catch_up_report;

/**
 * Bring every recording that has a pending key file (and is not open here,
 * per @p is_open) fully into the index: seal it if a crash left it open,
 * reindex it if it was sealed but the index lagged. The pending file goes
 * once the database holds everything.
 */
CU_WUR cu_rc store_catch_up(const char *data_dir, PGconn *conn, keys_ring *k,
                            store_is_open_fn is_open, void *ctx, store_catch_up_report *rep,
                            cu_err *err);

/** Remove *.tmp files from an unsealed recording directory. */
void store_remove_temp_files(const char *dir);

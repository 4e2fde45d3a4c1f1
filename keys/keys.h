/*
 * keys — the installation's key custody, below storage and control: the
 * key-encryption keys (KEKs) that wrap every data key and small secret, their
 * retirement, and the installation signing key (Ed25519) that signs audit
 * checkpoints. One directory (keys.dir, default <data-dir>/keys), 0700, each
 * key file 0600, owned by the account Custos runs as; checked and corrected
 * at every open. Formats: docs/segment-format.md ("Keys") and
 * docs/integrity.md. Prefix keys_.
 */
#ifndef CUSTOS_KEYS_H
#define CUSTOS_KEYS_H

#include "core/core.h"

/** The keys directory, opened. Thread-safe; plain keys live only inside it. */
typedef struct keys_ring keys_ring;

#define KEYS_KEK_ID_LEN 16 /* hex digits */
#define KEYS_WRAP_EXTRA 29 /* version 1 ‖ nonce 12 ‖ ... ‖ tag 16 */
#define KEYS_SIG_LEN    64
#define KEYS_PUBLIC_LEN 32
#define KEYS_AAD_MAX    512

/**
 * Open the keys directory @p dir (borrowed; copied). Its permissions are
 * checked: the directory and its files must belong to the account we run as
 * (CU_ERR_PERM otherwise); group or other access is removed, with a warning.
 * With @p create, a missing directory, first KEK and signing key are made.
 * On success *@p out is the caller's; free with keys_close().
 */
CU_WUR cu_rc keys_open(const char *dir, bool create, keys_ring **out, cu_err *err);

/** Forget every key held in memory and free. NULL is a no-op. */
void keys_close(keys_ring *k);

/** The directory, borrowed. */
const char *keys_dir(const keys_ring *k);

/** The id of the KEK that wraps new keys. CU_ERR_NOTFOUND when there is none. */
CU_WUR cu_rc keys_active(keys_ring *k, char id[KEYS_KEK_ID_LEN + 1], cu_err *err);

/** Make a new KEK (written durably) and make it the active one. */
CU_WUR cu_rc keys_kek_add(keys_ring *k, char new_id[KEYS_KEK_ID_LEN + 1], cu_err *err);

/** The ids of every KEK file present, sorted. Caller frees *@p ids. */
CU_WUR cu_rc keys_kek_list(keys_ring *k, char (**ids)[KEYS_KEK_ID_LEN + 1], size_t *n, cu_err *err);

/**
 * Destroy KEK @p id: its file is overwritten, fsynced, removed and the
 * directory fsynced; it is forgotten in memory. The active KEK is refused
 * (CU_ERR_BUSY). Whether anything is still wrapped by it is the caller's to
 * check first (keys_retire in storage does).
 */
CU_WUR cu_rc keys_kek_destroy(keys_ring *k, const char *id, cu_err *err);

/**
 * AES-256-GCM under the active KEK: @p out = 1 ‖ nonce 12 ‖ ciphertext ‖ tag 16
 * (@p len + KEYS_WRAP_EXTRA bytes). The additional data is @p aad (at most
 * KEYS_AAD_MAX - KEYS_KEK_ID_LEN bytes) followed by the KEK id, written to
 * @p kek_id.
 */
CU_WUR cu_rc keys_wrap(keys_ring *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                       size_t len, char kek_id[KEYS_KEK_ID_LEN + 1], uint8_t *out, cu_err *err);

/**
 * Undo keys_wrap() with KEK @p kek_id: @p out gets wrapped_len - KEYS_WRAP_EXTRA
 * bytes. CU_ERR_INVALID when it does not authenticate, CU_ERR_NOTFOUND when
 * the KEK is gone (destroyed).
 */
CU_WUR cu_rc keys_unwrap(keys_ring *k, const char *kek_id, const uint8_t *aad, size_t aad_len,
                         const uint8_t *wrapped, size_t wrapped_len, uint8_t *out, cu_err *err);

/* What a device's or user's wrapped secrets are bound to (with its name). */
#define KEYS_LABEL_DEVICE_SRTP  "custos-srtp-v1"
#define KEYS_LABEL_DEVICE_RTSP  "custos-rtsp-v1"
#define KEYS_LABEL_DEVICE_PULL  "custos-pull-v1"
#define KEYS_LABEL_USER_TOTP    "custos-totp-v1"
#define KEYS_SECRET_MAX         1024
#define KEYS_SECRET_WRAPPED_MAX (KEYS_SECRET_MAX + KEYS_WRAP_EXTRA)

/**
 * Wrap a small secret (1..KEYS_SECRET_MAX bytes) bound to @p label and
 * @p context (what it is and whose): aad = label ‖ 0 ‖ context ‖ 0 ‖ KEK id.
 */
CU_WUR cu_rc keys_wrap_secret(keys_ring *k, const char *label, const char *context,
                              const uint8_t *secret, size_t len, char kek_id[KEYS_KEK_ID_LEN + 1],
                              uint8_t out[KEYS_SECRET_WRAPPED_MAX], size_t *out_len, cu_err *err);

/** Unwrap what keys_wrap_secret() made; CU_ERR_INVALID if it does not authenticate. */
CU_WUR cu_rc keys_unwrap_secret(keys_ring *k, const char *label, const char *context,
                                const char *kek_id, const uint8_t *wrapped, size_t wrapped_len,
                                uint8_t out[KEYS_SECRET_MAX], size_t *len, cu_err *err);

/* ---------------------------------------------------------- signing key */

/**
 * Sign @p msg with the installation signing key (Ed25519, pure: the
 * signature `openssl pkeyutl -verify -rawin` checks). CU_ERR_NOTFOUND when
 * the key was never made (a keys directory opened without create).
 */
CU_WUR cu_rc keys_sign(keys_ring *k, const void *msg, size_t len, uint8_t sig[KEYS_SIG_LEN],
                       cu_err *err);

/** The signing key's public half, raw (32 bytes). */
CU_WUR cu_rc keys_public(keys_ring *k, uint8_t pub[KEYS_PUBLIC_LEN], cu_err *err);

/** The public half as a PEM SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----"). */
CU_WUR cu_rc keys_public_pem(keys_ring *k, cu_buf *out, cu_err *err);

/** Check an Ed25519 signature by public key @p pub. */
bool keys_signature_ok(const uint8_t pub[KEYS_PUBLIC_LEN], const void *msg, size_t len,
                       const uint8_t sig[KEYS_SIG_LEN]);

#endif /* CUSTOS_KEYS_H */

/*
 * storage — the evidence store: segment container format, per-recording
 * hash chain, AES-256-GCM envelope encryption, durable writes with group
 * commit, the segment index in PostgreSQL, verification and cryptographic
 * erasure. Prefix store_. See ARCHITECTURE.md ("Evidence model").
 *
 * The module's API lands here with the evidence-store issue; until then the
 * library carries no code and links the database module.
 */
#ifndef CUSTOS_STORE_H
#define CUSTOS_STORE_H

#include "db/db.h"

#endif /* CUSTOS_STORE_H */

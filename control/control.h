/*
 * control — the control plane served by ingestd: HTTPS JSON API, identity
 * and roles, the permission workflow, the single access-decision function,
 * sharing, review, retention, devices and the hash-chained audit log.
 * Prefix ctl_.
 *
 * The module's API lands here with the control-plane issue; until then the
 * library carries no code and links the database module.
 */
#ifndef CUSTOS_CONTROL_H
#define CUSTOS_CONTROL_H

#include "db/db.h"

#endif /* CUSTOS_CONTROL_H */

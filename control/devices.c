/* Departments, users and devices (docs/devices.md). */
#include "control.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* The first line of PostgreSQL's message. */
static void pq_reason(PGconn *conn, char *out, size_t len)
{
    cu_strlcpy(out, PQerrorMessage(conn), len);
    out[strcspn(out, "\n")] = '\0';
}

static bool is_unique_violation(PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return state && strcmp(state, "23505") == 0;
}

static bool name_ok(const char *s, size_t min, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr(extra, *p)))
            return false;
    return true;
}

/* --------------------------------------------------------------- identity */

cu_rc ctl_department_add(PGconn *conn, const char *name, const char *parent, int64_t *id,
                         cu_err *err)
{
    if (!name[0] || strlen(name) > 200)
        return cu_err_set(err, CU_ERR_INVALID, "a department name is 1 to 200 characters");
    const char *params[2] = {name, parent};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO departments (name, parent_id) "
                                 "SELECT $1, (SELECT id FROM departments WHERE name = $2) "
                                 "WHERE $2::text IS NULL OR EXISTS "
                                 "(SELECT 1 FROM departments WHERE name = $2) RETURNING id",
                                 2, NULL, params, NULL, NULL, 0);
    cu_rc rc = CU_OK;
    char why[256];
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pq_reason(conn, why, sizeof(why));
        rc = is_unique_violation(res)
                 ? cu_err_set(err, CU_ERR_EXISTS, "department '%s' already exists", name)
                 : cu_err_set(err, CU_ERR_DB, "adding department '%s': %s", name, why);
    } else if (PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no department '%s' to put '%s' under",
                        parent ? parent : "", name);
    } else if (id) {
        *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    return rc;
}

cu_rc ctl_user_add(PGconn *conn, const ctl_user_spec *spec, int64_t *id, cu_err *err)
{
    if (!name_ok(spec->username, 2, 64, "._-") || spec->username[0] == '.' ||
        spec->username[0] == '_' || spec->username[0] == '-')
        return cu_err_set(err, CU_ERR_INVALID,
                          "username '%s': 2 to 64 of a-z 0-9 . _ -, starting with a letter or "
                          "digit",
                          spec->username);
    if (strcmp(spec->role, "officer") && strcmp(spec->role, "reviewer") &&
        strcmp(spec->role, "admin"))
        return cu_err_set(err, CU_ERR_INVALID, "role '%s' is not officer, reviewer or admin",
                          spec->role);
    if (spec->display_name && strlen(spec->display_name) > 200)
        return cu_err_set(err, CU_ERR_INVALID, "display name longer than 200 characters");
    char hash[CTL_PASSWORD_HASH_MAX];
    cu_rc rc = CU_OK;
    if (spec->password) {
        rc = ctl_password_check(spec->username, spec->password, err);
        if (!rc)
            rc = ctl_password_hash(spec->password, hash, err);
        if (rc)
            return rc;
    }
    const char *params[5] = {spec->username, spec->role, spec->department,
                             spec->display_name ? spec->display_name : "",
                             spec->password ? hash : NULL};
    PGresult *res =
        PQexecParams(conn,
                     "INSERT INTO users (username, role, department_id, display_name, "
                     "password_hash, password_set_at) "
                     "SELECT $1, $2, (SELECT id FROM departments WHERE name = $3), $4, $5, "
                     "CASE WHEN $5::text IS NULL THEN NULL ELSE now() END "
                     "WHERE $3::text IS NULL OR EXISTS (SELECT 1 FROM departments WHERE name = $3) "
                     "RETURNING id",
                     5, NULL, params, NULL, NULL, 0);
    char why[256];
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pq_reason(conn, why, sizeof(why));
        rc = is_unique_violation(res)
                 ? cu_err_set(err, CU_ERR_EXISTS, "user '%s' already exists", spec->username)
                 : cu_err_set(err, CU_ERR_DB, "adding user '%s': %s", spec->username, why);
    } else if (PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no department '%s'", spec->department);
    } else if (id) {
        *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    return rc;
}

/* ---------------------------------------------------------------- devices */

const char *ctl_suite_sdes_name(const char *suite)
{
    if (strcmp(suite, "aes_cm_128_hmac_sha1_80") == 0)
        return "AES_CM_128_HMAC_SHA1_80";
    if (strcmp(suite, "aead_aes_256_gcm") == 0)
        return "AEAD_AES_256_GCM";
    return NULL;
}

size_t ctl_suite_key_len(const char *suite)
{
    if (strcmp(suite, "aes_cm_128_hmac_sha1_80") == 0)
        return 30;
    if (strcmp(suite, "aead_aes_256_gcm") == 0)
        return 44;
    return 0;
}

void ctl_device_wipe(ctl_device *d)
{
    OPENSSL_cleanse(d->key, sizeof(d->key));
    d->key_len = 0;
    OPENSSL_cleanse(d->rtsp_password, sizeof(d->rtsp_password));
    OPENSSL_cleanse(d->pull_url, sizeof(d->pull_url));
}

/* An RTSP password: 128 random bits in unpadded base64url (22 characters). */
static bool make_rtsp_password(char out[CTL_RTSP_PASSWORD_LEN + 1])
{
    uint8_t raw[16];
    char b64[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return false;
    EVP_EncodeBlock((unsigned char *)b64, raw, sizeof(raw));
    OPENSSL_cleanse(raw, sizeof(raw));
    for (int i = 0; i < CTL_RTSP_PASSWORD_LEN; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    out[CTL_RTSP_PASSWORD_LEN] = '\0';
    OPENSSL_cleanse(b64, sizeof(b64));
    return true;
}

/* rtsp:// or rtsps://, a host, printable ASCII without spaces, bounded. */
static bool pull_url_ok(const char *url)
{
    size_t n = strlen(url);
    const char *rest = strncmp(url, "rtsp://", 7) == 0    ? url + 7
                       : strncmp(url, "rtsps://", 8) == 0 ? url + 8
                                                          : NULL;
    if (!rest || n > CTL_PULL_URL_MAX || !*rest || *rest == '/')
        return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

/* A wrapped secret as PQexecParams takes it (binary), or NULL when absent. */
typedef struct {
    char kek_id[KEYS_KEK_ID_LEN + 1];
    uint8_t wrapped[KEYS_SECRET_WRAPPED_MAX];
    size_t len;
} wrapped_secret;

static cu_rc user_exists(PGconn *conn, const char *username, cu_err *err)
{
    const char *params[1] = {username};
    PGresult *res =
        PQexecParams(conn, "SELECT 1 FROM users WHERE username = $1 AND disabled_at IS NULL", 1,
                     NULL, params, NULL, NULL, 0);
    cu_rc rc = CU_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = cu_err_set(err, CU_ERR_DB, "looking up user '%s'", username);
    else if (PQntuples(res) != 1)
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no active user '%s' (ingestctl user add)", username);
    PQclear(res);
    return rc;
}

cu_rc ctl_device_add(PGconn *conn, keys_ring *keys, const ctl_device_spec *spec, ctl_device *out,
                     cu_err *err)
{
    cu_rc rc = CU_OK;
    const char *suite = spec->suite ? spec->suite : "aes_cm_128_hmac_sha1_80";
    const char *codec = spec->codec ? spec->codec : "h264";
    bool audio = strcmp(codec, "audio") == 0;
    char kek_id[KEYS_KEK_ID_LEN + 1];
    uint8_t wrapped[KEYS_SECRET_WRAPPED_MAX];
    size_t wrapped_len = 0;
    wrapped_secret rtsp = {.len = 0}, pull = {.len = 0};
    bool in_tx = false;

    memset(out, 0, sizeof(*out));
    if (!name_ok(spec->serial, 1, 64, "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-"))
        return cu_err_set(err, CU_ERR_INVALID, "serial '%s': 1 to 64 of A-Z a-z 0-9 . _ -",
                          spec->serial);
    if (!ctl_suite_key_len(suite))
        return cu_err_set(err, CU_ERR_INVALID,
                          "suite '%s' is not aes_cm_128_hmac_sha1_80 or aead_aes_256_gcm", suite);
    if (strcmp(codec, "h264") && strcmp(codec, "h265") && !audio)
        return cu_err_set(err, CU_ERR_INVALID, "codec '%s' is not h264, h265 or audio", codec);
    int pt = spec->payload_type ? spec->payload_type : audio ? 97 : 96;
    if (pt < 0 || pt > 127 || (pt >= 72 && pt <= 76))
        return cu_err_set(err, CU_ERR_INVALID,
                          "payload type %d is not 0..127 (72..76 would clash with RTCP)", pt);
    if (spec->pull_url && !pull_url_ok(spec->pull_url))
        return cu_err_set(err, CU_ERR_INVALID,
                          "pull URL: rtsp://[user:pass@]host[:port]/path or rtsps://..., at most "
                          "%d printable characters without spaces",
                          CTL_PULL_URL_MAX);
    if (spec->officer) {
        rc = user_exists(conn, spec->officer, err);
        if (rc)
            return rc;
    }

    cu_strlcpy(out->serial, spec->serial, sizeof(out->serial));
    cu_strlcpy(out->suite, suite, sizeof(out->suite));
    cu_strlcpy(out->codec, codec, sizeof(out->codec));
    out->payload_type = pt;
    out->clock_rate = audio ? 48000 : 90000;
    out->key_len = ctl_suite_key_len(suite);
    out->active = true;
    if (RAND_bytes(out->key, (int)out->key_len) != 1) {
        rc = cu_err_set(err, CU_ERR_IO, "the random number generator failed");
        goto out;
    }
    rc = keys_wrap_secret(keys, KEYS_LABEL_DEVICE_SRTP, out->serial, out->key, out->key_len, kek_id,
                          wrapped, &wrapped_len, err);
    if (rc)
        goto out;
    if (!make_rtsp_password(out->rtsp_password)) {
        rc = cu_err_set(err, CU_ERR_IO, "the random number generator failed");
        goto out;
    }
    rc = keys_wrap_secret(keys, KEYS_LABEL_DEVICE_RTSP, out->serial,
                          (const uint8_t *)out->rtsp_password, CTL_RTSP_PASSWORD_LEN, rtsp.kek_id,
                          rtsp.wrapped, &rtsp.len, err);
    if (rc)
        goto out;
    if (spec->pull_url) {
        cu_strlcpy(out->pull_url, spec->pull_url, sizeof(out->pull_url));
        out->pull_udp = spec->pull_udp;
        rc = keys_wrap_secret(keys, KEYS_LABEL_DEVICE_PULL, out->serial,
                              (const uint8_t *)out->pull_url, strlen(out->pull_url), pull.kek_id,
                              pull.wrapped, &pull.len, err);
        if (rc)
            goto out;
    }

    /* In the caller's transaction when it has one (a change and its audit
     * entry commit together), else in its own. */
    if (PQtransactionStatus(conn) == PQTRANS_IDLE) {
        rc = db_exec(conn, "BEGIN", err);
        if (rc)
            goto out;
        in_tx = true;
    }
    /* A random SSRC, unique among devices: retry on the rare collision. */
    for (int attempt = 0; attempt < 16; attempt++) {
        uint32_t ssrc = 0;
        while (ssrc == 0)
            if (RAND_bytes((uint8_t *)&ssrc, sizeof(ssrc)) != 1) {
                rc = cu_err_set(err, CU_ERR_IO, "the random number generator failed");
                goto out;
            }
        char ssrc_text[16], pt_text[8], clock_text[12];
        snprintf(ssrc_text, sizeof(ssrc_text), "%u", ssrc);
        snprintf(pt_text, sizeof(pt_text), "%d", pt);
        snprintf(clock_text, sizeof(clock_text), "%d", out->clock_rate);
        bool pulled = pull.len > 0;
        const char *params[13] = {out->serial,
                                  ssrc_text,
                                  suite,
                                  codec,
                                  pt_text,
                                  clock_text,
                                  kek_id,
                                  (const char *)wrapped,
                                  rtsp.kek_id,
                                  (const char *)rtsp.wrapped,
                                  pulled ? pull.kek_id : NULL,
                                  pulled ? (const char *)pull.wrapped : NULL,
                                  pulled ? (spec->pull_udp ? "udp" : "tcp") : NULL};
        int lengths[13] = {
            0, 0, 0, 0, 0, 0, 0, (int)wrapped_len, 0, (int)rtsp.len, 0, (int)pull.len, 0};
        int formats[13] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0};
        rc = db_exec(conn, "SAVEPOINT ssrc", err);
        if (rc)
            goto out;
        PGresult *res = PQexecParams(conn,
                                     "INSERT INTO devices (serial, ssrc, suite, codec, "
                                     "payload_type, clock_rate, key_kek_id, key_wrapped, "
                                     "rtsp_kek_id, rtsp_wrapped, pull_kek_id, pull_wrapped, "
                                     "pull_transport) "
                                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                                     "$13) RETURNING id, version",
                                     13, NULL, params, lengths, formats, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            out->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            out->version = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
            out->ssrc = ssrc;
            PQclear(res);
            break;
        }
        const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        bool ssrc_clash = is_unique_violation(res) && constraint && strstr(constraint, "ssrc");
        bool serial_clash = is_unique_violation(res) && !ssrc_clash;
        char why[256];
        pq_reason(conn, why, sizeof(why));
        PQclear(res);
        cu_err ignore;
        if (db_exec(conn, "ROLLBACK TO SAVEPOINT ssrc", &ignore) != CU_OK) {
            rc = cu_err_set(err, CU_ERR_DB, "adding device: %s", why);
            goto out;
        }
        if (serial_clash) {
            rc = cu_err_set(err, CU_ERR_EXISTS, "device '%s' already exists", out->serial);
            goto out;
        }
        if (!ssrc_clash) {
            rc = cu_err_set(err, CU_ERR_DB, "adding device: %s", why);
            goto out;
        }
    }
    if (!out->id) {
        rc = cu_err_set(err, CU_ERR_DB, "no free SSRC found");
        goto out;
    }
    if (spec->officer) {
        char id_text[24];
        snprintf(id_text, sizeof(id_text), "%lld", (long long)out->id);
        rc = ctl_device_assign(conn, id_text, spec->officer, err);
        if (rc)
            goto out;
    }
    if (in_tx) {
        rc = db_exec(conn, "COMMIT", err);
        in_tx = false;
    }
out:
    if (in_tx) {
        cu_err ignore;
        if (db_exec(conn, "ROLLBACK", &ignore) != CU_OK)
            CU_LOG(CU_LOG_WARN, "devices", "rollback failed: %s", ignore.msg);
    }
    if (rc)
        ctl_device_wipe(out);
    return rc;
}

/* WHERE clause matching a device by id or by serial. */
#define DEVICE_MATCH "(d.serial = $1 OR ($1 ~ '^[0-9]{1,18}$' AND d.id = $1::bigint))"

cu_rc ctl_device_revoke(PGconn *conn, const char *device, cu_err *err)
{
    const char *params[1] = {device};
    PGresult *res = PQexecParams(conn,
                                 "UPDATE devices d SET state = 'revoked', revoked_at = now(), "
                                 "version = nextval('device_version_seq') "
                                 "WHERE " DEVICE_MATCH " AND state = 'active' RETURNING id",
                                 1, NULL, params, NULL, NULL, 0);
    cu_rc rc = CU_OK;
    char why[256];
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pq_reason(conn, why, sizeof(why));
        rc = cu_err_set(err, CU_ERR_DB, "revoking '%s': %s", device, why);
    } else if (PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no active device '%s'", device);
    }
    PQclear(res);
    return rc;
}

cu_rc ctl_device_assign(PGconn *conn, const char *device, const char *username, cu_err *err)
{
    cu_rc rc = user_exists(conn, username, err);
    if (rc)
        return rc;
    /* End the open assignment and start the new one in one transaction (the
     * caller's, if it has one), the new one a microsecond later. */
    bool own_tx = PQtransactionStatus(conn) == PQTRANS_IDLE;
    if (own_tx && (rc = db_exec(conn, "BEGIN", err)) != CU_OK)
        return rc;
    const char *params[2] = {device, username};
    PGresult *res = PQexecParams(conn,
                                 "UPDATE device_assignments SET assigned_until = clock_timestamp() "
                                 "WHERE assigned_until IS NULL AND device_id = "
                                 "(SELECT d.id FROM devices d WHERE " DEVICE_MATCH ")",
                                 1, NULL, params, NULL, NULL, 0);
    char why[256];
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pq_reason(conn, why, sizeof(why));
        rc = cu_err_set(err, CU_ERR_DB, "assigning '%s': %s", device, why);
    }
    PQclear(res);
    if (!rc) {
        res = PQexecParams(conn,
                           "INSERT INTO device_assignments (device_id, user_id, assigned_from) "
                           "SELECT d.id, u.id, clock_timestamp() + interval '1 microsecond' "
                           "FROM devices d, users u WHERE " DEVICE_MATCH " AND u.username = $2 "
                           "RETURNING id",
                           2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pq_reason(conn, why, sizeof(why));
            rc = cu_err_set(err, CU_ERR_DB, "assigning '%s': %s", device, why);
        } else if (PQntuples(res) != 1) {
            rc = cu_err_set(err, CU_ERR_NOTFOUND, "no device '%s'", device);
        }
        PQclear(res);
    }
    if (own_tx) {
        cu_err ignore;
        if (db_exec(conn, rc ? "ROLLBACK" : "COMMIT", rc ? &ignore : err) != CU_OK && !rc)
            rc = CU_ERR_DB;
    }
    return rc;
}

/*
 * Unwrap the secret in columns (kek_col, hex_col) of @p res, row @p row, into
 * @p out (at most @p cap bytes, NUL-terminated when @p text). An absent
 * secret (NULL columns) leaves *@p len 0 and succeeds.
 */
static cu_rc unwrap_column(keys_ring *keys, const char *label, const char *serial, PGresult *res,
                           int row, int kek_col, int hex_col, uint8_t *out, size_t cap, bool text,
                           size_t *len, cu_err *err)
{
    uint8_t wrapped[KEYS_SECRET_WRAPPED_MAX], plain[KEYS_SECRET_MAX];
    size_t plain_len = 0;
    cu_rc rc = CU_OK;
    *len = 0;
    if (PQgetisnull(res, row, hex_col))
        return CU_OK;
    const char *hex = PQgetvalue(res, row, hex_col);
    size_t hex_len = strlen(hex);
    if (hex_len % 2 || hex_len / 2 > sizeof(wrapped))
        return cu_err_set(err, CU_ERR_INVALID, "malformed wrapped %s", label);
    for (size_t b = 0; b < hex_len / 2; b++) {
        char two[3] = {hex[2 * b], hex[2 * b + 1], 0};
        wrapped[b] = (uint8_t)strtoul(two, NULL, 16);
    }
    rc = keys_unwrap_secret(keys, label, serial, PQgetvalue(res, row, kek_col), wrapped,
                            hex_len / 2, plain, &plain_len, err);
    if (rc)
        goto out;
    if (plain_len + (text ? 1 : 0) > cap) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s longer than expected", label);
        goto out;
    }
    memcpy(out, plain, plain_len);
    if (text)
        out[plain_len] = '\0';
    *len = plain_len;
out:
    OPENSSL_cleanse(plain, sizeof(plain));
    return rc;
}

cu_rc ctl_devices_changed(PGconn *conn, keys_ring *keys, int64_t since, ctl_device_fn fn, void *ctx,
                          int64_t *max_version, cu_err *err)
{
    char since_text[24];
    snprintf(since_text, sizeof(since_text), "%lld", (long long)since);
    const char *params[1] = {since_text};
    PGresult *res =
        PQexecParams(conn,
                     "SELECT id, serial, ssrc, suite, codec, payload_type, clock_rate, "
                     "state, version, key_kek_id, encode(key_wrapped, 'hex'), "
                     "rtsp_kek_id, encode(rtsp_wrapped, 'hex'), "
                     "pull_kek_id, encode(pull_wrapped, 'hex'), pull_transport, "
                     "m.rtp_index, m.rtp_step, m.rtcp_index, m.rtcp_step, m.clean "
                     "FROM devices d LEFT JOIN srtp_replay_marks m ON m.device_id = d.id "
                     "WHERE version > $1 ORDER BY version",
                     1, NULL, params, NULL, NULL, 0);
    cu_rc rc = CU_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char why[256];
        pq_reason(conn, why, sizeof(why));
        rc = cu_err_set(err, CU_ERR_DB, "reading devices: %s", why);
        goto out;
    }
    *max_version = since;
    for (int i = 0; i < PQntuples(res); i++) {
        ctl_device d;
        memset(&d, 0, sizeof(d));
        d.id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        cu_strlcpy(d.serial, PQgetvalue(res, i, 1), sizeof(d.serial));
        d.ssrc = (uint32_t)strtoul(PQgetvalue(res, i, 2), NULL, 10);
        cu_strlcpy(d.suite, PQgetvalue(res, i, 3), sizeof(d.suite));
        cu_strlcpy(d.codec, PQgetvalue(res, i, 4), sizeof(d.codec));
        d.payload_type = (int)strtol(PQgetvalue(res, i, 5), NULL, 10);
        d.clock_rate = (int)strtol(PQgetvalue(res, i, 6), NULL, 10);
        d.active = strcmp(PQgetvalue(res, i, 7), "active") == 0;
        d.version = strtoll(PQgetvalue(res, i, 8), NULL, 10);
        d.pull_udp = strcmp(PQgetvalue(res, i, 15), "udp") == 0;
        d.replay.device_id = d.id;
        d.replay.known = !PQgetisnull(res, i, 16);
        if (d.replay.known) {
            d.replay.rtp_index = strtoull(PQgetvalue(res, i, 16), NULL, 10);
            d.replay.rtp_step = strtoull(PQgetvalue(res, i, 17), NULL, 10);
            d.replay.rtcp_index = (uint32_t)strtoul(PQgetvalue(res, i, 18), NULL, 10);
            d.replay.rtcp_step = (uint32_t)strtoul(PQgetvalue(res, i, 19), NULL, 10);
            d.replay.clean = strcmp(PQgetvalue(res, i, 20), "t") == 0;
        }
        cu_err kerr;
        size_t ignore;
        if (d.active && (unwrap_column(keys, KEYS_LABEL_DEVICE_SRTP, d.serial, res, i, 9, 10, d.key,
                                       sizeof(d.key), false, &d.key_len, &kerr) != CU_OK ||
                         unwrap_column(keys, KEYS_LABEL_DEVICE_RTSP, d.serial, res, i, 11, 12,
                                       (uint8_t *)d.rtsp_password, sizeof(d.rtsp_password), true,
                                       &ignore, &kerr) != CU_OK ||
                         unwrap_column(keys, KEYS_LABEL_DEVICE_PULL, d.serial, res, i, 13, 14,
                                       (uint8_t *)d.pull_url, sizeof(d.pull_url), true, &ignore,
                                       &kerr) != CU_OK)) {
            /* An unusable secret: treat the device as revoked rather than
             * accept anything from it. */
            CU_LOG(CU_LOG_ERROR, "devices", "device %s: %s", d.serial, kerr.msg);
            d.active = false;
            ctl_device_wipe(&d);
        }
        fn(ctx, &d);
        ctl_device_wipe(&d);
        if (d.version > *max_version)
            *max_version = d.version;
    }
out:
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------- replay marks */

/* "{a,b,...}" of @p n values from @p get into a fresh string. */
static char *pg_array(size_t n, const ctl_replay_mark *marks,
                      unsigned long long (*get)(const ctl_replay_mark *))
{
    size_t cap = 2 + n * 21 + 1;
    char *out = cu_xmalloc(cap);
    size_t len = 0;
    out[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%llu", i ? "," : "", get(&marks[i]));
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

static unsigned long long mark_device(const ctl_replay_mark *m)
{
    return (unsigned long long)m->device_id;
}
static unsigned long long mark_rtp(const ctl_replay_mark *m)
{
    return m->rtp_index;
}
static unsigned long long mark_rtp_step(const ctl_replay_mark *m)
{
    return m->rtp_step;
}
static unsigned long long mark_rtcp(const ctl_replay_mark *m)
{
    return m->rtcp_index;
}
static unsigned long long mark_rtcp_step(const ctl_replay_mark *m)
{
    return m->rtcp_step;
}
static unsigned long long mark_clean(const ctl_replay_mark *m)
{
    return m->clean;
}

cu_rc ctl_replay_marks_save(PGconn *conn, const ctl_replay_mark *marks, size_t n, cu_err *err)
{
    if (n == 0)
        return CU_OK;
    unsigned long long (*const getters[6])(const ctl_replay_mark *) = {
        mark_device, mark_rtp, mark_rtp_step, mark_rtcp, mark_rtcp_step, mark_clean};
    char *arrays[6];
    for (int i = 0; i < 6; i++)
        arrays[i] = pg_array(n, marks, getters[i]);
    const char *params[6] = {arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], arrays[5]};
    /* (one device's marks may come twice: the highest of them is kept) */
    PGresult *res = PQexecParams(
        conn,
        "INSERT INTO srtp_replay_marks AS m "
        "(device_id, rtp_index, rtp_step, rtcp_index, rtcp_step, clean) "
        "SELECT device_id, max(rtp_index), max(rtp_step), max(rtcp_index), max(rtcp_step), "
        "bool_or(clean <> 0) "
        "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], "
        "$6::int[]) AS v(device_id, rtp_index, rtp_step, rtcp_index, rtcp_step, clean) "
        "WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = v.device_id) "
        "GROUP BY device_id "
        "ON CONFLICT (device_id) DO UPDATE SET "
        "rtp_index = greatest(m.rtp_index, EXCLUDED.rtp_index), rtp_step = EXCLUDED.rtp_step, "
        "rtcp_index = greatest(m.rtcp_index, EXCLUDED.rtcp_index), "
        "rtcp_step = EXCLUDED.rtcp_step, clean = EXCLUDED.clean, saved_at = now()",
        6, NULL, params, NULL, NULL, 0);
    cu_rc rc = CU_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char why[256];
        pq_reason(conn, why, sizeof(why));
        rc = cu_err_set(err, CU_ERR_DB, "saving SRTP replay marks: %s", why);
    }
    PQclear(res);
    for (int i = 0; i < 6; i++)
        free(arrays[i]);
    return rc;
}
